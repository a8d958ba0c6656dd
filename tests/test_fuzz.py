"""Hypothesis fuzzing: malformed messages, frames and values get typed errors, never a hang,
never a wrong result.

Invariants checked on every generated case:

* **no hang**: cluster work runs under ``trio.fail_after`` (on trio's autojumping mock
  clock, so a deadlocked cluster reaches its timeouts at once instead of after seconds);
* **typed errors only**: a misbehaving message ends the run with :class:`PartyFailure`
  (naming an actor involved in the corruption, with an :class:`SmpcError` cause),
  :class:`ProtocolError` (when the coordinator itself received it) or
  :class:`ActorTimeout` (naming an involved actor). A bad argument at a public entry point
  raises an :class:`SmpcError`, or a ``TypeError``/``ValueError`` raised on purpose by
  project code, *before* anything is sent or queued. Anything else (``KeyError``,
  ``IndexError``, a ``RuntimeError`` from torch, ``AssertionError``, ...) is a failure;
* **no wrong result**: when no error is raised, every revealed value equals plaintext
  torch within the fixed-point tolerance.

Part A corrupts the messages of a running cluster, through the network's middleware
(``network.observe``) and on the wire (``network.carry``): dtype, shape, tensor count,
truncated / garbage / extended bodies, random msgpack control bodies, tags (malformed,
finished op, future op, unknown step), phases, duplicates, misbehaving actors that send
from their own endpoint (a frame names no sender: the link does), and raw frames with
broken headers (version, phase, tag form, step length, depth, op, body length, cut,
padded, replaced). It fuzzes the pure pieces with many more cases: ``decode_tensors``,
``unpack_frame``, ``network.carry``, ``decode_control`` for every control struct (the
error names the field), ``Mailbox.deliver``; and command batches and dealer requests
with fields of the wrong type, sent from the coordinator's endpoint. Part B feeds
malformed values to every public entry point. The last test prints how many cases were
generated and checks there were at least 1,000.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import struct
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import torch
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import Phase as HPhase
from hypothesis import strategies as st

import actors.cluster as cluster_module
from actors import Chaos, Envelope, InjectedCrash, Mailbox, Network, NetworkProfile, Phase
from actors.codec import decode_tensors, encode_tensors
from actors.mailbox import Roles
from actors.messages import (
    Batch,
    Command,
    DealerRequest,
    Folder,
    FromParty,
    Heartbeat,
    Recipient,
    Reply,
    Requests,
    decode_control,
    encode_control,
)
from actors.wire import HEADER, VERSION, pack_frame, unpack_frame
from protocols import FixedPoint
from protocols.errors import (
    ActorTimeout,
    NumericError,
    PartyFailure,
    ProtocolError,
    SmpcError,
    ValueOutOfRange,
)
from protocols.params import Params, Pub
from training import SGD, Cluster, SharedTensor
from training.cluster import default_precision
from training.operands import public_precision
from training.testing import PARTIES, PROVIDER, start_cluster

COORD = "coordinator"
TIMEOUT = 1.0  # virtual seconds (mock clock) every wait on another actor may last
BOUND = 30.0  # virtual seconds within which every run must end, error or not
CASES: Counter[str] = Counter()
"""Generated cases per test (a mutation applied, a body decoded, an entry point called)."""

PROJECT = Path(__file__).resolve().parent.parent
PROJECT_DIRS = tuple(str(PROJECT / d) + "/" for d in ("actors", "protocols", "training"))


pytestmark = pytest.mark.usefixtures("quiet_logs")


FUZZ = settings(
    # On top of the profile conftest loads ("repeatable": derandomised, so a red build
    # means a bug; HYPOTHESIS_PROFILE=explore draws new cases).
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    database=None,
)
NO_SHRINK = settings(FUZZ, phases=[HPhase.explicit, HPhase.reuse, HPhase.generate])
"""For cluster runs: shrinking a failure would rerun clusters for minutes; the first
failing example is reported as found."""


def mock_run(fn: Callable[..., Any], *args: Any) -> Any:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def deliberate(exc: BaseException) -> bool:
    """A typed error: an SmpcError, or a plain TypeError/ValueError (or the
    ZeroDivisionError of ``x / 0``) that a ``raise`` statement in project code raised on
    purpose, not one escaping from torch, numpy, msgspec or an accidental unpacking."""
    if isinstance(exc, SmpcError):
        return True
    if type(exc) not in (TypeError, ValueError, ZeroDivisionError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    return last.filename.startswith(PROJECT_DIRS) and (last.line or "").lstrip().startswith("raise")


def describe(exc: BaseException) -> str:
    """The tail of the traceback (of the cause, for a PartyFailure)."""
    inner = exc.cause if isinstance(exc, PartyFailure) else exc
    text = "".join(traceback.format_exception(inner)[-8:])
    return f"{type(exc).__name__}: {exc}\n{text}"


# =========================================================================================
# Part A: malformed messages
# =========================================================================================

# -- the workload -------------------------------------------------------------------------

X = torch.tensor([[0.5, -1.25, 2.0], [3.0, -0.001, 7.5]], dtype=torch.float64)
Y = torch.tensor([[1.5, 2.0, -0.75], [-4.0, 10.0, 0.125]], dtype=torch.float64)
W = torch.tensor([[0.25, -1.0], [2.0, 0.5], [-3.0, 1.5]], dtype=torch.float64)


def q(t: torch.Tensor) -> torch.Tensor:
    """The fixed-point value that is actually shared (base 10, precision 3)."""
    return torch.round(t * 1000) / 1000


EXPECTED = {
    "mul": q(X) * q(Y),
    "matmul": q(X) @ q(W),
    "square": q(X) ** 2,
    "relu": torch.relu(q(X)),
    "scale": q(X) * 0.5,
}


def close(got: torch.Tensor, want: torch.Tensor, ulps: float = 2.0) -> bool:
    """Equal within the fixed-point tolerance: a truncation is off by at most one unit in
    the last place (1e-3), plus float32 rounding of the decoded value."""
    if tuple(got.shape) != tuple(want.shape):
        return False
    err = (got.to(torch.float64) - want.to(torch.float64)).abs()
    tol = ulps * 1e-3 + 1e-6 * want.to(torch.float64).abs()
    return bool((err <= tol).all())


async def workload(c: Cluster) -> dict[str, torch.Tensor]:
    x, y, w = c.share(X), c.share(Y), c.share(W)
    outs = {"mul": x * y, "matmul": x @ w, "square": x**2, "relu": x.relu(), "scale": x * 0.5}
    return {k: await v.get() for k, v in outs.items()}


def check_results(got: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(EXPECTED)
    for k, want in EXPECTED.items():
        assert close(got[k], want), (k, got[k], want)


Key = tuple[str, str, str]


def everyone(n: int) -> list[str]:
    return [*PARTIES[n], PROVIDER, COORD]


async def clean_run(n: int) -> list[tuple[Key, Phase]]:
    seen: list[tuple[Key, Phase]] = []
    async with start_cluster(n, seed=None, timeout=TIMEOUT) as c:

        def tap(env: Envelope) -> Envelope:
            seen.append(((env.sender, env.receiver, env.tag), env.phase))
            return env

        c.network.observe(tap)
        check_results(await workload(c))
    return seen


_REFERENCE: dict[int, list[tuple[Key, Phase]]] = {}


def reference(n: int) -> list[tuple[Key, Phase]]:
    """Every message of a clean run (sender, receiver, tag) and its phase, in order."""
    if n not in _REFERENCE:
        _REFERENCE[n] = mock_run(clean_run, n)
    return _REFERENCE[n]


def targets(n: int, phase: Phase) -> list[Key]:
    return [k for k, p in reference(n) if p == phase]


def literal(tag: str) -> bool:
    """True for a tag the frame carries as a literal (its op field is not read)."""
    head, sep, rest = tag.partition("/")
    if sep and head.isascii() and head.isdigit():
        return False
    return not (sep and head in ("cmd", "req") and rest.isascii() and rest.isdigit())


# -- mutations ---------------------------------------------------------------------------

DTYPES = (torch.int64, torch.bool, torch.uint8)
STEPS = ("mul0", "mul1", "mm0", "sq0", "tr1", "cmp", "and0", "fin", "dealer0", "dealer1", "in")
FRAME_KINDS = (
    "version",
    "phase_byte",
    "form",
    "step_len",
    "depth",
    "op",
    "length",
    "cut",
    "pad",
    "step_bytes",
    "replace",
)
FAMILIES = {
    "payload": ("dtype", "shape", "count"),
    "body": ("truncate", "garbage", "extend", "msgpack"),
    "tag": ("tag_malformed", "tag_finished", "tag_future", "tag_step"),
    "sender": ("impersonate", "inject"),
    "phase": ("phase",),
    "duplicate": ("duplicate",),
    "frame": FRAME_KINDS,
}
UNNOTICED_FRAME_KINDS = {"depth"}
"""The frame's depth is metering metadata that no receiver checks: changing it must leave
the results right, but it need not be noticed."""


@dataclasses.dataclass(frozen=True)
class Mutation:
    target: int
    """Index into the clean run's messages of the chosen kind (modulo their number)."""
    kind: str
    arg: int
    blob: bytes
    text: str
    value: Any
    """A msgpack value, for the ``msgpack`` kind."""


def msgpack_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.integers(-3, 300)
        | st.floats(allow_nan=True)
        | st.text(max_size=8)
        | st.binary(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["d", "pub", "shape", "dims", "op", "kind", "x"]), inner, max_size=4
            )
        ),
        max_leaves=10,
    )


def mutations(family: str) -> st.SearchStrategy[Mutation]:
    return st.builds(
        Mutation,
        target=st.integers(0, 10**6),
        kind=st.sampled_from(FAMILIES[family]),
        arg=st.integers(0, 2**16),
        blob=st.binary(min_size=1, max_size=48),
        text=st.text(st.characters(codec="ascii"), max_size=12),
        value=msgpack_values(),
    )


def try_tensors(env: Envelope) -> list[torch.Tensor] | None:
    if env.phase in (Phase.CONTROL, Phase.HEARTBEAT):
        return None
    try:
        return list(env.tensors())
    except ProtocolError:
        return None


def random_tensor(arg: int) -> torch.Tensor:
    dtype = DTYPES[arg % 3]
    shape = [(2, 3), (3,), (), (1, 64), (0,)][arg // 3 % 5]
    return torch.zeros(shape, dtype=torch.int64).add(arg).to(dtype)


def with_tensors(env: Envelope, tensors: Sequence[torch.Tensor]) -> Envelope:
    body, n = encode_tensors(tensors)
    return msgspec.structs.replace(env, body=body, payload_bytes=n)


def with_body(env: Envelope, body: bytes) -> Envelope:
    return msgspec.structs.replace(env, body=body, payload_bytes=len(body))


def new_shape(t: torch.Tensor, arg: int) -> torch.Tensor:
    flat = t.reshape(-1)
    choice = arg % 4
    if choice == 0 or (choice == 1 and flat.numel() == 0):
        return torch.cat([flat, flat[:1] if flat.numel() else torch.zeros(1, dtype=t.dtype)])
    if choice == 1:
        return flat[:-1].clone()
    if choice == 2:
        return t.unsqueeze(arg % (t.dim() + 1))
    out = flat.clone()
    return out if tuple(out.shape) != tuple(t.shape) else t.unsqueeze(0)


def mutate(env: Envelope, m: Mutation) -> Envelope:
    """The corrupted envelope (never equal to ``env``)."""
    kind, arg = m.kind, m.arg
    if kind in ("dtype", "shape", "count"):
        tensors = try_tensors(env)
        if tensors is None or (not tensors and kind != "count"):
            return with_tensors(env, [random_tensor(arg)])  # tensors where msgpack was expected
        if kind == "dtype":
            i = arg % len(tensors)
            choices = [d for d in DTYPES if d != tensors[i].dtype]
            tensors[i] = tensors[i].to(choices[arg // 3 % len(choices)])
        elif kind == "shape":
            i = arg % len(tensors)
            tensors[i] = new_shape(tensors[i], arg // 7)
        elif tensors and arg % 3 == 0:
            del tensors[arg // 3 % len(tensors)]
        elif tensors and arg % 3 == 1:
            tensors.append(tensors[arg // 3 % len(tensors)])
        else:
            tensors.append(random_tensor(arg // 3))
        return with_tensors(env, tensors)
    if kind == "truncate":
        return with_body(env, env.body[: arg % len(env.body)] if env.body else b"\x01")
    if kind == "garbage":
        return with_body(env, m.blob if m.blob != env.body else m.blob + b"\x00")
    if kind == "extend":
        return with_body(env, env.body + m.blob)
    if kind == "msgpack":
        body = msgspec.msgpack.encode(m.value)
        return with_body(env, body if body != env.body else body + b"\xc0")
    op, _, step = env.tag.partition("/")
    if kind == "tag_malformed":
        tag = m.text if m.text != env.tag else m.text + "?"
    elif kind == "tag_finished":
        tag = f"0/{step or 'x'}"
    elif kind == "tag_future":
        tag = f"{int(op) + 1000 + arg if op.isdigit() else 10**6 + arg}/{step or 'x'}"
    else:  # tag_step
        steps = [s for s in (*STEPS, m.text) if s != step]
        tag = f"{op}/{steps[arg % len(steps)]}"
    if kind.startswith("tag"):
        return msgspec.structs.replace(env, tag=tag if tag != env.tag else tag + "x")
    if kind == "phase":
        others_p = [p for p in Phase if p != env.phase]
        return msgspec.structs.replace(env, phase=others_p[arg % len(others_p)])
    raise AssertionError(kind)  # pragma: no cover - the other kinds are handled by the caller


def reframe(env: Envelope) -> Envelope:
    """What the receiver gets when ``env`` goes over the wire: its frame, unpacked (a tag a
    frame cannot carry is handed over by the middleware as it is)."""
    try:
        frame, _ = pack_frame(env.tag, env.phase, env.depth, control=env.body)
    except ProtocolError:
        return env
    return unpack_frame(frame, env.sender, env.receiver)


def send_from(net: Network, actor: str, env: Envelope) -> None:
    """``actor`` sends ``env``'s tag, phase, depth and body from its own endpoint (the link
    vouches for it: a message cannot claim another sender)."""
    net.endpoints[actor].send_nowait(env.receiver, env.tag, env.phase, env.depth, control=env.body)


def set_field(frame: bytearray, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(frame)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def mutate_frame(frame: bytearray, m: Mutation) -> bytes:
    """The corrupted frame (never equal to ``frame``): one header field changed, cut,
    padded, its step replaced, or the whole frame replaced."""
    kind, arg = m.kind, m.arg
    fields = {  # offset, format, width in bits
        "version": (0, "<B", 8),
        "phase_byte": (1, "<B", 8),
        "form": (2, "<B", 8),
        "step_len": (3, "<B", 8),
        "depth": (4, "<I", 32),
        "op": (8, "<Q", 64),
        "length": (16, "<I", 32),
    }
    if kind in fields:
        offset, fmt, bits = fields[kind]
        (old,) = struct.unpack_from(fmt, frame, offset)
        # small values, near the old one, and the extremes
        candidates = [arg % 8, old + 1 + arg % 3, old - 1 - arg % 3, 2**bits - 1, arg]
        new = candidates[arg % len(candidates)] % 2**bits
        if new == old:
            new = (old + 1) % 2**bits
        return set_field(frame, offset, fmt, new)
    if kind == "cut":
        return bytes(frame[: arg % len(frame)])
    if kind == "pad":
        return bytes(frame) + m.blob
    if kind == "step_bytes":
        step_len = frame[3]
        step = m.blob[:255]
        if step == frame[HEADER.size : HEADER.size + step_len]:
            step = step[:-1] + bytes([step[-1] ^ 0x80])
        head = bytearray(frame[: HEADER.size])
        head[3] = len(step)
        return bytes(head) + step + bytes(frame[HEADER.size + step_len :])
    assert kind == "replace", kind
    return m.blob if m.blob != frame else m.blob + b"\x00"


class Corrupter:
    """Middleware (``network.observe``) that corrupts the chosen messages (each once), or,
    for the ``frame`` family, a wrapper of ``network.carry`` that corrupts their frames on
    the link. Remembers the actors involved: the original sender, the receiver and any
    actor that sent from its own endpoint."""

    def __init__(
        self, net: Network, actors: Sequence[str], keys: Sequence[Key], muts: Sequence[Mutation]
    ) -> None:
        self.net = net
        self.actors = list(actors)
        self.pending: dict[Key, list[Mutation]] = {}
        for m in muts:
            self.pending.setdefault(keys[m.target % len(keys)], []).append(m)
        self.applied: list[tuple[Key, Mutation]] = []
        self.involved: set[str] = set()
        self._resending = False
        if any(m.kind in FRAME_KINDS for m in muts):
            carry = net.carry

            def corrupt_carry(sender: str, receiver: str, frame: bytearray) -> None:
                carry(sender, receiver, self.on_frame(sender, receiver, frame))

            net.carry = corrupt_carry  # type: ignore[method-assign]
            net.hands_over = False  # frames on the link, not envelopes handed over
        else:
            net.observe(self)

    def on_frame(self, sender: str, receiver: str, frame: bytearray) -> bytearray:
        if not self.pending:
            return frame
        try:
            env = unpack_frame(frame, sender, receiver)
        except ProtocolError:  # a frame corrupted earlier (not by us): pass it on
            return frame
        key = (sender, receiver, env.tag)
        muts = self.pending.pop(key, [])
        if not muts:
            return frame
        m = muts[0]  # one corruption per frame: a second could undo the first
        self.applied.append((key, m))
        self.involved |= {sender, receiver}
        new = mutate_frame(frame, m)
        assert new != bytes(frame), (m, key)
        return bytearray(new)

    def resend(self, actor: str, env: Envelope) -> None:
        self._resending = True
        try:
            send_from(self.net, actor, env)
        finally:
            self._resending = False

    def __call__(self, env: Envelope) -> Envelope | None:
        if self._resending:
            return env
        key = (env.sender, env.receiver, env.tag)
        muts = self.pending.pop(key, [])
        changed = drop = False
        for m in muts:
            if m.kind != "duplicate" and changed:
                continue  # one corruption per message: a second could undo the first
            changed = changed or m.kind != "duplicate"
            self.applied.append((key, m))
            self.involved |= {env.sender, env.receiver}
            if m.kind == "duplicate":
                self.resend(env.sender, env)
            elif m.kind in ("impersonate", "inject"):
                # another actor sends this message from its own endpoint; "impersonate"
                # drops the original (the message now comes from the wrong actor),
                # "inject" keeps it (an extra message from an actor with no part in it)
                others = [a for a in self.actors if a not in (env.sender, env.receiver)]
                actor = others[m.arg % len(others)]
                self.involved.add(actor)
                self.resend(actor, env)
                drop = m.kind == "impersonate"
            else:
                new = reframe(mutate(env, m))
                assert new != env, (m, env)
                env = new
        return None if drop else env


def acceptable(exc: BaseException, involved: set[str]) -> str | None:
    """None if ``exc`` is an allowed outcome of corrupting messages between ``involved``
    actors; otherwise why not."""
    if isinstance(exc, PartyFailure):
        if exc.actor not in involved:
            return f"PartyFailure names {exc.actor!r}, not one of {sorted(involved)}"
        if not isinstance(exc.cause, SmpcError) or isinstance(exc.cause, PartyFailure):
            return f"PartyFailure cause is {type(exc.cause).__name__}, not an SmpcError"
        return None
    if isinstance(exc, ActorTimeout):
        # Blame comes from the heartbeats' wait states (no actor reads another's mailbox):
        # when a corruption closes a cycle of waits, the chain it reports must pass
        # through an involved actor even if its last link names a bystander.
        if exc.awaited not in involved and not involved & set(exc.chain[1:]):
            return f"ActorTimeout chain {exc.chain} has none of {sorted(involved)}"
        return None
    if isinstance(exc, ProtocolError):
        if COORD not in involved:
            return "the coordinator raised ProtocolError for messages it had no part in"
        return None
    if isinstance(exc, NumericError) and COORD in involved:
        return None  # a corrupted output share, caught by the reveal bound
    return f"untyped error {type(exc).__name__}"


def may_go_unnoticed(key: Key, phase: Phase, m: Mutation) -> bool:
    """Corruptions nobody has to notice (the results must still be right): the barrier
    acknowledgements' content, the frame's depth field, and the op field of a frame whose
    tag is a literal."""
    if phase == Phase.CONTROL and key[2].endswith("/done"):
        return True
    return m.kind in UNNOTICED_FRAME_KINDS or (m.kind == "op" and literal(key[2]))


async def corrupted_run(n: int, keys: Sequence[Key], muts: Sequence[Mutation]) -> dict[str, Any]:
    out: dict[str, Any] = {"results": None, "error": None, "applied": [], "involved": set()}
    start = trio.current_time()
    try:
        with trio.fail_after(BOUND):
            async with start_cluster(n, seed=None, timeout=TIMEOUT) as c:
                corrupter = Corrupter(c.network, everyone(n), keys, muts)
                out["corrupter"] = corrupter
                out["results"] = await workload(c)
    except Exception as exc:  # TooSlowError included: judged by the caller
        out["error"] = exc
    out["elapsed"] = trio.current_time() - start
    corrupter = out.pop("corrupter", None)
    if corrupter is not None:
        out["applied"] = corrupter.applied
        out["involved"] = corrupter.involved
    return out


def judge(out: dict[str, Any], phase: Phase | None, where: str, *, setup: bool = False) -> None:
    """The three invariants for one corrupted run."""
    applied, err = out["applied"], out["error"]
    if isinstance(err, trio.TooSlowError):
        pytest.fail(f"hang: no outcome within {BOUND} s; {where}")
    if err is None:
        # nothing noticed: only acceptable if every result is right, and only for
        # corruptions whose content nobody checks
        try:
            check_results(out["results"])
        except AssertionError as exc:
            raise AssertionError(f"silently wrong results: {exc}; {where}") from None
        for key, m in applied:
            assert not setup or m.kind in UNNOTICED_FRAME_KINDS or m.kind == "op", (
                f"corrupted key set-up went unnoticed; {where}"
            )
            assert setup or (phase is not None and may_go_unnoticed(key, phase, m)), (
                f"corrupted {key} ({m.kind}) went unnoticed; {where}"
            )
        return
    assert applied, f"error without any corruption: {describe(err)}"
    why = acceptable(err, out["involved"])
    assert why is None, f"{why}; {where}\n{describe(err)}"
    # bounded: at most a few timeouts' worth of (virtual) time
    assert out["elapsed"] <= 4 * TIMEOUT, (out["elapsed"], where)


def run_corrupted(n: int, phase: Phase, muts: Sequence[Mutation], test: str) -> None:
    out = mock_run(corrupted_run, n, targets(n, phase), muts)
    CASES[test] += len(out["applied"])
    where = f"n={n} applied={[(k, m.kind, m.arg) for k, m in out['applied']]}"
    judge(out, phase, where)


TARGET_PHASES = ("INPUT", "ONLINE", "OFFLINE", "OUTPUT", "CONTROL")


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("phase", TARGET_PHASES)
def test_corrupted_messages(phase: str, family: str) -> None:
    """Corrupt 1-3 messages of one phase (input shares, online openings, dealer material,
    revealed shares, or commands / dealer requests / barrier acknowledgements) in a
    running 2- or 3-party cluster."""

    @settings(NO_SHRINK, max_examples=8)
    @given(n=st.sampled_from([2, 3]), muts=st.lists(mutations(family), min_size=1, max_size=3))
    def run(n: int, muts: list[Mutation]) -> None:
        run_corrupted(n, Phase[phase], muts, "corrupted messages")

    for n, muts in KNOWN_CASES.get((phase, family), []):
        run = example(n=n, muts=muts)(run)
    run()


def _known(target: int, kind: str, arg: int, blob: bytes = b"\x00") -> Mutation:
    return Mutation(target, kind, arg, blob, "", None)


KNOWN_CASES: dict[tuple[str, str], list[tuple[int, list[Mutation]]]] = {
    # a revealed share relabelled CONTROL: the coordinator reads it as a refusal
    ("OUTPUT", "phase"): [(2, [_known(0, "phase", 3)])],
    # carol's input share of W comes from bob instead: carol waits for the coordinator,
    # the coordinator for alice's reveal, alice for carol (a cycle)
    ("INPUT", "sender"): [(3, [_known(8, "impersonate", 1)])],
    # a command batch that is not msgpack
    ("CONTROL", "body"): [(2, [_known(0, "truncate", 5)])],
    # a party sends a command batch; the provider sends an online step
    ("CONTROL", "sender"): [(2, [_known(1, "inject", 0)]), (3, [_known(1, "impersonate", 2)])],
    ("ONLINE", "sender"): [(2, [_known(0, "impersonate", 0)]), (3, [_known(0, "inject", 1)])],
    # a frame of the next wire version; a frame whose header says the body is longer
    ("ONLINE", "frame"): [(2, [_known(0, "version", 1)]), (2, [_known(1, "length", 1)])],
}
"""Examples always run (besides the generated ones) because they once failed or matter."""


# -- the key set-up, before the cluster block starts ---------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_corrupted_key_setup(family: str) -> None:
    """The provider's ``setup/key`` messages (sent inside ``Cluster.start``): a network
    subclass installs the corrupter before the actors start."""

    @settings(NO_SHRINK, max_examples=6)
    @given(n=st.sampled_from([2, 3]), muts=st.lists(mutations(family), min_size=1, max_size=2))
    def run(n: int, muts: list[Mutation]) -> None:
        keys = [(PROVIDER, p, "setup/key") for p in PARTIES[n]]
        box: dict[str, Corrupter] = {}

        class CorruptingNetwork(Network):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                box["c"] = Corrupter(self, everyone(n), keys, muts)

        async def go() -> dict[str, Any]:
            out: dict[str, Any] = {"results": None, "error": None}
            start = trio.current_time()
            try:
                with trio.fail_after(BOUND):
                    async with start_cluster(n, seed=None, timeout=TIMEOUT) as c:
                        out["results"] = await workload(c)
            except Exception as exc:
                out["error"] = exc
            out["elapsed"] = trio.current_time() - start
            return out

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cluster_module, "Network", CorruptingNetwork)
            out = mock_run(go)
        corrupter = box["c"]
        out["applied"], out["involved"] = corrupter.applied, corrupter.involved
        CASES["corrupted key setup"] += len(corrupter.applied)
        where = f"n={n} applied={[(k, m.kind, m.arg) for k, m in corrupter.applied]}"
        judge(out, None, where, setup=True)

    if family == "payload":
        # alice's key arrives as 32 bools
        run = example(n=2, muts=[_known(0, "dtype", 3)])(run)
    run()


# -- pure pieces: the wire format and the mailbox ------------------------------------------

RECORD_DIMS = st.one_of(
    st.integers(0, 4), st.integers(0, 2**32 - 1), st.sampled_from([2**31, 2**32 - 1, 65536])
)


@st.composite
def record_bodies(draw: st.DrawFn) -> bytes:
    """Bodies that look like tensor records: a plausible header, then data of a length
    near (or exactly) what the header announces; several records; trailing junk."""
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        code = draw(st.sampled_from([0, 1, 2, 3, 4, 255]))
        ndim = draw(st.one_of(st.integers(0, 4), st.sampled_from([8, 65, 255])))
        dims = draw(st.lists(RECORD_DIMS, min_size=min(ndim, 6), max_size=min(ndim, 6)))
        dims += [1] * (ndim - len(dims))
        n = math.prod(dims)
        size = {1: 8 * n, 2: (n + 7) // 8, 3: n}.get(code, 8)
        size = min(size, 4096) + draw(st.integers(-3, 3))
        head = bytes([code, ndim]) + struct.pack(f"<{ndim}I", *dims)
        parts.append(head[: len(head) - draw(st.integers(0, 2))] + b"\x5a" * max(size, 0))
    return b"".join(parts) + draw(st.binary(max_size=3))


def check_decoded(body: bytes) -> None:
    try:
        out = decode_tensors(body)
    except ProtocolError:
        return
    except Exception as exc:
        raise AssertionError(
            f"decode_tensors({body[:40]!r}...) raised {type(exc).__name__}: {exc}"
        ) from exc
    assert isinstance(out, tuple)
    for t in out:
        assert isinstance(t, torch.Tensor) and t.dtype in DTYPES


@settings(FUZZ, max_examples=150)
@given(body=st.binary(max_size=96))
def test_decode_random_bytes(body: bytes) -> None:
    """Any byte string decodes to tensors or raises ProtocolError, nothing else."""
    CASES["decode_tensors"] += 1
    check_decoded(body)


@settings(FUZZ, max_examples=150)
@given(body=record_bodies())
@example(body=bytes([1, 4]) + struct.pack("<4I", 0, 2**32 - 1, 2**32 - 1, 2**32 - 1))
def test_decode_record_like_bytes(body: bytes) -> None:
    """Near-valid records (wrong codes, huge or zero dims, short or long data)."""
    CASES["decode_tensors"] += 1
    check_decoded(body)


TENSORS = st.builds(
    lambda dtype, shape, seed: (
        torch.randint(-(2**63), 2**63 - 1, shape, generator=torch.Generator().manual_seed(seed))
        .to(dtype)
        .clone()
    ),
    st.sampled_from(DTYPES),
    st.lists(st.integers(0, 5), max_size=3).map(tuple),
    st.integers(0, 2**31),
)


@settings(FUZZ, max_examples=100)
@given(tensors=st.lists(TENSORS, max_size=4))
def test_encode_decode_round_trip(tensors: list[torch.Tensor]) -> None:
    CASES["decode_tensors"] += 1
    body, payload = encode_tensors(tensors)
    out = decode_tensors(body)
    assert len(out) == len(tensors)
    for a, b in zip(tensors, out, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    assert payload <= len(body)


SENDERS = st.sampled_from(["alice", "bob", PROVIDER, COORD])
TAGS = st.one_of(
    st.text(max_size=8),  # anything at all, any unicode
    st.builds(
        lambda op, step: f"{op}/{step}", st.integers(0, 12), st.sampled_from(["mul0", "in", ""])
    ),
    st.builds(lambda k, i: f"{k}/{i}", st.sampled_from(["cmd", "req", "setup"]), st.integers(0, 3)),
    st.sampled_from(["setup/key", "cmd/x", "/1", "1/", "01/mul0", "-1/mul0", " 1/a"]),
    # digits that are not ASCII: str.isdigit() accepts some that int() does not
    st.builds(
        lambda head, step: f"{head}/{step}" if step else head,
        st.text(st.characters(categories=("Nd", "No")), min_size=1, max_size=3),
        st.sampled_from(["mul0", ""]),
    ),
)


@settings(FUZZ, max_examples=100)
@given(
    msgs=st.lists(st.tuples(SENDERS, TAGS, st.sampled_from(list(Phase))), max_size=8),
    finished_below=st.integers(0, 8),
)
@example(msgs=[("alice", "\u00b2/mul0", Phase.ONLINE)], finished_below=0)
def test_mailbox_deliver_never_raises(
    msgs: list[tuple[str, str, Phase]], finished_below: int
) -> None:
    """``Mailbox.deliver`` never raises into the sender, whatever arrives; afterwards the
    owner either gets each message it asks for, or a ProtocolError (poisoned mailbox), or
    an ActorTimeout for what never came. Duplicates and messages for finished ops poison."""
    CASES["mailbox"] += len(msgs) + 1

    async def go() -> None:
        box = Mailbox("bob", timeout=0.01)
        box.is_finished = lambda op: op < finished_below
        delivered: dict[tuple[str, str], Envelope] = {}
        poison = False
        for sender, tag, phase in msgs:
            env = Envelope(sender, "bob", tag, phase, 0, b"", 0)
            try:
                box.deliver(env)
            except Exception as exc:
                raise AssertionError(
                    f"Mailbox.deliver raised {type(exc).__name__}: {exc} for tag {tag!r}"
                ) from exc
            head = tag.partition("/")[0]
            ascii_op = head.isascii() and head.isdigit()
            if (sender, tag) in delivered or (ascii_op and int(head) < finished_below):
                poison = True
            delivered.setdefault((sender, tag), env)
        for (sender, tag), env in delivered.items():
            try:
                got = await box.recv(sender, tag, timeout=0.01)
            except ProtocolError:
                continue
            except ActorTimeout as exc:
                raise AssertionError(f"delivered {tag!r} from {sender} was lost") from exc
            assert not poison, f"a duplicate or finished-op message did not poison: {msgs}"
            assert got is env

    trio.run(go, clock=trio.testing.MockClock(autojump_threshold=0))


# -- frames: unpack_frame and network.carry -----------------------------------------------

WIRE_TAGS = st.one_of(
    st.builds(
        lambda op, step: f"{op}/{step}",
        st.integers(0, 2**64 - 1),
        st.sampled_from(["mul0", "in", "out", "done", "dealer0", "a/b"]),
    ),
    st.builds(lambda k, i: f"{k}/{i}", st.sampled_from(["cmd", "req"]), st.integers(0, 2**64 - 1)),
    st.sampled_from(["setup/key", "hb", "cmd/x", "/1", "1/", "01/mul0", " 1/a", "req/01"]),
    st.text(max_size=12),  # anything at all, any unicode (lone surrogates included)
    st.text(st.characters(codec="ascii"), min_size=250, max_size=300),  # steps near 255 B
)


def packable(tag: str) -> bool:
    """Whether a frame can carry ``tag``: UTF-8, a step of at most 255 bytes, an op that
    fits 64 bits."""
    try:
        tag.encode()
    except UnicodeEncodeError:
        return False
    head, sep, rest = tag.partition("/")
    if sep and head.isascii() and head.isdigit():
        return int(head) < 2**64 and len(rest.encode()) <= 255
    if sep and head in ("cmd", "req") and rest.isascii() and rest.isdigit():
        return int(rest) < 2**64
    return len(tag.encode()) <= 255


PHASES = st.sampled_from(list(Phase))
DEPTHS = st.one_of(st.integers(0, 40), st.just(2**32 - 1))


@st.composite
def bodies(draw: st.DrawFn, phase: Phase) -> dict[str, Any]:
    """Keyword arguments of pack_frame for a body of ``phase``."""
    if phase in (Phase.CONTROL, Phase.HEARTBEAT):
        return {"control": msgspec.msgpack.encode(draw(msgpack_values()))}
    return {"tensors": draw(st.lists(TENSORS, max_size=3))}


def check_unpacked(frame: bytes) -> Envelope | None:
    """unpack_frame gives an envelope (whose tensors and control body decode or raise
    ProtocolError) or raises ProtocolError; nothing else."""
    try:
        env = unpack_frame(frame, "alice", "bob")
    except ProtocolError as exc:
        assert "alice" in str(exc), exc  # names the link's sender
        return None
    except Exception as exc:
        raise AssertionError(
            f"unpack_frame({frame[:40]!r}...) raised {type(exc).__name__}: {exc}"
        ) from exc
    assert (env.sender, env.receiver) == ("alice", "bob")
    assert isinstance(env.phase, Phase) and env.frame_bytes == len(frame)
    assert 0 <= env.payload_bytes <= len(env.body) and env.header_bytes >= HEADER.size
    for decode in (env.tensors, env.control, lambda: env.control(Heartbeat)):
        try:
            decode()
        except ProtocolError:
            pass
        except Exception as exc:
            raise AssertionError(f"decoding {env} raised {type(exc).__name__}: {exc}") from exc
    return env


def canonical(tag: str) -> bool:
    """Tags that survive a frame unchanged: an op tag whose op has no leading zeros, a
    sequence tag likewise, or a literal."""
    head, sep, rest = tag.partition("/")
    if sep and head.isascii() and head.isdigit():
        return str(int(head)) == head
    if sep and head in ("cmd", "req") and rest.isascii() and rest.isdigit():
        return str(int(rest)) == rest
    return True


@settings(FUZZ, max_examples=120)
@given(tag=WIRE_TAGS, phase=PHASES, depth=DEPTHS, data=st.data())
@example(tag="\ud800", phase=Phase.ONLINE, depth=0, data=None)  # not UTF-8
@example(tag=f"{2**64}/mul0", phase=Phase.ONLINE, depth=0, data=None)  # op beyond 64 bits
def test_frame_round_trip(tag: str, phase: Phase, depth: int, data: Any) -> None:
    """``unpack_frame(pack_frame(...))`` gives back tag, phase, depth and body; a tag that
    no frame can carry (step over 255 bytes, op beyond 64 bits, not UTF-8) is refused
    with ProtocolError when packing."""
    CASES["frames"] += 1
    kwargs = {"control": b""} if data is None else data.draw(bodies(phase), label="body")
    try:
        raw, payload = pack_frame(tag, phase, depth, **kwargs)
    except ProtocolError:
        assert not packable(tag), f"pack_frame refused the tag {tag!r}"
        return
    except Exception as exc:
        raise AssertionError(f"pack_frame({tag!r}) raised {type(exc).__name__}: {exc}") from exc
    assert packable(tag), f"pack_frame accepted the tag {tag!r}"
    env = check_unpacked(bytes(raw))
    assert env is not None, "a frame pack_frame made does not unpack"
    body = kwargs.get("control")
    if body is None:
        body, n = encode_tensors(kwargs["tensors"])
        assert payload == n and encode_tensors(env.tensors()) == (body, n)
    assert (env.phase, env.depth, env.body, env.payload_bytes) == (phase, depth, body, payload)
    if canonical(tag):
        assert env.tag == tag, (env.tag, tag)


@st.composite
def packable_frames(draw: st.DrawFn) -> bytes:
    tag = draw(WIRE_TAGS.filter(packable))
    phase = draw(PHASES)
    frame, _ = pack_frame(tag, phase, draw(DEPTHS), **draw(bodies(phase)))
    return bytes(frame)


FRAME_MUTATIONS = st.builds(
    Mutation,
    target=st.just(0),
    kind=st.sampled_from([*FRAME_KINDS, "flip"]),
    arg=st.integers(0, 2**16),
    blob=st.binary(min_size=1, max_size=40),
    text=st.just(""),
    value=st.none(),
)


def mutated(frame: bytes, muts: list[Mutation]) -> bytes:
    out = bytearray(frame)
    for m in muts:
        if m.kind == "flip":  # one byte of the header or step (data bytes carry any value)
            end = min(len(out), HEADER.size + out[3]) if len(out) > 3 else len(out)
            if end:
                out[m.arg % end] ^= 1 << (m.arg // end % 8)
        elif len(out) >= HEADER.size or (out and m.kind in ("cut", "pad", "replace")):
            out = bytearray(mutate_frame(out, m))
    return bytes(out)


@settings(FUZZ, max_examples=150)
@given(frame=packable_frames(), muts=st.lists(FRAME_MUTATIONS, min_size=1, max_size=3))
def test_unpack_mutated_frames(frame: bytes, muts: list[Mutation]) -> None:
    """Valid frames with their headers broken (version, phase, tag form, step length,
    depth, op, body length, bit flips), cut, padded or replaced: an envelope or
    ProtocolError, nothing else."""
    CASES["frames"] += 1
    check_unpacked(mutated(frame, muts))


@settings(FUZZ, max_examples=200)
@given(frame=st.binary(max_size=64))
@example(frame=HEADER.pack(VERSION, 1, 0, 0, 0, 0, 0))
@example(frame=HEADER.pack(VERSION, 1, 0, 1, 0, 0, 0) + b"\xff")
@example(frame=HEADER.pack(VERSION, 9, 0, 0, 0, 0, 0))
@example(frame=HEADER.pack(VERSION, 1, 7, 0, 0, 0, 0))
def test_unpack_random_frames(frame: bytes) -> None:
    """Random bytes as a frame: an envelope or ProtocolError, nothing else."""
    CASES["frames"] += 1
    check_unpacked(frame)


ROLES = Roles(COORD, PROVIDER, frozenset(PARTIES[3]))
LINK_ENDS = st.sampled_from([*everyone(3), "mallory"])


@settings(FUZZ, max_examples=120)
@given(
    sender=LINK_ENDS,
    receiver=LINK_ENDS,
    frame=st.one_of(packable_frames(), st.binary(max_size=64)),
    muts=st.lists(FRAME_MUTATIONS, max_size=2),
)
def test_carry_frames(sender: str, receiver: str, frame: bytes, muts: list[Mutation]) -> None:
    """``network.carry`` of any frame over any link: ProtocolError into the sender only for
    a link that does not exist; otherwise the frame is delivered (as an envelope the
    receiver may ask for, or a heartbeat) or the receiver's mailbox is poisoned, so that
    its next wait raises ProtocolError. It never raises anything else, into anyone."""
    CASES["carry"] += 1
    frame = mutated(frame, muts)

    async def go() -> None:
        net = Network(everyone(3), timeout=TIMEOUT, roles=ROLES, heartbeats=False)
        try:
            net.carry(sender, receiver, bytearray(frame))
        except ProtocolError as exc:
            assert sender == receiver or "mallory" in (sender, receiver), exc
            return
        except Exception as exc:
            raise AssertionError(f"carry raised {type(exc).__name__}: {exc}") from exc
        assert sender != receiver and "mallory" not in (sender, receiver)
        box = net.endpoints[receiver].mailbox
        left = box.unclaimed()
        if left:
            assert left == [(sender, left[0][1])]
            got = await box.recv(sender, left[0][1], timeout=0.01)
            assert got.frame_bytes == len(frame)
            return
        try:
            await box.recv(sender, "never/asked", timeout=0.01)
        except ProtocolError:
            return  # poisoned
        except ActorTimeout:  # nothing filed: a heartbeat, which only updates the state
            env = unpack_frame(frame, sender, receiver)
            assert env.phase == Phase.HEARTBEAT, env
            assert net.endpoints[receiver]._states.get(sender) == env.control(Heartbeat)

    mock_run(go)


# -- control bodies: decode_control names the field ---------------------------------------

SAMPLE_PARAMS = [
    None,
    Params(d=1000),
    Params(pub=Pub((2,), bytes(16)), left=True),
    Params(dims=(0, 1), keepdim=True, shape=(2, 3), d0=1, d1=0),
]
CONTROL_SAMPLES: dict[type, st.SearchStrategy[Any]] = {}


def _ints(lo: int = 0, hi: int = 50) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(st.integers(lo, hi), max_size=3).map(tuple)


_COMMANDS = st.builds(
    Command,
    kind=st.sampled_from(["mul", "add", "input", "reveal", "barrier", "free", "relu"]),
    op=st.integers(0, 100),
    ins=_ints(),
    outs=_ints(),
    params=st.sampled_from(SAMPLE_PARAMS),
    target=st.sampled_from([None, Recipient(COORD), FromParty("alice", "x"), Folder("ckpt")]),
)
_REQUESTS = st.builds(
    DealerRequest,
    op=st.integers(0, 100),
    kind=st.sampled_from(["mul", "matmul", "relu", "trunc"]),
    shapes=st.lists(_ints(1, 4), min_size=1, max_size=2),
    out=_ints(1, 4),
    d=st.integers(1, 10**6),
)
CONTROL_SAMPLES.update(
    {
        Command: _COMMANDS,
        Batch: st.builds(Batch, floor=st.integers(0, 9), ops=st.lists(_COMMANDS, max_size=3)),
        DealerRequest: _REQUESTS,
        Requests: st.builds(Requests, items=st.lists(_REQUESTS, max_size=3)),
        Reply: st.builds(Reply, depth=st.integers(0, 9), denied=st.none() | st.text(max_size=5)),
        Params: st.sampled_from(SAMPLE_PARAMS[1:]),
        Pub: st.builds(Pub, shape=_ints(0, 3), data=st.binary(max_size=16)),
        Heartbeat: st.builds(
            Heartbeat,
            busy=st.integers(0, 5),
            waiting=st.lists(LINK_ENDS, max_size=2),
            stray=st.lists(LINK_ENDS, max_size=2),
            waited=st.lists(st.floats(0, 10), max_size=2),
        ),
    }
)


def fields_of(value: Any, kind: Any, path: str = "$") -> Iterator[tuple[str, Any, list[Any]]]:
    """Every field of the builtin form ``value`` of a struct of type ``kind`` (recursively,
    items of sequences too): ``(path as msgspec names it, its type, the index path)``."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        for i, f in enumerate(msgspec.structs.fields(kind)):
            key: Any = i if isinstance(value, list) else f.encode_name
            if isinstance(value, list) and i >= len(value):
                continue
            if isinstance(value, dict) and key not in value:
                continue
            sub = f"{path}[{i}]" if isinstance(value, list) else f"{path}.{key}"
            yield sub, f.type, [key]
            for p, t, idx in fields_of(value[key], f.type, sub):
                yield p, t, [key, *idx]
        return
    args = getattr(kind, "__args__", ())
    if value is None or not args:
        return
    if isinstance(value, list) and getattr(kind, "__origin__", None) in (list, tuple):
        for i, item in enumerate(value):
            yield f"{path}[{i}]", args[0], [i]
            for p, t, idx in fields_of(item, args[0], f"{path}[{i}]"):
                yield p, t, [i, *idx]
        return
    for alt in args:  # a union such as Params | None
        if alt is not type(None):
            yield from fields_of(value, alt, path)


def accepts(kind: Any, value: Any) -> bool:
    try:
        msgspec.msgpack.decode(msgspec.msgpack.encode(value), type=kind)
    except msgspec.DecodeError:
        return False
    return True


WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.lists(st.one_of(st.integers(-2, 2), st.text(max_size=2), st.none()), max_size=3),
    st.dictionaries(st.sampled_from(["d", "x", "shape"]), st.integers(-2, 2), max_size=2),
)


def replace_at(value: Any, idx: list[Any], new: Any) -> Any:
    """A copy of the builtin ``value`` with the item at ``idx`` replaced by ``new``."""
    if not idx:
        return new
    head, rest = idx[0], idx[1:]
    if isinstance(value, list):
        out = list(value)
        out[head] = replace_at(out[head], rest, new)
        return out
    return {**value, head: replace_at(value[head], rest, new)}


@st.composite
def wrong_field(draw: st.DrawFn, kind: type) -> tuple[Any, str, Any]:
    """A valid message of ``kind`` in builtin form with one field replaced by a value of a
    type the field refuses: ``(message, path of the field, new value)``."""
    for _ in range(20):
        obj = draw(CONTROL_SAMPLES[kind])
        value = msgspec.msgpack.decode(msgspec.msgpack.encode(obj))
        fields = list(fields_of(value, kind))
        if fields:
            break
    else:  # pragma: no cover - every sample has top-level fields
        raise AssertionError(kind)
    path, ftype, idx = draw(st.sampled_from(fields))
    new = draw(WRONG.filter(lambda v: not accepts(ftype, v)))
    return replace_at(value, idx, new), path, new


def names_field(message: str, path: str) -> bool:
    """msgspec names the field (``- at `$[1][0].d```), or a part inside it; the top level
    is not named."""
    if path == "$":
        return True
    at = message.rpartition(" - at `")[2].rstrip("`")
    return at.startswith(path) and " - at `" in message


@settings(FUZZ, max_examples=40)
@given(data=st.data())
@pytest.mark.parametrize("kind", list(CONTROL_SAMPLES), ids=lambda k: k.__name__)
def test_decode_control_wrong_field(kind: type, data: st.DataObject) -> None:
    """One field of a valid control message replaced by a value of a wrong type:
    ProtocolError naming the struct and the field."""
    CASES["control bodies"] += 1
    value, path, new = data.draw(wrong_field(kind), label="message")
    try:
        decode_control(msgspec.msgpack.encode(value), kind, "fuzz")
    except ProtocolError as exc:
        assert kind.__name__ in str(exc) and names_field(str(exc), path), (path, str(exc))
        return
    raise AssertionError(f"{kind.__name__} accepted {new!r} at {path}")


@settings(FUZZ, max_examples=30)
@given(data=st.data())
@pytest.mark.parametrize("kind", list(CONTROL_SAMPLES), ids=lambda k: k.__name__)
def test_decode_control_random(kind: type, data: st.DataObject) -> None:
    """Random msgpack values, and valid bodies cut, extended or with a byte flipped: a
    struct of ``kind`` (which encodes back to an equivalent body) or ProtocolError."""
    CASES["control bodies"] += 1
    if data.draw(st.booleans(), label="random"):
        body = msgspec.msgpack.encode(data.draw(msgpack_values(), label="value"))
    else:
        body = encode_control(data.draw(CONTROL_SAMPLES[kind], label="message"))
        cut = data.draw(st.integers(0, len(body)), label="cut")
        how = data.draw(st.sampled_from(["cut", "extend", "flip"]), label="how")
        if how == "cut":
            body = body[:cut]
        elif how == "extend":
            body += data.draw(st.binary(min_size=1, max_size=4), label="tail")
        elif body:
            i = cut % len(body)
            body = body[:i] + bytes([body[i] ^ (1 << data.draw(st.integers(0, 7)))]) + body[i + 1 :]
    try:
        obj = decode_control(body, kind, "fuzz")
    except ProtocolError as exc:
        assert kind.__name__ in str(exc), exc
        return
    except Exception as exc:
        raise AssertionError(f"decode_control raised {type(exc).__name__}: {exc}") from exc
    assert isinstance(obj, kind)
    assert decode_control(encode_control(obj), kind, "again") == obj


# -- wrong field types in a running cluster, from the coordinator's endpoint ----------------


@settings(NO_SHRINK, max_examples=15)
@given(data=st.data())
@pytest.mark.parametrize("to", ["party", "provider"])
def test_wrong_field_types_from_the_coordinator(to: str, data: st.DataObject) -> None:
    """A command batch (to a party) or a dealer request batch (to the provider) with one
    field of a wrong type, sent from the coordinator's own endpoint in a running cluster:
    the receiver fails with PartyFailure whose cause is a ProtocolError naming the field,
    within a bound."""
    CASES["command batches"] += 1
    kind = Batch if to == "party" else Requests
    value, path, _ = data.draw(wrong_field(kind), label="batch")
    receiver = data.draw(st.sampled_from(PARTIES[2])) if to == "party" else PROVIDER

    async def go() -> None:
        with trio.fail_after(BOUND), pytest.raises(PartyFailure) as info:
            async with start_cluster(2, timeout=TIMEOUT) as c:
                x = c.share(X)
                await c.flush()
                seq = c._cmd_seq if to == "party" else c._req_seq
                c.network.endpoints[COORD].send_nowait(
                    receiver,
                    f"{'cmd' if to == 'party' else 'req'}/{seq}",
                    Phase.CONTROL,
                    control=msgspec.msgpack.encode(value),
                )
                if to == "party":  # the coordinator's own next batch must not collide
                    c._cmd_seq += 1
                else:
                    c._req_seq += 1
                await (x * x).get()
        err = info.value
        assert err.actor == receiver, describe(err)
        assert isinstance(err.cause, ProtocolError), describe(err)
        assert names_field(str(err.cause), path), (path, str(err.cause))

    mock_run(go)


# =========================================================================================
# Part B: malformed values at the public entry points
# =========================================================================================


def queued(c: Cluster) -> tuple[int, int, int]:
    """What the coordinator has sent or queued for its next checkpoint (commands and dealer
    requests are batched, so a command can be 'sent' before any message leaves)."""
    return (c.stats().messages, len(c._cmds), len(c._reqs))


class Findings:
    """Failures seen while fuzzing inside one cluster, grouped by kind, with the shortest
    example of each (the cluster must keep running, so nothing is raised on the spot)."""

    def __init__(self) -> None:
        self.by_kind: dict[str, str] = {}
        self.count: Counter[str] = Counter()

    def add(self, kind: str, example: str) -> None:
        self.count[kind] += 1
        if kind not in self.by_kind or len(example) < len(self.by_kind[kind]):
            self.by_kind[kind] = example

    @contextlib.contextmanager
    def cluster_errors(self) -> Iterator[None]:
        """A cluster killed by an accepted bad op fails at its next checkpoint; that is a
        consequence of a finding already recorded, so report the findings first."""
        try:
            yield
        except SmpcError as exc:
            if not self.by_kind:
                raise
            self.add(f"cluster then failed: {type(exc).__name__}", str(exc)[:200])

    def report(self) -> str:
        return "\n".join(
            f"[{self.count[k]}x] {k}\n    e.g. {v}" for k, v in sorted(self.by_kind.items())
        )


def short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 120 else r[:117] + "..."


# -- share ---------------------------------------------------------------------------------

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e4, 1e4),
    st.sampled_from([2147483.647, -2147483.647, 2147483.6475, 2147483.648, 1e-4, 5e-4, -0.0]),
)
SCALARS = st.one_of(
    FLOATS,
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.complex_numbers(max_magnitude=10),
    st.none(),
    st.text(max_size=3),
)
TENSOR_DTYPES = [
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
]
SHAPES = st.sampled_from([(), (1,), (3,), (2, 3), (3, 2), (2, 1, 3), (0,), (2, 0), (4,), (2, 1)])


@st.composite
def plain_tensors(draw: st.DrawFn, finite: bool = False) -> torch.Tensor:
    shape = draw(SHAPES)
    dtype = draw(st.sampled_from(TENSOR_DTYPES))
    elems = st.floats(-1e3, 1e3) if finite else FLOATS
    values = draw(st.lists(elems, min_size=math.prod(shape), max_size=math.prod(shape)))
    t = torch.tensor(values, dtype=torch.float64).reshape(shape)
    with np.errstate(all="ignore"):
        return t.to(dtype)


SHARE_VALUES = st.one_of(
    SCALARS,
    plain_tensors(),
    st.lists(FLOATS, max_size=4),
    st.lists(st.lists(FLOATS, max_size=3), max_size=3),  # ragged or not
    st.lists(st.one_of(FLOATS, st.text(max_size=2), st.none()), min_size=1, max_size=3),
    st.builds(np.array, st.lists(FLOATS, min_size=1, max_size=4)),
)
PRECISIONS = st.one_of(
    st.integers(-3, 12), st.sampled_from([2.0, None, "3", True]), st.integers(10, 2000)
)
BASES = st.one_of(st.integers(-2, 17), st.sampled_from([10.0, None, "10", True, 2**40]))


def as_plain(value: Any) -> torch.Tensor | None:
    """torch's own reading of ``value`` as a float64 tensor, or None if torch refuses."""
    try:
        if isinstance(value, torch.Tensor):
            return value.to(torch.float64) if not value.is_complex() else None
        return torch.as_tensor(value, dtype=torch.float64)
    except Exception:
        return None


async def test_share_malformed_values() -> None:
    """``cluster.share`` with NaN, inf, overflow, empty, complex, bool, strings, None,
    ragged and nested lists, numpy arrays, and bad precision/base: a typed error before
    anything is sent, or a share that reveals to the encoded value."""
    findings = Findings()
    accepted: list[tuple[SharedTensor, torch.Tensor, FixedPoint, str]] = []
    with trio.fail_after(120), findings.cluster_errors():
        async with start_cluster(2, seed=7) as c:
            await c.flush()

            @settings(FUZZ, max_examples=350)
            @given(value=SHARE_VALUES, precision=PRECISIONS, base=BASES)
            def run(value: Any, precision: Any, base: Any) -> None:
                CASES["share"] += 1
                example = f"share({short(value)}, precision={precision!r}, base={base!r})"
                before = queued(c)
                try:
                    t = c.share(value, precision=precision, base=base)
                except Exception as exc:
                    if not deliberate(exc):
                        findings.add(f"untyped {type(exc).__name__}: {exc}"[:100], example)
                    elif queued(c) != before:
                        findings.add("typed error after sending", example)
                    return
                plain = as_plain(value)
                # no precision: the base's default (base 10: 3, base 2: 16 bits)
                fp = FixedPoint(base, default_precision(base) if precision is None else precision)
                if plain is None or plain.numel() == 0:
                    findings.add("accepted a value torch cannot read as real", example)
                    return
                if not bool(torch.isfinite(plain).all()) or (
                    plain.numel() and float(plain.abs().max()) > fp.max_value
                ):
                    findings.add("accepted NaN, inf or a value beyond max_value", example)
                    return
                accepted.append((t, plain, fp, example))

            run()
            # Valid values of every kind, whatever the draws: results are always checked.
            gen = torch.Generator().manual_seed(7)
            for i, (base, precision) in enumerate([(10, 3), (2, 16), (10, 0), (7, 2)] * 6):
                fp = FixedPoint(base, precision)
                plain = (torch.rand(3, generator=gen, dtype=torch.float64) * 2 - 1) * min(
                    fp.max_value, 10.0 ** (i % 6)
                )
                t = c.share(plain, precision=precision, base=base)
                accepted.append((t, plain, fp, f"fixed share #{i}"))
            for t, plain, fp, example in accepted:
                got = await t.get()
                want = torch.round(plain * fp.scale) / fp.scale
                tol = 1e-6 * want.abs() + 1e-9
                if got.shape != want.shape or not bool(((got.double() - want).abs() <= tol).all()):
                    findings.add("revealed value differs from the encoded input", example)
    assert len(accepted) > 20, "too few valid values to check the results"
    assert not findings.by_kind, "share() misbehaved:\n" + findings.report()


# -- operations on shared tensors ------------------------------------------------------------

_G = torch.Generator().manual_seed(3)
POOL_SHAPES = {"s": (), "v3": (3,), "m23": (2, 3), "m32": (3, 2), "t213": (2, 1, 3), "v4": (4,)}
POOL = {
    k: q((torch.rand(s, generator=_G, dtype=torch.float64) - 0.5) * 20)
    for k, s in POOL_SHAPES.items()
}
"""Plaintexts of the shared operands (|v| <= 10, already on the fixed-point grid)."""

PUBLIC = st.one_of(
    SCALARS,
    st.floats(-1e3, 1e3),
    st.integers(-5, 5),
    plain_tensors(finite=True),
    plain_tensors(),
    st.builds(np.float64, st.floats(-100, 100)),
    st.builds(np.ones, st.sampled_from([(3,), (2, 3)])),
)
OPERANDS = st.one_of(
    st.tuples(st.just("shared"), st.sampled_from(list(POOL))), st.tuples(st.just("public"), PUBLIC)
)

ARITH = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "matmul": lambda a, b: a @ b,
    "radd": lambda a, b: b + a,
    "rsub": lambda a, b: b - a,
    "rmul": lambda a, b: b * a,
    "rmatmul": lambda a, b: b @ a,
    "div": lambda a, b: a / b,
    "torch.matmul": lambda a, b: torch.matmul(a, b),
    "torch.mul": lambda a, b: torch.mul(a, b),
    "torch.add": lambda a, b: torch.add(a, b),
    "F.linear": lambda a, b: torch.nn.functional.linear(a, b),
}
UNARY = {
    "neg": lambda a, k: -a,
    "pow": lambda a, k: a**k,
    "relu": lambda a, k: torch.relu(a) if isinstance(a, torch.Tensor) else a.relu(),
    "mean": lambda a, k: a.mean(k) if k is not None else a.mean(),
    "exp": lambda a, k: torch.exp(a),
}
POW_ARGS = st.one_of(st.integers(-1, 3), st.sampled_from([2.0, 0.5, True, None, "2"]))


def library_value(op: str, b: Any) -> Any:
    """The public operand's value as the library documents using it, as float64: public
    addends are encoded at the tensor's precision; public factors (mul, matmul) get extra
    fractional digits up to a 2**20 encoding, and division is by the exact number, so for
    those the exact value is the reference (the tolerance covers the rest)."""
    if isinstance(b, bool | str | complex) or b is None:
        return b
    t = (b if isinstance(b, torch.Tensor) else torch.as_tensor(b, dtype=torch.float64)).to(
        torch.float64
    )
    if op in ("add", "radd", "sub", "rsub", "torch.add", "torch.sub"):
        t = torch.round(t * 1000) / 1000
    elif op != "div" and bool(torch.isfinite(t).all()) and not bool((t == torch.round(t)).all()):
        q = public_precision(FixedPoint(10, 3), t)  # the digits the library keeps
        t = torch.round(t * 10**q) / 10**q
    return t if isinstance(b, torch.Tensor | np.ndarray) else float(t)


def same_type_error(exc: Exception, ref_error: Exception | None) -> bool:
    """A TypeError for an argument of the wrong type, which plaintext torch refuses with a
    TypeError too (torch's own argument parser raises it before dispatching to
    ``__torch_function__``): torch's behaviour, not a crash."""
    return type(exc) is TypeError and type(ref_error) is TypeError


def tolerance(op: str, want: torch.Tensor, a: torch.Tensor, k: Any = None) -> torch.Tensor:
    ulp = 1e-3
    extra = 0.0
    if op == "pow" and k == 3:
        extra = 2 * float(a.abs().max())  # (a^2 +- 1 ulp) * a +- 1 ulp
    return (2 + extra) * ulp + 1e-6 * want.abs()


async def test_arithmetic_with_malformed_operands() -> None:
    """``+ - * @ /``, ``**``, neg, relu, mean and torch functions on SharedTensors with
    shared or public operands: NaN/inf/huge/tiny scalars, complex, bool, str, None, numpy,
    tensors of every dtype and of mismatched shapes. A typed error before anything is sent
    or queued, or a result equal to plaintext torch within the fixed-point tolerance."""
    findings = Findings()
    checks: list[tuple[SharedTensor, torch.Tensor, torch.Tensor, str, str]] = []
    poisoned: list[str] = []  # accepted ops the parties may fail on: no reveals then
    with trio.fail_after(120), findings.cluster_errors():
        async with start_cluster(2, seed=8) as c:
            shared = {k: c.share(v) for k, v in POOL.items()}
            await c.flush()

            @settings(FUZZ, max_examples=300)
            @given(
                op=st.sampled_from([*ARITH, *UNARY]),
                a=st.sampled_from(list(POOL)),
                operand=OPERANDS,
                k=st.one_of(POW_ARGS.filter(lambda v: not isinstance(v, bool)), st.integers(-3, 3)),
            )
            def run(op: str, a: str, operand: tuple[str, Any], k: Any) -> None:
                CASES["arithmetic"] += 1
                kind, b = operand
                if op == "pow":
                    k = k if not isinstance(k, int) or isinstance(k, bool) else max(-1, min(k, 3))
                if op in UNARY:
                    example = f"{op}(x{tuple(POOL[a].shape)}, {k!r})"
                    lib = lambda: UNARY[op](shared[a], k)  # noqa: E731
                    ref = lambda: UNARY[op](POOL[a], k)  # noqa: E731
                elif kind == "shared":
                    example = f"{op}(x{tuple(POOL[a].shape)}, shared y{tuple(POOL[b].shape)})"
                    lib = lambda: ARITH[op](shared[a], shared[b])  # noqa: E731
                    ref = lambda: ARITH[op](POOL[a], POOL[b])  # noqa: E731
                else:
                    example = f"{op}(x{tuple(POOL[a].shape)}, {short(b)})"
                    lib = lambda: ARITH[op](shared[a], b)  # noqa: E731

                    def ref() -> Any:
                        # the operand as given decides whether torch accepts it at all
                        # (a real tensor as float64: torch's refusal to mix dtypes in
                        # F.linear or matmul is no reason for the library to refuse)
                        real = isinstance(b, torch.Tensor) and not b.is_complex()
                        ARITH[op](POOL[a], b.to(torch.float64) if real else b)
                        return ARITH[op](POOL[a], library_value(op, b))

                ref_error: Exception | None = None
                try:
                    with np.errstate(all="ignore"), warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # torch/numpy deprecations
                        want = ref()
                    want = want if isinstance(want, torch.Tensor) else None
                except Exception as exc:
                    want, ref_error = None, exc
                before = queued(c)
                try:
                    got = lib()
                except Exception as exc:
                    if not (deliberate(exc) or same_type_error(exc, ref_error)):
                        findings.add(f"untyped {type(exc).__name__}: {exc}"[:100], example)
                    elif queued(c) != before:
                        findings.add("typed error raised after a command was queued", example)
                    return
                if not isinstance(got, SharedTensor):
                    findings.add(f"returned a {type(got).__name__}, not a SharedTensor", example)
                    return
                if want is None:
                    findings.add("accepted an operation that plaintext torch refuses", example)
                    poisoned.append(example)
                    return
                if tuple(got.shape) != tuple(want.shape):
                    findings.add("result shape differs from torch", example)
                    return
                if want.is_complex() or not bool(torch.isfinite(want).all()):
                    findings.add("accepted an operation whose plaintext is not finite", example)
                    return
                want = want.to(torch.float64)
                checks.append((got, want, tolerance(op, want, POOL[a], k), op, example))

            run()
            if not poisoned:  # an accepted bad op would have killed the parties
                for got, want, tol, op, example in checks:
                    try:
                        value = (await got.get()).to(torch.float64)
                    except ValueOutOfRange:
                        # a typed refusal, right when the true result is past the headroom
                        if float(want.abs().max()) < got.fp.with_precision(got.prec).headroom:
                            findings.add(f"refused a result in range ({op})", example)
                        continue
                    err = (value - want).abs()
                    if not bool((err <= tol).all()):
                        worst = int(torch.argmax(err - tol).item()) if err.dim() else 0
                        findings.add(
                            f"wrong result ({op})",
                            f"{example}: got {value.reshape(-1)[worst].item():.6g}, "
                            f"torch {want.reshape(-1)[worst].item():.6g}",
                        )
    assert len(checks) > 20, "too few valid operations to check the results"
    assert not findings.by_kind, "operations misbehaved:\n" + findings.report()


# -- shape operations ------------------------------------------------------------------------

DIMS = st.one_of(st.none(), st.integers(-5, 5), st.lists(st.integers(-4, 4), max_size=3))
TARGETS = st.lists(st.integers(-3, 7), max_size=4).map(tuple)
SHAPE_OPS = {
    "reshape": (TARGETS, lambda a, v: a.reshape(v)),
    "view": (TARGETS, lambda a, v: a.view(v)),
    "expand": (TARGETS, lambda a, v: a.expand(v)),
    "transpose": (st.tuples(st.integers(-4, 4), st.integers(-4, 4)), lambda a, v: a.transpose(*v)),
    "t": (st.none(), lambda a, v: a.t()),
    "T": (st.none(), lambda a, v: a.T),
    "sum": (
        st.tuples(DIMS, st.booleans()),
        lambda a, v: a.sum(v[0], keepdim=v[1]) if v[0] is not None else a.sum(),
    ),
    "torch.sum": (DIMS, lambda a, v: torch.sum(a, v) if v is not None else torch.sum(a)),
    "mean": (
        st.tuples(DIMS, st.booleans()),
        lambda a, v: a.mean(v[0], keepdim=v[1]) if v[0] is not None else a.mean(),
    ),
    "torch.transpose": (
        st.tuples(st.integers(-4, 4), st.integers(-4, 4)),
        lambda a, v: torch.transpose(a, *v),
    ),
    "torch.reshape": (TARGETS, lambda a, v: torch.reshape(a, v)),
}


async def test_shape_operations_with_bad_arguments() -> None:
    """reshape/view/expand to bad shapes, transpose of bad dims, sum and mean over bad or
    repeated dims, on every operand rank: a typed error before anything is queued, or the
    shape and values of plaintext torch."""
    findings = Findings()
    checks: list[tuple[SharedTensor, torch.Tensor, str, str]] = []
    poisoned: list[str] = []
    with trio.fail_after(120), findings.cluster_errors():
        async with start_cluster(2, seed=9) as c:
            shared = {k: c.share(v) for k, v in POOL.items()}
            await c.flush()

            @settings(FUZZ, max_examples=300)
            @given(
                op=st.sampled_from(list(SHAPE_OPS)), a=st.sampled_from(list(POOL)), data=st.data()
            )
            def run(op: str, a: str, data: st.DataObject) -> None:
                CASES["shape ops"] += 1
                strategy, fn = SHAPE_OPS[op]
                arg = data.draw(strategy, label="argument")
                example = f"{op}(x{tuple(POOL[a].shape)}, {arg!r})"
                ref_error: Exception | None = None
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # x.T on non-2-d tensors
                        want = fn(POOL[a], arg).to(torch.float64)
                except Exception as exc:
                    want, ref_error = None, exc
                before = queued(c)
                try:
                    got = fn(shared[a], arg)
                except Exception as exc:
                    if not (deliberate(exc) or same_type_error(exc, ref_error)):
                        findings.add(f"untyped {type(exc).__name__}: {exc}"[:100], example)
                    elif queued(c) != before:
                        findings.add("typed error raised after a command was queued", example)
                    return
                if want is None:
                    findings.add(
                        f"accepted what torch refuses ({type(ref_error).__name__}: "
                        f"{str(ref_error)[:60]})",
                        example,
                    )
                    poisoned.append(example)
                    return
                if tuple(got.shape) != tuple(want.shape):
                    findings.add("result shape differs from torch", example)
                    poisoned.append(example)
                    return
                checks.append((got, want, op, example))

            run()
            if not poisoned:
                for got, want, op, example in checks:
                    value = (await got.get()).to(torch.float64)
                    tol = 2e-3 + 1e-6 * want.abs()
                    if value.shape != want.shape or not bool(((value - want).abs() <= tol).all()):
                        findings.add(f"wrong result ({op})", f"{example}: {value} vs {want}")
    assert len(checks) > 20, "too few valid operations to check the results"
    assert not findings.by_kind, "shape operations misbehaved:\n" + findings.report()


# -- fixed point ---------------------------------------------------------------------------


@settings(FUZZ, max_examples=150)
@given(
    base=st.one_of(
        st.integers(-3, 40),
        st.integers(2**20, 2**40),
        st.sampled_from([10.0, "10", None, True, np.int64(10)]),
    ),
    precision=st.one_of(
        st.integers(-3, 40),
        st.integers(100, 3000),
        st.sampled_from([3.0, "3", None, False, np.int64(3)]),
    ),
    values=st.lists(FLOATS, min_size=1, max_size=6),
)
def test_fixed_point_arguments(base: Any, precision: Any, values: list[float]) -> None:
    """``FixedPoint(base, precision)``: EncodingError for a bad base or precision (a
    ValueError), or a usable encoding: scale below 2**31, encode refuses NaN/inf/out of
    range with EncodingError and round-trips every value it accepts to half an ulp."""
    CASES["fixed point"] += 1
    try:
        fp = FixedPoint(base, precision)
    except Exception as exc:
        assert deliberate(exc), describe(exc)
        return
    assert isinstance(fp.base, int) and fp.base >= 2, fp
    assert isinstance(fp.precision, int) and fp.precision >= 0, fp
    assert 1 <= fp.scale < 2**31
    t = torch.tensor(values, dtype=torch.float64)
    try:
        e = fp.encode(t)
    except Exception as exc:
        assert deliberate(exc), describe(exc)
        ok = bool(torch.isfinite(t).all()) and float(t.abs().max()) * fp.scale < 2**31 - 1
        assert not ok, f"refused in-range values {values} at {fp}"
        return
    assert e.dtype == torch.int64 and bool((e.abs() < 2**31).all())
    back = fp.decode(e).to(torch.float64)
    assert bool(((back - t).abs() <= 0.5 / fp.scale + 1e-6 * t.abs()).all()), (values, back)


def _fixed_point_in_child(precision: int) -> None:
    with contextlib.suppress(Exception):
        FixedPoint(10, precision)


@pytest.mark.parametrize("precision", [10**9])
def test_fixed_point_huge_precision_is_refused_at_once(precision: int) -> None:
    """A precision far too large must be refused at once, not after computing
    ``10**precision`` (minutes of CPU, or memory exhaustion: a hang). Run in a forked
    child so that a hang fails this test instead of the whole run."""
    CASES["fixed point"] += 1
    child = multiprocessing.get_context("fork").Process(
        target=_fixed_point_in_child, args=(precision,), daemon=True
    )
    child.start()
    child.join(2.0)
    alive = child.is_alive()
    if alive:
        child.kill()
        child.join()
    assert not alive, f"FixedPoint(10, {precision}) did not return within 2 s"


# -- cluster, network profile, chaos, optimiser --------------------------------------------

NAMES = st.sampled_from(["alice", "bob", "carol", "dave", PROVIDER, COORD, "", "a/b", "ü"])
ODD_NAMES = st.one_of(NAMES, st.sampled_from([None, 1, b"bob"]))
TIMEOUTS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 100), st.booleans()
)


@settings(NO_SHRINK, max_examples=60)
@given(
    parties=st.lists(ODD_NAMES, max_size=4),
    provider=ODD_NAMES,
    coordinator=ODD_NAMES,
    timeout=TIMEOUTS,
    protocols=st.sampled_from([None, "default", "carry", "fss", "fss-exact", "nope", "", 3]),
)
def test_cluster_start_arguments(
    parties: list[Any], provider: Any, coordinator: Any, timeout: Any, protocols: Any
) -> None:
    """``Cluster.start`` refuses fewer than 2 parties, duplicate, empty or non-string
    names, an unknown protocol suite and a timeout that is not a positive finite number, with a ValueError before any
    actor starts; any configuration it accepts computes correctly."""
    CASES["cluster start"] += 1
    everyone = [*parties, provider, coordinator]
    valid = (
        len(parties) >= 2
        and all(isinstance(n, str) and n for n in everyone)
        and len(set(everyone)) == len(everyone)
        and isinstance(timeout, int | float)
        and timeout > 0
        and math.isfinite(timeout)
        and protocols in (None, "default", "carry", "fss", "fss-exact")
    )

    async def go() -> None:
        with trio.fail_after(BOUND):
            async with Cluster.start(
                parties,
                provider=provider,
                coordinator=coordinator,
                timeout=timeout,
                protocols=protocols,
            ) as c:
                x = c.share(torch.tensor([1.5, -2.0]))
                got = await (x * x).get()
                assert got.tolist() == [2.25, 4.0]

    try:
        trio.run(go, clock=trio.testing.MockClock(autojump_threshold=0))
    except Exception as exc:
        assert deliberate(exc), describe(exc)
        assert not valid, f"refused a valid configuration: {describe(exc)}"
        return
    assert valid, (
        f"accepted parties={parties} provider={provider!r} coordinator={coordinator!r} "
        f"timeout={timeout!r} protocols={protocols!r}"
    )


@settings(NO_SHRINK, max_examples=30)
@given(
    latency=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 0.5), st.integers(-3, 3)
    ),
    bandwidth=st.one_of(
        st.none(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(1e3, 1e9),
        st.integers(-2, 2),
    ),
)
def test_network_profile_values(latency: Any, bandwidth: Any) -> None:
    """NetworkProfile refuses negative, NaN or infinite latency and a bandwidth that is not
    > 0 with a ValueError; a profile it accepts gives a cluster that computes correctly (on
    the mock clock, so long latencies cost no real time)."""
    CASES["network profile"] += 1
    try:
        prof = NetworkProfile(latency=latency, bandwidth=bandwidth)
    except Exception as exc:
        assert deliberate(exc), describe(exc)
        return
    assert math.isfinite(prof.latency) and prof.latency >= 0, prof
    assert prof.bandwidth is None or prof.bandwidth > 0, prof
    assert prof.transmit_seconds(10**6) >= 0  # inf for an absurdly small bandwidth

    async def go() -> None:
        with trio.fail_after(10**6):
            async with start_cluster(2, network=prof, timeout=10**5) as c:
                x = c.share(torch.tensor([1.5, -2.0]))
                assert (await (x * x).relu().get()).tolist() == [2.25, 4.0]

    if prof.latency < 1e3 and (prof.bandwidth is None or prof.bandwidth > 1):
        trio.run(go, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(NO_SHRINK, max_examples=60)
@given(
    seed=st.integers(-5, 2**70),
    crash=st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from(["alice", "bob", PROVIDER, COORD, "nobody"]),
            st.one_of(st.integers(-2, 12), st.sampled_from([1.5, float("nan"), float("inf")])),
        ),
    ),
    max_delay=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 0.01)),
)
def test_chaos_values(seed: int, crash: Any, max_delay: float) -> None:
    """Chaos refuses a negative, NaN or infinite max_delay and a crash index below 1 with
    a ValueError; a Chaos it accepts either leaves results bit-exact or ends the run with
    PartyFailure naming the crashed actor (cause InjectedCrash), within a bound."""
    CASES["chaos"] += 1
    try:
        chaos = Chaos(seed=seed, crash=crash, max_delay=max_delay)
    except Exception as exc:
        assert deliberate(exc), describe(exc)
        return
    assert math.isfinite(chaos.max_delay) and chaos.max_delay >= 0

    async def go() -> None:
        with trio.fail_after(10**6):
            async with start_cluster(2, chaos=chaos, timeout=10**5) as c:
                x = c.share(torch.tensor([1.5, -2.0]))
                assert (await (x * x).get()).tolist() == [2.25, 4.0]

    if chaos.max_delay > 1e3:
        return
    try:
        trio.run(go, clock=trio.testing.MockClock(autojump_threshold=0))
    except PartyFailure as exc:
        assert crash is not None and exc.actor == crash[0], describe(exc)
        assert isinstance(exc.cause, InjectedCrash), describe(exc)
    except InjectedCrash:
        # the coordinator is the caller: its own crash reaches the caller as it is
        assert crash is not None and crash[0] == COORD


LRS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(1e-4, 10),
    st.integers(-2, 5),
    st.sampled_from([True, None, "0.1", 1j, 0.0]),
)


async def test_sgd_arguments() -> None:
    """``SGD`` refuses a learning rate, momentum or weight decay that is not a finite
    number >= 0 (lr > 0) with a ValueError; with values it accepts, one step equals
    plaintext torch SGD (lr and weight decay are public fixed-point values, as documented),
    or raises a typed error before queuing anything."""
    findings = Findings()
    checks: list[tuple[SharedTensor, torch.Tensor, str]] = []
    p0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    with trio.fail_after(120), findings.cluster_errors():
        async with start_cluster(2, seed=10) as c:

            @settings(FUZZ, max_examples=150)
            @given(lr=LRS, momentum=LRS, weight_decay=LRS)
            def run(lr: Any, momentum: Any, weight_decay: Any) -> None:
                CASES["sgd"] += 1
                example = f"SGD(lr={lr!r}, momentum={momentum!r}, weight_decay={weight_decay!r})"
                p = c.share(p0, requires_grad=True)
                (p * p).sum().backward()  # grad = 2 p
                try:
                    opt = SGD([p], lr=lr, momentum=momentum, weight_decay=weight_decay)
                except Exception as exc:
                    if not deliberate(exc):
                        findings.add(f"untyped {type(exc).__name__}", example)
                    return
                for name, v in (("lr", lr), ("momentum", momentum), ("wd", weight_decay)):
                    if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                        findings.add(f"accepted a bad {name}", example)
                        return
                before = queued(c)
                try:
                    opt.step()
                except Exception as exc:
                    if not deliberate(exc):
                        findings.add(f"untyped {type(exc).__name__} in step()", example)
                    elif queued(c) != before:
                        findings.add("step() raised after queuing part of the update", example)
                    return

                # public factors keep the digits public_precision gives them
                def digits(v: float) -> float:
                    q = public_precision(FixedPoint(10, 3), torch.tensor(float(v)))
                    return round(v * 10**q) / 10**q

                ql, qw = digits(lr), digits(weight_decay)
                want = p0 - ql * (2 * p0 + qw * p0)
                tol = 1e-3 * (3 + 2 * abs(ql)) + 1e-6 * want.abs()
                checks.append((p, want, tol, example))

            run()
            for p, want, tol, example in checks:
                got = (await p.get()).to(torch.float64)
                if not bool(((got - want).abs() <= tol).all()):
                    findings.add("wrong result", f"{example}: {got.tolist()} vs {want.tolist()}")
    assert len(checks) > 10
    assert not findings.by_kind, "SGD misbehaved:\n" + findings.report()


# -- the runtime: submit and reveal ----------------------------------------------------------

SUBMIT_KINDS = {  # kind: (operands, result shapes) of a well-formed call
    "add": (("x", "y"), [(2, 3)]),
    "sub": (("x", "y"), [(2, 3)]),
    "neg": (("x",), [(2, 3)]),
    "mul": (("x", "y"), [(2, 3)]),
    "square": (("x",), [(2, 3)]),
    "matmul": (("x", "w"), [(2, 2)]),
    "relu": (("x",), [(2, 3), (2, 3)]),
    "drelu": (("x",), [(2, 3)]),
    "trunc": (("x",), [(2, 3)]),
}
TRUE_SHAPES = {"x": (2, 3), "y": (2, 3), "w": (3, 2)}
BAD_IDS = st.sampled_from([-1, 2**63, 2**70, 1.5, "1", None, b"1", 10**6])
BAD_SHAPES = st.sampled_from([("a",), (-1, 3), 2.5, None, "23", (2**64,), (2, 3.0), [[2]]])
BAD_PARAMS = st.sampled_from(
    [
        "p",
        {"d": 1},
        Params(d=0),
        Params(d=-5),
        Params(d="x"),  # type: ignore[arg-type]
        Params(d=2**70),
        Params(keep=-1),
        Params(keep=2**20 + 1),
        Params(scale=0),
        Params(dims=("a",)),  # type: ignore[arg-type]
        Params(pub=Pub((2,), "x")),  # type: ignore[arg-type]
    ]
)


@st.composite
def submit_calls(draw: st.DrawFn) -> tuple[Any, list[Any], list[Any], list[Any], Any, bool]:
    """``(kind, inputs, shapes, out, params, well_formed)``: a well-formed call with zero
    or more of its arguments replaced by malformed ones."""
    kind: Any = draw(st.sampled_from(list(SUBMIT_KINDS)))
    names, out = SUBMIT_KINDS[kind]
    inputs: list[Any] = list(names)
    shapes: list[Any] = [TRUE_SHAPES[n] for n in names]
    outs: list[Any] = list(out)
    params: Any = Params(d=1000) if kind in ("mul", "square", "matmul", "trunc") else None
    well_formed = True
    for what in draw(st.sets(st.sampled_from(["kind", "id", "shape", "out", "params", "count"]))):
        well_formed = False
        if what == "kind":
            kind = draw(st.sampled_from(["nope", "", 3, None, ["add"], "input", "reveal"]))
        elif what == "id":
            inputs[draw(st.integers(0, len(inputs) - 1))] = draw(BAD_IDS)
        elif what == "shape":
            shapes[draw(st.integers(0, len(shapes) - 1))] = draw(BAD_SHAPES)
        elif what == "out":
            outs[draw(st.integers(0, len(outs) - 1))] = draw(BAD_SHAPES)
        elif what == "params":
            params = draw(BAD_PARAMS)
        else:
            inputs, shapes = [*inputs, "x"], [*shapes, (2, 3)]
    return kind, inputs, shapes, outs, params, well_formed


@settings(NO_SHRINK, max_examples=60)
@given(call=submit_calls())
@example(call=("add", [2**70, "y"], [(2, 3), (2, 3)], [(2, 3)], None, False))
@example(call=("add", ["x", "y"], [("a", 3), (2, 3)], [(2, 3)], None, False))
@example(call=("add", ["x", "y"], [(2, 3), (2, 3)], [(2, 3)], "p", False))
@example(call=("add", [1.5, "y"], [(2, 3), (2, 3)], [(2, 3)], None, False))
def test_submit_malformed_arguments(
    call: tuple[Any, list[Any], list[Any], list[Any], Any, bool],
) -> None:
    """``Cluster.submit`` (the runtime's entry point): a malformed kind, tensor id, shape,
    params or count raises a typed error before anything is queued; a call it accepts
    runs to a typed outcome: the right value (add, sub, neg are exact in the ring), or a
    PartyFailure with an SmpcError cause (an id the parties do not hold)."""
    CASES["submit"] += 1
    kind, inputs, shapes, outs, params, well_formed = call
    known = {"x": X, "y": Y, "w": W}

    async def go() -> None:
        with trio.fail_after(BOUND):
            async with start_cluster(2, timeout=TIMEOUT) as c:
                handles = {k: c.share(v) for k, v in known.items()}
                await c.flush()
                ids = [handles[i].tid if isinstance(i, str) and i in handles else i for i in inputs]
                before = queued(c)
                try:
                    tids = c.submit(kind, ids, shapes, outs, params)
                except Exception as exc:
                    assert deliberate(exc), describe(exc)
                    assert queued(c) == before, "typed error raised after queuing"
                    assert not well_formed, f"refused a well-formed call: {describe(exc)}"
                    return
                got = [await c.reveal(t, s) for t, s in zip(tids, outs, strict=True)]
                if kind in ("add", "sub", "neg"):
                    enc = {k: FixedPoint(10, 3).encode(v) for k, v in known.items()}
                    want = {
                        "add": lambda: enc["x"] + enc["y"],
                        "sub": lambda: enc["x"] - enc["y"],
                        "neg": lambda: -enc["x"],
                    }[kind]()
                    assert torch.equal(got[0], want), (got[0], want)

    try:
        mock_run(go)
    except PartyFailure as exc:
        assert isinstance(exc.cause, SmpcError), describe(exc)
        assert not well_formed, describe(exc)


@settings(NO_SHRINK, max_examples=40)
@given(
    tid=st.one_of(st.just("x"), BAD_IDS),
    shape=st.one_of(st.just((2, 3)), st.just((3, 2)), BAD_SHAPES),
    to=st.sampled_from([None, COORD, "alice", PROVIDER, "mallory", 3, ""]),
)
def test_reveal_malformed_arguments(tid: Any, shape: Any, to: Any) -> None:
    """``Cluster.reveal``: a malformed id or shape raises a typed error before anything is
    queued, a recipient other than the owner AccessDenied; an id the parties do not hold
    ends with PartyFailure (UnknownTensorError), a wrong shape with ProtocolError; the
    right call reveals the right value."""
    CASES["reveal"] += 1

    async def go() -> None:
        with trio.fail_after(BOUND):
            async with start_cluster(2, timeout=TIMEOUT) as c:
                x = c.share(X)
                await c.flush()
                before = queued(c)
                try:
                    got = await c.reveal(x.tid if tid == "x" else tid, shape, to=to)
                except (PartyFailure, ProtocolError):
                    raise
                except Exception as exc:
                    assert deliberate(exc), describe(exc)
                    assert queued(c) == before, "typed error raised after queuing"
                    return
                assert (tid, tuple(shape), to in (None, COORD)) == ("x", (2, 3), True)
                assert torch.equal(got, FixedPoint(10, 3).encode(X))

    try:
        mock_run(go)
    except PartyFailure as exc:
        assert tid != "x" and isinstance(exc.cause, SmpcError), describe(exc)
    except ProtocolError as exc:
        assert tid == "x" and tuple(shape) != (2, 3), describe(exc)


# -- the count -----------------------------------------------------------------------------

CONTRIBUTORS = {
    "corrupted messages",
    "corrupted key setup",
    "decode_tensors",
    "mailbox",
    "share",
    "arithmetic",
    "shape ops",
    "fixed point",
    "cluster start",
    "network profile",
    "chaos",
    "sgd",
    "frames",
    "carry",
    "control bodies",
    "command batches",
    "submit",
    "reveal",
}


def test_zz_generated_case_count() -> None:
    """Runs last (file order): how many cases the fuzz tests generated."""
    total = sum(CASES.values())
    print(
        f"\nfuzz cases generated: {total} "
        + ", ".join(f"{k} {v}" for k, v in sorted(CASES.items()))
    )
    if not set(CASES) >= CONTRIBUTORS:
        pytest.skip(f"only part of the file ran ({sorted(set(CASES))})")
    assert total >= 1000, CASES
