"""The attention reference ladder: tiled FlashAttention against the oracle, in float64.

Each rung must equal the oracle to ~1e-12 (relative to the logit size, since a score
of 1e4 carries an absolute rounding of ~1e4·eps), and the analytic backward must
equal central differences of the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spec.attention.naive import attention, causal_visible_TS
from spec.attention.tiled import flash_backward, flash_forward
from spec.tolerance import assert_close
from tests.numerics import central_differences
from tests.strategies import (
    AttentionProblem,
    attention_problems,
    with_position_edge_examples,
)

F64 = np.float64


def _assert_same_attention(got, want, logit: float) -> None:
    tol = 1e-12 * max(1.0, logit)
    o, lse = got
    o_ref, lse_ref = want
    np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(lse_ref))
    finite = np.isfinite(lse_ref)
    assert np.max(np.abs(o - o_ref), initial=0.0) <= tol
    assert np.max(np.abs(lse[finite] - lse_ref[finite]), initial=0.0) <= tol * max(
        1.0, np.max(np.abs(lse_ref[finite]), initial=1.0)
    )


@settings(max_examples=150)
@with_position_edge_examples
@given(problem=attention_problems(positions=True))
def test_tiled_forward_equals_oracle(problem: AttentionProblem):
    a = problem.arrays(F64)
    got = flash_forward(a["q"], a["k"], a["v"], bias=a["bias"], mask=a["mask"], **problem.options())
    want = attention(a["q"], a["k"], a["v"], bias=a["bias"], mask=a["mask"], **problem.options(tiles=False))
    _assert_same_attention(got, want, problem.logit)


@settings(max_examples=60)
@given(problem=attention_problems(positions=True), tiles=st.tuples(st.integers(1, 9), st.integers(1, 9)))
def test_tiled_backward_is_independent_of_tiles(problem: AttentionProblem, tiles):
    a = problem.arrays(F64)
    masks = {"bias": a["bias"], "mask": a["mask"]}
    fwd = attention(a["q"], a["k"], a["v"], **masks, **problem.options(tiles=False))
    g1 = flash_backward(a["q"], a["k"], a["v"], *fwd, a["do"], **masks, **problem.options())
    opts = problem.options(tiles=False) | {"tile_t": tiles[0], "tile_s": tiles[1]}
    g2 = flash_backward(a["q"], a["k"], a["v"], *fwd, a["do"], **masks, **opts)
    for x, y in zip(g1, g2):
        assert np.max(np.abs(x - y)) <= 1e-12 * max(1.0, problem.logit) * max(1.0, np.abs(y).max())


def _numerical_grads(problem: AttentionProblem, a: dict, eps: float = 1e-6):
    """Central differences of L = Σ do ∘ attention(q, k, v) in every input entry."""
    opts = problem.options(tiles=False)

    def loss():  # reads q, k, v from ``a``, where central_differences perturbs them
        o = attention(a["q"], a["k"], a["v"], bias=a["bias"], mask=a["mask"], **opts).o_BHTE
        return float(np.sum(o * a["do"]))

    return [central_differences(loss, a[name], eps) for name in ("q", "k", "v")]


# Small problems: the numerical gradient costs two oracle calls per input entry.
small_problems = attention_problems(max_len=7, max_batch=1, max_width=4, positions=True).filter(
    lambda p: p.logit < 1e3  # finite differences of 1e4 logits measure rounding, not slope
)


@settings(max_examples=40)
@example(problem=AttentionProblem(B=1, H=2, G=1, T=5, S=3, D=3, E=2, causal=True, tile_t=2, tile_s=2))
@example(problem=AttentionProblem(B=1, H=2, G=2, T=4, S=4, D=2, E=3, mask="empty_rows", tile_t=3))
@example(problem=AttentionProblem(B=1, H=2, G=1, T=5, S=3, D=4, E=2, causal=True, tile_t=2,
                                  rope="rotate_half", rope_base=50.0, alibi="harmonic_number"))
@example(problem=AttentionProblem(B=1, H=2, G=2, T=3, S=6, D=2, E=3, rope="interleaved",
                                  rope_base=50.0, alibi="linear", tile_s=4))
@given(problem=small_problems)
def test_backward_equals_central_differences(problem: AttentionProblem):
    a = problem.arrays(F64)
    masks = {"bias": a["bias"], "mask": a["mask"]}
    fwd = flash_forward(a["q"], a["k"], a["v"], **masks, **problem.options())
    analytic = flash_backward(a["q"], a["k"], a["v"], *fwd, a["do"], **masks, **problem.options())
    for name, g_num, g in zip(("dq", "dk", "dv"), _numerical_grads(problem, a), analytic):
        np.testing.assert_allclose(g, g_num, rtol=1e-6, atol=1e-7, err_msg=f"{name} {problem}")


@settings(max_examples=60)
@given(problem=attention_problems().filter(lambda p: not p.causal and p.S >= 2), data=st.data())
def test_split_and_resume_equals_one_call(problem: AttentionProblem, data):
    """Attention over keys [0, s) and [s, S) merged by their lse equals one call."""
    a = problem.arrays(F64)
    s = data.draw(st.integers(1, problem.S - 1), label="split")
    opts = problem.options(tiles=False)

    def part(sl):
        bias = None if a["bias"] is None else a["bias"][..., sl]
        mask = None if a["mask"] is None else a["mask"][..., sl]
        return attention(a["q"], a["k"][:, :, sl], a["v"][:, :, sl], bias=bias, mask=mask, **opts)

    (o1, lse1), (o2, lse2) = part(slice(0, s)), part(slice(s, None))
    lse = np.logaddexp(lse1, lse2)
    safe = np.where(np.isneginf(lse), 0.0, lse)
    w1 = np.where(np.isneginf(lse1), 0.0, np.exp(lse1 - safe))[..., None]
    w2 = np.where(np.isneginf(lse2), 0.0, np.exp(lse2 - safe))[..., None]
    merged = (w1 * o1 + w2 * o2, lse)
    full = attention(a["q"], a["k"], a["v"], bias=a["bias"], mask=a["mask"], **opts)
    _assert_same_attention(merged, full, problem.logit)


@settings(max_examples=40)
@given(problem=attention_problems(positions=True).filter(lambda p: p.causal and p.S >= p.T))
def test_decode_by_append_equals_prefill(problem: AttentionProblem):
    """Causal query t over the keys it can see, one at a time, equals the prefill row.

    With positional options too: a single query over s_end keys sits at position
    s_end - 1, which is where the prefill put row t (bottom-right alignment)."""
    a = problem.arrays(F64)
    full = flash_forward(a["q"], a["k"], a["v"], bias=a["bias"], mask=a["mask"], **problem.options())
    opts = problem.options()
    for t in range(problem.T):
        s_end = t + problem.S - problem.T + 1  # bottom-right: sees keys < s_end
        bias = None if a["bias"] is None else np.broadcast_to(
            a["bias"], (problem.B, problem.H, problem.T, problem.S))[:, :, t:t + 1, :s_end]
        mask = None if a["mask"] is None else np.broadcast_to(
            a["mask"], (problem.B, problem.H, problem.T, problem.S))[:, :, t:t + 1, :s_end]
        step = flash_forward(
            a["q"][:, :, t:t + 1], a["k"][:, :, :s_end], a["v"][:, :, :s_end],
            bias=bias, mask=mask, **opts,
        )
        _assert_same_attention(step, (full.o_BHTE[:, :, t:t + 1], full.lse_BHT[:, :, t:t + 1]), problem.logit)


@settings(max_examples=40)
@given(problem=attention_problems(positions=True))
def test_gqa_equals_mha_with_repeated_heads(problem: AttentionProblem):
    a = problem.arrays(F64)
    group = problem.H // problem.G
    masks = {"bias": a["bias"], "mask": a["mask"]}
    gqa = flash_forward(a["q"], a["k"], a["v"], **masks, **problem.options())
    mha = flash_forward(
        a["q"], np.repeat(a["k"], group, axis=1), np.repeat(a["v"], group, axis=1), **masks, **problem.options()
    )
    np.testing.assert_array_equal(gqa.o_BHTE, mha.o_BHTE)
    np.testing.assert_array_equal(gqa.lse_BHT, mha.lse_BHT)


def test_causal_alignment_is_bottom_right():
    # S > T: the last query sees every key; S < T: the first T - S queries see none.
    np.testing.assert_array_equal(
        causal_visible_TS(2, 4), [[True, True, True, False], [True, True, True, True]]
    )
    np.testing.assert_array_equal(
        causal_visible_TS(4, 2), [[False, False], [False, False], [True, False], [True, True]]
    )


@pytest.mark.parametrize("fn", [attention, flash_forward])
def test_rows_without_visible_keys_are_zero_not_nan(fn):
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 2, 5, 4)) for _ in range(3))
    mask = np.ones((1, 1, 5, 5), bool)
    mask[..., 2, :] = False  # row 2 sees nothing
    bias = np.zeros((1, 1, 5, 5))
    bias[..., 4, :] = -np.inf  # row 4 sees nothing either
    o, lse = fn(q, k, v, mask=mask, bias=bias)
    assert np.all(o[:, :, [2, 4]] == 0) and np.all(np.isneginf(lse[:, :, [2, 4]]))
    assert np.all(np.isfinite(o)) and np.isfinite(lse[:, :, [0, 1, 3]]).all()


@pytest.mark.parametrize("fn", [attention, flash_forward])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_huge_logits_do_not_overflow(fn, dtype):
    rng = np.random.default_rng(2)
    q = np.full((1, 1, 4, 2), 100.0, dtype)
    k = (rng.standard_normal((1, 1, 6, 2)) * 100).astype(dtype)  # scores ~1e4
    v = rng.standard_normal((1, 1, 6, 3)).astype(dtype)
    o, lse = fn(q, k, v, causal=True)
    assert np.isfinite(o).all() and np.isfinite(lse).all()
    assert o.dtype == lse.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_tiled_low_precision_is_as_accurate_as_naive(dtype):
    """Tiling costs no accuracy: float16/32 tiled meets the tolerance policy, naive as baseline."""
    p = AttentionProblem(B=2, H=4, G=2, T=37, S=45, D=16, E=8, causal=True, bias="per_head",
                         tile_t=8, tile_s=16, seed=3)
    a, w = p.arrays(dtype), p.arrays(np.float64)
    masks, wmasks = {"bias": a["bias"], "mask": a["mask"]}, {"bias": w["bias"], "mask": w["mask"]}
    oracle = attention(w["q"], w["k"], w["v"], **wmasks, **p.options(tiles=False))
    baseline = attention(a["q"], a["k"], a["v"], **masks, **p.options(tiles=False))
    got = flash_forward(a["q"], a["k"], a["v"], **masks, **p.options())
    for name, x, y, z in zip(("o", "lse"), got, oracle, baseline):
        assert_close(x, y, z, name=name)


def test_nan_in_a_query_propagates_to_its_row_only():
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((1, 2, 4, 3)) for _ in range(3))
    q[0, 1, 2, 0] = np.nan
    for fn in (attention, flash_forward):
        o, lse = fn(q, k, v)
        assert np.isnan(o[0, 1, 2]).all() and np.isnan(lse[0, 1, 2])
        o[0, 1, 2] = 0.0
        lse[0, 1, 2] = 0.0
        assert np.isfinite(o).all() and np.isfinite(lse).all()
