"""One actor per process: ``python -m actors.node --config cluster.toml --name alice``.

A node is one party or the crypto provider of the cluster file (:mod:`actors.config`). It
listens on its address, connects to the nodes after it in the file (mutual TLS, see
:mod:`actors.tls`), and waits for the coordinator (``actors.Cluster.connect`` with the same
file). The coordinator opens one session: a fresh session id, the protocol suite, the
timeout, the reveal policy. The node then runs its actor for that session and exits:

* 0 when the coordinator ends the session (goodbye);
* 1 when its actor fails or a peer is lost (it reports the actor to blame to the others);
* 2 when the coordinator is lost or stays silent longer than ``idle_timeout`` (counted
  from its session message on);
* 3 when no coordinator opened a session within ``idle_timeout``;
* 4 when it refused the session (a seeded one, without ``--allow-insecure-seed``).

A party's named local tensors (``data = "file.npz"`` in its table, or ``--data``) stay in
the process; the coordinator can ask it to share one (``cluster.share_from(name, key)``)
and learns only its shape. What may be revealed of values derived from them is the party's
own rule (``[actors.NAME.reveal]`` or ``--allow-reveal``, :mod:`actors.policy`); the
coordinator's session message cannot change it. Checkpoint files go only under the node's
``checkpoints`` folder (or ``--checkpoints``), readable by its user only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trio

from protocols.errors import ActorTimeout, PartyFailure
from protocols.suite import get_suite

from .actor import first_error
from .cluster import collector_tuned
from .config import ClusterConfig, ConfigError, load_config
from .holdings import OwnInputError
from .log import configure_logging, get_logger
from .mailbox import Roles
from .messages import Session
from .network import Chaos
from .party import Party
from .policy import RevealPolicy, parse_rule
from .provider import CryptoProvider
from .tls import TlsTransport

EXIT_OK, EXIT_FAILED, EXIT_COORDINATOR_LOST, EXIT_NO_SESSION, EXIT_REFUSED = 0, 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """What a node's own command line adds to (or overrides in) its cluster-file table."""

    data: str | Path | None = None
    reveal: RevealPolicy | None = None
    """Overrides the table's ``reveal`` rules."""
    checkpoints: str | Path | None = None
    allow_insecure_seed: bool = False
    """Accept a seeded session (reproducible masks, INSECURE: for tests and demos)."""


def refusal(session: Session, options: NodeOptions) -> str | None:
    """Why this node refuses ``session`` (None: it accepts it)."""
    if (session.seed is not None or session.seeded) and not options.allow_insecure_seed:
        return (
            "the session is seeded (masks and keys derived from a seed the coordinator "
            "knows: INSECURE); start the node with --allow-insecure-seed to accept one"
        )
    return None


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Named tensors from a numpy ``.npz`` file (no pickle)."""
    with np.load(path, allow_pickle=False) as f:
        return {k: torch.from_numpy(np.array(f[k], dtype=np.float64)) for k in f.files}


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write named tensors as a numpy ``.npz`` file (what a node's ``data`` points to)."""
    arrays = {k: v.detach().numpy() for k, v in tensors.items()}
    np.savez(path, **arrays)  # type: ignore[arg-type]


async def serve(
    config: ClusterConfig,
    name: str,
    data_path: str | Path | None = None,
    options: NodeOptions | None = None,
) -> int:
    """Run actor ``name`` for one session; returns the exit code."""
    if name not in config.nodes:
        raise ConfigError(f"{name!r} is not a party or the provider of the cluster file")
    options = options or NodeOptions()
    log = get_logger(actor=name)
    path = data_path or options.data or config.actors[name].data
    data = load_tensors(path) if path else {}
    roles = Roles(config.coordinator, config.provider, frozenset(config.parties))
    transport = TlsTransport(name, config, timeout=30.0, roles=roles)
    failure: list[BaseException] = []
    code = EXIT_OK
    async with trio.open_nursery() as outer:
        await outer.start(transport.run)
        with trio.CancelScope() as session_scope:

            def on_failure(exc: BaseException) -> None:
                failure.append(exc)
                session_scope.cancel()

            transport.on_failure = on_failure
            try:
                code = await _session(transport, config, name, data, options)
            except Exception as exc:  # noqa: BLE001 - reported to the coordinator, then exit
                failure.append(exc)
        if failure:
            err = first_error(failure[0])
            if isinstance(err, PartyFailure):
                blamed = err.actor
            elif isinstance(err, ActorTimeout):
                blamed = err.awaited
            else:
                blamed = name
            lost_coordinator = blamed == config.coordinator
            code = EXIT_COORDINATOR_LOST if lost_coordinator else EXIT_FAILED
            log.warning("node_failed", blamed=blamed, error=str(err))
            cause = err.cause if isinstance(err, PartyFailure) else err
            if isinstance(cause, OwnInputError):  # its peers learn nothing of the values
                cause = OwnInputError(cause.party, "its own input could not be encoded")
            transport.report_failure(blamed, cause)
        with trio.CancelScope(shield=True):
            await transport.close(0.5)
        outer.cancel_scope.cancel()
    return code


async def _session(
    transport: TlsTransport,
    config: ClusterConfig,
    name: str,
    data: Mapping[str, torch.Tensor],
    options: NodeOptions,
) -> int:
    with trio.move_on_after(config.idle_timeout):
        await transport.session_event.wait()
    session = transport.session
    if session is None:
        get_logger(actor=name).warning("no_session", waited=config.idle_timeout)
        return EXIT_NO_SESSION
    refused = refusal(session, options)
    if refused is not None:
        get_logger(actor=name).warning("session_refused", reason=refused)
        transport.send_ready({}, refused)
        with trio.move_on_after(config.idle_timeout):
            await transport.bye_event.wait()
        return EXIT_REFUSED
    ep = transport.endpoint
    ep.timeout = ep.mailbox.timeout = session.timeout
    if session.chaos_crash is not None or session.chaos_delay > 0:
        crash = session.chaos_crash
        transport.set_chaos(
            Chaos(session.chaos_seed, tuple(crash) if crash else None, session.chaos_delay)  # type: ignore[arg-type]
        )
    await transport.wait_connected(transport.connect_timeout)
    transport.start_heartbeats()
    suite = get_suite(session.protocols)
    parties = list(config.parties)
    me = config.actors[name]
    actor: Party | CryptoProvider
    if name == config.provider:
        actor = CryptoProvider(name, parties, config.coordinator, ep, session.seed, suite)
    else:  # a party never uses a seed, even one a coordinator sent it
        actor = Party(
            name,
            parties,
            config.provider,
            config.coordinator,
            ep,
            suite,
            data=data,
            policy=options.reveal if options.reveal is not None else me.reveal,
            checkpoint_root=Path(options.checkpoints or me.checkpoints or "checkpoints"),
            seeded=session.seeded or session.seed is not None,
        )
    # the collector tuned as in one process (actors.cluster.collector_tuned): what exists
    # now (imports, TLS set-up) is frozen, and young collections are rarer while it serves
    with collector_tuned():
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            transport.send_ready({k: list(v.shape) for k, v in data.items()})
            nursery.start_soon(_watch_coordinator, transport, config, trio.current_time())
            await transport.bye_event.wait()
            nursery.cancel_scope.cancel()
    return EXIT_OK


async def _watch_coordinator(transport: TlsTransport, config: ClusterConfig, since: float) -> None:
    """End the session if the coordinator stays silent (no heartbeat) too long, counted
    from ``since`` (its session message) if nothing was heard after it."""
    coordinator = config.coordinator
    while True:
        await trio.sleep(min(1.0, config.idle_timeout / 4))
        heard = max(transport.endpoint._heard.get(coordinator, since), since)
        if trio.current_time() - heard > config.idle_timeout:
            raise PartyFailure(
                coordinator, TimeoutError(f"silent for more than {config.idle_timeout:g} s")
            )


# -- local clusters: every node a child process on this host ------------------------------


def node_command(config: str | Path, name: str) -> list[str]:
    return [sys.executable, "-m", "actors.node", "--config", str(config), "--name", name]


def spawn_nodes(
    config: str | Path,
    names: Sequence[str],
    *,
    log_dir: str | Path | None = None,
    allow_insecure_seed: bool = False,
) -> dict[str, subprocess.Popen[bytes]]:
    """Start one node process per name (same interpreter, this package on PYTHONPATH);
    ``allow_insecure_seed`` passes ``--allow-insecure-seed`` to every node."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("SMPC_NODE_LOG", "warning")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for n in names:
            out = open(Path(log_dir) / f"{n}.log", "wb") if log_dir else subprocess.DEVNULL  # noqa: SIM115
            procs[n] = subprocess.Popen(
                [
                    *node_command(config, n),
                    "--log-level",
                    env["SMPC_NODE_LOG"],
                    *(["--allow-insecure-seed"] if allow_insecure_seed else []),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
    except BaseException:
        stop_nodes(procs)
        raise
    return procs


def stop_nodes(procs: Mapping[str, subprocess.Popen[bytes]], grace: float = 3.0) -> dict[str, int]:
    """Wait (at most ``grace`` s) for the nodes to exit, then kill the rest; exit codes."""
    deadline = time.monotonic() + grace
    for p in procs.values():
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return {n: p.returncode for n, p in procs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m actors.node",
        description="Run one actor (a party or the crypto provider) of a TLS cluster.",
        epilog=(__doc__ or "").split("\n\n", 1)[1] + "\n" + _config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--config", required=True, help="the cluster file (TOML, see below)")
    ap.add_argument("--name", required=True, help="which actor of the cluster file to run")
    ap.add_argument("--data", help="named local tensors (.npz); overrides the file's 'data'")
    ap.add_argument(
        "--allow-reveal",
        action="append",
        metavar="TO[:MAX_ELEMENTS[:MAX_TOTAL]]",
        help="this party's own reveal rule for values derived from its data (repeatable; "
        "replaces the file's [actors.NAME.reveal]), e.g. coordinator:1 for losses only",
    )
    ap.add_argument("--checkpoints", help="the only folder checkpoint files may go in")
    ap.add_argument(
        "--allow-insecure-seed",
        action="store_true",
        help="accept a seeded session (masks derived from a seed the coordinator knows: "
        "INSECURE, for tests and reproducible demos); refused by default",
    )
    ap.add_argument("--log-level", default="warning", help="structlog level (default warning)")
    args = ap.parse_args(argv)
    configure_logging(level=args.log_level)
    torch.set_num_threads(1)
    try:
        config = load_config(args.config)
        reveal = None
        if args.allow_reveal is not None:
            reveal = RevealPolicy(dict(parse_rule(r) for r in args.allow_reveal))
    except ValueError as exc:
        ap.error(str(exc))
    options = NodeOptions(args.data, reveal, args.checkpoints, args.allow_insecure_seed)
    try:
        return trio.run(serve, config, args.name, None, options)
    except ConfigError as exc:
        print(f"actors.node: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


def _config_help() -> str:
    from . import config

    return "The cluster file:\n" + (config.__doc__ or "").split("\n", 2)[2]


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: the session is over and every socket is closed; a
    # garbage-collection pass at shutdown has been seen to stall the process.
    os._exit(code)
