"""The positional encodings of spec/position: RoPE, ALiBi, the harmonic RoPE–ALiBi readings."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spec.attention.naive import attention
from spec.position import alibi, rope_alibi
from spec.position.rope import LAYOUTS, RoPE, long_term_decay, rope, rope_qk

F64 = np.float64


def _scores(q_BHTD, k_BHSD):
    return np.einsum("BHTD,BHSD->BHTS", q_BHTD, k_BHSD)


# ---------------------------------------------------------------- RoPE


@settings(max_examples=60)
@given(
    half=st.integers(1, 12),
    layout=st.sampled_from(LAYOUTS),
    base=st.sampled_from([10000.0, 500000.0, 10.0]),
    positions=st.lists(st.integers(-3000, 3000), min_size=2, max_size=6),
    shift=st.integers(-5000, 5000),
    seed=st.integers(0, 2**32 - 1),
)
def test_rope_scores_depend_only_on_the_relative_position(half, layout, base, positions, shift, seed):
    """⟨R_i q, R_j k⟩ is unchanged when every position moves by the same amount."""
    rng = np.random.default_rng(seed)
    D, n = 2 * half, len(positions)
    q = rng.standard_normal((1, 1, n, D))
    k = rng.standard_normal((1, 1, n, D))
    p = np.array(positions)
    kw = {"base": base, "layout": layout}
    before = _scores(rope(q, positions=p, **kw), rope(k, positions=p, **kw))
    after = _scores(rope(q, positions=p + shift, **kw), rope(k, positions=p + shift, **kw))
    # angles up to 8000 rad carry float64 rounding of ~8000·eps each
    tol = 64 * 8000 * np.finfo(F64).eps * np.abs(q).sum() * np.abs(k).max()
    np.testing.assert_allclose(after, before, rtol=0, atol=tol)


def test_rope_is_a_rotation_of_each_pair():
    """Norms are kept, and one pair at position 1 with base b turns by exactly 1 rad."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 10))
    for layout in LAYOUTS:
        y = rope(x, offset=5, layout=layout)
        np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-14)
    unit = np.array([1.0, 0.0]).reshape(1, 1, 1, 2)
    np.testing.assert_array_equal(rope(unit, offset=1)[0, 0, 0], [math.cos(1.0), math.sin(1.0)])
    np.testing.assert_array_equal(rope(unit, positions=np.array([0]))[0, 0, 0], [1.0, 0.0])


def test_the_two_layouts_differ_by_a_fixed_feature_permutation():
    rng = np.random.default_rng(1)
    D = 8
    q, k = rng.standard_normal((1, 2, 5, D)), rng.standard_normal((1, 2, 5, D))
    # interleaved pair (2i, 2i+1) is rotate-half pair (i, i + D/2)
    perm = np.stack([np.arange(D // 2), np.arange(D // 2) + D // 2], axis=1).ravel()
    half = _scores(rope(q, layout="rotate_half"), rope(k, layout="rotate_half"))
    inter = _scores(rope(q[..., perm], layout="interleaved"), rope(k[..., perm], layout="interleaved"))
    np.testing.assert_allclose(inter, half, rtol=0, atol=1e-13)
    assert not np.allclose(_scores(rope(q, layout="interleaved"), rope(k, layout="interleaved")), half)


def test_offset_rotates_a_decoding_step_like_the_prefill():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 9, 6))
    full = rope(x)
    for t in range(9):
        np.testing.assert_array_equal(rope(x[:, :, t:t + 1], offset=t), full[:, :, t:t + 1])


def test_rope_qk_is_what_attention_with_rope_does():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal(s) for s in ((1, 4, 3, 8), (1, 2, 7, 8), (1, 2, 7, 5)))
    for layout in LAYOUTS:
        r = RoPE(base=100.0, layout=layout)
        fused = attention(q, k, v, causal=True, rope=r)
        apart = attention(*rope_qk(q, k, rope=r), v, causal=True)
        np.testing.assert_array_equal(fused.o_BHTE, apart.o_BHTE)
        # queries sit at the last T key positions
        np.testing.assert_array_equal(rope_qk(q, k, rope=r).q_BHTD,
                                      rope(q, positions=np.arange(4, 7), base=100.0, layout=layout))


def test_long_term_decay_bound_falls_with_distance():
    """Su et al., section 3.4.3: the relative bound starts at mean_j j and decays."""
    D = 128
    bound = long_term_decay(np.arange(0, 4096), D)
    assert bound[0] == pytest.approx((D // 2 + 1) / 2)
    assert bound[1:].max() < bound[0]
    # averaged over windows (it oscillates) it falls by distance
    windows = [bound[a:b].mean() for a, b in ((1, 16), (16, 128), (128, 1024), (1024, 4096))]
    assert all(x > y for x, y in itertools.pairwise(windows)), windows


@pytest.mark.parametrize("bad, error", [
    ({"base": 1.0}, ValueError), ({"base": "big"}, TypeError), ({"layout": "pairs"}, ValueError),
])
def test_rope_config_rejects_bad_values(bad, error):
    with pytest.raises(error, match="base|layout"):
        RoPE(**bad)


def test_rope_rejects_bad_input():
    x = np.zeros((1, 1, 3, 4))
    with pytest.raises(ValueError, match="D must be even"):
        rope(np.zeros((1, 1, 3, 5)))
    with pytest.raises(ValueError, match=r"positions: expected shape \(T,\)=\(3,\)"):
        rope(x, positions=np.arange(4))
    with pytest.raises(TypeError, match="positions: expected an integer dtype"):
        rope(x, positions=np.zeros(3))
    with pytest.raises(ValueError, match="either positions or offset"):
        rope(x, positions=np.arange(3), offset=2)
    with pytest.raises(TypeError, match="x_BHTD: expected a float dtype"):
        rope(np.zeros((1, 1, 3, 4), np.int32))


# ---------------------------------------------------------------- ALiBi


def test_alibi_slopes_follow_press_et_al():
    # power of two: the geometric sequence from 2^(-8/H) with that ratio (H = 8: 1/2 ... 1/256)
    np.testing.assert_array_equal(alibi.slopes(8), 2.0 ** -np.arange(1, 9))
    np.testing.assert_array_equal(alibi.slopes(16), 2.0 ** (-0.5 * np.arange(1, 17)))
    # 6 heads: the 4-head slopes 2^-2, 2^-4, 2^-6, 2^-8, then 2^-1, 2^-3 (odd ones of 8 heads)
    np.testing.assert_array_equal(alibi.slopes(6), 2.0 ** -np.array([2, 4, 6, 8, 1, 3]))
    assert alibi.slopes(1).tolist() == [2.0 ** -8]
    for bad, error in ((0, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match="n_heads"):
            alibi.slopes(bad)


def test_alibi_bias_is_linear_in_the_distance():
    m = alibi.slopes(4)
    b = alibi.bias(m, 3, 5)  # queries at positions 2, 3, 4
    i = np.arange(3)[:, None] + 2
    j = np.arange(5)[None, :]
    np.testing.assert_array_equal(b, -m[:, None, None] * (i - j)[None])
    np.testing.assert_array_equal(alibi.bias(m, 3, 5, symmetric=True),
                                  -m[:, None, None] * np.abs(i - j)[None])
    with pytest.raises(ValueError, match="symmetric=True"):
        alibi.bias(m, 3, 5, form="harmonic_number")


@pytest.mark.parametrize("causal", [True, False])
def test_fused_alibi_equals_the_materialised_bias(causal):
    rng = np.random.default_rng(4)
    H, T, S = 4, 6, 9
    q, k, v = (rng.standard_normal((2, H, n, 8)) for n in (T, S, S))
    m = alibi.slopes(H)
    fused = attention(q, k, v, causal=causal, alibi_slopes=m)
    bias = np.ascontiguousarray(alibi.bias(m, T, S, symmetric=not causal)[None])
    np.testing.assert_array_equal(fused.o_BHTE, attention(q, k, v, causal=causal, bias=bias).o_BHTE)


def test_low_rank_alibi_equals_alibi_attention():
    rng = np.random.default_rng(5)
    B, H, G, T, S = 2, 4, 2, 7, 11
    q, k = rng.standard_normal((B, H, T, 8)), rng.standard_normal((B, G, S, 8))
    v = rng.standard_normal((B, G, S, 3))
    m = alibi.slopes(H)
    q2, k2 = alibi.low_rank_qk(q, k, m)
    assert q2.shape == (B, H, T, 10) and k2.shape == (B, G, S, 10)
    want = attention(q, k, v, causal=True, alibi_slopes=m)
    got = attention(q2, k2, v, causal=True, scale=1.0)
    np.testing.assert_allclose(got.o_BHTE, want.o_BHTE, rtol=0, atol=1e-13)
    np.testing.assert_allclose(got.lse_BHT, want.lse_BHT, rtol=0, atol=1e-13)


def test_penalty_forms():
    d = np.arange(6)
    np.testing.assert_array_equal(alibi.penalty(d, "linear"), d)
    np.testing.assert_allclose(alibi.penalty(d, "harmonic_number"),
                               [0, 1, 1.5, 11 / 6, 25 / 12, 137 / 60], rtol=1e-15)
    np.testing.assert_allclose(alibi.penalty(d, "harmonic_prior"), np.log(1 + d), rtol=1e-15)
    # H_d - ln d tends to the Euler–Mascheroni constant
    assert alibi.penalty(np.array([10**6]), "harmonic_number")[0] - math.log(10**6) == pytest.approx(
        0.5772156649, abs=1e-6)
    with pytest.raises(ValueError, match="alibi_form"):
        alibi.penalty(d, "quadratic")
    with pytest.raises(ValueError, match=">= 0"):
        alibi.penalty(np.array([-1]))


# ---------------------------------------------------------------- the harmonic combination


def _problem(seed=6, H=3, T=5, S=8, D=8):
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((1, H, T, D)), rng.standard_normal((1, H, S, D))
    return q, k


@pytest.mark.parametrize("variant", list(rope_alibi.VARIANTS))
@pytest.mark.parametrize("causal", [True, False])
def test_lambda_zero_is_plain_rope(variant, causal):
    q, k = _problem()
    v = np.eye(8)[None, None].repeat(3, axis=1)
    plain = attention(q, k, v, causal=causal, rope=RoPE())
    combined = attention(q, k, v, causal=causal, **rope_alibi.options(3, variant=variant, lam=0.0))
    np.testing.assert_array_equal(combined.o_BHTE, plain.o_BHTE)


def test_without_rope_the_additive_reading_is_alibi_with_harmonic_slopes():
    q, k = _problem()
    v = np.eye(8)[None, None].repeat(3, axis=1)
    opts = rope_alibi.options(3, rope=None)
    np.testing.assert_array_equal(opts["alibi_slopes"], [1.0, 1 / 2, 1 / 3])
    got = attention(q, k, v, causal=True, **opts)
    bias = np.ascontiguousarray(alibi.bias(np.array([1.0, 1 / 2, 1 / 3]), 5, 8)[None])
    np.testing.assert_array_equal(got.o_BHTE, attention(q, k, v, causal=True, bias=bias).o_BHTE)


@pytest.mark.parametrize("causal", [True, False])
def test_multiplicative_reading_factorises_into_rope_weights_times_a_harmonic_prior(causal):
    """p_ij ∝ softmax(RoPE scores)_ij · (1 + |i - j|)^(-λ m_h), renormalised per row."""
    H, T, S = 3, 5, 8
    q, k = _problem(H=H, T=T, S=S)
    v = np.eye(S)[None, None].repeat(H, axis=1)  # o = the attention weights themselves
    lam = 2.0
    p = attention(q, k, v, causal=causal, **rope_alibi.options(H, variant="multiplicative", lam=lam)).o_BHTE
    p_rope = attention(q, k, v, causal=causal, rope=RoPE()).o_BHTE
    d = np.abs(np.arange(T)[:, None] + (S - T) - np.arange(S)[None, :])
    prior = np.stack([rope_alibi.distance_prior(d, lam / h) for h in range(1, H + 1)])[None]
    want = p_rope * prior
    want /= want.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(p, want, rtol=1e-12, atol=1e-15)
    # head 1 with λ m = 1: the prior is the harmonic series itself
    np.testing.assert_allclose(rope_alibi.distance_prior(np.arange(4), 1.0), [1, 1 / 2, 1 / 3, 1 / 4])


def test_harmonic_number_reading_penalises_by_h_d():
    H, T, S = 2, 4, 6
    q, k = _problem(H=H, T=T, S=S)
    v = np.eye(S)[None, None].repeat(H, axis=1)
    p = attention(q, k, v, causal=True, **rope_alibi.options(H, variant="harmonic_number")).o_BHTE
    p_rope = attention(q, k, v, causal=True, rope=RoPE()).o_BHTE
    # the log-ratio of the two weight matrices is -m_h H_d up to a per-row constant
    visible = p_rope > 0
    ratio = np.log(np.divide(p, p_rope, where=visible, out=np.ones_like(p)))
    d = np.arange(T)[:, None] + (S - T) - np.arange(S)[None, :]
    h_d = alibi.penalty(np.maximum(d, 0), "harmonic_number")
    last = np.arange(T) + (S - T)  # each row's last visible key, at distance 0
    for h in range(H):
        resid = ratio[0, h] + h_d / (h + 1)
        resid = np.where(visible[0, h], resid - resid[np.arange(T), last][:, None], 0.0)
        np.testing.assert_allclose(resid, 0.0, atol=1e-12)


def test_options_reject_bad_values():
    with pytest.raises(ValueError, match="variant"):
        rope_alibi.options(4, variant="sum")
    with pytest.raises(ValueError, match="lam"):
        rope_alibi.options(4, lam=-1.0)
    with pytest.raises(ValueError, match="n_heads"):
        rope_alibi.harmonic_slopes(0)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"rope": "yes"}, TypeError, "rope: expected a spec.position.rope.RoPE"),
    ({"alibi_slopes": np.ones(3)}, ValueError, r"alibi_slopes: expected shape \(H,\)=\(2,\)"),
    ({"alibi_slopes": np.array([1.0, np.nan])}, ValueError, "alibi_slopes: expected finite"),
    ({"alibi_slopes": np.array([1.0, -1.0])}, ValueError, "alibi_slopes: expected finite slopes >= 0"),
    ({"alibi_slopes": np.array([1, 2])}, TypeError, "alibi_slopes: expected a float dtype"),
    ({"alibi_slopes": [1.0, 2.0]}, TypeError, "alibi_slopes: expected a numpy.ndarray"),
    ({"alibi_form": "cubic"}, ValueError, "alibi_form: expected one of"),
])
def test_attention_rejects_bad_positional_options(kwargs, error, match):
    q = np.zeros((1, 2, 3, 4))
    with pytest.raises(error, match=match):
        attention(q, q, q, **kwargs)


def test_rope_needs_an_even_width_in_attention():
    q = np.zeros((1, 1, 3, 5))
    with pytest.raises(ValueError, match="D must be even, got D=5"):
        attention(q, q, q, rope=RoPE())
