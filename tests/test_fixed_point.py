"""Fixed-point encoding: round to nearest (ties to even), decode, and the refusals."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import ENCODED_LIMIT_BITS, EncodingError, FixedPoint

CONFIGS = [FixedPoint(10, 3), FixedPoint(2, 16)]
LIMIT = 2**ENCODED_LIMIT_BITS


def nearest_even(v: float, scale: int) -> int:
    """Exact round-half-to-even of v * scale (Fraction.__round__ is banker's rounding)."""
    return round(Fraction(v) * scale)


def test_defaults_and_scale() -> None:
    fp = FixedPoint()
    assert (fp.base, fp.precision, fp.scale) == (10, 3, 1000)
    assert FixedPoint(2, 16).scale == 65536
    assert fp.max_value == (2**31 - 1) / 1000
    assert FixedPoint(2, 16).max_value == (2**31 - 1) / 65536


@pytest.mark.parametrize("fp", CONFIGS, ids=["base10-3", "base2-16"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_encode_rounds_to_nearest(fp: FixedPoint, data: st.DataObject) -> None:
    # float32 inputs times 1000 or 2**16 are exact in float64, so the encoding must equal
    # the exact nearest integer (ties to even) of the real value.
    bound = float(torch.tensor(fp.max_value * 0.999, dtype=torch.float32))
    values = data.draw(
        st.lists(
            st.floats(-bound, bound, width=32, allow_nan=False, allow_infinity=False),
            min_size=1,
            max_size=20,
        )
    )
    t = torch.tensor(values, dtype=torch.float32)
    enc = fp.encode(t)
    assert enc.dtype == torch.int64
    expected = [nearest_even(float(v), fp.scale) for v in t.tolist()]
    assert enc.tolist() == expected
    # decode(encode(v)) is within half a unit of encoding (1 / (2 scale)) of v, plus the
    # float64 rounding of the decoded value (relative 2**-53).
    dec = fp.decode(enc)
    assert dec.dtype == torch.float64
    for v, d in zip(t.tolist(), dec.tolist(), strict=True):
        tol = 0.5 / fp.scale + (abs(v) + 1.0) * 2.0**-53
        assert abs(d - v) <= tol, (v, d)


@pytest.mark.parametrize("fp", CONFIGS, ids=["base10-3", "base2-16"])
@settings(max_examples=80, deadline=None)
@given(e=st.integers(-(LIMIT - 1), LIMIT - 1))
def test_decode_encode_roundtrip_of_integers(fp: FixedPoint, e: int) -> None:
    # Every ring value in the safe range decodes to the float64 nearest e / scale (no digit
    # lost: float32 would drop the last one above ~16,384 at base 10), and encoding the
    # float64 e / scale gives e back.
    dec = fp.decode(torch.tensor([e], dtype=torch.int64))
    assert dec.dtype == torch.float64 and float(dec[0]) == e / fp.scale
    assert fp.encode(torch.tensor([e / fp.scale], dtype=torch.float64)).tolist() == [e]


def test_ties_round_to_even_base2() -> None:
    fp = FixedPoint(2, 16)
    ulp = 2.0**-16
    halves = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 7.5], dtype=torch.float64) * ulp
    assert fp.encode(halves).tolist() == [0, 2, 2, 0, -2, -2, 8]


def test_known_values_base10() -> None:
    fp = FixedPoint(10, 3)
    t = torch.tensor(
        [0.0, 1.0, -1.0, 0.0004, 0.0006, -0.0006, 3.14159, -2.71828], dtype=torch.float64
    )
    assert fp.encode(t).tolist() == [0, 1000, -1000, 0, 1, -1, 3142, -2718]
    dec = fp.decode(torch.tensor([1500, -1500, 1, -1]))
    assert dec.tolist() == pytest.approx([1.5, -1.5, 0.001, -0.001], abs=1e-9)


@pytest.mark.parametrize("fp", CONFIGS, ids=["base10-3", "base2-16"])
def test_max_value_accepted_as_float64_tensor(fp: FixedPoint) -> None:
    t = torch.tensor([fp.max_value, -fp.max_value, 0.0], dtype=torch.float64)
    assert fp.encode(t).tolist() == [LIMIT - 1, -(LIMIT - 1), 0]


@pytest.mark.parametrize("fp", CONFIGS, ids=["base10-3", "base2-16"])
def test_max_value_accepted_as_python_float(fp: FixedPoint) -> None:
    # encode() is documented to take a float; a Python float is a double and must be
    # encoded at its own precision, not after a detour through float32.
    assert int(fp.encode(fp.max_value)) == LIMIT - 1
    assert int(fp.encode(-fp.max_value)) == -(LIMIT - 1)


def test_python_float_keeps_double_precision() -> None:
    assert int(FixedPoint(10, 3).encode(1234567.891)) == 1234567891


@pytest.mark.parametrize("fp", CONFIGS, ids=["base10-3", "base2-16"])
@pytest.mark.parametrize("sign", [1, -1])
def test_just_above_max_value_refused(fp: FixedPoint, sign: int) -> None:
    # The smallest float64 whose encoding rounds to 2**31 in magnitude.
    over = (LIMIT - 0.5) / fp.scale
    while round(over * fp.scale) < LIMIT:
        over = math.nextafter(over, math.inf)
    t = torch.tensor([0.0, sign * over], dtype=torch.float64)
    with pytest.raises(EncodingError, match=r"outside the safe fixed-point range") as info:
        fp.encode(t)
    msg = str(info.value)
    assert f"base {fp.base}" in msg
    assert f"precision {fp.precision}" in msg
    # One step below is still accepted.
    below = math.nextafter((LIMIT - 0.5) / fp.scale, 0.0)
    fp.encode(torch.tensor([sign * below], dtype=torch.float64))


@pytest.mark.parametrize(
    ("bad", "word"),
    [
        (float("nan"), "NaN"),
        (float("inf"), "infinite"),
        (float("-inf"), "infinite"),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_refused(bad: float, word: str, dtype: torch.dtype) -> None:
    fp = FixedPoint()
    t = torch.tensor([1.0, bad, 2.0], dtype=dtype)
    with pytest.raises(EncodingError, match=word):
        fp.encode(t)


def test_huge_values_refused_not_wrapped() -> None:
    fp = FixedPoint()
    for v in (1e10, -1e10, 2.0**63, 1e30, -3e38):
        with pytest.raises(EncodingError, match="safe fixed-point range"):
            fp.encode(torch.tensor([v], dtype=torch.float64))
    with pytest.raises(EncodingError, match="safe fixed-point range"):
        fp.encode(torch.tensor([2**40], dtype=torch.int64))


def test_complex_refused() -> None:
    with pytest.raises(EncodingError, match="complex"):
        FixedPoint().encode(torch.tensor([1 + 2j]))


@pytest.mark.parametrize(
    ("base", "precision", "word"),
    [
        (1, 3, "base"),
        (0, 3, "base"),
        (-10, 3, "base"),
        (2.5, 3, "base"),
        ("10", 3, "base"),
        (10, -1, "precision"),
        (10, 1.5, "precision"),
        (10, 10, "scale"),
        (2, 31, "scale"),
    ],
)
def test_bad_base_or_precision_refused(base: object, precision: object, word: str) -> None:
    with pytest.raises(EncodingError, match=word):
        FixedPoint(base, precision)  # type: ignore[arg-type]


def test_largest_allowed_scale() -> None:
    fp = FixedPoint(2, 30)
    assert fp.max_value == pytest.approx(2.0, rel=1e-8)
    assert fp.encode(torch.tensor([1.5], dtype=torch.float64)).tolist() == [3 * 2**29]


@pytest.mark.parametrize(("base", "precision"), [(10, True), (True, 3), (2, False), (10, 2.0)])
def test_bools_and_floats_are_not_a_base_or_precision(base: object, precision: object) -> None:
    with pytest.raises(EncodingError, match="must be an integer"):
        FixedPoint(base, precision)  # type: ignore[arg-type]
