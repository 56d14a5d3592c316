"""FlashAttention as NumPy: the online softmax over key tiles, forward and backward.

The second rung of the attention ladder. It computes exactly the oracle
(:func:`spec.attention.naive.attention`) without ever holding a T x S score matrix:
query tiles of ``tile_t`` rows stream over key tiles of ``tile_s`` columns, keeping a
running maximum, a running denominator and an unnormalised output per row
(Dao et al., 2022, "FlashAttention", Algorithm 1; Dao, 2023, "FlashAttention-2",
Algorithms 1 and 2). Loops run over tiles; inside a tile everything is vectorised
over batch and heads, so the loop structure is the algorithm's and nothing else.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spec.attention.checks import (
    AttentionShape,
    check_attention_inputs,
    check_backward_inputs,
    check_scale,
    check_tile,
)
from spec.attention.naive import AttentionOut, causal_visible_TS, expand_kv_heads
from spec.attention.positional import (
    Positions,
    add_bias,
    alibi_tile,
    check_positions,
    query_positions,
    rotate_qk,
    unrotate,
)
from spec.position.rope import RoPE


class AttentionGrads(NamedTuple):
    """Gradients of a scalar loss L through o = attention(q, k, v), given dL/do."""

    dq_BHTD: np.ndarray
    dk_BGSD: np.ndarray
    """Summed over the H/G query heads that share each key head."""
    dv_BGSE: np.ndarray
    """Summed over the H/G query heads that share each value head."""


class _Problem(NamedTuple):
    """Validated inputs: q and k rotated (RoPE), key/value heads expanded, bias/mask
    broadcast (views)."""

    shape: AttentionShape
    scale: np.floating
    pos: Positions
    q_BHTD: np.ndarray
    k_BHSD: np.ndarray
    v_BHSE: np.ndarray
    bias_BHTS: np.ndarray | None
    mask_BHTS: np.ndarray | None


def _prepare(q_BHTD, k_BGSD, v_BGSE, scale, bias, mask, causal, tile_t, tile_s,
             rope, alibi_slopes, alibi_form) -> _Problem:
    shape = check_attention_inputs(q_BHTD, k_BGSD, v_BGSE, bias=bias, mask=mask, causal=causal)
    check_tile("tile_t", tile_t)
    check_tile("tile_s", tile_s)
    pos = check_positions(rope, alibi_slopes, alibi_form, H=shape.H, D=shape.D, dtype=q_BHTD.dtype)
    full = (shape.B, shape.H, shape.T, shape.S)
    # q ← R_i q, k ← R_j k (once, before the tiles: a rotation has no reduction to tile)
    q_BHTD, k_BGSD = rotate_qk(q_BHTD, k_BGSD, pos)
    return _Problem(
        shape=shape,
        scale=q_BHTD.dtype.type(check_scale(scale, shape.D)),
        pos=pos,
        q_BHTD=q_BHTD,
        k_BHSD=expand_kv_heads(k_BGSD, shape.H),
        v_BHSE=expand_kv_heads(v_BGSE, shape.H),
        bias_BHTS=None if bias is None else np.broadcast_to(bias, full),
        mask_BHTS=None if mask is None else np.broadcast_to(mask, full),
    )


def _tile_is_future(t1: int, s0: int, shape: AttentionShape) -> bool:
    """True when no query of rows [.., t1) sees key s0 under the causal mask.

    Key tiles starting there and later contribute nothing, so the loops skip them:
    the FLOP saving of causal FlashAttention.
    """
    return s0 > (t1 - 1) + shape.S - shape.T


def _score_tile(q_BHCD, pb: _Problem, causal, t0, t1, s0, s1):
    """Scores of one (query tile, key tile) pair and which of them are visible."""
    # score = scale · q kᵀ + (bias + alibi); the ALiBi term is formed per tile, never T x S
    score_BHCC = pb.scale * np.einsum("BHTD,BHSD->BHTS", q_BHCD, pb.k_BHSD[:, :, s0:s1])
    T, S = pb.shape.T, pb.shape.S
    bias_BHCC = None if pb.bias_BHTS is None else pb.bias_BHTS[:, :, t0:t1, s0:s1]
    bias_BHCC = add_bias(bias_BHCC, alibi_tile(pb.pos, T, S, t0, t1, s0, s1, q_BHCD.dtype))
    if bias_BHCC is not None:
        score_BHCC = score_BHCC + bias_BHCC
    # a -inf score is masked; NaN stays visible so that it propagates, as in the oracle
    visible_BHCC = score_BHCC != -np.inf
    if causal:
        visible_BHCC = visible_BHCC & causal_visible_TS(pb.shape.T, pb.shape.S, t0, t1, s0, s1)
    if pb.mask_BHTS is not None:
        visible_BHCC = visible_BHCC & pb.mask_BHTS[:, :, t0:t1, s0:s1]
    return score_BHCC, visible_BHCC


class RowState(NamedTuple):
    """The online softmax's running statistics of a block of query rows."""

    m_BHC: np.ndarray
    """Running maximum of the visible scores seen so far (-inf before the first)."""
    l_BHC: np.ndarray
    """Running denominator Σ exp(score - m)."""
    acc_BHCE: np.ndarray
    """Unnormalised output Õ = Σ exp(score - m) v."""


def start_rows(rows: tuple[int, ...], E: int, dtype) -> RowState:
    """The state before any key: m = -inf, l = 0, Õ = 0."""
    return RowState(np.full(rows, -np.inf, dtype), np.zeros(rows, dtype), np.zeros(rows + (E,), dtype))


def online_step(row: RowState, score_BHCC, visible_BHCC, v_BHCE) -> RowState:
    """Fold one key tile into the running statistics (FlashAttention-2, Algorithm 1, lines 8-10).

    Shared by every tiled form (dense tiles here, kept blocks in
    :mod:`spec.attention.block_sparse`), so they all round alike.
    """
    dtype = score_BHCC.dtype
    zero, minus_inf = dtype.type(0), dtype.type(-np.inf)
    # m' = max(m, rowmax(S)) over visible scores
    score_BHCC = np.where(visible_BHCC, score_BHCC, minus_inf)
    m_new_BHC = np.maximum(row.m_BHC, np.max(score_BHCC, axis=-1))
    m_safe_BHC = np.where(m_new_BHC == minus_inf, zero, m_new_BHC)
    # P = exp(S - m'),  α = exp(m - m');  masked scores are -inf, so their P is 0
    p_BHCC = np.exp(score_BHCC - m_safe_BHC[..., None])
    alpha_BHC = np.exp(row.m_BHC - m_safe_BHC)
    # l' = α l + rowsum(P),  Õ' = α Õ + P V
    l_BHC = alpha_BHC * row.l_BHC + p_BHCC.sum(axis=-1)
    acc_BHCE = alpha_BHC[..., None] * row.acc_BHCE + np.einsum("BHTS,BHSE->BHTE", p_BHCC, v_BHCE)
    return RowState(m_new_BHC, l_BHC, acc_BHCE)


def finish_rows(row: RowState) -> tuple[np.ndarray, np.ndarray]:
    """o = Õ / l,  lse = m + log l;  a row that saw no visible key has m = -inf, l = 0
    and gets o = 0, lse = -inf."""
    dtype = row.l_BHC.dtype
    empty_BHC = row.m_BHC == dtype.type(-np.inf)
    l_safe_BHC = np.where(empty_BHC, dtype.type(1), row.l_BHC)
    o_BHCE = row.acc_BHCE / l_safe_BHC[..., None]
    return o_BHCE, np.where(empty_BHC, dtype.type(-np.inf), row.m_BHC + np.log(l_safe_BHC))


class TileGrads(NamedTuple):
    """One (query tile, key tile) pair's contributions to dq, dk and dv."""

    dq_BHCD: np.ndarray
    dk_BHCD: np.ndarray
    dv_BHCE: np.ndarray


def backward_tile(score_BHCC, visible_BHCC, lse_BHC, delta_BHC, q_BHCD, k_BHCD, v_BHCE,
                  do_BHCE, scale) -> TileGrads:
    """Gradient contributions of one tile pair (FlashAttention-2, Algorithm 2, lines 11-19).

    ``lse_BHC`` is the forward's; rows with lse = -inf saw no visible key and get P = 0.
    Shared by the dense and the block-sparse backward.
    """
    dtype = score_BHCC.dtype
    zero, minus_inf = dtype.type(0), dtype.type(-np.inf)
    empty_BHC = lse_BHC == minus_inf
    visible_BHCC = visible_BHCC & ~empty_BHC[..., None]
    lse_safe_BHC = np.where(empty_BHC, zero, lse_BHC)
    # P = exp(S - lse), 0 where masked
    p_BHCC = np.exp(np.where(visible_BHCC, score_BHCC, minus_inf) - lse_safe_BHC[..., None])
    # dV = Pᵀ dO;  dP = dO Vᵀ;  dS = P ∘ (dP - Δ)
    dv_BHCE = np.einsum("BHTS,BHTE->BHSE", p_BHCC, do_BHCE)
    dp_BHCC = np.einsum("BHTE,BHSE->BHTS", do_BHCE, v_BHCE)
    ds_BHCC = p_BHCC * (dp_BHCC - delta_BHC[..., None])
    # dQ = scale · dS K;  dK = scale · dSᵀ Q
    return TileGrads(scale * np.einsum("BHTS,BHSD->BHTD", ds_BHCC, k_BHCD),
                     scale * np.einsum("BHTS,BHTD->BHSD", ds_BHCC, q_BHCD),
                     dv_BHCE)


def sum_over_group(dx_BHSX: np.ndarray, G: int) -> np.ndarray:
    """A key/value head's gradient is the sum over the H/G query heads of its group."""
    B, H, S, X = dx_BHSX.shape
    return dx_BHSX.reshape(B, G, H // G, S, X).sum(axis=2)


def flash_forward(
    q_BHTD: np.ndarray,
    k_BGSD: np.ndarray,
    v_BGSE: np.ndarray,
    *,
    causal: bool = False,
    scale: float | None = None,
    bias: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    tile_t: int = 64,
    tile_s: int = 64,
    rope: RoPE | None = None,
    alibi_slopes: np.ndarray | None = None,
    alibi_form: str = "linear",
) -> AttentionOut:
    """FlashAttention forward: the oracle computed one key tile at a time.

    Math (FlashAttention-2, Algorithm 1), for each query row over key tiles j:
        m⁽ʲ⁾ = max(m⁽ʲ⁻¹⁾, rowmax(S⁽ʲ⁾))
        P⁽ʲ⁾ = exp(S⁽ʲ⁾ - m⁽ʲ⁾)
        l⁽ʲ⁾ = exp(m⁽ʲ⁻¹⁾ - m⁽ʲ⁾) l⁽ʲ⁻¹⁾ + rowsum(P⁽ʲ⁾)
        Õ⁽ʲ⁾ = exp(m⁽ʲ⁻¹⁾ - m⁽ʲ⁾) Õ⁽ʲ⁻¹⁾ + P⁽ʲ⁾ V⁽ʲ⁾
        o = Õ / l,  lse = m + log l
    Rescaling by exp(m_old - m_new) makes the result independent of the tile
    sizes: every tile size gives the oracle up to rounding.

    Shapes
        As :func:`spec.attention.naive.attention`, plus ``tile_t`` (query rows per
        tile) and ``tile_s`` (keys per tile), any positive ints; edge tiles are short.
        Positional options (``rope``, ``alibi_slopes``, ``alibi_form``) as the oracle:
        q and k are rotated once up front, the ALiBi term is formed per tile.

    Numerics
        Computes in the input dtype. Masking, causal alignment (bottom-right), rows
        with no visible key (o = 0, lse = -inf) and NaN propagation are the
        oracle's. While a row has seen no visible key its running maximum is -inf;
        the exponentials then use 0 in its place so that no -inf - (-inf) = NaN
        arises. With ``causal``, key tiles wholly in a query tile's future are
        skipped.
    """
    pb = _prepare(q_BHTD, k_BGSD, v_BGSE, scale, bias, mask, causal, tile_t, tile_s,
                  rope, alibi_slopes, alibi_form)
    B, H, _, T, S, _, E = pb.shape
    dtype = q_BHTD.dtype
    o_BHTE = np.empty((B, H, T, E), dtype)
    lse_BHT = np.empty((B, H, T), dtype)
    for t0 in range(0, T, tile_t):
        t1 = min(t0 + tile_t, T)
        q_BHCD = pb.q_BHTD[:, :, t0:t1]
        row = start_rows((B, H, t1 - t0), E, dtype)
        for s0 in range(0, S, tile_s):
            s1 = min(s0 + tile_s, S)
            if causal and _tile_is_future(t1, s0, pb.shape):
                break
            score_BHCC, visible_BHCC = _score_tile(q_BHCD, pb, causal, t0, t1, s0, s1)
            row = online_step(row, score_BHCC, visible_BHCC, pb.v_BHSE[:, :, s0:s1])
        o_BHTE[:, :, t0:t1], lse_BHT[:, :, t0:t1] = finish_rows(row)
    return AttentionOut(o_BHTE, lse_BHT)


def flash_backward(
    q_BHTD: np.ndarray,
    k_BGSD: np.ndarray,
    v_BGSE: np.ndarray,
    o_BHTE: np.ndarray,
    lse_BHT: np.ndarray,
    do_BHTE: np.ndarray,
    *,
    causal: bool = False,
    scale: float | None = None,
    bias: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    tile_t: int = 64,
    tile_s: int = 64,
    rope: RoPE | None = None,
    alibi_slopes: np.ndarray | None = None,
    alibi_form: str = "linear",
) -> AttentionGrads:
    """FlashAttention backward: dq, dk, dv from the saved o and lse, recomputing P.

    Math (FlashAttention-2, Algorithm 2)
        Δ_t = Σ_e dO_te O_te                       (row sums, once)
        for each key tile j, for each query tile i:
            P = exp(S - lse)                       (recomputed, no T x S storage)
            dV_j += Pᵀ dO_i
            dP = dO_i V_jᵀ
            dS = P ∘ (dP - Δ_i)
            dQ_i += scale · dS K_j,    dK_j += scale · dSᵀ Q_i
    These are the gradients of L = Σ dO ∘ O, with lse treated as an output that
    carries no gradient. Keys of a GQA/MQA group receive the sum over the query
    heads that read them. ``bias``, ``mask`` and the ALiBi slopes receive no
    gradient. With ``rope`` the products above use the rotated q̃ = R q, k̃ = R k, and
    the gradients are carried back through the rotation: dq = Rᵀ dq̃, dk = Rᵀ dk̃.

    Shapes
        o_BHTE, lse_BHT from :func:`flash_forward` (or the oracle) for the same
        inputs and options; do_BHTE the gradient of the loss with respect to o.
        Returns dq_BHTD, dk_BGSD, dv_BGSE.

    Numerics
        Computes in the input dtype. Masked scores and rows with no visible key
        (lse = -inf) have P = 0 and so contribute nothing; their dq is 0.
    """
    pb = _prepare(q_BHTD, k_BGSD, v_BGSE, scale, bias, mask, causal, tile_t, tile_s,
                  rope, alibi_slopes, alibi_form)
    check_backward_inputs(pb.shape, q_BHTD, o_BHTE, lse_BHT, do_BHTE)
    B, H, G, T, S, D, E = pb.shape
    dtype = q_BHTD.dtype
    # Δ = rowsum(dO ∘ O)
    delta_BHT = np.sum(do_BHTE * o_BHTE, axis=-1)
    dq_BHTD = np.zeros((B, H, T, D), dtype)
    dk_BHSD = np.zeros((B, H, S, D), dtype)
    dv_BHSE = np.zeros((B, H, S, E), dtype)
    for s0 in range(0, S, tile_s):
        s1 = min(s0 + tile_s, S)
        for t0 in range(0, T, tile_t):
            t1 = min(t0 + tile_t, T)
            if causal and _tile_is_future(t1, s0, pb.shape):
                continue
            q_BHCD = pb.q_BHTD[:, :, t0:t1]
            score_BHCC, visible_BHCC = _score_tile(q_BHCD, pb, causal, t0, t1, s0, s1)
            g = backward_tile(score_BHCC, visible_BHCC, lse_BHT[:, :, t0:t1], delta_BHT[:, :, t0:t1],
                              q_BHCD, pb.k_BHSD[:, :, s0:s1], pb.v_BHSE[:, :, s0:s1],
                              do_BHTE[:, :, t0:t1], pb.scale)
            dq_BHTD[:, :, t0:t1] += g.dq_BHCD
            dk_BHSD[:, :, s0:s1] += g.dk_BHCD
            dv_BHSE[:, :, s0:s1] += g.dv_BHCE
    dk_BGSD = sum_over_group(dk_BHSD, G)
    dv_BGSE = sum_over_group(dv_BHSE, G)
    # the gradients above are with respect to the rotated q, k: dq = R_iᵀ dq̃, dk = R_jᵀ dk̃
    dq_BHTD = unrotate(dq_BHTD, query_positions(T, S), pb.pos)
    dk_BGSD = unrotate(dk_BGSD, np.arange(S), pb.pos)
    return AttentionGrads(dq_BHTD, dk_BGSD, dv_BGSE)
