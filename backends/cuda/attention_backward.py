"""Launcher of ``attention_backward.cu``: the FlashAttention backward on CUDA, float32.

Mirrors :func:`spec.attention.tiled.flash_backward` (same signature, same
:class:`~spec.attention.tiled.AttentionGrads`): causal masking (bottom-right), GQA and
MQA (dk, dv of a key/value head summed over the query heads of its group), a
broadcastable bias (which may hold -inf) and boolean mask, rows with no visible key
(lse = -inf: P = 0, dq = 0), and the positional options. Three kernels, no atomics, so
the result is deterministic:

    delta  Δ = rowsum(dO ∘ O)
    dkdv   a thread per key row: dk, dv over the group's query heads and query tiles
    dq     a thread per query row: dq over the key tiles

Positions: the ALiBi distance bias is part of the kernels' score rule, formed per score
as in the forward. RoPE is not fused: the rope kernel (``backends.cuda.rope``) rotates q
and k into scratch arrays before the three kernels (q̃ = R q, k̃ = R k, the spec's values
bit for bit), the kernels compute the gradients with respect to q̃ and k̃, and the same
kernel rotates dq and dk in place by the negated positions afterwards (dq = Rᵀ dq̃, as
:func:`spec.attention.positional.unrotate`): two extra passes over q, k and dq, dk, the
price of keeping the tuned backward kernels free of the rotation.

``tile_t`` and ``tile_s`` are the spec's: the kernels' own tiles are compile-time
constants, and the caller's only decide, under ``causal``, which (query, key) pairs are
visited, exactly as the spec skips them (this matters only for where a NaN reaches; see
attention_backward.cu). The forward is :mod:`backends.cuda.attention`, whose
:func:`~backends.cuda.attention.prepare` validates a call here as well.

    >>> import os; os.environ["ATTNSPEC_CUDA"] = "emulator"   # no GPU here
    >>> from backends.cuda.attention import flash_forward
    >>> from backends.cuda.attention_backward import flash_backward
    >>> o_BHTE, lse_BHT = flash_forward(q_BHTD, k_BGSD, v_BGSE, causal=True)
    >>> dq_BHTD, dk_BGSD, dv_BGSE = flash_backward(q_BHTD, k_BGSD, v_BGSE, o_BHTE, lse_BHT,
    ...                                            do_BHTE, causal=True)
"""

from __future__ import annotations

import functools
import sys
from typing import NamedTuple

import numpy as np

from backends.cuda import _launch, _timing
from backends.cuda import attention as forward
from backends.cuda import rope as rotary
from backends.cuda._launch import KernelConfig
from backends.cuda.attention import HEAD_DIMS, Call, head_dim_bucket, prepare
from spec.attention.checks import AttentionShape, check_backward_inputs
from spec.attention.naive import causal_visible_TS
from spec.attention.positional import Positions, materialise, query_positions, unrotate
from spec.attention.tiled import AttentionGrads
from spec.attention.tiled import flash_backward as spec_flash_backward
from spec.attention.tiled import flash_forward as spec_flash_forward
from spec.position.rope import RoPE
from spec.tolerance import compare, oracle_dtype

SPEC = "spec.attention.tiled:flash_backward"
SOURCE = "attention_backward.cu"

STEP = 4  # rows (dkdv) or keys (dq) per thread at once: independent dot-product chains
ROWS_DELTA = 128


class _Layout(NamedTuple):
    """What one head-dimension bucket keeps where (see the macros of attention_backward.cu).

    Per thread, dkdv holds a k, v row and the dk, dv accumulators (4·HEAD_DIM floats),
    dq a q, dO row and the dq accumulator (3·HEAD_DIM): in registers at 32; from 64 on
    the read-only rows move to padded shared memory, and at 128 the dv accumulator too,
    so that nothing spills. The shared q/dO and K/V tiles shrink as the rows grow: at 128
    a dkdv block takes 105 KiB (two per SM on sm_90, one on sm_80) and a dq block 73 KiB
    (two per SM on sm_80, three on sm_90).
    """

    keys_kv: int  # dkdv: threads = key rows per block
    qrows_kv: int  # dkdv: query rows per shared tile
    rows_q: int  # dq: threads = query rows per block
    keys_q: int  # dq: keys per shared tile
    kv_in_smem: bool
    dv_in_smem: bool
    qdo_in_smem: bool


LAYOUTS = {
    32: _Layout(keys_kv=64, qrows_kv=64, rows_q=64, keys_q=64,
                kv_in_smem=False, dv_in_smem=False, qdo_in_smem=False),
    64: _Layout(keys_kv=64, qrows_kv=32, rows_q=64, keys_q=32,
                kv_in_smem=True, dv_in_smem=False, qdo_in_smem=True),
    128: _Layout(keys_kv=64, qrows_kv=8, rows_q=64, keys_q=8,
                 kv_in_smem=True, dv_in_smem=True, qdo_in_smem=True),
}
assert tuple(LAYOUTS) == HEAD_DIMS


def dkdv_smem(head_dim: int, lay: _Layout, keys: int) -> int:
    """Dynamic shared memory of a dkdv block of ``keys`` threads (also block_sparse.cu's)."""
    # q and dO tiles, lse and Δ, then the per-thread rows padded by one float
    rows = 2 * lay.kv_in_smem + lay.dv_in_smem
    return 4 * (2 * lay.qrows_kv * head_dim + 2 * lay.qrows_kv + rows * keys * (head_dim + 1))


def dq_smem(head_dim: int, lay: _Layout, rows: int) -> int:
    """Dynamic shared memory of a dq block of ``rows`` threads (also block_sparse.cu's)."""
    # K and V tiles, then the per-thread q and dO rows padded by one float
    return 4 * (2 * lay.keys_q * head_dim + 2 * lay.qdo_in_smem * rows * (head_dim + 1))


KERNEL_NAMES = ("delta", "dkdv", "dq")


def _config(kernel: str, head_dim: int) -> KernelConfig:
    # The three kernels share one module per head dimension, so every config defines
    # every macro (one compilation serves all three).
    lay = LAYOUTS[head_dim]
    defines = (("HEAD_DIM", str(head_dim)), ("STEP", str(STEP)),
               ("KEYS_KV", str(lay.keys_kv)), ("QROWS_KV", str(lay.qrows_kv)),
               ("ROWS_Q", str(lay.rows_q)), ("KEYS_Q", str(lay.keys_q)),
               ("ROWS_DELTA", str(ROWS_DELTA)), ("KV_IN_SMEM", str(int(lay.kv_in_smem))),
               ("DV_IN_SMEM", str(int(lay.dv_in_smem))), ("QDO_IN_SMEM", str(int(lay.qdo_in_smem))))
    name = f"attention_backward_{kernel}"
    if kernel == "delta":
        return KernelConfig(SOURCE, name, defines, threads=ROWS_DELTA)
    if kernel == "dkdv":
        return KernelConfig(SOURCE, name, defines, threads=lay.keys_kv,
                            dynamic_smem=dkdv_smem(head_dim, lay, lay.keys_kv))
    return KernelConfig(SOURCE, name, defines, threads=lay.rows_q,
                        dynamic_smem=dq_smem(head_dim, lay, lay.rows_q))


KERNELS: dict[tuple[str, int], KernelConfig] = {
    (kernel, head_dim): _config(kernel, head_dim) for head_dim in HEAD_DIMS for kernel in KERNEL_NAMES
}
"""Every configuration this launcher uses; the compile gate compiles exactly these."""


def _proxy(x):
    return _launch.shape_proxy(x) if _launch.is_cupy_array(x) else x


def flash_backward(q_BHTD, k_BGSD, v_BGSE, o_BHTE, lse_BHT, do_BHTE, *, causal: bool = False,
                   scale: float | None = None, bias=None, mask=None, tile_t: int = 64,
                   tile_s: int = 64, rope: RoPE | None = None, alibi_slopes=None,
                   alibi_form: str = "linear") -> AttentionGrads:
    """FlashAttention backward on CUDA, as :func:`spec.attention.tiled.flash_backward`.

    float32 NumPy (copied to the device) or CuPy (used in place) arrays; results come
    back as the kind of array that went in. D and E up to 128. ``o_BHTE`` and
    ``lse_BHT`` are the forward's outputs for the same inputs and options (use
    :func:`backends.cuda.attention.flash_forward`: its scores are rounded as these
    kernels round them), ``do_BHTE`` the gradient of the loss with respect to o.
    ``rope``, ``alibi_slopes``, ``alibi_form`` as the spec's (see the module docstring).
    Returns dq_BHTD, and dk_BGSD, dv_BGSE summed over the query heads of each group.
    """
    call = prepare(q_BHTD, k_BGSD, v_BGSE, causal=causal, scale=scale, bias=bias, mask=mask,
                   tile_t=tile_t, tile_s=tile_s, rope=rope, alibi_slopes=alibi_slopes,
                   alibi_form=alibi_form, what="the CUDA attention backward")
    check_backward_inputs(call.shape, _proxy(q_BHTD), _proxy(o_BHTE), _proxy(lse_BHT),
                          _proxy(do_BHTE))
    B, H, G, T, S, D, E = call.shape
    arrays = call.arrays
    o, lse, do = (arrays.to_device(x) for x in (o_BHTE, lse_BHT, do_BHTE))
    delta = arrays.empty((B, H, T), np.float32)
    dq = arrays.empty((B, H, T, D), np.float32)
    dk = arrays.empty((B, G, S, D), np.float32)
    dv = arrays.empty((B, G, S, E), np.float32)
    _run(call, _tiles(call.shape, tile_t, tile_s), o, lse, do, delta, dq, dk, dv, _rotation(call))
    return AttentionGrads(arrays.result(dq), arrays.result(dk), arrays.result(dv))


class _Rotation(NamedTuple):
    """RoPE around the backward kernels: scratch arrays for q̃, k̃ and both tables."""

    q: object
    k: object
    tables: rotary.Tables
    """The forward's tables (positions min(0, S - T) .. S - 1)."""
    inverse: rotary.Tables
    """The same positions negated: R_pᵀ = R_{-p}."""
    layout: str


def _rotation(call: Call) -> _Rotation | None:
    """What :func:`_run` needs to rotate q, k and carry dq, dk back; None without RoPE."""
    rope = call.pos.rope
    if rope is None:
        return None
    _, _, _, T, S, D, _ = call.shape
    arrays = call.arrays
    return _Rotation(arrays.empty(call.q.shape, np.float32), arrays.empty(call.k.shape, np.float32),
                     rotary.Tables(*call.rope[:3]),
                     rotary.device_tables(arrays, rope, D, *rotary.query_key_span(T, S),
                                          inverse=True),
                     rope.layout)


def _tiles(shape: AttentionShape, tile_t: int, tile_s: int) -> tuple[np.int32, np.int32]:
    """The spec's tiles as the kernels take them: a tile longer than T (S) is the one
    tile [0, T) ([0, S)), so clamping changes no visited pair and keeps them in int32."""
    return np.int32(min(int(tile_t), shape.T)), np.int32(min(int(tile_s), shape.S))


def _run(call: Call, tiles, o, lse, do, delta, dq, dk, dv, rotation: _Rotation | None) -> None:
    """Launch delta, dkdv and dq on a prepared call, with RoPE the rotations before and
    after (what main() times)."""
    B, H, G, T, S, D, E = call.shape
    head_dim = head_dim_bucket(call.shape)
    lay = LAYOUTS[head_dim]
    q, k = call.q, call.k
    if rotation is not None:  # q̃ = R_i q, k̃ = R_s k
        rotary.launch(q, k, rotation.q, rotation.k, rotation.tables, rotation.layout, T, S)
        q, k = rotation.q, rotation.k
    rows = B * H * T
    config = KERNELS[("delta", head_dim)]
    _launch.get_kernel(config)((-(-rows // ROWS_DELTA),), (ROWS_DELTA,),
                               (o, do, delta, np.int64(rows), np.int32(E)))
    dims = tuple(np.int32(n) for n in (H, G, T, S, D, E))
    inputs = (q, k, call.v, do, lse, delta)
    config = KERNELS[("dkdv", head_dim)]
    _launch.get_kernel(config)((-(-S // lay.keys_kv), G, B), (lay.keys_kv,),
                               (*inputs, dk, dv, *dims, *tiles, *call.rule),
                               shared_mem=config.dynamic_smem)
    config = KERNELS[("dq", head_dim)]
    _launch.get_kernel(config)((-(-T // lay.rows_q), H, B), (lay.rows_q,),
                               (*inputs, dq, *dims, *tiles, *call.rule),
                               shared_mem=config.dynamic_smem)
    if rotation is not None:  # dq = R_iᵀ dq̃, dk = R_sᵀ dk̃, in place
        rotary.launch(dq, dk, dq, dk, rotation.inverse, rotation.layout, T, S)


def flops(shape: AttentionShape, causal: bool) -> int:
    """2.5 times the forward's :func:`backends.cuda.attention.flops`, the usual count.

    The backward has five products per visible pair (q·kᵀ recomputed, dP = dO vᵀ,
    dV = Pᵀ dO, dQ = dS K, dK = dSᵀ Q) against the forward's two, so with D = E it is
    2.5 · 2·B·H·(visible pairs)·(D + E) = 10·B·H·(visible pairs)·D. The kernels
    actually do seven (dq's kernel recomputes q·kᵀ and dP): the rate printed is the
    conventional one, comparable with other implementations'.
    """
    return 5 * forward.flops(shape, causal) // 2


REORDERINGS = 4
"""Extra rounding orders of the spec baseline in :func:`main` (as in the conformance tests)."""


def _spec_grads(q, k, v, do, bias, mask, causal, **positions):
    """The spec forward then backward, in the inputs' dtype."""
    opts = {"causal": causal, "bias": bias, "mask": mask, **positions}
    return spec_flash_backward(q, k, v, *spec_flash_forward(q, k, v, **opts), do, **opts)


def _spec_baselines(q, k, v, do, bias, mask, causal, rng, pos: Positions) -> list[AttentionGrads]:
    """The float32 spec on the problem and on REORDERINGS copies with the axes T, S, D and E
    permuted (results permuted back): attention is exactly equivariant under those, so
    the copies differ only in the order of their sums, and together measure what float32
    costs better than one order's luck (spec.tolerance; tests/backends/conformance.py).
    With positions the copies are of the problem with its positions materialised
    (spec.attention.positional.materialise), their dq, dk carried back through the rotation."""
    B, H, T, D = q.shape
    S, E = k.shape[2], v.shape[3]
    q, k, bias = materialise(q, k, bias, pos)
    full = (B, H, T, S)
    visible = np.ones(full, bool) if mask is None else np.broadcast_to(mask, full)
    if causal:  # causal is a statement about positions: after permuting S it is a mask
        visible = visible & causal_visible_TS(T, S)
    bias_full = None if bias is None else np.broadcast_to(bias, full)
    out = [_spec_grads(q, k, v, do, bias, mask, causal)]
    for _ in range(REORDERINGS):
        t, s, d, e = (rng.permutation(n) for n in (T, S, D, E))
        dq, dk, dv = _spec_grads(
            q[:, :, t][..., d], k[:, :, s][..., d], v[:, :, s][..., e], do[:, :, t][..., e],
            None if bias_full is None else bias_full[:, :, t][..., s], visible[:, :, t][..., s],
            False)
        t, s, d, e = (np.argsort(x) for x in (t, s, d, e))
        out.append(AttentionGrads(dq[:, :, t][..., d], dk[:, :, s][..., d], dv[:, :, s][..., e]))
    # dq = R_iᵀ dq̃, dk = R_sᵀ dk̃
    return [AttentionGrads(unrotate(dq, query_positions(T, S), pos),
                           unrotate(dk, np.arange(S), pos), dv) for dq, dk, dv in out]


def _validate(B, H, G, T, S, D, E, rng) -> bool:
    """The CUDA forward + backward against the float64 spec, causal and not, then causal
    with RoPE + ALiBi; True if any fails."""
    q, k, v, do = (rng.standard_normal(s).astype(np.float32)
                   for s in ((B, H, T, D), (B, G, S, D), (B, G, S, E), (B, H, T, E)))
    bias = rng.standard_normal((1, H, T, S)).astype(np.float32)
    mask = rng.random((B, 1, 1, S)) < 0.9
    wide = oracle_dtype(np.float32)
    failed = False
    for label, causal, positions in (("causal=False", False, {}), ("causal=True ", True, {}),
                                     ("rope+alibi, causal:", True, forward.example_positions(H))):
        pos = forward.check_positions_on(positions.get("rope"), positions.get("alibi_slopes"),
                                         "linear", H=H, D=D)
        # oracle: the spec in float64 throughout; baselines: the spec in float32; each
        # backward is fed its own side's forward (see tests/backends/conformance.py)
        oracle = _spec_grads(*(x.astype(wide) for x in (q, k, v, do, bias)), mask, causal,
                             **positions)
        bases = _spec_baselines(q, k, v, do, bias, mask, causal, rng, pos)
        opts = {"causal": causal, "bias": bias, "mask": mask, **positions}
        out = flash_backward(q, k, v, *forward.flash_forward(q, k, v, **opts), do, **opts)
        reports = [compare(o, r, [b[i] for b in bases])
                   for i, (o, r) in enumerate(zip(out, oracle))]
        ok = all(r.ok for r in reports)
        failed |= not ok
        print(f"  {label} " + "  ".join(
            f"{n} err {r.err:.1e} (bound {r.bound:.1e})" for n, r in zip(("dq", "dk", "dv"), reports))
            + ("" if ok else "  FAILED"))
    return failed


def main(argv: list[str] | None = None) -> int:
    """Validate the backward against the float64 spec; time it on a GPU.

    Validation: B=1, H=4, G=2 (GQA), T=77, S=131, D=min(--D, 128), E=D-24 (or D), a
    per-head bias (1, H, T, S), a per-key mask (B, 1, 1, S), causal and not, then causal
    with RoPE and ALiBi on top, each backward fed its own forward's o and lse, judged by
    spec.tolerance against the float32 spec in 1 + REORDERINGS rounding orders. Timing
    (CuPy engine, not --sanitize): B, H, T=S, D=E from the arguments, causal and not, the
    three kernels together, then causal with RoPE + ALiBi (the rotations included).
    FLOPs: :func:`flops`, 2.5x the forward's 2·B·H·(visible pairs)·(D + E). Bytes: q,
    k, v, o, dO and lse read once and dq, dk, dv written once, the minimum any backward
    moves: 4·(2·B·H·T·D + 2·B·H·T·E + B·H·T + 2·B·G·S·D + 2·B·G·S·E). PyTorch SDPA's
    backward (the autograd of scaled_dot_product_attention, float32) is timed alongside
    where PyTorch with CUDA is installed. ``--sanitize`` validates only, at the small
    size (for compute-sanitizer).
    """
    args = _timing.attention_arguments(main.__doc__, argv)
    engine = _launch.engine()
    timed = engine == "cupy" and not args.sanitize
    rng = np.random.default_rng(0)
    B, H, G, T, S, D = 1, 4, 2, 77, 131, min(args.D, HEAD_DIMS[-1])
    E = D - 24 if D > 24 else D
    print(f"attention backward  validate B={B} H={H} G={G} T={T} S={S} D={D} E={E}  "
          f"engine={engine}  {_timing.device_name()}")
    failed = _validate(B, H, G, T, S, D, E, rng)
    if timed:
        _time(args, rng)
    elif not args.sanitize:
        print("  (timing skipped: the emulator's speed says nothing about a GPU's)")
    return 1 if failed else 0


def _time(args, rng) -> None:
    """Time the backward at (B, H, T=S, D=E), causal and not, against PyTorch SDPA's."""
    import cupy

    B, H, T, D = args.B, args.H, args.T, args.D
    q, k, v, do = (cupy.asarray(rng.standard_normal((B, H, T, D)).astype(np.float32))
                   for _ in range(4))
    print(f"attention backward  time B={B} H={H} T=S={T} D=E={D} float32")
    # read q, k, v, o, dO (G = H, E = D) and lse, write dq, dk, dv
    nbytes = 4 * (5 * B * H * T * D + B * H * T + 3 * B * H * T * D)
    # plain, causal and not; then causal with RoPE + ALiBi (the rotations before and after
    # and the RoPE tables add 4·(4·B·H·T·D + 2·T·D) bytes)
    for causal, positions in ((False, {}), (True, {}), (True, forward.example_positions(H))):
        o, lse = forward.flash_forward(q, k, v, causal=causal, **positions)
        call = prepare(q, k, v, causal=causal, scale=None, bias=None, mask=None, tile_t=64,
                       tile_s=64, **positions)
        delta = cupy.empty((B, H, T), np.float32)
        dq, dk, dv = (cupy.empty((B, H, T, D), np.float32) for _ in range(3))
        run = functools.partial(_run, call, _tiles(call.shape, 64, 64), o, lse, do, delta,
                                dq, dk, dv, _rotation(call))
        ms = _timing.time_ms(run, repeats=5)
        extra = 4 * (4 * B * H * T * D + 2 * T * D) if positions else 0
        label = "rope+alibi " if positions else ""
        line = f"  {label}causal={causal!s:5s} " + _timing.rates(
            ms, nbytes + extra, flops(call.shape, causal), np.float32)
        if not positions:
            sdpa = _timing.torch_sdpa_ms(B, H, T, D, causal, "float32", backward=True)
            if sdpa is not None:
                line += f"  PyTorch SDPA backward {sdpa:.3f} ms: {sdpa / ms:.2f}x SDPA's throughput"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
