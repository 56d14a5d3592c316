"""spec.attention.prflash: the block-distance distributions, the samplers, and PrFlashAttention."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spec.attention import prflash
from spec.attention.block_sparse import block_layout, dense_equivalent
from spec.attention.naive import attention
from spec.attention.tiled import flash_backward, flash_forward

BUDGETED = {
    "harmonic": prflash.harmonic_probs,
    "uniform": prflash.uniform_probs,
}


@st.composite
def grids(draw):
    """(n, budget, window, sink) with a budget that covers the forced blocks."""
    n = draw(st.integers(1, 40))
    window = draw(st.integers(1, 4))
    sink = draw(st.booleans())
    budget = draw(st.floats(window + sink, window + sink + 12, allow_nan=False))
    return n, budget, window, sink


def _forced(n, window, sink):
    delta = prflash.block_distance(n)
    return ((delta >= 0) & (delta < window)) | (sink & (np.arange(n)[None, :] == 0) & (delta >= 0))


@settings(max_examples=80)
@given(grid=grids(), name=st.sampled_from(sorted(BUDGETED)))
def test_rows_expect_the_budget_and_keep_forced_blocks(grid, name):
    n, budget, window, sink = grid
    p = BUDGETED[name](n, budget, window=window, sink=sink)
    assert p.shape == (n, n) and (p >= 0).all() and (p <= 1).all()
    assert not np.triu(p, 1).any(), "the causal future is never kept"
    np.testing.assert_allclose(p.sum(axis=1), np.minimum(budget, np.arange(n) + 1.0), rtol=1e-12)
    assert (p[_forced(n, window, sink)] == 1).all()


@settings(max_examples=80)
@given(grid=grids())
def test_harmonic_is_one_scaled_harmonic_decay_per_row(grid):
    """Free blocks have p = min(1, c_i / (δ - window + 2)) with one c_i per row."""
    n, budget, window, sink = grid
    p = prflash.harmonic_probs(n, budget, window=window, sink=sink)
    delta = prflash.block_distance(n)
    free = (delta >= window) & ~_forced(n, window, sink)
    for i in range(n):
        js = np.flatnonzero(free[i])
        w = 1.0 / (delta[i, js] - window + 2)
        open_ = p[i, js] < 1
        if not open_.any():
            continue
        c = p[i, js[open_]][0] / w[open_][0]
        np.testing.assert_allclose(p[i, js], np.minimum(1.0, c * w), rtol=1e-12, atol=1e-15)


def test_harmonic_golden_row():
    """A row worked by hand: window 1, budget 3, row i = 4 (distances 0..4).
    Free weights 1/2, 1/3, 1/4, 1/5 need 2 more blocks: c (1/2 + 1/3 + 1/4 + 1/5) = 2
    gives c = 120/77 < 2, so nothing saturates."""
    p = prflash.harmonic_probs(5, 3.0)
    c = 120 / 77
    np.testing.assert_allclose(p[4, ::-1], [1, c / 2, c / 3, c / 4, c / 5], rtol=1e-14)


@given(n=st.integers(1, 30), budget=st.floats(1, 12), sink=st.booleans())
def test_sliding_window_keeps_the_nearest_blocks(n, budget, sink):
    p = prflash.sliding_window_probs(n, max(budget, 1 + sink), sink=sink)
    b = max(budget, 1 + sink)
    np.testing.assert_allclose(p.sum(axis=1), np.minimum(b, np.arange(n) + 1.0), rtol=1e-12)
    fractional = (p > 0) & (p < 1)
    assert (fractional.sum(axis=1) <= 1).all()
    if float(b).is_integer():
        assert not fractional.any(), "an integer budget is deterministic"


def test_power_of_two_pattern():
    p = prflash.power_of_two_probs(20, window=2)
    row = p[19]
    kept = sorted(19 - np.flatnonzero(row))
    assert kept == [0, 1, 2, 4, 8, 16]
    assert set(np.unique(p)) <= {0.0, 1.0}


def test_sample_keep_matches_the_probabilities():
    """Empirical keep rates within 5 binomial standard deviations of p."""
    p = prflash.harmonic_probs(12, 4.0, sink=True)
    rng = np.random.default_rng(0)
    draws = 4000
    keep = prflash.sample_keep(p, rng, batch=(draws, 1))
    assert keep.shape == (draws, 1, 12, 12) and keep.dtype == np.bool_
    rate = keep.mean(axis=(0, 1))
    sd = np.sqrt(p * (1 - p) / draws)
    assert (np.abs(rate - p) <= 5 * sd + 1e-12).all()
    assert keep[..., p == 1].all() and not keep[..., p == 0].any()


def test_sample_keep_is_reproducible_from_the_generator():
    p = prflash.uniform_probs(9, 3.5)
    a = prflash.sample_keep(p, np.random.default_rng(7))
    b = prflash.sample_keep(p, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_categorical_sampler_counts_and_frequencies():
    """An integer budget keeps exactly min(budget, i + 1) blocks per row; with one free
    draw per row the frequencies are the normalised-harmonic weights."""
    rng = np.random.default_rng(1)
    keep = prflash.sample_harmonic_categorical(10, 4, rng, sink=True, batch=(50, 2))
    np.testing.assert_array_equal(keep.sum(axis=-1), np.broadcast_to(np.minimum(4, np.arange(10) + 1), (50, 2, 10)))
    assert keep[..., _forced(10, 1, True)].all() and not keep[..., np.triu(np.ones((10, 10)), 1) > 0].any()
    draws = 6000
    keep = prflash.sample_harmonic_categorical(8, 2, rng, batch=(draws, 1))
    w = prflash.harmonic_categorical(8)
    rate = keep.mean(axis=(0, 1)) - np.eye(8)  # the diagonal is forced
    sd = np.sqrt(w * (1 - w) / draws)
    assert (np.abs(rate - w) <= 5 * sd + 1e-12).all()


def test_kept_fraction():
    keep = np.tril(np.ones((4, 4), np.bool_))
    assert prflash.kept_fraction(keep) == 1.0
    keep[3, 0] = False
    assert prflash.kept_fraction(np.stack([keep, keep])) == 0.9


def test_budget_for_fraction_inverts_the_kept_fraction():
    for n in (1, 2, 7, 16, 32):
        for fraction in np.linspace(2 / (n + 1), 1, 9):
            b = prflash.budget_for_fraction(n, fraction)
            kept = sum(min(b, i + 1) for i in range(n)) / (n * (n + 1) / 2)
            assert abs(kept - fraction) < 1e-12, (n, fraction, b)
    with pytest.raises(ValueError, match="fraction"):
        prflash.budget_for_fraction(16, 0.05)


def _qkv(rng, B=1, H=2, G=1, T=37, D=8, E=5, dtype=np.float64):
    return (rng.standard_normal((B, H, T, D)).astype(dtype), rng.standard_normal((B, G, T, D)).astype(dtype),
            rng.standard_normal((B, G, T, E)).astype(dtype))


def test_every_block_kept_is_exact_causal_attention():
    rng = np.random.default_rng(0)
    q, k, v = _qkv(rng, G=2)
    n = -(-37 // 8)
    keep = prflash.sample_keep(prflash.harmonic_probs(n, n), rng)
    assert keep.sum() == n * (n + 1) // 2
    out = prflash.prflash_forward(q, k, v, keep, block_size=8)
    ref = attention(q, k, v, causal=True)
    np.testing.assert_allclose(out.o_BHTE, ref.o_BHTE, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(out.o_BHTE, flash_forward(q, k, v, causal=True, tile_t=8, tile_s=8).o_BHTE)


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), budget=st.floats(1, 5), per_head=st.booleans(),
       importance=st.booleans())
def test_any_mask_is_dense_attention_with_that_block_mask(seed, budget, per_head, importance):
    rng = np.random.default_rng(seed)
    q, k, v = _qkv(rng, B=2, H=2, T=29)
    C, n = 4, 8
    p = prflash.harmonic_probs(n, budget)
    keep = prflash.sample_keep(p, rng, batch=(2, 2) if per_head else ())
    imp = p if importance else None
    out = prflash.prflash_forward(q, k, v, keep, block_size=C, importance=imp)
    layout = block_layout(keep, C)
    bias_K = prflash.importance_bias(imp, keep, np.float64)
    mask, bias = dense_equivalent(layout, 29, 29, bias_K)
    ref = attention(q, k, v, causal=True, mask=mask, bias=bias)
    np.testing.assert_allclose(out.o_BHTE, ref.o_BHTE, rtol=0, atol=1e-12)
    do = rng.standard_normal(out.o_BHTE.shape)
    got = prflash.prflash_backward(q, k, v, out.o_BHTE, out.lse_BHT, do, keep, block_size=C, importance=imp)
    want = flash_backward(q, k, v, out.o_BHTE, out.lse_BHT, do, causal=True, mask=mask, bias=bias)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-11)


def test_importance_correction_makes_the_softmax_sums_unbiased():
    """With bias log(1/p), exp(lse) = Σ_kept exp(x)/p is a Horvitz–Thompson estimate of the
    full denominator: its mean over rounds is the exact one, within 5 standard errors."""
    rng = np.random.default_rng(2)
    q, k, v = _qkv(rng, T=32, H=1)
    p = prflash.uniform_probs(8, 2.5)
    exact = np.exp(attention(q, k, v, causal=True).lse_BHT)
    rounds = np.stack([
        np.exp(prflash.prflash_forward(q, k, v, prflash.sample_keep(p, rng), block_size=4,
                                       importance=p).lse_BHT)
        for _ in range(400)
    ])
    se = rounds.std(axis=0) / np.sqrt(len(rounds))
    assert (np.abs(rounds.mean(axis=0) - exact) <= 5 * se + 1e-9 * exact).all()
    # and without the correction the denominator falls short wherever blocks are dropped
    plain = np.exp(prflash.prflash_forward(q, k, v, prflash.sample_keep(p, rng), block_size=4).lse_BHT)
    assert (plain <= exact * (1 + 1e-12)).all()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: prflash.harmonic_probs(8, 0.5), ValueError, "budget.*>= 1"),
        (lambda: prflash.harmonic_probs(8, 2, sink=True, window=2), ValueError, "budget.*>= 3"),
        (lambda: prflash.harmonic_probs(8, float("nan")), ValueError, "budget"),
        (lambda: prflash.harmonic_probs(0, 2), ValueError, "n_blocks"),
        (lambda: prflash.uniform_probs(8, "2"), TypeError, "budget"),
        (lambda: prflash.power_of_two_probs(8, window=0), ValueError, "window"),
        (lambda: prflash.sample_keep(np.ones((3, 3)), np.random.default_rng()), ValueError, "above the diagonal"),
        (lambda: prflash.sample_keep(np.eye(3), 0), TypeError, "rng"),
        (lambda: prflash.sample_keep(np.eye(3), np.random.default_rng(), batch=(2,)), ValueError, "batch"),
        (lambda: prflash.sample_keep(np.eye(3) * 2, np.random.default_rng()), ValueError, r"\[0, 1\]"),
    ],
)
def test_bad_distribution_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_bad_attention_arguments():
    rng = np.random.default_rng(0)
    q, k, v = _qkv(rng, T=16)
    keep = np.tril(np.ones((4, 4), np.bool_))
    with pytest.raises(ValueError, match=r"keep.*\(4, 4\) block grid"):
        prflash.prflash_forward(q, k, v, keep[:3, :3], block_size=4)
    with pytest.raises(ValueError, match="causal future"):
        prflash.prflash_forward(q, k, v, np.ones((4, 4), np.bool_), block_size=4)
    with pytest.raises(ValueError, match=r"importance.*\(0, 1\]"):
        prflash.prflash_forward(q, k, v, keep, block_size=4, importance=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="importance.*shape"):
        prflash.prflash_forward(q, k, v, keep, block_size=4, importance=np.ones((3, 3)))
    with pytest.raises(TypeError, match="importance"):
        prflash.prflash_forward(q, k, v, keep, block_size=4, importance=keep)
    with pytest.raises(TypeError, match="block_size"):
        prflash.prflash_forward(q, k, v, keep, block_size=4.0)
