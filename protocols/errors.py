"""The project's exception hierarchy, in one place.

Every error the tool raises on purpose derives from :class:`SmpcError`, so callers can
catch the whole family; each subclass says when it is raised and how it differs from its
neighbours. Validation never uses ``assert``.
"""

from __future__ import annotations


class SmpcError(Exception):
    """Base class of every error raised on purpose by this project."""


class EncodingError(SmpcError, ValueError):
    """A plaintext value cannot be encoded in fixed point: NaN, +-inf, or a magnitude whose
    encoding would leave the documented safe range (it would wrap around the ring).

    Raised before anything is shared or sent; contrast :class:`ShapeError` (the values are
    fine, their shapes are not).
    """


class ShapeError(SmpcError, ValueError):
    """Operand shapes do not fit the operation (broadcast or matmul mismatch, empty or
    wrong-rank tensor where one is not allowed). Raised by the coordinator before any
    command is sent."""


class UnknownTensorError(SmpcError, KeyError):
    """A command names a tensor id that the actor does not hold (never shared, already
    freed, or belonging to another cluster)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown tensor"


class ProtocolError(SmpcError):
    """A message broke the protocol: unexpected sender or tag, a duplicate, a payload of the
    wrong dtype, shape or size, or a message left unconsumed when its operation ended.
    Contrast :class:`ActorTimeout` (nothing arrived at all)."""


class UnsupportedOperation(SmpcError, NotImplementedError):
    """A torch function or operator that has no secure implementation was called on a
    SharedTensor; the message names the function."""


class AccessDenied(SmpcError, PermissionError):
    """A reveal was requested by, or for, an actor that does not own the value. Nothing is
    sent when this is raised."""


class ActorTimeout(SmpcError, TimeoutError):
    """An actor waited longer than its bound for a message from another actor, which is
    alive but silent. ``awaited`` names the silent actor: when the actor waited on was
    itself blocked waiting for a third, the wait chain is followed to its end (``chain``
    lists it), so the error blames the actor that stopped talking, not a bystander.
    Contrast :class:`PartyFailure` (the other actor crashed)."""

    def __init__(
        self, waiter: str, awaited: str, what: str, seconds: float, chain: tuple[str, ...] = ()
    ) -> None:
        chain = chain or (waiter, awaited)
        message = f"{chain[-2]} waited for a message from {chain[-1]}, which stayed silent"
        if len(chain) > 2:
            message += (
                f" (noticed after {seconds:g}s by {waiter}, waiting for {what} from {chain[1]}; "
                f"wait chain {' -> '.join(chain)})"
            )
        else:
            message += f" for {seconds:g}s (waiting for {what})"
        super().__init__(message)
        self.noticed_by = waiter
        """The actor whose bound ran out first."""
        self.waiter = chain[-2]
        """The actor blocked directly on the silent one."""
        self.awaited = chain[-1]
        """The silent actor."""
        self.what = what
        self.seconds = seconds
        self.chain = chain


class PartyFailure(SmpcError):
    """An actor (party, crypto provider or coordinator task) raised. Every other actor is
    cancelled and the cluster re-raises this error, naming the actor and the cause."""

    def __init__(self, actor: str, cause: BaseException) -> None:
        super().__init__(f"actor {actor!r} failed: {type(cause).__name__}: {cause}")
        self.actor = actor
        self.cause = cause


class NumericError(SmpcError, ArithmeticError):
    """A computed value is wrong or cannot be trusted: it left the range the 64-bit ring
    holds safely, or it differs from the coordinator's plaintext reference. The message
    names the op that produced it (kind, op id, label) and what to do; ``measured`` is
    how far it went and ``limit`` how far it may go (real units)."""

    def __init__(
        self,
        message: str,
        *,
        kind: str | None,
        op: int | None,
        label: str | None,
        measured: float,
        limit: float,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        """The op kind that produced the value (``"square"``, ``"trunc"``, ...)."""
        self.op = op
        """The op id (as in the op log and debug logs)."""
        self.label = label
        """The label active when the op was issued (``cluster.label(...)``)."""
        self.measured = measured
        self.limit = limit


class ValueOutOfRange(NumericError):
    """A value revealed to the coordinator is larger in magnitude than the cluster's
    ``value_bound`` (by default the ring's headroom, see
    :attr:`protocols.fixed_point.FixedPoint.headroom`): it wrapped around the ring, a
    truncation failed, or it is too large to compute with. ``worst`` is the value
    furthest out, ``bound`` the bound (real units)."""

    @property
    def worst(self) -> float:
        return self.measured

    @property
    def bound(self) -> float:
        return self.limit


class ShadowMismatch(NumericError):
    """Check mode (``Cluster.start(check=True)``): an op's revealed result differs from
    the coordinator's plaintext reference by more than its tolerance. ``error`` and
    ``tolerance`` are in real (decoded) units, at the worst element."""

    @property
    def error(self) -> float:
        return self.measured

    @property
    def tolerance(self) -> float:
        return self.limit
