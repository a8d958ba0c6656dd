"""Access control and randomness."""

from __future__ import annotations

import pytest
import torch

from actors import Phase
from actors.messages import Command, Recipient, Reply
from protocols.errors import AccessDenied
from training.testing import start_cluster


async def test_reveal_only_to_owner_nothing_sent() -> None:
    async with start_cluster(2) as c:
        x = c.share(torch.tensor([1.0, -2.0]))
        await c.flush()
        before = c.stats()
        for other in ("james", "alice", "bob", "mallory"):
            with pytest.raises(AccessDenied, match="owner"):
                await x.reveal_to(other)
        after = c.stats()
        assert after.messages == before.messages
        assert after.output_bytes == before.output_bytes
        assert torch.equal(await x.reveal_to("coordinator"), torch.tensor([1.0, -2.0]))


async def test_party_refuses_a_reveal_for_someone_else() -> None:
    """Defence in depth: even a command that reached the parties is refused there."""
    async with start_cluster(2) as c:
        x = c.share(torch.tensor([3.0]))
        await c.flush()
        seen: list = []
        c.network.observe(lambda env: (seen.append(env), env)[1])
        op = c._op_id()
        c._command(Command("reveal", op, (x.tid,), (), None, Recipient("james")))
        await c.flush()
        for party in ("alice", "bob"):
            env = await c._mailbox.recv(party, f"{op}/out")
            assert env.phase == Phase.CONTROL
            assert "refused" in env.control(Reply).denied
        assert not [e for e in seen if e.phase == Phase.OUTPUT]
        assert not [e for e in seen if e.receiver == "james" and e.phase != Phase.CONTROL]


async def _alice_view(seed: int | None) -> list[torch.Tensor]:
    """What alice receives, in a fixed order (by sender and tag): arrival order may vary
    with timing, the content must not in the seeded mode."""
    got: list[tuple[str, str, tuple[torch.Tensor, ...]]] = []
    async with start_cluster(2, seed=seed) as c:
        c.network.observe(
            lambda env: (
                got.append((env.sender, env.tag, env.tensors()))
                if env.receiver == "alice" and env.phase != Phase.CONTROL
                else None,
                env,
            )[1]
        )
        x, y = c.share(torch.ones(8)), c.share(torch.ones(8))
        await (x * y).relu().get()
    return [t for _, _, ts in sorted(got, key=lambda e: (e[0], e[1])) for t in ts]


async def test_unseeded_runs_differ_seeded_runs_agree() -> None:
    a, b = await _alice_view(None), await _alice_view(None)
    assert len(a) == len(b)
    assert any(not torch.equal(u, v) for u, v in zip(a, b, strict=True))
    c1, c2 = await _alice_view(7), await _alice_view(7)
    assert all(torch.equal(u, v) for u, v in zip(c1, c2, strict=True))
    d = await _alice_view(8)
    assert any(not torch.equal(u, v) for u, v in zip(c1, d, strict=True))


async def test_mixed_bases_are_refused_and_mixed_precisions_align() -> None:
    from protocols.errors import EncodingError

    async with start_cluster(2) as c:
        a = c.share(torch.tensor([1.5]), precision=3, base=10)
        b = c.share(torch.tensor([0.25]), precision=16, base=2)
        before = c.stats().messages
        with pytest.raises(EncodingError, match="bases 10 and 2"):
            a + b
        with pytest.raises(EncodingError, match="bases"):
            a * b
        assert c.stats().messages == before
        d = c.share(torch.tensor([0.125]), precision=4, base=10)
        assert torch.allclose(
            await (a + d).get(dtype=torch.float64), torch.tensor([1.625], dtype=torch.float64)
        )
        assert torch.allclose(
            await (a * d).get(dtype=torch.float64),
            torch.tensor([0.1875], dtype=torch.float64),
            atol=2e-4,
        )
