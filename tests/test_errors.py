"""Errors: refused inputs and shapes (nothing sent), failing, misbehaving and silent actors
(a typed error naming the actor, within a bounded time), unsupported operations."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
import trio
import trio.testing

from actors import Envelope, Phase
from actors.codec import encode_tensors
from protocols.errors import (
    AccessDenied,
    ActorTimeout,
    EncodingError,
    PartyFailure,
    ProtocolError,
    ShapeError,
    UnknownTensorError,
    UnsupportedOperation,
)
from protocols.suite import DEFAULT, Suite
from training import Cluster
from training.testing import PARTIES, PROVIDER, Tap, start_cluster

BOUND = 5.0  # seconds within which every failure must reach the caller


def ring(*shape: int) -> tuple[bytes, int]:
    return encode_tensors([torch.zeros(shape, dtype=torch.int64)])


# -- refused before anything is sent -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (float("nan"), "NaN"),
        (float("inf"), "infinite"),
        (float("-inf"), "infinite"),
        (3e6, "safe fixed-point range"),
        (-2147483.648, "safe fixed-point range"),
    ],
)
async def test_share_refuses_bad_values_and_sends_nothing(value: float, match: str) -> None:
    async with start_cluster(2, seed=1) as c:
        tap = Tap(c)
        data = torch.tensor([1.0, value, 2.0], dtype=torch.float64)
        with pytest.raises(EncodingError, match=match):
            c.share(data)
        await c.flush()
        assert tap.commands() == ["barrier"]
        assert not [e for e in tap.envelopes if e.phase == Phase.INPUT]
        # the cluster is still usable
        x = c.share(torch.tensor([1.5]))
        assert (await x.get()).tolist() == [1.5]


async def test_share_refuses_empty_tensor() -> None:
    async with start_cluster(2, seed=1) as c:
        with pytest.raises(ShapeError, match="empty"):
            c.share(torch.zeros(0, 3))


@pytest.mark.parametrize(
    ("op", "a", "b"),
    [
        ("add", (3, 4), (2, 4)),
        ("sub", (3, 4), (4, 3)),
        ("mul", (2, 3), (3, 2)),
        ("matmul", (3, 4), (3, 4)),
        ("matmul", (2, 5), (4, 2)),
    ],
)
async def test_shape_mismatch_raises_before_anything_is_sent(
    op: str, a: tuple[int, ...], b: tuple[int, ...]
) -> None:
    fns: dict[str, Callable[[Any, Any], Any]] = {
        "add": lambda x, y: x + y,
        "sub": lambda x, y: x - y,
        "mul": lambda x, y: x * y,
        "matmul": lambda x, y: x @ y,
    }
    async with start_cluster(2, seed=1) as c:
        x, y = c.share(torch.ones(a)), c.share(torch.ones(b))
        await c.flush()
        tap = Tap(c)
        before = c.stats()
        with pytest.raises(ShapeError, match=op) as info:
            fns[op](x, y)
        assert str(a) in str(info.value) and str(b) in str(info.value)
        assert c.stats() == before  # not even queued for the next checkpoint
        await c.flush()
        assert tap.commands() == ["barrier"]
        assert not [e for e in tap.envelopes if e.receiver == PROVIDER]


# -- failures at the parties ---------------------------------------------------------------


async def test_unknown_tensor_id_is_a_named_party_failure() -> None:
    with trio.fail_after(BOUND), pytest.raises(PartyFailure) as info:
        async with start_cluster(2, seed=1) as c:
            x = c.share(torch.ones(2))
            c.submit("add", [9999, x.tid], [(2,), (2,)], [(2,)])
            await c.flush()
    err = info.value
    assert err.actor in PARTIES[2]
    assert isinstance(err.cause, UnknownTensorError)
    assert repr(err.actor) in str(err) and "9999" in str(err)


class Injector(Tap):
    """Passes every envelope on; when ``trigger`` matches one (the first time), first
    sends the envelopes ``make(env)`` returns, as a misbehaving actor would."""

    def __init__(
        self,
        cluster: Cluster,
        trigger: Callable[[Envelope], bool],
        make: Callable[[Envelope], list[Envelope]],
    ) -> None:
        super().__init__(cluster)
        self._net = cluster.network
        self._trigger, self._make, self._fired = trigger, make, False

    def __call__(self, env: Envelope) -> Envelope | None:
        if not self._fired and self._trigger(env):
            self._fired = True
            for extra in self._make(env):
                # sent from the misbehaving actor's own endpoint: the link vouches for it
                self._net.endpoints[extra.sender].send_nowait(
                    extra.receiver, extra.tag, extra.phase, extra.depth, tensors=extra.tensors()
                )
        return super().__call__(env)


def alice_to_bob_online(env: Envelope) -> bool:
    return env.sender == "alice" and env.receiver == "bob" and env.phase == Phase.ONLINE


def same_op(env: Envelope, sender: str, step: str, body: tuple[bytes, int]) -> Envelope:
    op = env.tag.split("/")[0]
    return Envelope(sender, "bob", f"{op}/{step}", Phase.ONLINE, env.depth, body[0], body[1])


INJECTIONS: dict[str, Callable[[Envelope], list[Envelope]]] = {
    "unknown step in a running op": lambda e: [same_op(e, "alice", "bogus", ring(2))],
    "provider sends an online step": lambda e: [same_op(e, PROVIDER, "mul0", ring(2))],
    "coordinator sends an online step": lambda e: [same_op(e, "coordinator", "mul0", ring(2))],
    "duplicate": lambda e: [same_op(e, "alice", "mul0", encode_tensors(e.tensors()))],
}


@pytest.mark.parametrize("case", list(INJECTIONS))
async def test_unexpected_message_in_running_op(case: str) -> None:
    with trio.fail_after(BOUND), pytest.raises(PartyFailure) as info:
        async with start_cluster(2, seed=1, timeout=BOUND) as c:
            x = c.share(torch.ones(2))
            await c.flush()
            Injector(c, alice_to_bob_online, INJECTIONS[case])
            x * x
            await c.flush()
    assert info.value.actor == "bob"
    assert isinstance(info.value.cause, ProtocolError)
    assert "bob" in str(info.value)


def reshaped(env: Envelope, make: Callable[[Envelope], Envelope]) -> Envelope:
    return make(env) if alice_to_bob_online(env) else env


TAMPER: dict[str, tuple[Callable[[Envelope], Envelope], str]] = {
    "wrong size": (
        lambda e: Envelope(e.sender, e.receiver, e.tag, e.phase, e.depth, *ring(3)),
        "expected",
    ),
    "wrong dtype": (
        lambda e: Envelope(
            e.sender,
            e.receiver,
            e.tag,
            e.phase,
            e.depth,
            *encode_tensors([torch.zeros(2, dtype=torch.bool)] * 2),
        ),
        "expected",
    ),
    "wrong phase": (
        lambda e: Envelope(e.sender, e.receiver, e.tag, Phase.OFFLINE, 0, e.body, e.payload_bytes),
        "not an online message",
    ),
    "garbled body": (
        lambda e: Envelope(e.sender, e.receiver, e.tag, e.phase, e.depth, b"\x09\x01", 2),
        "malformed",
    ),
}


@pytest.mark.parametrize("case", list(TAMPER))
async def test_tampered_message_is_a_protocol_error(case: str) -> None:
    make, match = TAMPER[case]
    with trio.fail_after(BOUND), pytest.raises(PartyFailure, match=match) as info:
        async with start_cluster(2, seed=1, timeout=BOUND) as c:
            x = c.share(torch.ones(2))
            await c.flush()
            c.network.observe(lambda env: reshaped(env, make))
            x * x
            await c.flush()
    assert info.value.actor == "bob"
    assert isinstance(info.value.cause, ProtocolError)


@pytest.mark.parametrize(
    ("sender", "tag"),
    [
        ("alice", "0/mul0"),  # an operation that has already finished
        ("alice", "nonsense"),  # a tag that names no operation at all
        ("alice", "99999/mul0"),  # an operation that is never issued
        ("james", "1/mul0"),  # the provider, for a finished operation
    ],
)
async def test_stray_message_is_a_protocol_error(sender: str, tag: str) -> None:
    """A message nobody will ever ask for must not be ignored silently: the cluster fails
    with a ProtocolError naming the receiver, at the latest when the block ends."""
    with trio.fail_after(BOUND), pytest.raises(PartyFailure) as info:
        async with start_cluster(2, seed=1, timeout=BOUND) as c:
            x = c.share(torch.ones(2))
            await c.flush()
            c.network.endpoints[sender].send_nowait(
                "bob", tag, Phase.ONLINE, 1, tensors=[torch.zeros(2, dtype=torch.int64)]
            )
            y = x * x
            await y.get()
            await c.flush()
    assert info.value.actor == "bob"
    assert isinstance(info.value.cause, ProtocolError)
    assert tag in str(info.value)


async def test_message_from_unknown_actor_is_refused_by_the_network() -> None:
    async with start_cluster(2, seed=1) as c:
        with pytest.raises(ProtocolError, match="mallory"):
            c.network.carry("mallory", "bob", bytearray(40))
        assert "mallory" not in c.network.endpoints


def with_kind(kind: str, wrap: Callable[[Any], Any]) -> Suite:
    """The default suite with ``kind``'s runner wrapped (a test suite, no patching)."""

    def build(suite: Suite, n: int) -> Any:
        real = DEFAULT.kind(kind, n)
        return dataclasses.replace(real, run=wrap(real.run))

    return DEFAULT.replace(f"test-{kind}", **{kind: build})


@pytest.mark.parametrize("n", [2, 3])
async def test_party_that_raises_is_named(n: int) -> None:
    def flaky(real: Any) -> Any:
        async def run(ctx: Any, x: Any, p: Any) -> Any:
            if ctx.rank == 1:  # bob
                raise RuntimeError("injected failure")
            return await real(ctx, x, p)

        return run

    suite = with_kind("mul", flaky)
    with trio.fail_after(BOUND), pytest.raises(PartyFailure) as info:
        # a long timeout: the others must be cancelled, not time out
        async with start_cluster(n, seed=1, timeout=60, protocols=suite) as c:
            x = c.share(torch.ones(2))
            await (x * x).get()
    assert info.value.actor == "bob"
    assert isinstance(info.value.cause, RuntimeError)
    assert "'bob'" in str(info.value) and "injected failure" in str(info.value)


async def test_provider_that_raises_is_named() -> None:
    def build(suite: Suite, n: int) -> Any:
        real = DEFAULT.kind("mul", n)

        def broken(values: Any) -> Any:
            raise RuntimeError("dealer broke")

        def specs(*args: Any) -> Any:  # only the dealer derives material
            return [dataclasses.replace(s, derive=broken) for s in real.specs(*args)]

        return dataclasses.replace(real, specs=specs)

    suite = DEFAULT.replace("broken-dealer", mul=build)
    with trio.fail_after(BOUND), pytest.raises(PartyFailure) as info:
        async with start_cluster(2, seed=1, timeout=60, protocols=suite) as c:
            x = c.share(torch.ones(2))
            await (x * x).get()
    assert info.value.actor == PROVIDER
    assert "dealer broke" in str(info.value)


async def test_failure_surfaces_even_while_coordinator_waits_elsewhere() -> None:
    """The coordinator is blocked in a reveal when a party dies: it still gets the error."""

    def slow_then_fail(real: Any) -> Any:
        async def run(ctx: Any, x: Any, p: Any) -> Any:
            await trio.sleep(0.05)
            if ctx.rank == 0:
                raise RuntimeError("late failure")
            return await real(ctx, x, p)

        return run

    suite = with_kind("square", slow_then_fail)
    with trio.fail_after(BOUND), pytest.raises(PartyFailure) as info:
        async with start_cluster(2, seed=1, timeout=60, protocols=suite) as c:
            x = c.share(torch.ones(2))
            await (x**2).get()
    assert info.value.actor == "alice"


# -- silence -------------------------------------------------------------------------------


async def test_silent_party_yields_timeout_naming_it() -> None:
    with trio.fail_after(BOUND), pytest.raises(ActorTimeout) as info:
        async with start_cluster(2, seed=1, timeout=0.5) as c:
            x = c.share(torch.ones(2))
            await c.flush()
            Tap(c, drop=lambda env: env.sender == "bob")
            x * x
            await c.flush()
    assert info.value.awaited == "bob"
    assert "from bob" in str(info.value)


async def test_silent_party_at_barrier_yields_timeout_naming_it() -> None:
    with trio.fail_after(BOUND), pytest.raises(ActorTimeout) as info:
        async with start_cluster(2, seed=1, timeout=0.5) as c:
            x = c.share(torch.ones(2))
            await c.flush()
            Tap(c, drop=lambda env: env.sender == "bob")
            await c.flush()
            assert x is not None
    assert info.value.awaited == "bob"
    assert info.value.waiter == "coordinator"
    assert info.value.seconds == 0.625  # the bound, then a second look a quarter later


async def test_silent_dealer_yields_timeout_naming_it() -> None:
    with trio.fail_after(BOUND), pytest.raises(ActorTimeout) as info:
        async with start_cluster(2, seed=1, timeout=0.5) as c:
            x = c.share(torch.ones(2))
            await c.flush()
            Tap(c, drop=lambda env: env.sender == PROVIDER)
            await (x * x).get()
    assert info.value.awaited == PROVIDER
    assert info.value.waiter == "bob"


# -- unsupported operations and access -----------------------------------------------------


@pytest.mark.parametrize(
    ("call", "name"),
    [
        # exp, sigmoid, log and max are supported since issue 12, sin and cumsum since issue 20
        (torch.atan, "atan"),
        (torch.erf, "erf"),
        (torch.log1p, "log1p"),
        (lambda x: torch.cumprod(x, 0), "cumprod"),
    ],
)
async def test_unsupported_torch_function_is_named(call: Callable[[Any], Any], name: str) -> None:
    async with start_cluster(2, seed=1) as c:
        x = c.share(torch.ones(3))
        await c.flush()
        tap = Tap(c)
        with pytest.raises(UnsupportedOperation, match=name):
            call(x)
        await c.flush()
        assert tap.commands() == ["barrier"]


async def test_other_unsupported_operations() -> None:
    async with start_cluster(2, seed=1) as c:
        x = c.share(torch.ones(3))
        # x / x and x ** 0.5 are supported since issue 12 (tests/test_functional.py)
        with pytest.raises(UnsupportedOperation, match="floor division"):
            x // x
        with pytest.raises(UnsupportedOperation, match="power"):
            x**1.5
        with pytest.raises(UnsupportedOperation, match="truth value"):
            bool(x)
        with pytest.raises(UnsupportedOperation, match="str"):
            x + "1"


async def test_reveal_to_non_owner_is_denied_and_sends_nothing() -> None:
    async with start_cluster(2, seed=1) as c:
        x = c.share(torch.ones(3))
        await c.flush()
        tap = Tap(c)
        with pytest.raises(AccessDenied, match="bob"):
            await x.reveal_to("bob")
        assert tap.envelopes == []


async def test_default_timeout_on_a_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    """The default bound (30 s) without waiting 30 s: trio's autojump clock."""
    with pytest.raises(ActorTimeout) as info:
        async with start_cluster(2, seed=1) as c:
            await c.flush()
            Tap(c, drop=lambda env: env.sender == "bob")
            start = trio.current_time()
            try:
                await c.flush()
            finally:
                elapsed = trio.current_time() - start
    assert info.value.awaited == "bob"
    assert info.value.seconds == 37.5  # 30 s, then a second look 7.5 s later
    assert 37.5 <= elapsed < 38.5


async def test_busy_party_is_not_reported_silent() -> None:
    """A party that blocks its loop computing for longer than the timeout (a big op) is
    busy, not silent: the run completes with the right answer."""

    def hog(real: Any) -> Any:
        async def run(ctx: Any, x: Any, p: Any) -> Any:
            if ctx.rank == 0:
                time.sleep(1.2)  # a long, blocking computation: no checkpoint, no heartbeat
            return await real(ctx, x, p)

        return run

    suite = with_kind("mul", hog)
    with trio.fail_after(20):
        async with start_cluster(2, seed=1, timeout=0.3, protocols=suite) as c:
            x = c.share(torch.tensor([1.5, -2.0]))
            got = await (x * x).get(dtype=torch.float64)
    assert torch.allclose(got, torch.tensor([2.25, 4.0], dtype=torch.float64))
