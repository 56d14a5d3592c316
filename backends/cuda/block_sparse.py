"""Launcher of ``block_sparse.cu``: block-sparse attention and PrFlashAttention on CUDA, float32.

Mirrors, with the same signatures and return types:

* :func:`spec.attention.block_sparse.block_sparse_forward` and ``block_sparse_backward``:
  attention over the kept (query block, key block) tiles of a CSR
  :class:`~spec.attention.block_sparse.BlockLayout`, with a block bias per kept tile and
  the causal mask (bottom-right) inside the tiles it cuts;
* :func:`spec.attention.prflash.prflash_forward` and ``prflash_backward``: the same with
  the layout of a boolean block mask, causal, and the importance correction log 1/p as
  the block bias (built on the host by the spec's own helpers).

A pattern may be shared by every batch and head or given per batch and per head (the
layout's ``heads``); GQA/MQA as the dense kernels. Kernels (see ``block_sparse.cu``):

    forward  a thread per query row, a CUDA block per (query block or its part, head,
             batch), walking its layout row's kept key blocks in order (online softmax)
    dkdv     a thread per key row, a CUDA block per (key block or its part, key head,
             batch), walking the layout's columns of every query head of the group
    dq       a thread per query row, over the kept key blocks of its layout row

and Δ = rowsum(dO ∘ O) from ``attention_backward.cu``'s delta kernel (its HEAD_DIM=32
build, which takes any E). No atomics: the backward is deterministic.

Block sizes: any ``block_size`` from 1 to :data:`MAX_BLOCK_SIZE` (128). The block size is
a runtime argument of the kernels (the tiles they stage in shared memory are compile-time
sub-tiles of it), so every size runs the same builds; a CUDA block takes min(C, its thread
cap) rows or keys, and a larger block is split over several CUDA blocks. Larger sizes are
a ValueError naming ``block_size``. Head dimensions D, E up to 128, in the buckets of
:data:`backends.cuda.attention.HEAD_DIMS`. Inputs: float32 NumPy arrays (copied to the
device) or CuPy arrays (used in place); the layout, ``keep``, ``importance`` and
``block_bias`` are NumPy (the pattern is built and checked on the host; a CuPy block_bias
or keep is copied to the host for the checks). Results come back as the kind of array q
was, NaN-poisoned before the kernels write them.

With every causal tile (every tile, without ``causal``) kept, the kernels are the dense
ones bit for bit where their tiles line up: the forward equals
``backends.cuda.attention.flash_forward(version="v2")`` at ``block_size`` = 32 (v2's key
tile), and the backward, given the same o and lse, equals
``backends.cuda.attention_backward.flash_backward`` at any block size that is a multiple of
4 (the rows and keys each thread sums at once), see block_sparse.cu.

    >>> import os; os.environ["ATTNSPEC_CUDA"] = "emulator"   # no GPU here
    >>> from backends.cuda.block_sparse import prflash_forward
    >>> o_BHTE, lse_BHT = prflash_forward(q_BHTD, k_BGSD, v_BGSE, keep, block_size=64)
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import NamedTuple

import numpy as np

from backends.cuda import _launch, _timing
from backends.cuda import attention as dense
from backends.cuda import attention_backward as dense_backward
from backends.cuda._launch import KernelConfig
from backends.cuda.attention import HEAD_DIMS, head_dim_bucket
from spec.attention import prflash
from spec.attention.block_sparse import (
    BlockLayout,
    block_layout,
    check_block_bias,
    check_layout,
    dense_equivalent,
    key_block_columns,
)
from spec.attention.block_sparse import (
    block_sparse_backward as spec_block_sparse_backward,
)
from spec.attention.block_sparse import (
    block_sparse_forward as spec_block_sparse_forward,
)
from spec.attention.checks import (
    AttentionShape,
    check_attention_inputs,
    check_backward_inputs,
    check_scale,
)
from spec.attention.naive import AttentionOut
from spec.attention.tiled import AttentionGrads
from spec.attention.tiled import flash_backward as spec_flash_backward
from spec.attention.tiled import flash_forward as spec_flash_forward
from spec.tolerance import compare, oracle_dtype

SPEC = (
    "spec.attention.block_sparse:block_sparse_forward",
    "spec.attention.block_sparse:block_sparse_backward",
    "spec.attention.prflash:prflash_forward",
    "spec.attention.prflash:prflash_backward",
)
"""The spec functions this family mirrors (four public functions, one .cu)."""
SOURCE = "block_sparse.cu"

MAX_BLOCK_SIZE = 128
"""The largest ``block_size`` the kernels take: the forward keeps a row of C scores per
thread in shared memory, sized for C <= 128 in the compile gate's budget."""

STEP = 4  # keys (forward, dq) or query rows (dkdv) per thread at once


class _Forward(NamedTuple):
    """The forward's launch shape per head-dimension bucket (block_sparse.cu's ROWS_F,
    KEYS_F). Its per-thread q, Õ and score rows are always in shared memory: at 64 a
    CUDA block of 64 rows with C = 64 takes 81 KiB."""

    rows_f: int  # most threads (= query rows) per block
    keys_f: int  # keys per staged sub-tile


FORWARD = {32: _Forward(rows_f=64, keys_f=64), 64: _Forward(rows_f=64, keys_f=64),
           128: _Forward(rows_f=32, keys_f=32)}
"""The backward kernels take attention_backward's placements and tiles
(:data:`backends.cuda.attention_backward.LAYOUTS`: k, v rows and the dv accumulator in
shared memory from 64 and 128 on), so that nothing spills, and its shared-memory sizes."""
assert tuple(FORWARD) == HEAD_DIMS


def _forward_smem(head_dim: int, rows: int, C: int) -> int:
    # K and V sub-tiles; per thread its q and Õ rows (padded by one float) and its score row
    # of C | 1 floats
    return 4 * (2 * FORWARD[head_dim].keys_f * head_dim + rows * (2 * (head_dim + 1) + (C | 1)))


KERNEL_NAMES = ("forward", "dkdv", "dq")


def _config(kernel: str, head_dim: int) -> KernelConfig:
    # The three kernels share one module per head dimension: every config defines every
    # macro. dynamic_smem is the most a launch asks for (C = MAX_BLOCK_SIZE, full blocks);
    # launches with smaller blocks ask for less.
    fwd, lay = FORWARD[head_dim], dense_backward.LAYOUTS[head_dim]
    defines = (("HEAD_DIM", str(head_dim)), ("STEP", str(STEP)),
               ("ROWS_F", str(fwd.rows_f)), ("KEYS_F", str(fwd.keys_f)),
               ("KEYS_KV", str(lay.keys_kv)), ("QROWS_KV", str(lay.qrows_kv)),
               ("ROWS_Q", str(lay.rows_q)), ("KEYS_Q", str(lay.keys_q)),
               ("KV_IN_SMEM", str(int(lay.kv_in_smem))), ("DV_IN_SMEM", str(int(lay.dv_in_smem))),
               ("QDO_IN_SMEM", str(int(lay.qdo_in_smem))), ("POSITIONS", "0"))
    name = f"block_sparse_{kernel}"
    if kernel == "forward":
        return KernelConfig(SOURCE, name, defines, threads=fwd.rows_f,
                            dynamic_smem=_forward_smem(head_dim, fwd.rows_f, MAX_BLOCK_SIZE))
    if kernel == "dkdv":
        return KernelConfig(SOURCE, name, defines, threads=lay.keys_kv,
                            dynamic_smem=dense_backward.dkdv_smem(head_dim, lay, lay.keys_kv))
    return KernelConfig(SOURCE, name, defines, threads=lay.rows_q,
                        dynamic_smem=dense_backward.dq_smem(head_dim, lay, lay.rows_q))


KERNELS: dict[tuple[str, int], KernelConfig] = {
    (kernel, head_dim): _config(kernel, head_dim) for head_dim in HEAD_DIMS for kernel in KERNEL_NAMES
}
"""Every configuration of block_sparse.cu this launcher compiles; the compile gate compiles
exactly these. The backward also launches attention_backward.cu's delta kernel
(``attention_backward.KERNELS[DELTA]``, gated with that family)."""

DELTA = ("delta", HEAD_DIMS[0])
"""The attention_backward build whose delta kernel computes Δ for every head dimension."""


# ------------------------------------------------------------------------ the calls


def _proxy(x):
    return _launch.shape_proxy(x) if _launch.is_cupy_array(x) else x


def _host(x):
    """Patterns and per-tile values are checked on the host: a CuPy array is copied."""
    return x.get() if _launch.is_cupy_array(x) else x


class Call(NamedTuple):
    """One validated call, its arrays on the engine, ready to launch."""

    shape: AttentionShape
    arrays: _launch.Arrays
    layout: BlockLayout
    """The checked layout (int64 arrays, on the host)."""
    head_dim: int
    q: object
    k: object
    v: object
    row_offsets: object
    key_block_K: object
    block_bias_K: object
    """The kept tiles' biases, or a one-element placeholder (has_block_bias = 0)."""
    scalars: tuple
    """(has_block_bias, causal, scale): the last of the kernels' BLOCK_SPARSE_DIMS."""


def check_block_size(name: str, block_size: int) -> None:
    """The kernels' limit on the block size, after the spec's own checks."""
    if block_size > MAX_BLOCK_SIZE:
        raise ValueError(f"{name}: the CUDA block-sparse kernels take block sizes up to "
                         f"{MAX_BLOCK_SIZE}, got {block_size}")


def prepare(q_BHTD, k_BGSD, v_BGSE, layout, *, causal, scale, block_bias,
            what: str = "the CUDA block-sparse attention kernel",
            block_size_name: str = "layout.block_size") -> Call:
    """Validate a call in the spec's order (inputs, layout, block bias, scale), then the
    kernels' limits (float32, head dimensions, block size); move everything to the engine."""
    shape = check_attention_inputs(_proxy(q_BHTD), _proxy(k_BGSD), _proxy(v_BGSE), causal=causal)
    layout = check_layout(layout, shape, causal=causal)
    block_bias_host = check_block_bias(_host(block_bias), layout, np.dtype(q_BHTD.dtype))
    scale = check_scale(scale, shape.D)
    if np.dtype(q_BHTD.dtype) != np.float32:
        raise TypeError(f"q_BHTD, k_BGSD, v_BGSE: {what} takes float32, got {np.dtype(q_BHTD.dtype)}")
    head_dim = head_dim_bucket(shape)
    check_block_size(block_size_name, layout.block_size)
    # a CuPy block_bias joins the arrays (the emulator refuses it; it never decides the kind
    # of the results, which follow q, k, v)
    arrays = _launch.Arrays(_launch.engine(), q_BHTD, k_BGSD, v_BGSE,
                            *((block_bias,) if _launch.is_cupy_array(block_bias) else ()))

    def nonempty(x, dtype):  # a kernel argument of no elements: a one-element placeholder
        return arrays.to_device(x if x.size else np.zeros(1, dtype))

    if block_bias is None:
        bias_dev = arrays.to_device(np.zeros(1, np.float32))
    elif _launch.is_cupy_array(block_bias) and block_bias.size:
        bias_dev = arrays.to_device(block_bias)
    else:
        bias_dev = nonempty(block_bias_host, np.float32)
    scalars = (np.int32(block_bias is not None), np.int32(bool(causal)), np.float32(scale))
    return Call(shape, arrays, layout, head_dim, arrays.to_device(q_BHTD),
                arrays.to_device(k_BGSD), arrays.to_device(v_BGSE),
                arrays.to_device(layout.row_offsets), nonempty(layout.key_block_K, np.int64),
                bias_dev, scalars)


def _dims(call: Call, chunks: int) -> tuple:
    """BLOCK_SPARSE_DIMS of block_sparse.cu, in order."""
    _, H, G, T, S, D, E = call.shape
    (Bl, Hl), (Nq, Nk) = call.layout.heads, call.layout.n_blocks
    return (*(np.int32(n) for n in (H, G, T, S, D, E, call.layout.block_size, Bl, Hl, Nq, Nk,
                                    chunks)), *call.scalars)


def _split(C: int, cap: int) -> tuple[int, int]:
    """Threads per CUDA block (min(C, cap)) and CUDA blocks per layout block."""
    threads = min(C, cap)
    return threads, -(-C // threads)


def _run_forward(call: Call, o, lse) -> None:
    """Launch the forward on a prepared call (what main() times)."""
    B, H = call.shape.B, call.shape.H
    C, (Nq, _) = call.layout.block_size, call.layout.n_blocks
    rows, chunks = _split(C, FORWARD[call.head_dim].rows_f)
    config = KERNELS[("forward", call.head_dim)]
    _launch.get_kernel(config)((Nq * chunks, H, B), (rows,),
                               (call.q, call.k, call.v, call.row_offsets, call.key_block_K,
                                call.block_bias_K, o, lse, *_dims(call, chunks)),
                               shared_mem=_forward_smem(call.head_dim, rows, C))


def block_sparse_forward(q_BHTD, k_BGSD, v_BGSE, layout: BlockLayout, *, causal: bool = True,
                         scale: float | None = None, block_bias=None) -> AttentionOut:
    """Block-sparse attention forward on CUDA, as
    :func:`spec.attention.block_sparse.block_sparse_forward`.

    float32 q, k, v (NumPy, copied, or CuPy, in place); ``layout`` a checked-as-the-spec
    :class:`~spec.attention.block_sparse.BlockLayout` with block_size <= 128;
    ``block_bias`` None or (K,) float32. D, E <= 128. Returns o_BHTE, lse_BHT as the kind
    of array q is.
    """
    call = prepare(q_BHTD, k_BGSD, v_BGSE, layout, causal=causal, scale=scale,
                   block_bias=block_bias)
    B, H, _, T, _, _, E = call.shape
    o = call.arrays.empty((B, H, T, E), np.float32)
    lse = call.arrays.empty((B, H, T), np.float32)
    _run_forward(call, o, lse)
    return AttentionOut(call.arrays.result(o), call.arrays.result(lse))


class Columns(NamedTuple):
    """The layout by key block (spec.attention.block_sparse.key_block_columns), on the engine."""

    col_offsets: object
    query_block_K: object
    pair_K: object


def columns(call: Call) -> Columns:
    cols = key_block_columns(call.layout)
    to = call.arrays.to_device
    return Columns(to(cols.col_offsets),
                   *(to(x if x.size else np.zeros(1, np.int64))
                     for x in (cols.query_block_K, cols.pair_K)))


def _run_backward(call: Call, cols: Columns, o, lse, do, delta, dq, dk, dv) -> None:
    """Launch delta, dkdv and dq on a prepared call (what main() times)."""
    B, H, G, T, _, _, E = call.shape
    C, (Nq, Nk) = call.layout.block_size, call.layout.n_blocks
    lay = dense_backward.LAYOUTS[call.head_dim]
    # Δ = rowsum(dO ∘ O): attention_backward.cu's kernel, summed in the order of e; it takes
    # E at run time, so the smallest build serves every head dimension (one compilation)
    rows = B * H * T
    config = dense_backward.KERNELS[DELTA]
    _launch.get_kernel(config)((-(-rows // dense_backward.ROWS_DELTA),),
                               (dense_backward.ROWS_DELTA,),
                               (o, do, delta, np.int64(rows), np.int32(E)))
    inputs = (call.q, call.k, call.v, do, lse, delta)
    keys, chunks = _split(C, lay.keys_kv)
    config = KERNELS[("dkdv", call.head_dim)]
    _launch.get_kernel(config)((Nk * chunks, G, B), (keys,),
                               (*inputs, *cols, call.block_bias_K, dk, dv, *_dims(call, chunks)),
                               shared_mem=dense_backward.dkdv_smem(call.head_dim, lay, keys))
    rows_q, chunks = _split(C, lay.rows_q)
    config = KERNELS[("dq", call.head_dim)]
    _launch.get_kernel(config)((Nq * chunks, H, B), (rows_q,),
                               (*inputs, call.row_offsets, call.key_block_K, call.block_bias_K,
                                dq, *_dims(call, chunks)),
                               shared_mem=dense_backward.dq_smem(call.head_dim, lay, rows_q))


def block_sparse_backward(q_BHTD, k_BGSD, v_BGSE, o_BHTE, lse_BHT, do_BHTE, layout: BlockLayout,
                          *, causal: bool = True, scale: float | None = None,
                          block_bias=None) -> AttentionGrads:
    """Gradients of :func:`block_sparse_forward` on CUDA, as
    :func:`spec.attention.block_sparse.block_sparse_backward`.

    ``o_BHTE``, ``lse_BHT`` are the forward's for the same call (use
    :func:`block_sparse_forward`: its scores are rounded as these kernels round them),
    ``do_BHTE`` the gradient of the loss with respect to o. Returns dq_BHTD, and dk_BGSD,
    dv_BGSE summed over the query heads of each group; keys in no kept tile get 0.
    """
    call = prepare(q_BHTD, k_BGSD, v_BGSE, layout, causal=causal, scale=scale,
                   block_bias=block_bias, what="the CUDA block-sparse attention backward")
    check_backward_inputs(call.shape, _proxy(q_BHTD), _proxy(o_BHTE), _proxy(lse_BHT),
                          _proxy(do_BHTE))
    B, H, G, T, S, D, E = call.shape
    arrays = call.arrays
    o, lse, do = (arrays.to_device(x) for x in (o_BHTE, lse_BHT, do_BHTE))
    delta = arrays.empty((B, H, T), np.float32)
    dq = arrays.empty((B, H, T, D), np.float32)
    dk = arrays.empty((B, G, S, D), np.float32)
    dv = arrays.empty((B, G, S, E), np.float32)
    _run_backward(call, columns(call), o, lse, do, delta, dq, dk, dv)
    return AttentionGrads(arrays.result(dq), arrays.result(dk), arrays.result(dv))


def _prflash_layout(q_BHTD, k_BGSD, v_BGSE, keep, block_size, importance):
    """The spec's own construction (spec.attention.prflash.prflash_layout): the CSR layout of
    ``keep`` and the importance bias log 1/p in q's dtype, with the spec's checks."""
    return prflash.prflash_layout(_proxy(q_BHTD), _proxy(k_BGSD), _proxy(v_BGSE), _host(keep),
                              block_size, _host(importance))


def prflash_forward(q_BHTD, k_BGSD, v_BGSE, keep, *, block_size: int, importance=None,
                    scale: float | None = None) -> AttentionOut:
    """PrFlashAttention forward on CUDA, as :func:`spec.attention.prflash.prflash_forward`:
    causal attention over the kept blocks of ``keep`` (block_size <= 128), with the
    importance correction log 1/p as the block bias when ``importance`` is given."""
    layout, block_bias = _prflash_layout(q_BHTD, k_BGSD, v_BGSE, keep, block_size, importance)
    call = prepare(q_BHTD, k_BGSD, v_BGSE, layout, causal=True, scale=scale,
                   block_bias=block_bias, block_size_name="block_size")
    B, H, _, T, _, _, E = call.shape
    o = call.arrays.empty((B, H, T, E), np.float32)
    lse = call.arrays.empty((B, H, T), np.float32)
    _run_forward(call, o, lse)
    return AttentionOut(call.arrays.result(o), call.arrays.result(lse))


def prflash_backward(q_BHTD, k_BGSD, v_BGSE, o_BHTE, lse_BHT, do_BHTE, keep, *, block_size: int,
                     importance=None, scale: float | None = None) -> AttentionGrads:
    """Gradients of :func:`prflash_forward` on CUDA, as
    :func:`spec.attention.prflash.prflash_backward` (the mask and importance get none)."""
    layout, block_bias = _prflash_layout(q_BHTD, k_BGSD, v_BGSE, keep, block_size, importance)
    call = prepare(q_BHTD, k_BGSD, v_BGSE, layout, causal=True, scale=scale,
                   block_bias=block_bias, what="the CUDA block-sparse attention backward",
                   block_size_name="block_size")
    check_backward_inputs(call.shape, _proxy(q_BHTD), _proxy(o_BHTE), _proxy(lse_BHT),
                          _proxy(do_BHTE))
    B, H, G, T, S, D, E = call.shape
    arrays = call.arrays
    o, lse, do = (arrays.to_device(x) for x in (o_BHTE, lse_BHT, do_BHTE))
    delta = arrays.empty((B, H, T), np.float32)
    dq = arrays.empty((B, H, T, D), np.float32)
    dk = arrays.empty((B, G, S, D), np.float32)
    dv = arrays.empty((B, G, S, E), np.float32)
    _run_backward(call, columns(call), o, lse, do, delta, dq, dk, dv)
    return AttentionGrads(arrays.result(dq), arrays.result(dk), arrays.result(dv))


# ------------------------------------------------------------------- counts and main


def visible_pairs(layout: BlockLayout, T: int, S: int, causal: bool) -> int:
    """(query, key) pairs inside the kept tiles, those in the causal future excluded: the
    pairs a kernel scores, per layout row (not yet multiplied by the heads a shared row
    serves). A tile (i, j) spans rows [iC, min(iC + C, T)) and keys [jC, min(jC + C, S));
    under causal, row t sees the min(C_j, max(0, t + S - T + 1 - jC)) first keys of it."""
    C, (Nq, _) = layout.block_size, layout.n_blocks
    i_K = np.repeat(np.arange(layout.row_offsets.size - 1), np.diff(layout.row_offsets)) % Nq
    s0_K = layout.key_block_K * C
    width_K = np.minimum(s0_K + C, S) - s0_K
    t_C = np.arange(C)
    t_KC = i_K[:, None] * C + t_C[None, :]
    valid_KC = t_KC < T
    if causal:
        seen_KC = np.clip(t_KC + S - T + 1 - s0_K[:, None], 0, width_K[:, None])
    else:
        seen_KC = np.broadcast_to(width_K[:, None], t_KC.shape)
    return int((seen_KC * valid_KC).sum())


def flops(layout: BlockLayout, shape: AttentionShape, causal: bool) -> int:
    """Forward FLOPs over the kept tiles only: 2·(visible pairs in kept tiles)·(D + E) for
    q·kᵀ and P·V (exp not counted), summed over every (batch, head) (a shared layout row
    serves B/B' · H/H' of them)."""
    B, H, _, T, S, D, E = shape
    Bl, Hl = layout.heads
    return 2 * (B // Bl) * (H // Hl) * visible_pairs(layout, T, S, causal) * (D + E)


def backward_flops(layout: BlockLayout, shape: AttentionShape, causal: bool) -> int:
    """2.5 times :func:`flops`, the conventional count of a backward (five products per
    pair: q·kᵀ, dO·vᵀ, Pᵀ dO, dS K, dSᵀ Q, against the forward's two); the kernels do seven
    (dq's recomputes q·kᵀ and dO·vᵀ)."""
    return 5 * flops(layout, shape, causal) // 2


REORDERINGS = dense.REORDERINGS
"""Extra rounding orders of the dense float32 baseline in :func:`main`."""


def _dense_runs(q, k, v, do, layout, block_bias, causal, rng, backward: bool) -> list[tuple]:
    """The float32 baselines: the block-sparse spec in float32, and the dense tiled spec on
    the layout's dense equivalent (mask, bias) in 1 + REORDERINGS rounding orders (axes T, S,
    D, E permuted: backends.cuda.attention.permuted_runs), each backward fed its own forward."""
    T, S = q.shape[2], k.shape[2]
    mask, bias = dense_equivalent(layout, T, S, block_bias)

    def run(q, k, v, do, bias, mask, causal):
        opts = {"causal": causal, "bias": bias, "mask": mask}
        fwd = spec_flash_forward(q, k, v, **opts)
        return spec_flash_backward(q, k, v, *fwd, do, **opts) if backward else fwd

    names = AttentionGrads._fields if backward else AttentionOut._fields
    sparse = spec_block_sparse_forward(q, k, v, layout, causal=causal, block_bias=block_bias)
    if backward:
        sparse = spec_block_sparse_backward(q, k, v, *sparse, do, layout, causal=causal,
                                            block_bias=block_bias)
    return [tuple(sparse)] + dense.permuted_runs(run, q, k, v, do, bias=bias, mask=mask,
                                                 causal=causal, names=names, rng=rng,
                                                 count=REORDERINGS)


def _report(label: str, names: tuple[str, ...], out, oracle, bases) -> bool:
    reports = [compare(o, r, [b[i] for b in bases]) for i, (o, r) in enumerate(zip(out, oracle))]
    ok = all(r.ok for r in reports)
    print(f"  {label} " + "  ".join(f"{n} err {r.err:.1e} (bound {r.bound:.1e})"
                                    for n, r in zip(names, reports)) + ("" if ok else "  FAILED"))
    return ok


def harmonic_keep(n_blocks: int, kept: float, rng: np.random.Generator, batch: tuple = ()):
    """A PrFlashAttention round at about ``kept`` of the causal tiles: harmonic keep
    probabilities (spec.attention.prflash.harmonic_probs) with the per-row budget b that
    makes Σ_i min(b, i + 1) = kept · n(n + 1)/2, and a mask drawn from them."""
    causal_tiles = n_blocks * (n_blocks + 1) / 2
    lo, hi = 1.0, float(n_blocks)
    for _ in range(60):  # bisection on the expected kept tiles, increasing in b
        mid = (lo + hi) / 2
        if np.minimum(mid, np.arange(1, n_blocks + 1)).sum() < kept * causal_tiles:
            lo = mid
        else:
            hi = mid
    p_NN = prflash.harmonic_probs(n_blocks, hi)
    return prflash.sample_keep(p_NN, rng, batch=batch), p_NN


def _validate(D: int, rng: np.random.Generator) -> bool:
    """The forward and backward against the float64 spec; True if any fails."""
    B, H, G, T, S = 1, 4, 2, 150, 150
    E = D - 8 if D > 8 else D
    q, k, v, do = (rng.standard_normal(s).astype(np.float32)
                   for s in ((B, H, T, D), (B, G, S, D), (B, G, S, E), (B, H, T, E)))
    wide = oracle_dtype(np.float32)
    failed = False
    print(f"block-sparse attention  validate B={B} H={H} G={G} T={T} S={S} D={D} E={E}  "
          f"engine={_launch.engine()}  {_timing.device_name()}")
    for C, causal, per_head, kept in ((16, True, True, 0.35), (64, True, False, 0.8),
                                      (48, False, True, 0.5)):
        n = -(-T // C)
        if causal:  # a PrFlashAttention round (harmonic), with its importance bias
            keep, p_NN = harmonic_keep(n, kept, rng, batch=(1, H) if per_head else ())
            block_bias = prflash.importance_bias(p_NN, keep, np.float32)
        else:  # tiles anywhere, with random block biases
            keep = rng.random((1, H, n, n) if per_head else (n, n)) < kept
            block_bias = rng.uniform(0, 3, int(keep.sum())).astype(np.float32)
        layout = block_layout(keep, C)
        opts = {"causal": causal, "block_bias": block_bias}
        label = (f"C={C:3d} causal={causal!s:5s} {'per-head' if per_head else 'shared  '} "
                 f"kept {layout.n_kept:4d} tiles")
        wide_in = [x.astype(wide) for x in (q, k, v, do)]
        wide_opts = {"causal": causal, "block_bias": block_bias.astype(wide)}
        oracle = spec_block_sparse_forward(*wide_in[:3], layout, **wide_opts)
        out = block_sparse_forward(q, k, v, layout, **opts)
        bases = _dense_runs(q, k, v, do, layout, block_bias, causal, rng, backward=False)
        failed |= not _report(f"forward  {label}", ("o", "lse"), out, oracle, bases)
        oracle = spec_block_sparse_backward(*wide_in[:3], *oracle, wide_in[3], layout, **wide_opts)
        grads = block_sparse_backward(q, k, v, *out, do, layout, **opts)
        bases = _dense_runs(q, k, v, do, layout, block_bias, causal, rng, backward=True)
        failed |= not _report(f"backward {label}", ("dq", "dk", "dv"), grads, oracle, bases)
    return failed


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--B", type=int, default=1)
    parser.add_argument("--H", type=int, default=16)
    parser.add_argument("--T", type=int, default=8192, help="T = S")
    parser.add_argument("--D", type=int, default=64, choices=HEAD_DIMS, help="D = E")
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--kept", type=float, default=0.25,
                        help="fraction of the causal tiles kept (harmonic PrFlashAttention round)")
    parser.add_argument("--sanitize", action="store_true",
                        help="validate at a small size and skip timing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Validate the forward and backward against the float64 spec; time them on a GPU.

    Validation: B=1, H=4, G=2 (GQA), T=S=150, D=--D, E=D-8, three layouts: C=16 causal
    with a harmonic PrFlashAttention round per head (about 35% of the causal tiles) and its
    importance bias, C=64 causal with a shared round (about 80%), C=48 not causal with half
    the tiles per head at random and random block biases; each judged by spec.tolerance against the float64 block-sparse spec, the
    baselines being the float32 block-sparse spec and the dense tiled spec on the layout's
    dense equivalent in 1 + REORDERINGS rounding orders (the backward fed its own side's
    forward). Timing (CuPy engine, not --sanitize): B, H, T=S, D=E, block size from the
    arguments (default 1, 16, 8192, 64, 64), a harmonic PrFlashAttention round per head
    keeping about --kept of the causal tiles, with the importance bias; the dense causal
    forward (attention.cu v3) for scale (its backward is left out: one more NVRTC build
    than the GPU check's time for this step allows). FLOPs: :func:`flops`, 2·(visible
    pairs in kept tiles)·(D + E), and 2.5x that for the backward. Bytes: the minimum any
    kernel moves: q, k, v read and o, lse written once, 4·(B·H·T·D + 2·B·H·S·D + B·H·T·E +
    B·H·T), plus the CSR arrays (8·(R + 1 + K)); backward: q, k, v, o, dO, lse read and dq,
    dk, dv written once, 4·(2·B·H·T·D + 2·B·H·T·E + B·H·T + 2·B·H·S·D + 2·B·H·S·E) plus the
    CSR and CSC arrays. ``--sanitize`` validates only (for compute-sanitizer).
    """
    args = _arguments(argv)
    engine = _launch.engine()
    timed = engine == "cupy" and not args.sanitize
    rng = np.random.default_rng(0)
    failed = _validate(args.D, rng)
    if timed:
        _time(args, rng)
    elif not args.sanitize:
        print("  (timing skipped: the emulator's speed says nothing about a GPU's)")
    return 1 if failed else 0


def _time(args, rng) -> None:
    """Time the forward and backward at the requested size, and the dense causal forward."""
    import cupy

    B, H, T, D, C = args.B, args.H, args.T, args.D, args.block_size
    n = -(-T // C)
    keep, p_NN = harmonic_keep(n, args.kept, rng, batch=(1, H))
    q, k, v, do = (cupy.asarray(rng.standard_normal((B, H, T, D)).astype(np.float32))
                   for _ in range(4))
    layout, block_bias = _prflash_layout(q, k, v, keep, C, p_NN)
    call = prepare(q, k, v, layout, causal=True, scale=None, block_bias=block_bias)
    shape = call.shape
    print(f"block-sparse attention  time B={B} H={H} T=S={T} D=E={D} block_size={C} float32, "
          f"harmonic round per head: {layout.n_kept} kept tiles, "
          f"{prflash.kept_fraction(keep):.3f} of the causal tiles")
    csr = 8 * (layout.row_offsets.size + layout.n_kept)
    o, lse = cupy.empty((B, H, T, D), np.float32), cupy.empty((B, H, T), np.float32)
    nbytes = 4 * (4 * B * H * T * D + B * H * T) + csr
    work = flops(layout, shape, True)
    ms = _timing.time_ms(functools.partial(_run_forward, call, o, lse), repeats=5)
    print("  forward  " + _timing.rates(ms, nbytes, work, np.float32))
    delta = cupy.empty((B, H, T), np.float32)
    dq, dk, dv = (cupy.empty((B, H, T, D), np.float32) for _ in range(3))
    cols = columns(call)
    nbytes_bwd = 4 * (8 * B * H * T * D + B * H * T) + 2 * csr + 8 * layout.n_kept
    ms_bwd = _timing.time_ms(functools.partial(_run_backward, call, cols, o, lse, do, delta,
                                               dq, dk, dv), repeats=5)
    print("  backward " + _timing.rates(ms_bwd, nbytes_bwd, backward_flops(layout, shape, True),
                                        np.float32))
    # the dense causal kernels on the same problem: what the kept fraction buys
    dense_call = dense.prepare(q, k, v, causal=True, scale=None, bias=None, mask=None,
                               tile_t=64, tile_s=64)
    dense_ms = _timing.time_ms(functools.partial(dense._run, "v3", dense_call, o, lse), repeats=5)
    print(f"  dense causal forward (attention.cu v3) {dense_ms:.3f} ms: "
          f"{dense_ms / ms:.2f}x the block-sparse forward's time")


if __name__ == "__main__":
    sys.exit(main())
