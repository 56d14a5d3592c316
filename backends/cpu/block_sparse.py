"""Block-sparse attention and PrFlashAttention on the CPU, compiled with Numba.

Mirrors :mod:`spec.attention.block_sparse` and the attention functions of
:mod:`spec.attention.prflash` (same signatures, validation, errors and semantics). The
tile arithmetic is the dense kernel's (:mod:`backends.cpu.attention`), shared, not
copied: a layout row is one query tile, and its kept key blocks are handed to the
dense forward's online softmax (:func:`backends.cpu.attention._attend_tiles`) as the
list of key tiles to visit, with the block bias added to each tile's scores by
:func:`backends.cpu.attention._visible_scores`. The backward visits the kept
(query tile, key tile) pairs with the dense backward's tile step
(:func:`backends.cpu.attention._backward_tile`) in the dense backward's race-free
scheme. Tiles are square, ``tile_t = tile_s = block_size``; so with every causal
block kept and no bias, the forward is :func:`backends.cpu.attention.flash_forward`
with those tiles, bit for bit.

Work items (a layout row in the forward; a chunk of key blocks of one key/value head
in the backward) are taken from a work queue, costliest first, one at a time: layouts
make rows and columns of very different lengths, and Numba's ``parallel_chunksize``
does not balance them under the OpenMP threading layer (see :func:`_take`).

Local axis letters: R layout rows ((b, h, i) of the layout, B'·H'·Nq), I work items,
K kept tiles (as the spec's ``key_block_K``).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from backends.cpu._alloc import contiguous, poisoned_empty
from backends.cpu.attention import (
    _DQ_CHUNKS,
    W,
    _add_head,
    _attend_tiles,
    _backward_panels,
    _backward_scratch,
    _backward_tile,
    _like,
    _load_tile,
    _panel_tiles,
    _panels,
    _round4,
    _row_deltas,
    _store_key_rows,
    _sum_chunks,
    _tiling,
    _write_rows,
    check_cpu_dtype,
    kernel_view,
)
from spec.attention.block_sparse import (
    BlockLayout,
    KeyBlockColumns,
    check_block_bias,
    check_layout,
    key_block_columns,
)
from spec.attention.checks import (
    check_attention_inputs,
    check_backward_inputs,
    check_scale,
)
from spec.attention.naive import AttentionOut
from spec.attention.prflash import prflash_layout
from spec.attention.tiled import AttentionGrads

# ------------------------------------------------------------------ work queue


@intrinsic
def _take(typingctx, next_1):
    """n = next_1[0]; next_1[0] += 1, atomically (one LLVM ``atomicrmw add``); returns n.

    The kernels' work queue: each thread takes the next item of a list sorted
    costliest first until the list is exhausted, so long items start first and short
    ones fill in at the end (longest-processing-time order) on any threading layer.
    (``numba.parallel_chunksize(1)`` does not give this: under the OpenMP layer the
    chunks are dealt out statically, ``omp for`` with the default schedule, so the
    first thread got the costly first half of the sorted list. Measured at
    T = S = 4096 with every causal tile kept, B = 1, H = 8: 2 threads ran 1.25x
    faster than one with it, 2.1x with this queue, as fast as the dense forward.)
    Which thread computes an item changes no result: items write disjoint outputs.
    """
    if not (isinstance(next_1, types.Array) and next_1.dtype == types.int64
            and next_1.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", data, ir.Constant(ir.IntType(64), 1), "monotonic")

    return types.int64(next_1), codegen


# --------------------------------------------------------------------- kernels


@njit(inline="always")
def _layout_index(b, h, i, n, heads_B, heads_H):
    """Row (or column) of the layout that batch b, query head h, block i uses: the
    shared pattern's where B' or H' is 1 (``n`` blocks per (b', h'))."""
    bl = b if heads_B > 1 else 0
    hl = h if heads_H > 1 else 0
    return (bl * heads_H + hl) * n + i


@njit(parallel=True, cache=True)
def _forward_kernel(q_BHTD, k_BGSD, v_BGSE, row_offsets_R, key_block_K, bias_K, has_tile_bias,
                    heads_B, heads_H, items_I, n_workers, no_bias, no_mask, causal, scale,
                    block_size, o_BHTE, lse_BHT):
    B, H, T, D = q_BHTD.shape
    G, S, E = k_BGSD.shape[1], k_BGSD.shape[2], v_BGSE.shape[3]
    group = H // G
    C = block_size
    Nq = (T + C - 1) // C
    dt = q_BHTD.dtype
    Pt, Pe = _panels(C), _panels(E)
    no_table = np.empty((0, 0), dt)
    no_f = np.empty(0, dt)
    # every key/value tile panelled once; a row reads only its kept ones
    kn0_N, kcount_N, kp0_N = _tiling(S, C, 0)
    k_GNPSW = _panel_tiles(k_BGSD.reshape(B * G, S, D), kn0_N, kcount_N, kp0_N, C, False,
                           False, no_table, no_table, False)
    v_GNPSW = _panel_tiles(v_BGSE.reshape(B * G, S, E), kn0_N, kcount_N, kp0_N, C, False,
                           False, no_table, no_table, False)
    # one work item per (batch, head, query block), costliest first (items_I), taken
    # from the work queue by one worker per thread (n_workers = the thread count)
    n_items = items_I.shape[0]
    next_1 = np.zeros(1, np.int64)
    for worker in prange(min(n_workers, n_items)):
        qT_PDW = np.empty((Pt, _round4(D), W), dt)
        acc_PTW = np.empty((Pe, _round4(C), W), dt)
        m_PW = np.empty((Pt, W), dt)
        l_PW = np.empty((Pt, W), dt)
        y_D = np.empty(D, dt)
        while True:
            n = _take(next_1)
            if n >= n_items:
                break
            item = items_I[n]
            b, h, i = item // (H * Nq), (item // Nq) % H, item % Nq
            r = _layout_index(b, h, i, Nq, heads_B, heads_H)
            lo, hi = row_offsets_R[r], row_offsets_R[r + 1]
            t0 = i * C
            ct = min(C, T - t0)
            _load_tile(q_BHTD[b, h], t0, ct, qT_PDW, True, False, no_table, no_table, 0, False, y_D)
            # the online softmax over this row's kept key blocks, ascending, each with its β
            g = h // group
            _attend_tiles(qT_PDW, k_GNPSW[b * G + g], v_GNPSW[b * G + g], key_block_K[lo:hi],
                          bias_K[lo:hi], has_tile_bias, t0, ct, T, S, b, h, scale, causal, C,
                          False, no_bias, False, no_mask, False, scale, no_f, 0,
                          acc_PTW, m_PW, l_PW)
            # a row with no kept (visible) key: o = 0, lse = -inf
            _write_rows(acc_PTW, m_PW, l_PW, ct, o_BHTE[b, h], lse_BHT[b, h], t0)


@njit(parallel=True, cache=True)
def _backward_kernel(q_BHTD, k_BGSD, v_BGSE, o_BHTE, lse_BHT, do_BHTE,
                     col_offsets_C, query_block_K, pair_K, bias_K, has_tile_bias,
                     heads_B, heads_H, items_I, n_workers, n_chunks, no_bias, no_mask, causal,
                     scale, block_size, dq_BHTD, dk_BGSD, dv_BGSE):
    B, H, T, D = q_BHTD.shape
    G, S, E = k_BGSD.shape[1], k_BGSD.shape[2], v_BGSE.shape[3]
    group = H // G
    C = block_size
    Nk = (S + C - 1) // C
    dt = q_BHTD.dtype
    zero = _like(scale, 0.0)
    no_table = np.empty((0, 0), dt)
    no_f = np.empty(0, dt)
    delta_BHT = _row_deltas(o_BHTE, do_BHTE, zero)
    k_GNPSW, v_GNPSW, q_HNPTW, qT_HNPDW, do_HNPTW, doT_HNPEW = _backward_panels(
        q_BHTD, k_BGSD, v_BGSE, do_BHTE, C, C, False, no_table, no_table, 0, False)
    # one work item per (batch, kv head, chunk of key blocks), as the dense backward: it
    # owns dk, dv of its key blocks and its own dq accumulator dq_CBHTD[c], so no two
    # items write the same element; items costliest first (items_I), from the work queue
    dq_CBHTD = np.zeros((n_chunks, B, H, T, D), dt)
    n_items = items_I.shape[0]
    next_1 = np.zeros(1, np.int64)
    for worker in prange(min(n_workers, n_items)):
        dk_PSW, dv_PSW, dkg_PSW, dvg_PSW, scratch = _backward_scratch(dt, C, C, D, E)
        while True:
            n_item = _take(next_1)
            if n_item >= n_items:
                break
            item = items_I[n_item]
            b = item // (G * n_chunks)
            g = (item // n_chunks) % G
            c = item % n_chunks
            for j in range(c, Nk, n_chunks):
                s0 = j * C
                cs = min(C, S - s0)
                k_PSW = k_GNPSW[b * G + g, j]
                v_PSW = v_GNPSW[b * G + g, j]
                for h in range(g * group, (g + 1) * group):
                    dk_PSW[:] = 0
                    dv_PSW[:] = 0
                    # the query blocks that keep key block j for this head (the CSC column)
                    col = _layout_index(b, h, j, Nk, heads_B, heads_H)
                    for n in range(col_offsets_C[col], col_offsets_C[col + 1]):
                        i = query_block_K[n]
                        t0 = i * C
                        ct = min(C, T - t0)
                        tile_bias = bias_K[pair_K[n]] if has_tile_bias else zero
                        bh = b * H + h
                        query_tiles = (qT_HNPDW[bh, i], q_HNPTW[bh, i],
                                       doT_HNPEW[bh, i], do_HNPTW[bh, i])
                        _backward_tile(k_PSW, v_PSW, query_tiles, lse_BHT[b, h], delta_BHT[b, h],
                                       b, h, t0, ct, s0, cs, T, S, scale, causal,
                                       False, no_bias, False, no_mask, False, scale, no_f, 0,
                                       has_tile_bias, tile_bias, scratch, dk_PSW, dv_PSW,
                                       dq_CBHTD[c, b, h])
                    _add_head(dkg_PSW, dk_PSW, h == g * group)
                    _add_head(dvg_PSW, dv_PSW, h == g * group)
                _store_key_rows(dkg_PSW, dk_BGSD[b, g], s0, cs)
                _store_key_rows(dvg_PSW, dv_BGSE[b, g], s0, cs)
    _sum_chunks(dq_CBHTD, dq_BHTD)


# ------------------------------------------------------------ public functions


def _validate(q_BHTD, k_BGSD, v_BGSE, layout, causal, scale, block_bias):
    """The spec's validation, in the spec's order (spec.attention.block_sparse._validate)."""
    shape = check_attention_inputs(q_BHTD, k_BGSD, v_BGSE, causal=causal)
    layout = check_layout(layout, shape, causal=causal)
    block_bias = check_block_bias(block_bias, layout, q_BHTD.dtype)
    scale = q_BHTD.dtype.type(check_scale(scale, shape.D))
    return shape, layout, block_bias, scale


def _tile_bias(block_bias, dtype) -> tuple[np.ndarray, bool]:
    """The kernels' (bias_K, has_tile_bias): an empty array when there is none."""
    if block_bias is None:
        return np.empty(0, dtype), False
    return contiguous(block_bias), True


def _work_items(layout: BlockLayout, B: int, H: int) -> np.ndarray:
    """The forward's items: every (b, h, query block i) as the number (b·H + h)·Nq + i,
    the most kept tiles first (stable), the order of the work queue (:func:`_take`)."""
    (Bl, Hl), (Nq, _) = layout.heads, layout.n_blocks
    item_I = np.arange(B * H * Nq)
    b_I, h_I, i_I = item_I // (H * Nq), (item_I // Nq) % H, item_I % Nq
    row_I = ((b_I if Bl > 1 else 0) * Hl + (h_I if Hl > 1 else 0)) * Nq + i_I
    cost_I = np.diff(layout.row_offsets)[row_I]
    return np.argsort(-cost_I, kind="stable").astype(np.int64)


def _chunk_items(cols: KeyBlockColumns, layout: BlockLayout, B: int, G: int, H: int,
                 n_chunks: int) -> np.ndarray:
    """The backward's items: every (b, kv head g, chunk c) as the number (b·G + g)·n_chunks
    + c, the most kept tiles first (stable; chunk c holds key blocks c, c + n_chunks, ...,
    for the H/G query heads of group g)."""
    (Bl, Hl), (_, Nk) = layout.heads, layout.n_blocks
    length_BHN = np.diff(cols.col_offsets).reshape(Bl, Hl, Nk)
    length_BHN = np.broadcast_to(length_BHN, (B, H, Nk))
    pad = -Nk % n_chunks
    length_BHN = np.pad(length_BHN, ((0, 0), (0, 0), (0, pad)))
    # key block j = m·n_chunks + c belongs to chunk c
    cost_BGC = length_BHN.reshape(B, G, H // G, -1, n_chunks).sum(axis=(2, 3))
    return np.argsort(-cost_BGC.reshape(-1), kind="stable").astype(np.int64)


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
    """Attention over the kept tiles of a block layout, compiled: same semantics as
    spec.attention.block_sparse.block_sparse_forward.

    Same arguments, validation and errors as the spec, plus a ``TypeError`` for float16
    (this backend computes in float32 or float64 only). Non-contiguous inputs are copied.

    Math
        For every layout row (b, h, i), the online softmax (FlashAttention-2, Algorithm
        1) over its kept key blocks j₁ < j₂ < ... in order, with scores
        S⁽ʲ⁾ = scale · Q_i K_jᵀ + β_ij (β = ``block_bias`` of the tile, else 0) and the
        causal mask element-wise inside the tiles; o = Õ / l, lse = m + log l.

    Shapes
        q_BHTD, k_BGSD, v_BGSE as the spec (GQA/MQA allowed); ``layout`` for the grid
        (ceil(T/C), ceil(S/C)), shared or per batch/head; ``block_bias`` None or (K,).
        Returns o_BHTE and lse_BHT.

    Parallel
        One work item per (batch, head, query block); the items, sorted by their
        number of kept tiles (most first), are taken one at a time from a work queue
        (:func:`_take`) by one worker per thread, so long rows start first and short
        ones fill in at the end. Each item owns its output rows, so the result does
        not depend on the thread count or the order. Key and value tiles
        (tile = block_size) are panelled once per call, as in the dense forward.

    Numerics
        Those of :func:`backends.cpu.attention.flash_forward` with
        ``tile_t = tile_s = block_size``, tile by tile: the same products, exp and
        online-softmax updates (one shared code path), the block bias added to
        scale·q·k as a separate rounding, as the spec does. With every causal tile
        kept and no block bias, the result equals that function's bit for bit. A query
        whose kept tiles hold no visible key gets o = 0, lse = -inf.
    """
    shape, layout, block_bias, scale = _validate(q_BHTD, k_BGSD, v_BGSE, layout, causal,
                                                 scale, block_bias)
    dtype = q_BHTD.dtype
    check_cpu_dtype("q_BHTD", dtype)
    B, H, T, E = shape.B, shape.H, shape.T, shape.E
    bias_K, has_tile_bias = _tile_bias(block_bias, dtype)
    o_BHTE = poisoned_empty((B, H, T, E), dtype)
    lse_BHT = poisoned_empty((B, H, T), dtype)
    (Bl, Hl) = layout.heads
    _forward_kernel(
        contiguous(q_BHTD), contiguous(k_BGSD), contiguous(v_BGSE),
        layout.row_offsets, layout.key_block_K, bias_K, has_tile_bias, Bl, Hl,
        _work_items(layout, B, H), numba.get_num_threads(),
        kernel_view(None, (), np.zeros(1, dtype)), kernel_view(None, (), np.ones(1, np.bool_)),
        bool(causal), scale, layout.block_size, o_BHTE, lse_BHT,
    )
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
    """Gradients of :func:`block_sparse_forward`, compiled: same semantics as
    spec.attention.block_sparse.block_sparse_backward.

    Same arguments, validation and errors as the spec, plus a ``TypeError`` for float16.

    Math (FlashAttention-2, Algorithm 2, restricted to kept tiles)
        Δ = rowsum(dO ∘ O); for each kept tile (i, j): P = exp(S⁽ⁱʲ⁾ - lse_i),
        dV_j += Pᵀ dO_i, dS = scale · P ∘ (dO_i V_jᵀ - Δ_i), dQ_i += dS K_j,
        dK_j += dSᵀ Q_i. ``block_bias`` enters S and receives no gradient.

    Shapes
        As the spec; returns dq_BHTD, and dk_BGSD, dv_BGSE summed over the query heads
        of each GQA group.

    Parallel
        The dense backward's scheme, over the layout's columns
        (:func:`spec.attention.block_sparse.key_block_columns`): one work item per
        (batch, key/value head, chunk of key blocks), ``_DQ_CHUNKS`` chunks of
        interleaved key blocks, taken costliest first from the forward's work queue.
        An item owns dk, dv of its key blocks: for each block j
        and each query head h of the group it visits the query blocks of column (b, h, j)
        in ascending order (with per-head layouts each head has its own column),
        accumulating dk, dv per head and then over the group in order; dq goes to the
        item's own buffer (one per chunk), and the buffers are summed in a fixed order.
        No two threads write the same element, the result does not depend on the
        thread count, and each kept tile costs five tile products, as in the dense
        backward (a separate dq pass over the rows would recompute S, P and dP: seven).

    Numerics
        Those of :func:`backends.cpu.attention.flash_backward` with square tiles of
        ``block_size``, tile by tile (one shared tile step); rows with lse = -inf have
        P = 0 and get dq = 0; keys in no kept tile get dk = dv = 0.
    """
    shape, layout, block_bias, scale = _validate(q_BHTD, k_BGSD, v_BGSE, layout, causal,
                                                 scale, block_bias)
    check_backward_inputs(shape, q_BHTD, o_BHTE, lse_BHT, do_BHTE)
    dtype = q_BHTD.dtype
    check_cpu_dtype("q_BHTD", dtype)
    B, H, G, T, S, D, E = shape
    bias_K, has_tile_bias = _tile_bias(block_bias, dtype)
    cols = key_block_columns(layout)
    dq_BHTD = poisoned_empty((B, H, T, D), dtype)
    dk_BGSD = poisoned_empty((B, G, S, D), dtype)
    dv_BGSE = poisoned_empty((B, G, S, E), dtype)
    (Bl, Hl) = layout.heads
    n_chunks = min(_DQ_CHUNKS, layout.n_blocks[1])
    _backward_kernel(
        contiguous(q_BHTD), contiguous(k_BGSD), contiguous(v_BGSE),
        contiguous(o_BHTE), contiguous(lse_BHT), contiguous(do_BHTE),
        cols.col_offsets, cols.query_block_K, cols.pair_K, bias_K, has_tile_bias, Bl, Hl,
        _chunk_items(cols, layout, B, G, H, n_chunks), numba.get_num_threads(), n_chunks,
        kernel_view(None, (), np.zeros(1, dtype)), kernel_view(None, (), np.ones(1, np.bool_)),
        bool(causal), scale, layout.block_size, dq_BHTD, dk_BGSD, dv_BGSE,
    )
    return AttentionGrads(dq_BHTD, dk_BGSD, dv_BGSE)


def prflash_forward(
    q_BHTD: np.ndarray,
    k_BGSD: np.ndarray,
    v_BGSE: np.ndarray,
    keep: np.ndarray,
    *,
    block_size: int,
    importance: np.ndarray | None = None,
    scale: float | None = None,
) -> AttentionOut:
    """PrFlashAttention forward, compiled: same semantics as spec.attention.prflash.prflash_forward.

    Math
        :func:`block_sparse_forward` with ``causal=True``, the layout
        ``block_layout(keep, block_size)`` and the block bias log(1/p) of the kept
        tiles when ``importance`` (the keep probabilities p) is given.

    Shapes
        As the spec: ``keep`` (Nq, Nk) or (B', H', Nq, Nk) bool, ``importance`` None or
        like ``keep``. Returns o_BHTE and lse_BHT.

    Parallel
        That of :func:`block_sparse_forward`.

    Numerics
        The layout and the bias come from the spec's own helpers
        (``spec.attention.prflash.prflash_layout``: the same numbers in every backend);
        then those of :func:`block_sparse_forward`. TypeError for float16.
    """
    layout, block_bias = prflash_layout(q_BHTD, k_BGSD, v_BGSE, keep, block_size, importance)
    return block_sparse_forward(q_BHTD, k_BGSD, v_BGSE, layout, causal=True, scale=scale,
                                block_bias=block_bias)


def prflash_backward(
    q_BHTD: np.ndarray,
    k_BGSD: np.ndarray,
    v_BGSE: np.ndarray,
    o_BHTE: np.ndarray,
    lse_BHT: np.ndarray,
    do_BHTE: np.ndarray,
    keep: np.ndarray,
    *,
    block_size: int,
    importance: np.ndarray | None = None,
    scale: float | None = None,
) -> AttentionGrads:
    """Gradients of :func:`prflash_forward` for the same round's mask, compiled: same
    semantics as spec.attention.prflash.prflash_backward.

    Math
        :func:`block_sparse_backward` with the layout and block bias of
        :func:`prflash_forward`; dropped blocks get no gradient, and neither do the
        mask and ``importance``.

    Shapes
        As the spec. Returns dq_BHTD, dk_BGSD, dv_BGSE.

    Parallel
        That of :func:`block_sparse_backward`.

    Numerics
        Those of :func:`block_sparse_backward`. TypeError for float16.
    """
    layout, block_bias = prflash_layout(q_BHTD, k_BGSD, v_BGSE, keep, block_size, importance)
    return block_sparse_backward(q_BHTD, k_BGSD, v_BGSE, o_BHTE, lse_BHT, do_BHTE, layout,
                                 causal=True, scale=scale, block_bias=block_bias)
