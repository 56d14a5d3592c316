"""Packed variable-length attention (spec.attention.varlen) against the padded batch it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spec.attention.naive import attention
from spec.attention.varlen import flash_varlen_forward, pack
from spec.position import rope_alibi
from spec.position.rope import RoPE


@settings(max_examples=40)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    causal=st.booleans(),
    positions=st.sampled_from(["none", "rope", "additive", "harmonic_number", "multiplicative"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_packed_equals_the_padded_batch_with_key_padding_masked(lengths, causal, positions, seed):
    """The "unpadding" identity: the packed result is the padded batch's, padding rows dropped.

    With T_b = S_b (self-attention) the padded batch puts every sequence at positions
    0 .. T_b - 1, as the packed form restarts them, and the causal mask of the padded
    length agrees with each sequence's own on the rows that are kept.
    """
    rng = np.random.default_rng(seed)
    H, G, D, E, L = 4, 2, 8, 3, max(lengths)
    opts = {"none": {}, "rope": {"rope": RoPE(base=50.0)}}.get(positions)
    if opts is None:
        opts = rope_alibi.options(H, variant=positions)
    qs = [rng.standard_normal((n, H, D)) for n in lengths]
    ks = [rng.standard_normal((n, G, D)) for n in lengths]
    vs = [rng.standard_normal((n, G, E)) for n in lengths]
    (q, cu), (k, _), (v, _) = pack(qs), pack(ks), pack(vs)
    packed = flash_varlen_forward(q, k, v, cu, cu, causal=causal, tile_t=3, tile_s=5, **opts)

    def padded(xs, width, heads):
        out = np.zeros((len(xs), heads, L, width))
        for b, x in enumerate(xs):
            out[b, :, : x.shape[0]] = x.transpose(1, 0, 2)
        return out

    valid_BS = np.arange(L)[None, :] < np.array(lengths)[:, None]
    batch = attention(padded(qs, D, H), padded(ks, D, G), padded(vs, E, G), causal=causal,
                      mask=valid_BS[:, None, None, :], **opts)
    for b, n in enumerate(lengths):
        rows = slice(cu[b], cu[b + 1])
        np.testing.assert_allclose(packed.o_THE[rows], batch.o_BHTE[b, :, :n].transpose(1, 0, 2),
                                   rtol=0, atol=1e-13)
        np.testing.assert_allclose(packed.lse_HT[:, rows], batch.lse_BHT[b, :, :n], rtol=0, atol=1e-13)


def test_sequences_without_keys_or_queries():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((5, 2, 4))
    k = rng.standard_normal((3, 1, 4))
    v = rng.standard_normal((3, 1, 2))
    cu_q = np.array([0, 2, 2, 5])  # the middle sequence has no queries
    cu_k = np.array([0, 0, 1, 3])  # the first has no keys
    o, lse = flash_varlen_forward(q, k, v, cu_q, cu_k, causal=True)
    assert (o[:2] == 0).all() and np.isneginf(lse[:, :2]).all()
    alone = attention(q[None, 2:].transpose(0, 2, 1, 3), k[None, 1:].transpose(0, 2, 1, 3),
                      v[None, 1:].transpose(0, 2, 1, 3), causal=True)
    np.testing.assert_allclose(o[2:], alone.o_BHTE[0].transpose(1, 0, 2), rtol=0, atol=1e-15)
    # causal, T_b = 3 > S_b = 2: the first query of the last sequence sees no key
    assert np.isneginf(lse[:, 2]).all() and np.isfinite(lse[:, 3:]).all()


def test_pack_and_its_offsets():
    x, cu = pack([np.ones((2, 3)), np.zeros((0, 3)), np.ones((4, 3))])
    assert x.shape == (6, 3) and cu.tolist() == [0, 2, 2, 6] and cu.dtype == np.int32
    with pytest.raises(ValueError, match="at least one sequence"):
        pack([])
