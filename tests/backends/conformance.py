"""The conformance checks of the attention ops, as plain functions.

The pytest suite (``test_attention_conformance.py``) runs them on every registered
backend over hypothesis-drawn problems; the lessons' ``check()`` runs the very same
functions on a learner's implementation.

For a working dtype ``dtype`` (see :mod:`spec.tolerance`):
    oracle   = the oracle (spec.attention.naive / float64-validated tiled backward)
               on the inputs widened to oracle_dtype(dtype)
    baseline = the spec function the implementation mirrors, in ``dtype``
    out      = the implementation under test, in ``dtype``
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from spec.attention.naive import attention
from spec.attention.tiled import flash_backward, flash_forward
from spec.tolerance import assert_close, oracle_dtype
from tests.strategies import AttentionProblem


def _widen(arrays: dict, dtype) -> dict:
    wide = oracle_dtype(dtype)
    return {n: (x if x is None or x.dtype == np.bool_ else x.astype(wide)) for n, x in arrays.items()}


def _check_dtype_kept(name: str, x: np.ndarray, dtype) -> None:
    assert isinstance(x, np.ndarray), f"{name}: expected numpy.ndarray, got {type(x).__name__}"
    assert x.dtype == dtype, f"{name}: expected dtype {dtype}, got {x.dtype}"


def check_forward(fn: Callable, problem: AttentionProblem, dtype, *, spec_fn=flash_forward) -> None:
    """``fn`` (flash_forward's signature) agrees with the oracle on ``problem``."""
    dtype = np.dtype(dtype)
    a = problem.arrays(dtype)
    w = _widen(a, dtype)
    masks = {"bias": a["bias"], "mask": a["mask"]}
    oracle = attention(w["q"], w["k"], w["v"], bias=w["bias"], mask=a["mask"], **problem.options(tiles=False))
    baseline = spec_fn(a["q"], a["k"], a["v"], **masks, **problem.options())
    out = fn(a["q"], a["k"], a["v"], **masks, **problem.options())
    for name, got, want, base in zip(("o_BHTE", "lse_BHT"), out, oracle, baseline):
        _check_dtype_kept(name, got, dtype)
        assert got.shape == want.shape, f"{name}: expected shape {want.shape}, got {got.shape}"
        assert_close(got, want, base, name=f"{name} {problem}")


def check_backward(fn: Callable, problem: AttentionProblem, dtype, *, spec_fn=flash_backward) -> None:
    """``fn`` (flash_backward's signature) agrees with the float64-validated spec backward.

    The forward outputs fed to the backward are the spec's in ``dtype`` (for the
    implementation and the baseline) and in the oracle dtype (for the oracle), so the
    backward is judged on its own.
    """
    dtype = np.dtype(dtype)
    a = problem.arrays(dtype)
    w = _widen(a, dtype)
    opts = problem.options()
    fwd_w = flash_forward(w["q"], w["k"], w["v"], bias=w["bias"], mask=a["mask"], **opts)
    fwd = flash_forward(a["q"], a["k"], a["v"], bias=a["bias"], mask=a["mask"], **opts)
    oracle = flash_backward(
        w["q"], w["k"], w["v"], *fwd_w, w["do"], bias=w["bias"], mask=a["mask"], **opts
    )
    baseline = spec_fn(a["q"], a["k"], a["v"], *fwd, a["do"], bias=a["bias"], mask=a["mask"], **opts)
    out = fn(a["q"], a["k"], a["v"], *fwd, a["do"], bias=a["bias"], mask=a["mask"], **opts)
    for name, got, want, base in zip(("dq_BHTD", "dk_BGSD", "dv_BGSE"), out, oracle, baseline):
        _check_dtype_kept(name, got, dtype)
        assert got.shape == want.shape, f"{name}: expected shape {want.shape}, got {got.shape}"
        assert_close(got, want, base, name=f"{name} {problem}")
