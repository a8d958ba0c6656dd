"""Statistical evidence that a party's view does not depend on the secrets.

Trust model (what the protocols here claim, and what these tests check)
-----------------------------------------------------------------------
* The parties and the crypto provider (the dealer) are **semi-honest**: they follow the
  protocol and try to learn from what they see. Security is claimed against one party
  alone, or against the provider alone; a provider **colluding** with a party learns
  everything (it knows every mask) and is out of scope.
* Today the coordinator is the data and model owner: it makes every input share and gets
  every output, so it is **fully trusted**. The data is protected from the parties and
  from the provider, not from the coordinator.
* Tampered values (a malicious party or provider sending wrong shares or wrong material)
  are **out of scope**: nothing here detects them.

What is analysed
----------------
A party's *full view* of one run (:mod:`.views`) is everything it holds or could compute
from. Semi-honest security says the distribution of that view, given the party's own
inputs and outputs, is the same whatever the other secrets are; in particular for any two
secrets A and B. The view is cut into small categorical features (:mod:`.features`:
marginal, joint, pair and per-element cross families), and G-tests of homogeneity with
Bonferroni over every named feature compare many runs on A with many on B
(:mod:`.gtest`), or real runs with the simulator (:mod:`.simulator`). Programs of one or
several ops run in the harness and are analysed by :mod:`.programs`; DCF keys get their
own check, an attempt to rebuild the other party's key (:mod:`.dcf_keys`).

The evidence is statistical: a leak the features cannot express (a dependence only in
bits 4..59 of a single value, say) is not seen. Each feature family is shown to fail on a
realistic broken variant in ``tests/test_security_views.py`` and ``tests/test_leaks.py``.

Every public name of the submodules is importable from here (``protocols.analysis.X``).
"""

from .dcf_keys import (
    Rebuilt,
    RootGuesses,
    dcf_fits,
    dcf_lose_children,
    dcf_rebuild,
    dcf_recover,
    dcf_root_repeats,
    public_seed_sources,
)
from .features import (
    Feature,
    Record,
    cross_features,
    element_counts,
    element_record,
    joint_features,
    marginal_features,
    pair_features,
    record_features,
    view_features,
)
from .gtest import Finding, Report, compare, counts, g_test, g_tests
from .programs import (
    FIXED_A,
    FIXED_B,
    RUNS,
    BoardFactory,
    Ctx,
    DealerSecrets,
    Program,
    Wrap,
    a_vs_b,
    collect,
    dealer_a_vs_b,
    expect_caught,
    expect_secure,
    outputs,
    program_inputs,
    real_vs_sim,
    run_views,
    verify,
)
from .simulator import simulate
from .views import FullView, full_view

__all__ = [
    "FIXED_A",
    "FIXED_B",
    "RUNS",
    "BoardFactory",
    "Ctx",
    "DealerSecrets",
    "Feature",
    "Finding",
    "FullView",
    "Program",
    "Rebuilt",
    "Record",
    "Report",
    "RootGuesses",
    "Wrap",
    "a_vs_b",
    "collect",
    "compare",
    "counts",
    "cross_features",
    "dcf_fits",
    "dcf_lose_children",
    "dcf_rebuild",
    "dcf_recover",
    "dcf_root_repeats",
    "dealer_a_vs_b",
    "element_counts",
    "element_record",
    "expect_caught",
    "expect_secure",
    "full_view",
    "g_test",
    "g_tests",
    "joint_features",
    "marginal_features",
    "outputs",
    "pair_features",
    "program_inputs",
    "public_seed_sources",
    "real_vs_sim",
    "record_features",
    "run_views",
    "simulate",
    "verify",
    "view_features",
]
