"""Every registered in-context read-out (attention.readout_forward, attention.readout_mse)
agrees with the spec, and rejects what the spec rejects.

The ops are the training step of theory/icl_regression: the forward pass, and the
batch's mean squared error with its hand-written gradient w.r.t. the merged weights.
Where there is no GPU, tests/conftest.py selects the CUDA emulator.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from backends import registry
from tests.backends.conformance import check_readout
from tests.strategies import (
    READOUT_EDGE_PROBLEMS,
    ReadoutProblem,
    readout_problems,
    with_readout_edge_examples,
)

OPS = ("attention.readout_forward", "attention.readout_mse")


def _cases():
    return [
        pytest.param(e, dt, id=f"{e.name}-{dt}")
        for op in OPS
        for e in registry.entries(op)
        if e.backend != "spec"
        for dt in e.dtypes
    ]


@pytest.mark.parametrize("entry, dtype", _cases())
@settings(max_examples=20)
@with_readout_edge_examples
@given(problem=readout_problems())
def test_readout_conforms(entry, dtype, problem: ReadoutProblem):
    check_readout(entry.load(), problem, dtype, spec_fn=entry.load_spec())


def _args(op, dtype=np.float64, **changes):
    z, zq, y, kq, ov = ReadoutProblem(B=2, S=3, D=4, H=2).arrays(dtype)
    args = {"z_BSD": z, "zq_BD": zq, "y_B": y, "kq_HDD": kq, "ov_HD": ov}
    if op.endswith("forward"):
        del args["y_B"]
    args.update(changes)
    return args


_BAD = [
    ({"z_BSD": np.zeros((2, 3), np.float64)}, ValueError, r"z_BSD: expected 3 dimensions \(BSD\)"),
    ({"z_BSD": np.zeros((2, 0, 4), np.float64)}, ValueError, r"z_BSD: expected at least one example"),
    ({"zq_BD": np.zeros((2, 5), np.float64)}, ValueError, r"zq_BD: expected shape \(2, 4\)"),
    ({"kq_HDD": np.zeros((2, 4, 3), np.float64)}, ValueError, r"kq_HDD: expected shape \(2, 4, 4\)"),
    ({"ov_HD": np.zeros((3, 4), np.float64)}, ValueError, r"ov_HD: expected shape \(2, 4\)"),
    ({"kq_HDD": np.zeros((2, 4, 4), np.float32)}, TypeError, r"expected one dtype"),
    ({"z_BSD": np.zeros((2, 3, 4), np.int64)}, TypeError, r"z_BSD: expected dtype"),
    ({"ov_HD": [[0.0] * 4] * 2}, TypeError, r"ov_HD: expected a numpy\.ndarray, got list"),
    ({"activation": "relu"}, ValueError, r"activation: expected one of"),
    ({"norm": 3.0}, ValueError, r"norm: only the linear activation"),
    ({"activation": "linear", "norm": 0.0}, ValueError, r"norm: expected a positive finite number"),
    ({"activation": "linear", "norm": float("inf")}, ValueError, r"norm: expected a positive finite number"),
    ({"activation": "linear", "norm": "40"}, TypeError, r"norm: expected a real number or None, got str"),
    ({"scale": float("nan")}, ValueError, r"scale: expected a finite number"),
]
_BAD_TARGETS = [
    ({"y_B": np.zeros(3)}, ValueError, r"y_B: expected shape \(2,\)"),
    ({"y_B": np.zeros(2, np.float32)}, TypeError, r"y_B: expected dtype float64"),
]


def _entries():
    return [pytest.param(e, id=e.name) for op in OPS for e in registry.entries(op)]


@pytest.mark.parametrize("changes, error, match", _BAD)
@pytest.mark.parametrize("entry", _entries())
def test_bad_input_is_rejected_like_the_spec(entry, changes, error, match):
    with pytest.raises(error, match=match):
        entry.load()(**_args(entry.op, **changes))


@pytest.mark.parametrize("changes, error, match", _BAD_TARGETS)
@pytest.mark.parametrize("entry", [e for e in _entries() if e.values[0].op.endswith("mse")])
def test_bad_targets_are_rejected_like_the_spec(entry, changes, error, match):
    with pytest.raises(error, match=match):
        entry.load()(**_args(entry.op, **changes))


@pytest.mark.parametrize("entry", [e for e in _entries() if e.values[0].backend != "spec"])
def test_float16_is_refused_by_compiled_backends(entry):
    with pytest.raises(TypeError, match=r"float16"):
        entry.load()(**_args(entry.op, dtype=np.float16))


@pytest.mark.parametrize("spec_fn", [e.load() for op in OPS for e in registry.entries(op, "spec")],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("problem", READOUT_EDGE_PROBLEMS, ids=str)
def test_the_spec_passes_its_own_check(spec_fn, dtype, problem):
    """check_readout is the lessons' check() too: a correct implementation (the spec
    itself) must pass it."""
    check_readout(spec_fn, problem, dtype, spec_fn=spec_fn)
