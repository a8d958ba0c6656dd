"""Bit-sliced packing (protocols.ring) and the packed comparison's material layout.

The carry circuit of :mod:`protocols.compare` runs on bit planes (64 elements per int64
word); these tests pin the conversions exactly against the one-bool-per-bit reference
``to_bits``, for sizes that are and are not multiples of 64, and check that the dealer
material per element is the figure the module doc states.
"""

from __future__ import annotations

from math import prod

import numpy as np
import pytest
import torch

import protocols
from protocols.compare import drelu_spec
from protocols.material import Kind
from protocols.prg import Prg
from protocols.ring import (
    bytes_to_words,
    from_planes,
    n_words,
    pack_words,
    to_bits,
    to_planes,
    transpose64,
    unpack_words,
    words_to_bytes,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SIZES = [0, 1, 7, 63, 64, 65, 1000, 4096, 64 * 2048 + 5]


def rand(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + n)
    return torch.randint(INT64_MIN, INT64_MAX, (n,), dtype=torch.int64, generator=g)


@pytest.mark.parametrize("n", SIZES)
def test_planes_match_bits_and_round_trip(n: int) -> None:
    x = rand(n)
    if n:
        x[0], x[-1] = INT64_MIN, -1  # the sign bit and all ones
    planes = to_planes(x)
    assert planes.shape == (64, n_words(n)) and planes.dtype == torch.int64
    # plane j holds bit j of every element, element 64 w + i at bit i of word w
    assert torch.equal(unpack_words(planes, n), to_bits(x).t())
    assert torch.equal(from_planes(planes, n), x)
    assert torch.equal(pack_words(to_bits(x).t()), planes)
    # padding elements are zero
    if n % 64:
        assert not bool((unpack_words(planes, 64 * n_words(n))[:, n:]).any())


def test_transpose64_is_an_involution_and_a_transpose() -> None:
    a = rand(64 * 3000).view(64, 3000)  # more columns than one cache chunk
    t = transpose64(a)
    assert torch.equal(transpose64(t), a)
    bits_a = unpack_words(a.t().unsqueeze(-1), 64)  # (3000, 64 rows, 64 bits)
    bits_t = unpack_words(t.t().unsqueeze(-1), 64)
    assert torch.equal(bits_t, bits_a.transpose(1, 2))
    with pytest.raises(ValueError):
        transpose64(a[:32])


def test_pack_words_leading_dims() -> None:
    g = torch.Generator().manual_seed(3)
    bits = torch.rand((3, 5, 130), generator=g) < 0.5
    words = pack_words(bits)
    assert words.shape == (3, 5, 3)
    assert torch.equal(unpack_words(words, 130), bits)


@pytest.mark.parametrize("n", [1, 7, 8, 61, 64, 65, 1000])
def test_wire_bytes_carry_no_padding_bit(n: int) -> None:
    """Bit planes travel as their first ceil(n/8) bytes: nothing past element n is sent
    (the padding of the last word holds mask bits of padding elements), and the words come
    back with exactly the first n bits of each plane."""
    g = torch.Generator().manual_seed(n)
    words = torch.randint(INT64_MIN, INT64_MAX, (3, n_words(n)), dtype=torch.int64, generator=g)
    wire = words_to_bytes(words, n)
    assert wire.dtype == torch.uint8 and wire.shape == (3, (n + 7) // 8)
    back = bytes_to_words(wire, n)
    assert torch.equal(unpack_words(back, 64 * n_words(n))[:, n:].sum(), torch.tensor(0))
    assert torch.equal(unpack_words(back, n), unpack_words(words, n))
    single = words_to_bytes(words[0], n)  # one plane: no leading dim
    assert torch.equal(bytes_to_words(single, n), back[0])


def test_prg_array_is_the_aes256_ctr_keystream() -> None:
    """random_array writes AES-256-CTR's keystream (the label in the counter block's high
    96 bits, big-endian, the block counter from 0 below) straight into its array;
    random_bytes, ring and bits read the same stream; labels differing only in the stream
    or in the op id give different streams."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    prg = Prg.from_seed(5, "keystream test")
    block = (9).to_bytes(8, "big") + (2).to_bytes(4, "big") + bytes(4)
    want = Cipher(algorithms.AES(prg.key), modes.CTR(block)).encryptor().update(bytes(4099))
    assert prg.random_bytes(64, (9, 3)) != want[:64]
    assert prg.random_bytes(64, (10, 2)) != want[:64]
    got = prg.random_array(4099, (9, 2))
    assert got.flags.writeable and got.tobytes() == want
    assert prg.random_bytes(4099, (9, 2)) == want
    ring = prg.ring((3,), (9, 2))
    assert ring.tolist() == [
        int.from_bytes(want[8 * i : 8 * i + 8], "little", signed=True) for i in range(3)
    ]
    assert prg.random_array(0, (9, 3)).size == 0


@pytest.mark.parametrize("with_relu", [False, True], ids=["drelu", "relu"])
def test_material_per_element(with_relu: bool) -> None:
    """Each party holds r, its bits, the level-0 products, 153 planes of AND triples, the
    final mask alpha as a word and as a ring share (and r * alpha): 47.125 bytes per
    element for DReLU, 55.125 for ReLU (N a multiple of 64); bit items are packed words."""
    numel = 64 * 10
    spec = drelu_spec((numel,), with_relu=with_relu)
    assert all(i.kind in (Kind.RING, Kind.WORDS) for i in spec.items)
    held = sum(i.nbytes() for i in spec.items if i.shared)
    assert held == numel * (55.125 if with_relu else 47.125)
    assert spec.dealer_bytes(2) == protocols.drelu_offline_bytes(numel, with_relu=with_relu)
    assert spec.dealer_bytes(3) == spec.dealer_bytes(2)  # corrections go to one party
    words = [i for i in spec.items if i.kind is Kind.WORDS]
    assert sum(prod(i.shape) for i in words) == 10 * (64 + 31 + 153 + 1)


# ring_matmul's exactness (torch int64 and the float64 limbs against a uint64 reference):
# tests/test_kernels.py


def test_last_party_draws_only_the_random_items() -> None:
    """The derived items sit at the keystream's tail: party 0 (and the dealer for it) draws
    a, b and c of a matmul triple, the last party (and the dealer for it) only a and b, as
    it receives c's correction; the shares still make a triple."""
    from protocols.beaver import matmul_spec
    from protocols.material import dealer_messages, party_material

    drawn: dict[bytes, list[int]] = {}

    class Spy(Prg):
        __slots__ = ()

        def random_array(self, n: int, label: tuple[int, int]) -> np.ndarray:
            drawn.setdefault(self.key, []).append(n)
            return super().random_array(n, label)

    prgs = [Spy(Prg.from_seed(s, "draw test").key) for s in (1, 2)]
    spec = matmul_spec((3, 4), (4, 5))
    msgs = dealer_messages(spec, prgs, 7, Prg.from_seed(3, "dealer"))
    assert drawn == {prgs[0].key: [8 * (12 + 20 + 15)], prgs[1].key: [8 * (12 + 20)]}
    drawn.clear()
    shares = [party_material(spec, r, 2, prgs[r], 7, msgs[r]) for r in (0, 1)]
    assert drawn == {prgs[0].key: [8 * (12 + 20 + 15)], prgs[1].key: [8 * (12 + 20)]}
    a, b, c = (shares[0][k] + shares[1][k] for k in "abc")
    assert torch.equal(c, a @ b)


def _additive_specs() -> list[object]:
    from protocols.beaver import matmul_spec, mul_spec, square_spec
    from protocols.fss import relu_fss_spec, trunc_fss_spec
    from protocols.reuse import keep_spec
    from protocols.truncate import trunc_spec

    return [
        mul_spec((4, 2), (4, 2)),
        mul_spec((3, 1), (3, 5)),  # broadcast: c has the product's shape
        square_spec((7,)),
        matmul_spec((3, 4), (4, 5)),
        keep_spec("linear", (6, 4), (4, 3), (6, 3), True),
        trunc_spec((9,), 2**16, sub=1),
        relu_fss_spec((5,)),  # with keys: the keygen sees the same values
        trunc_fss_spec((4,), 2**16),
        mul_spec((0,), (0,)),  # empty: its derived item still gets an (empty) correction
        mul_spec((0, 3), (0, 3)),
        relu_fss_spec((0,)),
        mul_spec((), ()),
    ]


@pytest.mark.parametrize("n_parties", [2, 3])
@pytest.mark.parametrize("index", range(12))
def test_additive_dealer_path_is_item_path(index: int, n_parties: int) -> None:
    """The dealer's whole-run path for additive specs sends exactly what the item-by-item
    path sends (corrections and keys, bit for bit), and the parties' shares still make the
    triple; a run mis-assigned between items would change the corrections."""
    from protocols import material as M

    spec = _additive_specs()[index]
    assert isinstance(spec, M.MaterialSpec)
    facts = M._layout(spec)
    assert facts.additive
    if spec.keys and n_parties != 2:
        pytest.skip("FSS keys are 2-party only")
    prgs = [Prg.from_seed(s, "additive dealer") for s in range(n_parties)]
    fast = M._deal_additive(spec, facts, prgs, 11)
    slow = M._deal_items(spec, facts, prgs, 11)
    assert fast[0].keys() >= slow[0].keys()
    for name, value in slow[0].items():
        assert torch.equal(fast[0][name], value), name
    assert len(fast[1]) == len(slow[1])
    for a, b in zip(fast[1], slow[1], strict=True):
        assert a.shape == b.shape and a.is_contiguous() and torch.equal(a, b)
    msgs = M.dealer_messages(spec, prgs, 11, Prg.from_seed(99, "dealer"))
    shares = [M.party_material(spec, r, n_parties, prgs[r], 11, msgs[r]) for r in range(n_parties)]
    for item in spec.items:
        if item.shared:
            total = sum(s[item.name] for s in shares)
            assert torch.equal(total, slow[0][item.name]), item.name


def test_additive_dealer_refuses_a_misshapen_derived_item() -> None:
    from protocols import material as M

    spec = M.MaterialSpec(
        "bad",
        0,
        (M.Item("a", (2, 3)), M.Item("c", (2, 3), derived=True)),
        lambda s: {"c": s["a"].reshape(-1)},
    )
    with pytest.raises(ValueError, match="derived 'c' is \\(6,\\), not \\(2, 3\\)"):
        M.dealer_messages(spec, [Prg.from_seed(1, "x"), Prg.from_seed(2, "y")], 1, Prg.fresh())
