"""One registration per op kind and one binding per torch function.

A kind's protocol, reference, report examples and truncation flag are declared together
(:func:`protocols.opkind.register`); every suite, check mode and the communication report
read them from there. The frontend binds each torch function once
(:mod:`training.registry`).
"""

from __future__ import annotations

import pytest
import torch

from protocols.opkind import KINDS, register
from protocols.suite import DEFAULT, SUITES
from training import SharedTensor, registry
from training.activations import abs_

PARTIES = ["alice", "bob"]


def test_every_kind_of_every_suite_declares_its_meaning() -> None:
    for suite in SUITES.values():
        assert set(suite.names) == set(KINDS), suite.name
        for name in suite.names:
            assert suite.reference(name) is not None, (suite.name, name)
            assert suite.examples(name, 4, (2, 3, 2)), (suite.name, name)
    assert DEFAULT.truncating("mul") and not DEFAULT.truncating("relu")


def test_a_kind_registered_twice_is_refused() -> None:
    before = dict(KINDS)
    with pytest.raises(ValueError, match="'mul' is registered twice"):
        register("mul", KINDS["mul"].build, reference=lambda *a: [], examples=lambda v, m: [])
    assert before == KINDS


def test_a_torch_function_or_method_bound_twice_is_refused() -> None:
    def other(x: SharedTensor) -> SharedTensor:
        return x

    with pytest.raises(
        ValueError,
        match=r"^torch\.abs is bound twice: to training\.activations\.abs_ and to .*other$",
    ):
        registry.bind({torch.abs: other})
    with pytest.raises(ValueError, match=r"SharedTensor\.abs is bound twice"):
        registry.implements(methods=("abs",))(other)
    assert registry.TORCH[torch.abs] is abs_ and registry.METHODS["abs"] is abs_
    assert SharedTensor.abs is abs_ and SharedTensor.__abs__ is abs_

    class Defines:
        def abs(self) -> None: ...

    with pytest.raises(ValueError, match=r"SharedTensor\.abs is defined by the class"):
        registry.install_methods(Defines)
