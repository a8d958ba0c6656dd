"""Which dealer material each interactive op kind needs, from its kind and shapes alone.

The crypto provider receives only ``(op id, kind, shapes, public parameters)`` and calls
:func:`dealer_specs`; the party side runs the protocol, which builds the same specs. New
kinds (an FSS comparison, preprocessing batches) register here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .beaver import matmul_spec, mul_spec, square_spec
from .compare import drelu_spec
from .material import MaterialSpec
from .shapes import broadcast
from .shapes import matmul as matmul_shape
from .truncate import needs_dealer, trunc_spec

Shape = tuple[int, ...]


def _out_shape(kind: str, shapes: Sequence[Shape]) -> Shape:
    if kind == "matmul":
        return matmul_shape(shapes[0], shapes[1])
    if kind == "mul":
        return broadcast(kind, *shapes)
    return tuple(shapes[0])


def _with_trunc(
    base: Callable[[Sequence[Shape]], MaterialSpec],
) -> Callable[[str, Sequence[Shape], int, int], list[MaterialSpec]]:
    def build(kind: str, shapes: Sequence[Shape], divisor: int, n: int) -> list[MaterialSpec]:
        specs = [base(shapes)]
        if needs_dealer(n, divisor):
            specs.append(trunc_spec(_out_shape(kind, shapes), divisor, sub=1))
        return specs

    return build


_BUILDERS: dict[str, Callable[[str, Sequence[Shape], int, int], list[MaterialSpec]]] = {
    "mul": _with_trunc(lambda s: mul_spec(s[0], s[1])),
    "matmul": _with_trunc(lambda s: matmul_spec(s[0], s[1])),
    "square": _with_trunc(lambda s: square_spec(s[0])),
    "trunc": lambda k, s, d, n: [trunc_spec(s[0], d, sub=1)] if needs_dealer(n, d) else [],
    "drelu": lambda k, s, d, n: [drelu_spec(s[0], with_relu=False)],
    "relu": lambda k, s, d, n: [drelu_spec(s[0], with_relu=True)],
}


def needs_material(kind: str, divisor: int, n_parties: int) -> bool:
    if kind == "trunc":
        return needs_dealer(n_parties, divisor)
    return kind in _BUILDERS


def dealer_specs(
    kind: str, shapes: Sequence[Shape], divisor: int, n_parties: int
) -> list[MaterialSpec]:
    """Material specs for one op; raises KeyError-like ValueError for an unknown kind."""
    try:
        build = _BUILDERS[kind]
    except KeyError:
        raise ValueError(f"no dealer material is defined for op kind {kind!r}") from None
    return build(kind, [tuple(s) for s in shapes], divisor, n_parties)
