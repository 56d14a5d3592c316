"""The row softmax: the oracle against its definition, the online rung against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from spec.attention.softmax import online_softmax, softmax
from tests.strategies import (
    SoftmaxProblem,
    softmax_problems,
    with_softmax_edge_examples,
)


def _definition(x_TS: np.ndarray):
    """p and lse straight from the definition, in longdouble, on finite rows without -inf games."""
    x = x_TS.astype(np.longdouble)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True), np.log(e.sum(axis=1))


def test_oracle_matches_the_definition_on_moderate_scores():
    x = np.random.default_rng(0).standard_normal((7, 50)) * 3
    p, lse = softmax(x)
    p_def, lse_def = _definition(x)
    np.testing.assert_allclose(p, p_def.astype(np.float64), rtol=1e-14, atol=0)
    np.testing.assert_allclose(lse, lse_def.astype(np.float64), rtol=1e-14, atol=0)


def test_oracle_is_shift_invariant_and_does_not_overflow():
    x = np.random.default_rng(1).standard_normal((3, 20))
    p, lse = softmax(x)
    p_big, lse_big = softmax(x + 1e4)
    np.testing.assert_allclose(p_big, p, rtol=1e-11)
    np.testing.assert_allclose(lse_big - 1e4, lse, atol=1e-11)


@settings(max_examples=60)
@with_softmax_edge_examples
@given(problem=softmax_problems())
def test_online_rung_matches_the_oracle_for_every_tile(problem: SoftmaxProblem):
    x = problem.x(np.float64)
    want = softmax(x)
    for tile_s in sorted({1, 2, 3, 7, 32, 64, problem.S, problem.S + 1}):
        _assert_same(online_softmax(x, tile_s=tile_s), want)


def _assert_same(got, want):
    for g, w in zip(got, want):
        # same NaN / -inf pattern, and 1e-12 relative elsewhere
        np.testing.assert_array_equal(np.isfinite(g), np.isfinite(w))
        np.testing.assert_array_equal(g[~np.isfinite(w)], w[~np.isfinite(w)])
        finite = np.isfinite(w)
        np.testing.assert_allclose(g[finite], w[finite], rtol=1e-12, atol=1e-300)


@settings(max_examples=40)
@given(problem=softmax_problems())
def test_rows_sum_to_one_and_lse_is_the_log_normaliser(problem: SoftmaxProblem):
    x = problem.x(np.float64)
    p, lse = softmax(x)
    has_nan = np.isnan(x).any(axis=1)
    empty = (x == -np.inf).all(axis=1)
    live = ~has_nan & ~empty
    np.testing.assert_allclose(p[live].sum(axis=1), 1.0, rtol=1e-13)
    m = x[live].max(axis=1, keepdims=True)
    np.testing.assert_allclose(lse[live], (m + np.log(np.exp(x[live] - m).sum(axis=1, keepdims=True)))[:, 0],
                               rtol=1e-13, atol=1e-13)
    assert (p[x == -np.inf] == 0).all() or has_nan.any()
    assert np.isnan(p[has_nan]).all() and np.isnan(lse[has_nan]).all()
    assert (p[empty & ~has_nan] == 0).all() and (lse[empty & ~has_nan] == -np.inf).all()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.longdouble])
@pytest.mark.parametrize("fn", [softmax, online_softmax])
def test_computes_in_the_input_dtype(fn, dtype):
    dtype = np.dtype(dtype)
    p, lse = fn(np.zeros((2, 3), dtype=dtype))
    assert p.dtype == dtype and lse.dtype == dtype
    np.testing.assert_array_equal(p, np.full((2, 3), dtype.type(1) / dtype.type(3), dtype=dtype))


@pytest.mark.parametrize(
    "x, error, match",
    [
        ([[1.0, 2.0]], TypeError, r"x_TS: expected a numpy\.ndarray, got list"),
        (np.zeros(3), ValueError, r"x_TS: expected 2 dimensions \(TS\), got shape \(3,\)"),
        (np.zeros((2, 2, 2)), ValueError, r"x_TS: expected 2 dimensions"),
        (np.zeros((2, 2), dtype=np.int32), TypeError, r"x_TS: expected dtype float16.*got int32"),
        (np.zeros((0, 3)), ValueError, r"x_TS: every dimension must be at least 1, got shape \(0, 3\)"),
        (np.array([[0.0, np.inf]]), ValueError, r"x_TS: \+inf is not allowed"),
    ],
)
@pytest.mark.parametrize("fn", [softmax, online_softmax])
def test_bad_input_is_rejected(fn, x, error, match):
    with pytest.raises(error, match=match):
        fn(x)


@pytest.mark.parametrize("tile_s, error", [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_tile_is_rejected(tile_s, error):
    with pytest.raises(error, match="tile_s"):
        online_softmax(np.zeros((1, 4)), tile_s=tile_s)
