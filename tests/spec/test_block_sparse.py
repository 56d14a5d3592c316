"""spec.attention.block_sparse: the CSR layout, and attention over kept tiles against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spec.attention.block_sparse import (
    BlockLayout,
    block_layout,
    block_sparse_backward,
    block_sparse_forward,
    causal_blocks,
    dense_equivalent,
    key_block_columns,
    layout_keep,
)
from spec.attention.naive import attention
from spec.attention.tiled import flash_backward, flash_forward
from tests.strategies import block_sparse_problems, with_block_sparse_edge_examples


@settings(max_examples=60)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
       seed=st.integers(0, 2**32 - 1))
def test_layout_round_trip_and_columns(shape, seed):
    """keep -> CSR -> keep is the identity, and the column view lists the same tiles."""
    keep = np.random.default_rng(seed).random(shape) < 0.4
    layout = block_layout(keep, 4)
    np.testing.assert_array_equal(layout_keep(layout), keep)
    Bl, Hl, Nq, Nk = shape
    cols = key_block_columns(layout)
    row_K = np.repeat(np.arange(Bl * Hl * Nq), np.diff(layout.row_offsets))
    for c in range(Bl * Hl * Nk):
        bh, j = divmod(c, Nk)
        members = range(cols.col_offsets[c], cols.col_offsets[c + 1])
        query_blocks = [int(cols.query_block_K[n]) for n in members]
        assert query_blocks == sorted(query_blocks)
        assert query_blocks == list(np.flatnonzero(keep.reshape(Bl * Hl, Nq, Nk)[bh, :, j]))
        for n in members:  # pair_K points at the same tile in the row layout
            k = cols.pair_K[n]
            assert layout.key_block_K[k] == j and row_K[k] == bh * Nq + cols.query_block_K[n]


@settings(max_examples=80)
@with_block_sparse_edge_examples
@given(problem=block_sparse_problems())
def test_forward_is_the_oracle_with_the_block_mask(problem):
    """Tile by tile over kept blocks equals dense softmax attention with the expanded mask
    and bias, float64, to rounding."""
    x = problem.arrays(np.float64)
    layout = problem.layout()
    bias = problem.bias_of(layout, np.float64)
    out = block_sparse_forward(x["q"], x["k"], x["v"], layout, block_bias=bias, **problem.options())
    mask, dense_bias = dense_equivalent(layout, problem.T, problem.S, bias)
    ref = attention(x["q"], x["k"], x["v"], mask=mask, bias=dense_bias, **problem.options())
    np.testing.assert_allclose(out.o_BHTE, ref.o_BHTE, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.isneginf(out.lse_BHT), np.isneginf(ref.lse_BHT))
    finite = np.isfinite(ref.lse_BHT)
    np.testing.assert_allclose(out.lse_BHT[finite], ref.lse_BHT[finite], rtol=0, atol=1e-12)


@settings(max_examples=50)
@with_block_sparse_edge_examples
@given(problem=block_sparse_problems())
def test_backward_is_the_dense_backward_with_the_block_mask(problem):
    """The kept-tile backward equals the dense tiled backward (itself checked against
    central differences) run with the expanded mask and bias."""
    x = problem.arrays(np.float64)
    layout = problem.layout()
    bias = problem.bias_of(layout, np.float64)
    opts = problem.options()
    out = block_sparse_forward(x["q"], x["k"], x["v"], layout, block_bias=bias, **opts)
    got = block_sparse_backward(x["q"], x["k"], x["v"], out.o_BHTE, out.lse_BHT, x["do"], layout,
                                block_bias=bias, **opts)
    mask, dense_bias = dense_equivalent(layout, problem.T, problem.S, bias)
    want = flash_backward(x["q"], x["k"], x["v"], out.o_BHTE, out.lse_BHT, x["do"], mask=mask,
                          bias=dense_bias, tile_t=5, tile_s=7, **opts)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_causal_tile_kept_is_causal_flash_attention_bit_for_bit(dtype):
    """With the lower triangle kept, the block-sparse loop is the dense tiled loop."""
    rng = np.random.default_rng(3)
    q, k, v, do = (rng.standard_normal(s).astype(dtype)
                   for s in ((2, 4, 37, 8), (2, 2, 37, 8), (2, 2, 37, 5), (2, 4, 37, 5)))
    C = 8
    layout = block_layout(causal_blocks(37, 37, C), C)
    out = block_sparse_forward(q, k, v, layout)
    ref = flash_forward(q, k, v, causal=True, tile_t=C, tile_s=C)
    np.testing.assert_array_equal(out.o_BHTE, ref.o_BHTE)
    np.testing.assert_array_equal(out.lse_BHT, ref.lse_BHT)
    got = block_sparse_backward(q, k, v, out.o_BHTE, out.lse_BHT, do, layout)
    want = flash_backward(q, k, v, ref.o_BHTE, ref.lse_BHT, do, causal=True, tile_t=C, tile_s=C)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_rows_and_keys_outside_every_kept_tile():
    """A query block with nothing kept has o = 0, lse = -inf, dq = 0; unread keys get
    dk = dv = 0."""
    rng = np.random.default_rng(0)
    q, k, v, do = (rng.standard_normal((1, 1, 8, 4)) for _ in range(4))
    keep = np.array([[True, False], [False, False]])
    layout = block_layout(keep, 4)
    out = block_sparse_forward(q, k, v, layout)
    assert (out.o_BHTE[..., 4:, :] == 0).all() and np.isneginf(out.lse_BHT[..., 4:]).all()
    g = block_sparse_backward(q, k, v, out.o_BHTE, out.lse_BHT, do, layout)
    assert (g.dq_BHTD[..., 4:, :] == 0).all()
    assert (g.dk_BGSD[..., 4:, :] == 0).all() and (g.dv_BGSE[..., 4:, :] == 0).all()


def _layout(**change):
    good = block_layout(np.tril(np.ones((3, 3), np.bool_)), 4)
    return good._replace(**change)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"n_blocks": (3, 2)}, ValueError, r"\(3, 3\) block grid"),
        ({"heads": (2, 1)}, ValueError, "heads"),
        ({"row_offsets": np.array([0, 1, 3, 7])}, ValueError, "row_offsets"),
        ({"row_offsets": np.array([0.0, 1, 3, 6])}, TypeError, "integer"),
        ({"key_block_K": np.array([0, 0, 1, 0, 1, 3])}, ValueError, r"\[0, 3\)"),
        ({"key_block_K": np.array([0, 1, 0, 0, 2, 1])}, ValueError, "ascending"),
        ({"key_block_K": np.array([1, 0, 1, 0, 1, 2])}, ValueError, "causal future"),
        ({"block_size": 0}, ValueError, "block_size"),
    ],
)
def test_bad_layouts_are_rejected_by_name(change, error, match):
    q = np.zeros((1, 1, 12, 4))
    with pytest.raises(error, match=match):
        block_sparse_forward(q, q, q, _layout(**change))


def test_bad_arguments_are_rejected_by_name():
    q = np.zeros((1, 1, 12, 4))
    layout = _layout()
    with pytest.raises(TypeError, match="BlockLayout"):
        block_sparse_forward(q, q, q, np.ones((3, 3), np.bool_))
    with pytest.raises(TypeError, match="block_bias.*float64"):
        block_sparse_forward(q, q, q, layout, block_bias=np.zeros(6, np.float32))
    with pytest.raises(ValueError, match=r"block_bias.*\(6,\)"):
        block_sparse_forward(q, q, q, layout, block_bias=np.zeros(5))
    with pytest.raises(ValueError, match="block_bias.*finite"):
        block_sparse_forward(q, q, q, layout, block_bias=np.full(6, -np.inf))
    with pytest.raises(TypeError, match="keep.*bool"):
        block_layout(np.ones((3, 3)), 4)
    with pytest.raises(ValueError, match="keep.*shape"):
        block_layout(np.ones(3, np.bool_), 4)
    with pytest.raises(TypeError, match="causal"):
        block_sparse_forward(q, q, q, layout, causal=1)
    assert isinstance(layout, BlockLayout) and layout.n_kept == 6
