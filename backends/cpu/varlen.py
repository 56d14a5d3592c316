"""Attention over packed variable-length sequences on the CPU, compiled with Numba.

Mirrors :func:`spec.attention.varlen.flash_varlen_forward`: sequence b owns query rows
cu_seqlens_q[b] : cu_seqlens_q[b+1] and key rows cu_seqlens_k[b] : cu_seqlens_k[b+1],
attends to its own keys only, with positions (RoPE, ALiBi, the causal diagonal)
restarting at 0 in every sequence. The per-tile arithmetic is the batched forward's
(:func:`backends.cpu.attention._attend`, shared, not copied): only where a sequence's
rows live differs, so a sequence computed here equals, bit for bit, the same sequence
run alone through :func:`backends.cpu.attention.flash_forward`.

Local axis letters: N sequences (as spec.attention.varlen.VarlenShape.N), I work
items, J key tiles of all sequences.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from backends.cpu._alloc import contiguous, poisoned_empty
from backends.cpu.attention import (
    W,
    _attend,
    _load_tile,
    _panel_tiles,
    _panels,
    _round4,
    _row_result,
    check_cpu_dtype,
    fused_positions,
    kernel_view,
)
from spec.attention.checks import check_scale, check_tile
from spec.attention.positional import check_positions
from spec.attention.varlen import VarlenOut, check_varlen_inputs
from spec.position.rope import RoPE


@njit(parallel=True, cache=True)
def _varlen_kernel(q_HTD, k_GSD, v_GSE, cu_q, cu_k, items_I3, first_tile_N,
                   kn0_N, kcount_N, kp0_N, has_bias, bias_2BHTS, has_mask, mask_2BHTS,
                   causal, scale, tile_t, tile_s,
                   rope, cos_TP, sin_TP, p_min, interleaved, alibi, slopes_H, f_N, f0,
                   o_THE, lse_HT):
    H, D = q_HTD.shape[0], q_HTD.shape[2]
    G, E = k_GSD.shape[0], v_GSE.shape[2]
    group = H // G
    dt = q_HTD.dtype
    Pt, Pe = _panels(tile_t), _panels(E)
    # key/value tiles of every sequence, each starting at its sequence's first key, so
    # no tile holds keys of two sequences; keys rotated at s - cu_k[b] (kp0_N)
    k_GNPSW = _panel_tiles(k_GSD, kn0_N, kcount_N, kp0_N, tile_s, False,
                           rope, cos_TP, sin_TP, interleaved)
    v_GNPSW = _panel_tiles(v_GSE, kn0_N, kcount_N, kp0_N, tile_s, False,
                           False, cos_TP, sin_TP, interleaved)
    # one work item per (sequence, head, query tile)
    for item in prange(items_I3.shape[0]):
        b, h, t0 = items_I3[item, 0], items_I3[item, 1], items_I3[item, 2]
        tq, sk = cu_q[b], cu_k[b]
        T, S = cu_q[b + 1] - tq, cu_k[b + 1] - sk
        ct = min(tile_t, T - t0)
        # query t of the sequence sits at position t + S - T
        qT_PDW = np.empty((Pt, _round4(D), W), dt)
        _load_tile(q_HTD[h], tq + t0, ct, qT_PDW, True, rope, cos_TP, sin_TP,
                   t0 + S - T - p_min, interleaved, np.empty(D, dt))
        acc_PTW = np.empty((Pe, _round4(tile_t), W), dt)
        m_PW = np.empty((Pt, W), dt)
        l_PW = np.empty((Pt, W), dt)
        slope = slopes_H[h] if alibi else scale  # (not read without ALiBi)
        # this sequence's key tiles only: it cannot read another sequence's keys
        j0 = first_tile_N[b]
        _attend(qT_PDW, k_GNPSW[h // group, j0:], v_GNPSW[h // group, j0:], t0, ct,
                T, S, b, h, scale, causal, tile_s, has_bias, bias_2BHTS, has_mask, mask_2BHTS,
                alibi, slope, f_N, f0, acc_PTW, m_PW, l_PW)
        # a sequence with no keys never enters the loop over key tiles: o = 0, lse = -inf
        for t in range(ct):
            l, lse = _row_result(m_PW, l_PW, t)
            for e in range(E):
                o_THE[tq + t0 + t, h, e] = acc_PTW[e // W, t, e % W] / l
            lse_HT[h, tq + t0 + t] = lse


def _key_tiles(cu_k: np.ndarray, tile_s: int, p_min: int):
    """Every sequence's key tiles (J): first packed row, row count, and RoPE table row of
    the first key (its position s0 within its sequence, minus p_min); and the index of
    each sequence's first tile."""
    S_N = np.diff(cu_k)
    n_tiles_N = -(-S_N // tile_s)
    first_tile_N = np.concatenate([[0], np.cumsum(n_tiles_N)[:-1]]).astype(np.int64)
    seq_J = np.repeat(np.arange(S_N.size), n_tiles_N)
    s0_J = (np.arange(seq_J.size) - first_tile_N[seq_J]) * tile_s
    count_J = np.minimum(tile_s, S_N[seq_J] - s0_J)
    return cu_k[seq_J] + s0_J, count_J, s0_J - p_min, first_tile_N


def _work_items(T_N: np.ndarray, S_N: np.ndarray, H: int, tile_t: int, tile_s: int,
                causal: bool) -> np.ndarray:
    """(sequence, head, first query) of every query tile, the most key tiles first.

    Threads take items one at a time from this list (chunk size 1), so the longest
    items start first and the short ones fill in at the end (longest-processing-time
    order): a long sequence is many items and cannot hold one thread alone.
    """
    n_tiles_N = -(-T_N // tile_t)
    seq_I = np.repeat(np.arange(T_N.size), n_tiles_N)
    first_I = np.concatenate([[0], np.cumsum(n_tiles_N)[:-1]])[seq_I]
    t0_I = (np.arange(seq_I.size) - first_I) * tile_t
    T_I, S_I = T_N[seq_I], S_N[seq_I]
    # keys seen: all S, or under causal those up to the tile's last query's position
    seen_I = np.clip(np.minimum(t0_I + tile_t, T_I) + S_I - T_I, 0, S_I) if causal else S_I
    order = np.argsort(seen_I // -tile_s, kind="stable")  # -ceil(seen / tile_s): most first
    seq_I, t0_I = seq_I[order], t0_I[order]
    items_I3 = np.empty((seq_I.size * H, 3), np.int64)
    items_I3[:, 0] = np.repeat(seq_I, H)
    items_I3[:, 1] = np.tile(np.arange(H), seq_I.size)
    items_I3[:, 2] = np.repeat(t0_I, H)
    return items_I3


def flash_varlen_forward(
    q_THD: np.ndarray,
    k_SGD: np.ndarray,
    v_SGE: np.ndarray,
    cu_seqlens_q: np.ndarray,
    cu_seqlens_k: np.ndarray,
    *,
    causal: bool = False,
    scale: float | None = None,
    tile_t: int = 64,
    tile_s: int = 64,
    rope: RoPE | None = None,
    alibi_slopes: np.ndarray | None = None,
    alibi_form: str = "linear",
) -> VarlenOut:
    """Packed variable-length attention, compiled: spec.attention.varlen.flash_varlen_forward.

    Same arguments, validation and errors as the spec, plus a ``TypeError`` for float16
    and longdouble (this backend computes in float32 or float64 only).

    Math
        Per sequence b: o, lse = flash_forward(q_b, k_b, v_b, ...) with positions from
        0 and the causal mask bottom-right within the sequence.

    Shapes
        As the spec. q, k and v are first copied head-major ((H, T, D) etc.), so that
        each head's rows are contiguous for the tile loads (an O(T + S) copy).

    Parallel
        ``prange`` over (sequence, head, query tile) items, the costliest first and
        handed out one at a time, so long and short sequences share the threads.
        Key/value tiles (RoPE applied) are built once per call, per sequence.

    Numerics
        Those of :func:`backends.cpu.attention.flash_forward` on each sequence alone.
        A sequence with no keys gets o = 0 and lse = -inf; one with no queries is
        not visited.
    """
    shape, cu_q, cu_k = check_varlen_inputs(q_THD, k_SGD, v_SGE, cu_seqlens_q, cu_seqlens_k, causal)
    tile_t = check_tile("tile_t", tile_t)
    tile_s = check_tile("tile_s", tile_s)
    scale = check_scale(scale, shape.D)
    dtype = q_THD.dtype
    pos = check_positions(rope, alibi_slopes, alibi_form, H=shape.H, D=shape.D, dtype=dtype)
    check_cpu_dtype("q_THD", dtype)
    T_N, S_N = np.diff(cu_q), np.diff(cu_k)
    # query t of sequence b at t + S_b - T_b, key s at s
    p_min = int(min(0, (S_N - T_N).min()))
    fused = fused_positions(pos, p_min=p_min, p_end=int(S_N.max()), t_max=int(T_N.max()),
                            s_max=int(S_N.max()), D=shape.D, dtype=dtype)
    kn0_J, kcount_J, kp0_J, first_tile_N = _key_tiles(cu_k, tile_s, p_min)
    items_I3 = _work_items(T_N, S_N, shape.H, tile_t, tile_s, bool(causal))
    o_THE = poisoned_empty((shape.T, shape.H, shape.E), dtype)
    lse_HT = poisoned_empty((shape.H, shape.T), dtype)
    no_bias = kernel_view(None, (), np.zeros(1, dtype))
    no_mask = kernel_view(None, (), np.ones(1, np.bool_))
    with numba.parallel_chunksize(1):
        _varlen_kernel(
            contiguous(q_THD.transpose(1, 0, 2)),
            contiguous(k_SGD.transpose(1, 0, 2)),
            contiguous(v_SGE.transpose(1, 0, 2)),
            cu_q, cu_k, items_I3, first_tile_N, kn0_J, kcount_J, kp0_J,
            False, no_bias, False, no_mask, bool(causal), dtype.type(scale), tile_t, tile_s,
            *fused, o_THE, lse_HT,
        )
    return VarlenOut(o_THE, lse_HT)
