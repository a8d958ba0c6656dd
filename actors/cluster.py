"""The cluster's life cycle: start every actor in this process, or connect to node processes.

``Cluster.start`` starts the transport, the provider and every party under one trio
nursery; one failure cancels the rest and the ``async with`` block raises a single clear
error (:class:`PartyFailure` naming the actor, or :class:`ActorTimeout` naming the silent
one). The user-facing frontend (``training.Cluster``) subclasses this class and adds
``share`` and ``share_module``; this layer knows nothing of autograd.

Trust: see :mod:`actors.policy` (owners and each party's own reveal rules) and the
README. The runtime the frontend drives (issuing, batching, reveals, the op log) is
:class:`actors.runtime.Runtime`, which this class extends with the life cycle.
"""

from __future__ import annotations

import gc
import ipaddress
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypeVar

import torch
import trio

from protocols.errors import PartyFailure, ProtocolError
from protocols.reference import Tolerance
from protocols.suite import FSS_MAX_NUMEL, Suite, default_suite, describe, fss_limit, get_suite

from .actor import first_error
from .arguments import (
    ValueBound,
    check_tolerance,
    require_trio,
    value_bound_of,
)
from .config import ClusterConfig, load_config
from .mailbox import Roles
from .names import check_name
from .network import Chaos, Network, NetworkProfile
from .oplog import OpRecord
from .party import Party
from .policy import RevealPolicy, legacy_policies
from .provider import CryptoProvider
from .runtime import Runtime, access_denied

C = TypeVar("C", bound="Cluster")

YOUNG_THRESHOLD = 20_000
"""Allocations between young collections while a cluster serves (Python's default: 700)."""


class _Collector:
    serving = 0
    """Clusters serving in this process now."""
    saved: tuple[int, ...] = (700, 10, 10)
    """The thresholds to restore after the last."""
    froze = False
    """Whether the first froze the objects (not if the process had frozen some itself:
    ``gc.unfreeze`` cannot tell its own from the process's)."""


@contextmanager
def collector_tuned() -> Iterator[None]:
    """Python's cyclic collector set for the runtime while a cluster serves.

    Why: a training step allocates thousands of short-lived containers (commands, slots,
    envelopes, trio tasks), so at the default threshold the young generation is collected
    about twice per step, and every few hundred steps a full collection walks every object
    of the process (torch and its imports: ~270,000, ~150 ms). Measured on train_xor's
    workload: ~0.2 ms per step in young collections, ~0.75 ms per step on average in full
    ones. The objects that exist when the cluster starts are moved out of the collector's
    sight (``gc.freeze``: they are the long-lived imports and set-up) and the young
    threshold is raised; nothing is disabled, cycles are still collected. Both are undone
    when the last serving cluster of the process closes (frozen objects go back to the
    oldest generation and are collected as usual; a process that froze objects itself
    keeps its own freeze, untouched).
    """
    if _Collector.serving == 0:
        _Collector.saved = gc.get_threshold()
        _Collector.froze = gc.get_freeze_count() == 0
        if _Collector.froze:
            gc.freeze()
        young, *older = _Collector.saved
        gc.set_threshold(max(young, YOUNG_THRESHOLD), *older)
    _Collector.serving += 1
    try:
        yield
    finally:
        _Collector.serving -= 1
        if _Collector.serving == 0:
            gc.set_threshold(*_Collector.saved)
            if _Collector.froze:
                gc.unfreeze()


class Cluster(Runtime):
    """A running set of parties with a crypto provider, driven by this coordinator."""

    # -- life cycle ---------------------------------------------------------------------
    @classmethod
    @asynccontextmanager
    async def start(
        cls: type[C],
        parties: Sequence[str] = ("alice", "bob"),
        provider: str = "james",
        seed: int | None = None,
        *,
        protocols: str | Suite | None = None,
        coordinator: str = "coordinator",
        network: NetworkProfile | None = None,
        links: Mapping[tuple[str, str], NetworkProfile] | None = None,
        timeout: float = 30.0,
        chaos: Chaos | None = None,
        data: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        reveal_policy: Mapping[str, Sequence[str] | RevealPolicy] | None = None,
        value_bound: ValueBound = "headroom",
        check: bool | Tolerance = False,
    ) -> AsyncIterator[C]:
        """Start a cluster.

        ``protocols`` names the protocol suite (``"default"``, ``"fss"``) or is a
        :class:`protocols.suite.Suite`; ``"default"`` (or None) uses the FSS comparison up
        to :func:`protocols.suite.fss_limit` of the slowest party link's latency (205
        elements per op without latency, 10^4 from ~12 ms), ``"default@N"`` up to N (the
        chosen suite is ``cluster.suite``, named e.g. ``default@205``, and a debug event
        ``protocol_suite``). ``seed=None`` draws every key from the OS (secure).
        An integer seed makes shares and dealer material reproducible and is INSECURE: for
        tests and reproducible runs. ``network`` is the delay profile of every
        party-to-party link; ``links`` overrides single ordered links (provider and
        coordinator links are instantaneous unless listed, modelling offline preprocessing
        and a local coordinator). ``timeout`` bounds every wait on an actor that has
        stopped (one that is still computing gets more time). ``chaos`` injects faults.
        ``data`` gives parties named plaintext tensors they hold (see :meth:`input_from`);
        ``reveal_policy`` maps a party to its own rules for values derived from its data
        (:class:`actors.policy.RevealPolicy`, or a list of recipients allowed any reveal;
        a party not named allows nothing). A seeded cluster refuses party-held inputs.

        ``value_bound``: revealed values larger in magnitude raise ``ValueOutOfRange``
        naming the op: ``"headroom"`` (default) is ``FixedPoint.headroom`` of the value's
        encoding, ``2**31.5 / scale`` (3,037,000.5 at base 10 / precision 3, 46,340.95 at
        base 2 / 16 bits); a number is a bound in real units; ``None`` turns it off.
        ``check=True`` (or a :class:`protocols.reference.Tolerance`) turns on check mode:
        the coordinator reveals every op's result and compares it with its plaintext
        reference (``training.check``); slow, for finding the first op that goes wrong.
        """
        require_trio("Cluster.start")
        names = list(parties)
        if len(names) < 2:
            raise ValueError(f"a cluster needs at least 2 parties, got {names}")
        everyone = [*names, provider, coordinator]
        if len(set(everyone)) != len(everyone) or not all(
            isinstance(n, str) and n for n in everyone
        ):
            raise ValueError(f"actor names must be distinct non-empty strings, got {everyone}")
        for n in everyone:
            check_name(n)  # a party's name names its checkpoint file
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        value_bound_of(value_bound), check_tolerance(check)  # refuse before starting anything
        suite = get_suite(protocols)
        if protocols in (None, "default"):  # FSS only where its round repays its compute
            suite = default_suite(fss_limit(_party_latency(names, network, links)))
        policies = legacy_policies(names, reveal_policy)
        pairs = {(a, b) for a in names for b in names if a != b}
        roles = Roles(coordinator, provider, frozenset(names))
        net = Network(
            everyone,
            timeout=timeout,
            default=network,
            default_pairs=pairs,
            links=links,
            roles=roles,
        )
        net.set_chaos(chaos)
        cluster = cls(
            names, provider, coordinator, net, seed, suite, value_bound=value_bound, check=check
        )
        cluster._log.debug("protocol_suite", suite=suite.name, protocols=describe(suite))
        dealer = CryptoProvider(provider, names, coordinator, net.endpoints[provider], seed, suite)
        cluster.dealer = dealer
        actors = [
            Party(
                n,
                names,
                provider,
                coordinator,
                net.endpoints[n],
                suite,
                data=(data or {}).get(n),
                policy=policies[n],
                seeded=seed is not None,
            )
            for n in names
        ]
        cluster.catalog = {
            n: {k: tuple(v.shape) for k, v in (data or {}).get(n, {}).items()} for n in names
        }
        try:
            async with trio.open_nursery() as nursery:
                cluster._nursery = nursery
                await nursery.start(net.run)
                await nursery.start(dealer.run)
                for actor in actors:
                    await nursery.start(actor.run)
                async with cluster._serving(nursery):
                    yield cluster
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    @classmethod
    @asynccontextmanager
    async def connect(
        cls: type[C],
        config: ClusterConfig | str | Path,
        seed: int | None = None,
        *,
        protocols: str | None = None,
        timeout: float = 30.0,
        chaos: Chaos | None = None,
        reveal_policy: object = None,
        connect_timeout: float = 60.0,
        value_bound: ValueBound = "headroom",
        check: bool | Tolerance = False,
    ) -> AsyncIterator[C]:
        """Drive a cluster whose parties and provider are node processes
        (``python -m actors.node``), over mutually authenticated TLS.

        ``config`` is the cluster file (:mod:`actors.config`). A fresh session id is drawn
        for every call; the nodes get the session's settings (suite name, timeout,
        chaos) and serve this one session. Same frames, meters and errors as
        :meth:`start`: a node that dies is reported as :class:`PartyFailure` naming it.
        ``value_bound`` and ``check`` as in :meth:`start` (check mode compares only what
        the coordinator may reveal). ``"default"`` (or None) uses FSS up to 205 elements
        per op when every node's host is a loopback address (measured: a loopback TLS
        cluster crosses over as one process does, between 128 and 256) and up to 10^4
        otherwise (the links' latency is unknown; the WAN form); ``"default@N"`` sets N.

        What the coordinator cannot set: each party's reveal policy comes from its own
        node's configuration (``reveal_policy`` here raises ``TypeError``), and a ``seed``
        goes to the provider only and is refused by every node not started with
        ``--allow-insecure-seed`` (:class:`actors.tls.SessionRefused`).
        """
        from .messages import Session
        from .tls import SessionRefused, TlsTransport

        require_trio("Cluster.connect")
        if reveal_policy is not None:
            raise TypeError(
                "Cluster.connect takes no reveal_policy: each party sets its own in its node's "
                "configuration ([actors.NAME.reveal] in the cluster file, or the node's "
                "--allow-reveal); the coordinator cannot grant itself access"
            )
        value_bound_of(value_bound), check_tolerance(check)
        cfg = config if isinstance(config, ClusterConfig) else load_config(config)
        if protocols is not None and not isinstance(protocols, str):
            raise TypeError("over TLS the protocol suite is given by name")
        suite = get_suite(protocols)
        if protocols in (None, "default"):  # the nodes get the limit in the suite's name
            suite = default_suite(fss_limit(0.0) if _loopback(cfg) else FSS_MAX_NUMEL)
        names = list(cfg.parties)
        roles = Roles(cfg.coordinator, cfg.provider, frozenset(names))
        transport = TlsTransport(
            cfg.coordinator, cfg, timeout=timeout, roles=roles, connect_timeout=connect_timeout
        )
        transport.set_chaos(None)
        cluster = cls(
            names,
            cfg.provider,
            cfg.coordinator,
            transport,
            seed,
            suite,
            value_bound=value_bound,
            check=check,
        )
        session = Session(
            secrets.token_hex(16),
            suite.name,
            seed,
            timeout,
            chaos.seed if chaos else 0,
            chaos.crash if chaos else None,
            chaos.max_delay if chaos else 0.0,
        )
        cluster.session = session.id
        cluster._log.debug("protocol_suite", suite=suite.name, protocols=describe(suite))
        try:
            async with trio.open_nursery() as nursery:
                cluster._nursery = nursery
                await nursery.start(transport.run)
                transport.start_heartbeats()
                try:
                    ready = await transport.open_session(session)
                except SessionRefused:
                    with trio.CancelScope(shield=True):
                        await transport.close()
                    raise
                cluster.catalog = {
                    n: {k: tuple(v) for k, v in ready[n].catalog.items()} for n in names
                }
                async with cluster._serving(nursery, transport.close):
                    yield cluster
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    def _check_quiet(self) -> None:
        """After the final barrier no message may be left unclaimed anywhere: one that
        is names a tag or sender that no operation expected."""
        for name, box in self.network.mailboxes.items():
            left = box.unclaimed()
            if left:
                raise PartyFailure(
                    name,
                    ProtocolError(
                        f"{name} received messages no operation asked for: "
                        + ", ".join(f"{tag!r} from {sender}" for sender, tag in left[:5])
                    ),
                )

    def _log_summary(self) -> None:
        stats = self.stats(by_label=self._op_log is not None)
        self._log.debug("comm_stats", **stats.as_dict())  # the table's figures, as JSON
        for name, a in stats.per_actor.items():
            self._log.debug(
                "actor_summary",
                summary_of=name,
                sent={p.name.lower(): v for p, v in a.sent.items() if v},
                received={p.name.lower(): v for p, v in a.received.items() if v},
                messages_sent=a.messages_sent,
                messages_received=a.messages_received,
            )

    # -- runtime used by the frontend ---------------------------------------------------------
    @asynccontextmanager
    async def _serving(
        self, nursery: trio.Nursery, close: Callable[[], Awaitable[object]] | None = None
    ) -> AsyncIterator[None]:
        """The user's block of :meth:`start` / :meth:`connect`: on a normal exit, wait for
        every op, check nothing is left over and log the summary; always mark the cluster
        closed, run ``close`` (shielded) and stop the actors."""
        try:
            with collector_tuned():
                yield
            await self.flush()
            self._check_quiet()
            self._log_summary()
        finally:
            self._closed = True
            if close is not None:
                with trio.CancelScope(shield=True):
                    await close()
            nursery.cancel_scope.cancel()


__all__ = ["Cluster", "OpRecord", "access_denied"]


def _party_latency(
    names: Sequence[str],
    network: NetworkProfile | None,
    links: Mapping[tuple[str, str], NetworkProfile] | None,
) -> float:
    """The largest simulated latency of a party-to-party link (seconds)."""
    lat = network.latency if network is not None else 0.0
    for (a, b), prof in (links or {}).items():
        if a in names and b in names:
            lat = max(lat, prof.latency)
    return lat


def _loopback(cfg: ClusterConfig) -> bool:
    """Whether every node (parties and provider) is reached on a loopback address."""
    return all(_is_loopback(cfg.actors[n].host) for n in cfg.nodes)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: its latency is unknown
        return False
