"""spec.attention.readout: the forward pass is the model's definition, and the
hand-written gradient is the loss's derivative (central differences, float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

from spec.attention.readout import (
    readout_backward,
    readout_forward,
    readout_mse,
    rounding_baselines,
)
from tests.numerics import central_differences
from tests.strategies import (
    ReadoutProblem,
    readout_problems,
    with_readout_edge_examples,
)


def _by_loops(z, zq, kq, ov, activation, scale, norm):
    """ŷ by explicit loops over prompts, heads and examples, straight from the paper's formula."""
    B, S, D = z.shape
    scale = (1 / math.sqrt(D) if activation == "softmax" else 1.0) if scale is None else scale
    norm = S if norm is None else norm
    yhat = np.zeros(B)
    for b in range(B):
        for h in range(kq.shape[0]):
            scores = [scale * z[b, s] @ kq[h] @ zq[b] for s in range(S)]
            if activation == "softmax":
                w = np.exp(np.array(scores) - max(scores))
                weights = w / w.sum()
            else:
                weights = np.array(scores) / norm
            yhat[b] += sum(weights[s] * (ov[h] @ z[b, s]) for s in range(S))
    return yhat


@settings(max_examples=30)
@with_readout_edge_examples
@given(problem=readout_problems(max_s=50))
def test_forward_is_the_formula(problem: ReadoutProblem):
    z, zq, _, kq, ov = problem.arrays(np.float64)
    got = readout_forward(z, zq, kq, ov, **problem.options)
    want = _by_loops(z, zq, kq, ov, problem.activation, problem.scale, problem.norm)
    np.testing.assert_allclose(got.yhat_B, want, rtol=1e-12, atol=1e-12)
    if problem.activation == "softmax":
        np.testing.assert_allclose(got.a_BHS.sum(axis=-1), 1.0, rtol=1e-13)


@pytest.mark.parametrize("problem", [
    ReadoutProblem(B=5, S=7, D=4, H=3, seed=11),
    ReadoutProblem(B=4, S=40, D=6, H=2, kq_std=1.0, seed=12),
    ReadoutProblem(B=3, S=9, D=3, H=2, activation="linear", norm=20.0, seed=13),
    ReadoutProblem(B=3, S=9, D=3, H=1, activation="linear", scale=0.7, query_label=True, seed=14),
])
def test_gradient_matches_central_differences(problem):
    z, zq, y, kq, ov = problem.arrays(np.float64)
    out = readout_mse(z, zq, y, kq, ov, **problem.options)

    def loss():
        return readout_mse(z, zq, y, kq, ov, **problem.options).loss

    for name, got, x in (("dkq", out.dkq_HDD, kq), ("dov", out.dov_HD, ov)):
        want = central_differences(loss, x)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8, err_msg=name)


def test_backward_takes_any_upstream_gradient():
    """readout_backward is linear in ∂ŷ: ∂ŷ = e_b gives prompt b's own gradient."""
    z, zq, _, kq, ov = ReadoutProblem(B=3, S=5, D=4, H=2, seed=3).arrays(np.float64)
    total = readout_backward(z, zq, kq, ov, np.array([1.0, -2.0, 0.5]))
    parts = [readout_backward(z, zq, kq, ov, np.eye(3)[b]) for b in range(3)]
    for i in range(2):
        np.testing.assert_allclose(total[i], parts[0][i] - 2 * parts[1][i] + 0.5 * parts[2][i], atol=1e-14)


def test_linear_norm_defaults_to_the_prompt_length():
    z, zq, _, kq, ov = ReadoutProblem(B=2, S=13, D=4, H=2, activation="linear").arrays(np.float64)
    np.testing.assert_array_equal(readout_forward(z, zq, kq, ov, activation="linear").yhat_B,
                                  readout_forward(z, zq, kq, ov, activation="linear", norm=13.0).yhat_B)


def test_softmax_is_shift_invariant_and_finite_for_huge_scores():
    z, zq, _, kq, ov = ReadoutProblem(B=2, S=6, D=3, H=1, kq_std=1e3).arrays(np.float64)
    out = readout_forward(z, zq, kq, ov)
    assert np.isfinite(out.yhat_B).all()
    np.testing.assert_allclose(out.a_BHS.sum(axis=-1), 1.0)


def test_rounding_baselines_are_the_spec_in_other_orders():
    """The permuted copies, permuted back, are the spec's results up to rounding (a wrong
    inverse permutation would inflate every tolerance bound that uses them)."""
    z, zq, y, kq, ov = ReadoutProblem(B=3, S=7, D=4, H=3, seed=5).arrays(np.float64)
    rng = np.random.default_rng(1)
    for targets in (y, None):
        first, *others = rounding_baselines(z, zq, targets, kq, ov, rng=rng, count=3)
        assert len(others) == 3
        for other in others:
            for a, b in zip(first, other):
                np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_the_first_rounding_baseline_is_the_spec_bit_for_bit():
    """The unpermuted copy is the spec as a caller runs it (a strided copy would make
    einsum sum in another order, and the spec would fail its own conformance check)."""
    z, zq, y, kq, ov = ReadoutProblem(B=256, S=40, D=6, H=8, seed=1).arrays(np.float64)
    first = rounding_baselines(z, zq, y, kq, ov, rng=np.random.default_rng(0), count=0)[0]
    want = readout_mse(z, zq, y, kq, ov)
    assert first[0] == want.loss
    for a, b in zip(first[1:], want[1:]):
        np.testing.assert_array_equal(a, b)
