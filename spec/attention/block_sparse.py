"""Block-sparse attention: FlashAttention's tile loop over a list of kept tiles.

Queries and keys are cut into blocks of ``block_size`` rows (the last block may be
short): query block i holds rows i·C .. (i+1)·C - 1 of q, key block j the same rows
of k and v. A *layout* says, for every query block, which key blocks it attends to;
only those (query block, key block) tiles are computed, each exactly, with the
online softmax of :func:`spec.attention.tiled.flash_forward` and, with ``causal``,
the element-wise causal mask inside the tiles it cuts. Every static or sampled
sparsity pattern built of whole blocks runs through this one definition: sliding
windows, attention sinks, power-of-two distances (PowerAttention) and the sampled
masks of PrFlashAttention (:mod:`spec.attention.prflash`).

The layout is stored as compressed sparse rows (CSR), the "reshape" of
PrFlashAttention: the kept blocks of each query block gathered into one ragged row
instead of a mostly-empty N x N grid:

    row r = (b·H' + h)·Nq + i          for batch b < B', head h < H', query block i
    key_block_K[row_offsets[r] : row_offsets[r + 1]]     its kept key blocks, ascending

B' and H' are 1 when all batches or all heads share one pattern (no copies), or B
and H for a pattern per batch and per query head. Within a row the key blocks come in
ascending order, so under causal attention the diagonal block is the last one: this
order is the order of the online softmax's updates, and every backend follows it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spec.attention.checks import (
    AttentionShape,
    check_attention_inputs,
    check_backward_inputs,
    check_tile,
)
from spec.attention.naive import AttentionOut
from spec.attention.tiled import (
    AttentionGrads,
    _prepare,
    _score_tile,
    backward_tile,
    finish_rows,
    online_step,
    start_rows,
    sum_over_group,
)


class BlockLayout(NamedTuple):
    """Kept (query block, key block) tiles as compressed sparse rows (see module doc)."""

    row_offsets: np.ndarray
    """int64, (R + 1,) with R = B'·H'·Nq: row r's kept blocks are positions
    row_offsets[r] .. row_offsets[r + 1] - 1 of ``key_block_K``."""
    key_block_K: np.ndarray
    """int64, (K,): the key block j of each kept tile, ascending within a row."""
    heads: tuple[int, int]
    """(B', H'): 1 where every batch (head) shares one pattern, else B (H)."""
    n_blocks: tuple[int, int]
    """(Nq, Nk): query and key blocks, ceil(T / C) and ceil(S / C)."""
    block_size: int
    """C, the rows per block."""

    @property
    def n_kept(self) -> int:
        return int(self.key_block_K.size)

    def rows(self):
        """(b, h, i, kept positions) of every row, in storage order."""
        (Bl, Hl), (Nq, _) = self.heads, self.n_blocks
        for r in range(Bl * Hl * Nq):
            b, h, i = r // (Hl * Nq), (r // Nq) % Hl, r % Nq
            yield b, h, i, range(self.row_offsets[r], self.row_offsets[r + 1])


class KeyBlockColumns(NamedTuple):
    """The same layout by key block (compressed sparse columns), for the backward.

    Column c = (b·H' + h)·Nk + j lists the query blocks that keep key block j,
    ascending; ``pair_K`` is where each of them sits in the row layout, so a
    per-tile value (``block_bias``) is read from the same place by both passes.
    """

    col_offsets: np.ndarray
    """int64, (B'·H'·Nk + 1,)."""
    query_block_K: np.ndarray
    """int64, (K,): query block i of each kept tile, ascending within a column."""
    pair_K: np.ndarray
    """int64, (K,): the tile's position in ``BlockLayout.key_block_K``."""


def block_layout(keep, block_size: int) -> BlockLayout:
    """The CSR layout of a boolean block mask.

    ``keep`` is ``keep_NN`` (Nq, Nk), shared by every batch and head, or ``keep_BHNN``
    with leading dimensions (B', H') each 1 or full; True keeps the tile (i, j).
    Validated against a problem by :func:`check_layout` when attention is called.
    """
    block_size = check_tile("block_size", block_size)
    if not isinstance(keep, np.ndarray):
        raise TypeError(f"keep: expected a numpy.ndarray of bool, got {type(keep).__name__}")
    if keep.dtype != np.bool_:
        raise TypeError(f"keep: expected dtype bool (True = compute the tile), got {keep.dtype}")
    if keep.ndim not in (2, 4):
        raise ValueError(f"keep: expected shape (Nq, Nk) or (B, H, Nq, Nk), got {keep.shape}")
    keep_BHNN = keep.reshape((1, 1) + keep.shape) if keep.ndim == 2 else keep
    Bl, Hl, Nq, Nk = keep_BHNN.shape
    if min(keep_BHNN.shape) == 0:
        raise ValueError(f"keep: every dimension must be at least 1, got {keep.shape}")
    # np.nonzero walks in C order: rows (b, h, i) in order, key blocks ascending in a row
    flat_RN = keep_BHNN.reshape(Bl * Hl * Nq, Nk)
    _, key_block_K = np.nonzero(flat_RN)
    row_offsets = np.concatenate([[0], np.cumsum(flat_RN.sum(axis=1))]).astype(np.int64)
    return BlockLayout(row_offsets, key_block_K.astype(np.int64), (Bl, Hl), (Nq, Nk), block_size)


def layout_keep(layout: BlockLayout) -> np.ndarray:
    """The boolean block mask ``keep_BHNN`` (B', H', Nq, Nk) of a layout: the inverse of
    :func:`block_layout`."""
    (Bl, Hl), (Nq, Nk) = layout.heads, layout.n_blocks
    keep_RN = np.zeros((Bl * Hl * Nq, Nk), np.bool_)
    row_K = np.repeat(np.arange(Bl * Hl * Nq), np.diff(layout.row_offsets))
    keep_RN[row_K, layout.key_block_K] = True
    return keep_RN.reshape(Bl, Hl, Nq, Nk)


def key_block_columns(layout: BlockLayout) -> KeyBlockColumns:
    """The layout transposed: for every (b, h, key block j) the query blocks that keep it."""
    (Bl, Hl), (Nq, Nk) = layout.heads, layout.n_blocks
    row_K = np.repeat(np.arange(Bl * Hl * Nq), np.diff(layout.row_offsets))
    bh_K, query_block_K = row_K // Nq, row_K % Nq
    col_K = bh_K * Nk + layout.key_block_K
    # a stable sort by column keeps each column's query blocks ascending
    pair_K = np.argsort(col_K, kind="stable").astype(np.int64)
    counts = np.bincount(col_K, minlength=Bl * Hl * Nk)
    col_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return KeyBlockColumns(col_offsets, query_block_K[pair_K].astype(np.int64), pair_K)


def causal_blocks(T: int, S: int, block_size: int) -> np.ndarray:
    """Tiles with at least one visible (query, key) pair under the bottom-right causal
    mask: (Nq, Nk) bool. For T = S this is the lower triangle, diagonal included."""
    Nq, Nk = -(-T // block_size), -(-S // block_size)
    last_query_N1 = np.minimum((np.arange(Nq) + 1) * block_size, T)[:, None] - 1
    first_key_1N = (np.arange(Nk) * block_size)[None, :]
    return first_key_1N <= last_query_N1 + (S - T)


def _check_int_array(name: str, x, size: int | None = None) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray of ints, got {type(x).__name__}")
    if x.dtype.kind not in "iu" or x.ndim != 1:
        raise TypeError(f"{name}: expected a 1-D integer array, got dtype {x.dtype}, shape {x.shape}")
    if size is not None and x.size != size:
        raise ValueError(f"{name}: expected {size} entries, got {x.size}")


def check_layout(layout, shape: AttentionShape, *, causal: bool) -> BlockLayout:
    """Validate a layout against a problem; return it with int64 arrays.

    The block grid must be the problem's (ceil(T/C), ceil(S/C)), (B', H') each 1 or
    (B, H), the offsets non-decreasing from 0 to K, every key block in range and
    strictly ascending within its row. With ``causal``, a kept tile wholly in the
    causal future is an error: it could only contribute nothing, so keeping it is a
    mistake in the pattern (a transposed mask, a block distance of the wrong sign).
    """
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout: expected a BlockLayout (spec.attention.block_sparse), "
                        f"got {type(layout).__name__}")
    C = check_tile("layout.block_size", layout.block_size)
    Nq, Nk = -(-shape.T // C), -(-shape.S // C)
    if tuple(layout.n_blocks) != (Nq, Nk):
        raise ValueError(f"layout: expected a ({Nq}, {Nk}) block grid for T={shape.T}, S={shape.S}, "
                         f"block_size={C}, got n_blocks={tuple(layout.n_blocks)}")
    Bl, Hl = layout.heads
    if Bl not in (1, shape.B) or Hl not in (1, shape.H):
        raise ValueError(f"layout: expected heads (B', H') with B' in (1, {shape.B}) and "
                         f"H' in (1, {shape.H}), got {tuple(layout.heads)}")
    _check_int_array("layout.row_offsets", layout.row_offsets, Bl * Hl * Nq + 1)
    _check_int_array("layout.key_block_K", layout.key_block_K)
    offsets = layout.row_offsets.astype(np.int64)
    key_block_K = layout.key_block_K.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != key_block_K.size or (np.diff(offsets) < 0).any():
        raise ValueError(f"layout.row_offsets: expected non-decreasing offsets from 0 to "
                         f"{key_block_K.size}, got {offsets[0]} ... {offsets[-1]}")
    if key_block_K.size and (key_block_K.min() < 0 or key_block_K.max() >= Nk):
        raise ValueError(f"layout.key_block_K: expected key blocks in [0, {Nk}), got "
                         f"{key_block_K.min()} ... {key_block_K.max()}")
    # ascending within a row: every step is positive except where a new row starts
    step_up = np.diff(key_block_K) > 0
    row_start = np.zeros(key_block_K.size, np.bool_)
    row_start[offsets[1:-1][offsets[1:-1] < key_block_K.size]] = True
    if not (step_up | row_start[1:]).all():
        raise ValueError("layout.key_block_K: key blocks must be strictly ascending within each row")
    checked = BlockLayout(offsets, key_block_K, (Bl, Hl), (Nq, Nk), C)
    if causal:
        future = ~causal_blocks(shape.T, shape.S, C)
        i_K = np.repeat(np.arange(Bl * Hl * Nq), np.diff(offsets)) % Nq
        bad = future[i_K, key_block_K]
        if bad.any():
            k = int(np.argmax(bad))
            raise ValueError(f"layout: tile (query block {i_K[k]}, key block {key_block_K[k]}) lies "
                             f"wholly in the causal future (T={shape.T}, S={shape.S}, "
                             f"block_size={C}); a causal layout keeps only tiles with a visible key")
    return checked


def check_block_bias(block_bias, layout: BlockLayout, dtype) -> np.ndarray | None:
    """``block_bias`` is None or a finite float array (K,) of the inputs' dtype."""
    if block_bias is None:
        return None
    if not isinstance(block_bias, np.ndarray):
        raise TypeError(f"block_bias: expected a numpy.ndarray or None, got {type(block_bias).__name__}")
    if block_bias.dtype != dtype:
        raise TypeError(f"block_bias: expected dtype {dtype} like q_BHTD, got {block_bias.dtype}")
    if block_bias.shape != (layout.n_kept,):
        raise ValueError(f"block_bias: expected shape ({layout.n_kept},), one value per kept tile, "
                         f"got {block_bias.shape}")
    if not np.isfinite(block_bias).all():
        raise ValueError("block_bias: expected finite values (drop a tile from the layout to mask it)")
    return block_bias


def _validate(q_BHTD, k_BGSD, v_BGSE, layout, causal, scale, block_bias):
    """Validated problem (the dense forward's, with tiles of one block) and layout."""
    shape = check_attention_inputs(q_BHTD, k_BGSD, v_BGSE, causal=causal)
    layout = check_layout(layout, shape, causal=causal)
    block_bias = check_block_bias(block_bias, layout, q_BHTD.dtype)
    C = layout.block_size
    pb = _prepare(q_BHTD, k_BGSD, v_BGSE, scale, None, None, causal, C, C, None, None, "linear")
    return pb, layout, block_bias


def _select(x_BHX: np.ndarray, b: int, h: int, heads: tuple[int, int]) -> np.ndarray:
    """The batches and heads a layout row covers: all where the pattern is shared (B' or
    H' = 1), else the one, kept as an axis of length 1 (a view)."""
    Bl, Hl = heads
    x = x_BHX if Bl == 1 else x_BHX[b:b + 1]
    return x if Hl == 1 else x[:, h:h + 1]


def _tile_scores(pb, q_BHCD, b, h, heads, causal, t0, t1, s0, s1, bias):
    """Scores and visibility of one kept tile: the dense tile's, plus its block bias."""
    sub = pb._replace(k_BHSD=_select(pb.k_BHSD, b, h, heads))
    score_BHCC, visible_BHCC = _score_tile(q_BHCD, sub, causal, t0, t1, s0, s1)
    if bias is not None:
        # score = scale · q·k + block_bias (finite, so a masked -inf stays -inf)
        score_BHCC = score_BHCC + bias
    return score_BHCC, visible_BHCC


def block_sparse_forward(
    q_BHTD: np.ndarray,
    k_BGSD: np.ndarray,
    v_BGSE: np.ndarray,
    layout: BlockLayout,
    *,
    causal: bool = True,
    scale: float | None = None,
    block_bias: np.ndarray | None = None,
) -> AttentionOut:
    """Attention over the kept tiles of a block layout, exactly, with the online softmax.

    Math
        For every layout row (b, h, i) and its kept key blocks j₁ < j₂ < ... in order:
            S⁽ʲ⁾ = scale · Q_i K_jᵀ + β_ij              (β = ``block_bias`` of the tile, else 0)
            m, l, Õ ← online_step(m, l, Õ, S⁽ʲ⁾, visible, V_j)   (FlashAttention-2, Alg. 1)
        o = Õ / l, lse = m + log l. This is dense softmax attention
        (:func:`spec.attention.naive.attention`) with the mask "key s is in a kept
        block of query t's block" and the bias β on those blocks: keys outside kept
        blocks do not exist for the query, they are not merely down-weighted.

    Shapes
        q_BHTD, k_BGSD, v_BGSE as :func:`spec.attention.tiled.flash_forward` (GQA/MQA
        allowed); ``layout`` a :class:`BlockLayout` for the block grid
        (ceil(T/C), ceil(S/C)); ``block_bias`` None or (K,), one value per kept tile in
        layout order. Returns o_BHTE and lse_BHT.

    Numerics
        Computes in the input dtype, tile by tile exactly as the dense tiled forward
        with ``tile_t = tile_s = block_size`` (with every causal tile kept, it is that
        function, bit for bit). ``causal`` is bottom-right aligned and applied element-
        wise inside the tiles it cuts. A query whose kept tiles hold no visible key (a
        row with no kept block, or a diagonal block dropped) gets o = 0, lse = -inf.
    """
    pb, layout, block_bias = _validate(q_BHTD, k_BGSD, v_BGSE, layout, causal, scale, block_bias)
    B, H, _, T, S, _, E = pb.shape
    C = layout.block_size
    dtype = q_BHTD.dtype
    o_BHTE = np.empty((B, H, T, E), dtype)
    lse_BHT = np.empty((B, H, T), dtype)
    for b, h, i, kept in layout.rows():
        t0, t1 = i * C, min((i + 1) * C, T)
        q_BHCD = _select(pb.q_BHTD, b, h, layout.heads)[:, :, t0:t1]
        v_BHSE = _select(pb.v_BHSE, b, h, layout.heads)
        row = start_rows(q_BHCD.shape[:3], E, dtype)
        for k in kept:
            # the "reshape": only the kept key blocks of this row, in ascending order
            s0 = layout.key_block_K[k] * C
            s1 = min(s0 + C, S)
            bias = None if block_bias is None else block_bias[k]
            score_BHCC, visible_BHCC = _tile_scores(pb, q_BHCD, b, h, layout.heads, causal,
                                                    t0, t1, s0, s1, bias)
            row = online_step(row, score_BHCC, visible_BHCC, v_BHSE[:, :, s0:s1])
        o_BHCE, lse_BHC = finish_rows(row)
        _select(o_BHTE, b, h, layout.heads)[:, :, t0:t1] = o_BHCE
        _select(lse_BHT, b, h, layout.heads)[:, :, t0:t1] = lse_BHC
    return AttentionOut(o_BHTE, lse_BHT)


def block_sparse_backward(
    q_BHTD: np.ndarray,
    k_BGSD: np.ndarray,
    v_BGSE: np.ndarray,
    o_BHTE: np.ndarray,
    lse_BHT: np.ndarray,
    do_BHTE: np.ndarray,
    layout: BlockLayout,
    *,
    causal: bool = True,
    scale: float | None = None,
    block_bias: np.ndarray | None = None,
) -> AttentionGrads:
    """Gradients of :func:`block_sparse_forward`: the dense backward over kept tiles only.

    Math (FlashAttention-2, Algorithm 2, restricted to kept tiles)
        Δ_t = Σ_e dO_te O_te
        for each key block j, for each query block i that keeps it (ascending):
            P = exp(S⁽ⁱʲ⁾ - lse_i),  dV_j += Pᵀ dO_i,  dS = P ∘ (dO_i V_jᵀ - Δ_i)
            dQ_i += scale · dS K_j,  dK_j += scale · dSᵀ Q_i
        Tiles that are not kept have P = 0 and contribute nothing. ``block_bias``
        receives no gradient. GQA/MQA: a key head's gradient is the sum over its
        query heads, each with its own pattern when the layout has one per head.

    Shapes
        As :func:`spec.attention.tiled.flash_backward`, with the layout (and
        block_bias) of the forward. Returns dq_BHTD, dk_BGSD, dv_BGSE.

    Numerics
        Computes in the input dtype; rows with lse = -inf have P = 0 and dq = 0; keys
        in no kept tile get dk = dv = 0.
    """
    pb, layout, block_bias = _validate(q_BHTD, k_BGSD, v_BGSE, layout, causal, scale, block_bias)
    check_backward_inputs(pb.shape, q_BHTD, o_BHTE, lse_BHT, do_BHTE)
    B, H, G, T, S, D, E = pb.shape
    C = layout.block_size
    (Bl, Hl), (_, Nk) = layout.heads, layout.n_blocks
    dtype = q_BHTD.dtype
    # Δ = rowsum(dO ∘ O)
    delta_BHT = np.sum(do_BHTE * o_BHTE, axis=-1)
    dq_BHTD = np.zeros((B, H, T, D), dtype)
    dk_BHSD = np.zeros((B, H, S, D), dtype)
    dv_BHSE = np.zeros((B, H, S, E), dtype)
    cols = key_block_columns(layout)
    for c in range(Bl * Hl * Nk):
        b, h, j = c // (Hl * Nk), (c // Nk) % Hl, c % Nk
        s0, s1 = j * C, min((j + 1) * C, S)
        sel = [_select(x, b, h, layout.heads) for x in (pb.q_BHTD, do_BHTE, lse_BHT, delta_BHT,
                                                         pb.k_BHSD, pb.v_BHSE)]
        q_BHTDs, do_BHTEs, lse_BHTs, delta_BHTs, k_BHSDs, v_BHSEs = sel
        for n in range(cols.col_offsets[c], cols.col_offsets[c + 1]):
            i = cols.query_block_K[n]
            t0, t1 = i * C, min((i + 1) * C, T)
            bias = None if block_bias is None else block_bias[cols.pair_K[n]]
            q_BHCD = q_BHTDs[:, :, t0:t1]
            score_BHCC, visible_BHCC = _tile_scores(pb, q_BHCD, b, h, layout.heads, causal,
                                                    t0, t1, s0, s1, bias)
            g = backward_tile(score_BHCC, visible_BHCC, lse_BHTs[:, :, t0:t1],
                              delta_BHTs[:, :, t0:t1], q_BHCD, k_BHSDs[:, :, s0:s1],
                              v_BHSEs[:, :, s0:s1], do_BHTEs[:, :, t0:t1], pb.scale)
            _select(dq_BHTD, b, h, layout.heads)[:, :, t0:t1] += g.dq_BHCD
            _select(dk_BHSD, b, h, layout.heads)[:, :, s0:s1] += g.dk_BHCD
            _select(dv_BHSE, b, h, layout.heads)[:, :, s0:s1] += g.dv_BHCE
    return AttentionGrads(dq_BHTD, sum_over_group(dk_BHSD, G), sum_over_group(dv_BHSE, G))


def dense_equivalent(layout: BlockLayout, T: int, S: int,
                     block_bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The layout as the oracle's arguments: ``mask`` (B', H', T, S) bool, True inside kept
    tiles, and ``bias`` (same shape) holding each kept tile's block bias (0 elsewhere),
    or None. ``attention(q, k, v, causal=..., mask=mask, bias=bias)`` is then the
    definition :func:`block_sparse_forward` computes tile by tile. O(T·S) memory:
    for tests and small problems."""
    C = layout.block_size
    keep_BHNN = layout_keep(layout)
    mask_BHTS = keep_BHNN.repeat(C, axis=2).repeat(C, axis=3)[:, :, :T, :S]
    if block_bias is None:
        return mask_BHTS, None
    Bl, Hl, Nq, Nk = keep_BHNN.shape
    bias_RN = np.zeros((Bl * Hl * Nq, Nk), block_bias.dtype)
    row_K = np.repeat(np.arange(Bl * Hl * Nq), np.diff(layout.row_offsets))
    bias_RN[row_K, layout.key_block_K] = block_bias
    bias_BHTS = bias_RN.reshape(Bl, Hl, Nq, Nk).repeat(C, axis=2).repeat(C, axis=3)[:, :, :T, :S]
    return mask_BHTS, bias_BHTS
