"""Who may learn what: the reveal policy each party sets for values derived from its data.

**Owners.** Every value a party holds carries its owners: the parties whose own inputs it
was computed from (``cluster.share_from``). Inputs the coordinator shares, public
constants and dealer material add no owner; an op's result is owned by the union of its
operands' owners, so ``x * 1``, ``x[0]``, ``x.sum()`` or a model trained on ``x`` stay
owned by ``x``'s party. A checkpoint records each share's owners in the party's own file
and a load restores them.

**Rules.** A reveal of a value with owners S to recipient R needs, from every owner in S
other than R, a rule of *that owner's own* policy naming R: ``max_elements`` bounds one
reveal (1 lets a loss through but not a batch), ``max_total`` the elements revealed to R
over the session. A value with no owner, or whose only owner is R, is always revealed to R.

**Where the rules come from.** A party's rules come from its own configuration only (its
node's ``[actors.NAME.reveal]`` table or ``--allow-reveal``; in one process,
``Cluster.start(reveal_policy=...)``, where the coordinator is trusted anyway). At the start
of a session the parties send each other their rules over their authenticated links, so
every party decides every reveal the same way, in command order, before any share leaves
it: a refused reveal sends nothing but the refusal. The coordinator's word is never taken.

What a rule cannot see: what the value *is*. The coordinator chooses the computation, so a
rule allowing 1-element reveals to the coordinator allows any 1-element function of the
data (a loss, or one pixel), up to ``max_total`` of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec

from protocols.errors import AccessDenied, ProtocolError

from .messages import Reply

if TYPE_CHECKING:
    from .envelope import Envelope


class RevealRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one party allows one recipient to receive of values derived from its data."""

    max_elements: int | None = None
    """Largest reveal (elements of one tensor); None: any size."""
    max_total: int | None = None
    """Elements revealed to this recipient over the session; None: no limit."""

    def describe(self) -> str:
        parts = []
        if self.max_elements is not None:
            parts.append(f"at most {self.max_elements} elements per reveal")
        if self.max_total is not None:
            parts.append(f"at most {self.max_total} elements in all")
        return ", ".join(parts) or "any reveal"


class RevealPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One party's rules: recipient -> rule. Empty: nothing derived from its data leaves."""

    rules: dict[str, RevealRule] = {}

    @classmethod
    def allowing(cls, recipients: Iterable[str]) -> RevealPolicy:
        """Any reveal to each of ``recipients``."""
        return cls({r: RevealRule() for r in recipients})

    def __post_init__(self) -> None:
        for to, rule in self.rules.items():
            for name, v in (("max_elements", rule.max_elements), ("max_total", rule.max_total)):
                if v is not None and (isinstance(v, bool) or v < 1):
                    raise ValueError(f"reveal rule for {to!r}: {name} must be >= 1, got {v!r}")


NO_REVEALS = RevealPolicy()


def parse_rule(text: str) -> tuple[str, RevealRule]:
    """``RECIPIENT[:MAX_ELEMENTS[:MAX_TOTAL]]`` (the node's ``--allow-reveal``)."""
    to, *limits = text.split(":")
    if not to or len(limits) > 2:
        raise ValueError(
            f"--allow-reveal expects RECIPIENT[:MAX_ELEMENTS[:MAX_TOTAL]], got {text!r}"
        )
    try:
        nums = [int(v) if v else None for v in limits]
    except ValueError:
        raise ValueError(f"--allow-reveal {text!r}: limits must be integers") from None
    nums += [None] * (2 - len(nums))
    return to, RevealRule(nums[0], nums[1])


def policy_from_table(table: object, where: str) -> RevealPolicy:
    """A policy from a TOML table ``{recipient = {max_elements = N, max_total = M}}``."""
    if not isinstance(table, Mapping):
        raise ValueError(f"{where}: must be a table of recipients, got {table!r}")
    try:
        return msgspec.convert({"rules": dict(table)}, RevealPolicy)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{where}: {exc}") from None


def legacy_policies(
    parties: Sequence[str], reveal_policy: Mapping[str, Sequence[str] | RevealPolicy] | None
) -> dict[str, RevealPolicy]:
    """``{owner: [recipients]}`` (``Cluster.start``'s argument) as one policy per party."""
    given = dict(reveal_policy or {})
    unknown = set(given) - set(parties)
    if unknown:
        raise ValueError(f"reveal_policy names owners that are not parties: {sorted(unknown)}")
    out = {}
    for p in parties:
        v = given.get(p, NO_REVEALS)
        out[p] = v if isinstance(v, RevealPolicy) else RevealPolicy.allowing(v)
    return out


class RevealLedger:
    """Decides reveals for one party from every party's policy, in command order, and
    counts what each owner's rules have let through (for ``max_total``)."""

    def __init__(self, policies: Mapping[str, RevealPolicy]) -> None:
        self.policies = dict(policies)
        self.used: dict[tuple[str, str], int] = {}

    def refusal(self, owners: frozenset[str], to: str, numel: int) -> str | None:
        """Why the value may not go to ``to`` (naming the owner and its rule), or None,
        in which case the reveal is charged to every owner's ``max_total``."""
        others = sorted(owners - {to})
        for owner in others:
            rule = self.policies.get(owner, NO_REVEALS).rules.get(to)
            if rule is None:
                return (
                    f"the value is derived from {owner}'s data and {owner}'s own reveal policy "
                    f"allows nothing to {to!r}"
                )
            if rule.max_elements is not None and numel > rule.max_elements:
                return (
                    f"the value ({numel} elements) is derived from {owner}'s data and "
                    f"{owner}'s rule for {to!r} allows {rule.describe()}"
                )
            used = self.used.get((owner, to), 0)
            if rule.max_total is not None and used + numel > rule.max_total:
                return (
                    f"the value ({numel} elements) is derived from {owner}'s data and "
                    f"{owner}'s rule for {to!r} allows {rule.describe()}; {used} already revealed"
                )
        for owner in others:
            self.used[(owner, to)] = self.used.get((owner, to), 0) + numel
        return None


class RevealRefused(AccessDenied):
    """A party refused a reveal: the value is derived from a party's data and that party's
    own policy does not allow the recipient (the message names the owner and the rule).
    Nothing but the refusal was sent."""


def access_denied(env: Envelope) -> AccessDenied | ProtocolError:
    """The refusal a party sent instead of a share: :class:`RevealRefused` (its policy
    or an owner's), ProtocolError for a malformed reveal command or a reply that is not a
    refusal."""
    reply = env.control(Reply)
    if reply.denied is None:
        raise ProtocolError(f"{env.sender} answered {env.tag!r} with a reply that is not a refusal")
    if reply.malformed:
        return ProtocolError(reply.denied)
    return RevealRefused(reply.denied)
