"""Launcher of ``attention.cu``: FlashAttention forward on CUDA, float32, three versions.

Mirrors :func:`spec.attention.tiled.flash_forward` (same signature plus ``version=``,
same :class:`~spec.attention.naive.AttentionOut`). Causal masking (bottom-right), GQA
and MQA (G divides H), an additive bias and a boolean mask (each broadcastable, never
expanded), the positional options (``rope``, ``alibi_slopes``, ``alibi_form``: q and k
rotated as the kernels load them, the distance bias formed per score; nothing of size
T x S) and the lse output are supported by every version:

    v1  one thread per query row, everything read from global memory
    v2  a block of query rows shares key/value tiles in shared memory
    v3  a warp per group of rows, one key per lane: warp-shuffle reductions for the
        row statistics, float4 loads, conflict-free padded shared memory

The kernels' tile sizes are compile-time constants (see ``attention.cu``): ``tile_t`` and
``tile_s`` are accepted and validated for the spec's signature, and do not change the
result beyond rounding (the online softmax is tiling-independent). Each version is built
twice per head dimension: without the positional code (``POSITIONS=0``, what a call
without positional options runs, exactly the kernel it was before they existed) and with
it. The same kernels serve packed sequences (``backends.cuda.attention_varlen``). The
backward is ``backends.cuda.attention_backward``; the tensor-core forward
(float16/bfloat16) is ``backends.cuda.attention_tc``. :func:`prepare` is the input
handling they share.

    >>> import os; os.environ["ATTNSPEC_CUDA"] = "emulator"   # no GPU here
    >>> from backends.cuda.attention import flash_forward
    >>> o_BHTE, lse_BHT = flash_forward(q_BHTD, k_BGSD, v_BGSE, causal=True, version="v3")
"""

from __future__ import annotations

import functools
import sys
from typing import NamedTuple

import numpy as np

from backends.cuda import _launch, _timing
from backends.cuda import rope as rotary
from backends.cuda._launch import KernelConfig
from spec.attention.checks import (
    AttentionShape,
    check_attention_inputs,
    check_scale,
    check_tile,
)
from spec.attention.naive import AttentionOut, attention, causal_visible_TS
from spec.attention.positional import (
    Positions,
    materialise,
    check_positions,
    penalty_table,
)
from spec.attention.tiled import flash_forward as spec_flash_forward
from spec.position.alibi import slopes as alibi_slopes
from spec.position.rope import RoPE
from spec.tolerance import compare, oracle_dtype

SPEC = "spec.attention.tiled:flash_forward"
SOURCE = "attention.cu"

HEAD_DIMS = (32, 64, 128)
"""Compiled head-dimension buckets: a call with D, E <= n runs the kernels built for n."""

VERSIONS = ("v1", "v2", "v3")

# Launch shapes (attention.cu's macros): rows a block covers and keys per tile, per version.
ROWS_V1 = 64  # threads = rows
KEYS_V1 = 8  # scores held in registers per step
ROWS_V2 = 64  # threads = rows
KEYS_V2 = 32
WARPS_V3 = 4
ROWS_PER_WARP_V3 = 8  # rows a warp computes at once (its q loads are broadcasts)
KEYS_V3 = 32  # one key per lane


def _v2_smem(head_dim: int) -> int:
    # per thread, padded by one float (conflict-free per-thread rows): its q row, its Õ row
    # and its P row; K and V tiles
    return 4 * (ROWS_V2 * 2 * (head_dim + 1) + ROWS_V2 * (KEYS_V2 + 1) + 2 * KEYS_V2 * head_dim)


def _v3_smem(head_dim: int) -> int:
    # q rows; K tile padded by 4 floats (float4-aligned, conflict-free per-lane rows); V tile
    rows = WARPS_V3 * ROWS_PER_WARP_V3
    return 4 * (rows * head_dim + KEYS_V3 * (head_dim + 4) + KEYS_V3 * head_dim)


def _config(version: str, head_dim: int, positions: bool) -> KernelConfig:
    defines = (("HEAD_DIM", str(head_dim)), ("ROWS_V1", str(ROWS_V1)), ("KEYS_V1", str(KEYS_V1)),
               ("ROWS_V2", str(ROWS_V2)), ("KEYS_V2", str(KEYS_V2)), ("WARPS_V3", str(WARPS_V3)),
               ("ROWS_PER_WARP_V3", str(ROWS_PER_WARP_V3)), ("POSITIONS", str(int(positions))))
    kernel = f"attention_forward_{version}"
    if version == "v1":
        return KernelConfig(SOURCE, kernel, defines, threads=ROWS_V1)
    if version == "v2":
        return KernelConfig(SOURCE, kernel, defines, threads=ROWS_V2, dynamic_smem=_v2_smem(head_dim))
    return KernelConfig(SOURCE, kernel, defines, threads=32 * WARPS_V3,
                        dynamic_smem=_v3_smem(head_dim))


POSITIONS = "positions"


def kernel_key(version: str, head_dim: int, positions: bool) -> tuple:
    """The KERNELS key of a build: (version, head_dim), or with :data:`POSITIONS` appended
    for the build with the positional options."""
    return (version, head_dim, POSITIONS) if positions else (version, head_dim)


KERNELS: dict[tuple, KernelConfig] = {
    kernel_key(version, head_dim, positions): _config(version, head_dim, positions)
    for positions in (False, True) for version in VERSIONS for head_dim in HEAD_DIMS
}
"""Every configuration this launcher uses; the compile gate compiles exactly these.
(version, head_dim): the build without positional code; (version, head_dim, "positions"):
with it (:func:`kernel_key`)."""


def head_dim_bucket(shape: AttentionShape) -> int:
    """The smallest compiled head dimension that holds D and E."""
    for n in HEAD_DIMS:
        if max(shape.D, shape.E) <= n:
            return n
    raise ValueError(
        f"q_BHTD, v_BGSE: the CUDA attention kernels take head dimensions D, E up to "
        f"{HEAD_DIMS[-1]}, got D={shape.D}, E={shape.E}"
    )


class Call(NamedTuple):
    """One validated call, its arrays on the engine, ready to launch."""

    shape: AttentionShape
    arrays: _launch.Arrays
    q: object
    k: object
    v: object
    rule: tuple
    """The kernels' SCORE_RULE_PARAMS arguments (attention_common.cuh), in order."""
    pos: Positions
    """The validated positional options (slopes in float32)."""
    rope: tuple
    """The forward kernels' ROPE_PARAMS arguments (attention_common.cuh), in order."""
    layout: tuple
    """The forward kernels' (cu_seqlens_q, cu_seqlens_k, packed) arguments (attention.cu):
    placeholders and 0 for a padded batch."""


def _device_values_ok(name: str, x) -> None:
    """The spec's value check of ``bias`` (no +inf, no NaN), for an array on the GPU."""
    import cupy

    if bool(cupy.isnan(x).any()) or bool(cupy.isposinf(x).any()):
        raise ValueError(f"{name}: +inf and NaN are not allowed (use -inf or mask to forbid a key)")


def _check(q, k, v, bias, mask, causal, tile_t, tile_s, scale, rope, alibi_slopes, alibi_form,
           dtypes: tuple[np.dtype, ...], what: str) -> tuple[AttentionShape, Positions, float]:
    """The spec's checks in the spec's order (layout on shape proxies for GPU arrays), then
    the kernels' limits (dtype, head dimensions); the sizes, positions and scale."""
    def proxy(x):
        return _launch.shape_proxy(x) if _launch.is_cupy_array(x) else x

    shape = check_attention_inputs(proxy(q), proxy(k), proxy(v), causal=causal,
                                   bias=None if bias is None else proxy(bias),
                                   mask=None if mask is None else proxy(mask))
    if bias is not None and _launch.is_cupy_array(bias):
        _device_values_ok("bias", bias)
    check_tile("tile_t", tile_t)
    check_tile("tile_s", tile_s)
    pos = check_positions_on(rope, alibi_slopes, alibi_form, H=shape.H, D=shape.D)
    scale = check_scale(scale, shape.D)
    if np.dtype(q.dtype) not in dtypes:
        names = ", ".join(d.name for d in dtypes)
        raise TypeError(f"q_BHTD, k_BGSD, v_BGSE: {what} takes {names}, got {np.dtype(q.dtype)}")
    head_dim_bucket(shape)
    return shape, pos, scale


def _strides(x, shape: AttentionShape) -> tuple[np.int64, ...]:
    """Element strides of a C-contiguous (B|1, H|1, T|1, S|1) array, 0 where broadcast."""
    full = (shape.B, shape.H, shape.T, shape.S)
    out, step = [], 1
    for n, f in reversed(list(zip(x.shape, full))):
        out.append(0 if (n == 1 and f != 1) else step)
        step *= n
    return tuple(np.int64(s) for s in reversed(out))


def alibi_params(arrays: _launch.Arrays, pos: Positions, n: int) -> tuple:
    """The ALiBi part of SCORE_RULE_PARAMS (attention_common.cuh): the slopes m_H and the
    penalties f(0) .. f(n - 1) (spec.attention.positional.penalty_table, float32) with
    has_alibi = 1, or one-element placeholders and 0 without ALiBi."""
    if pos.slopes_H is None:
        none = arrays.to_device(np.zeros(1, np.float32))
        return none, none, np.int32(0)
    return (arrays.to_device(pos.slopes_H.astype(np.float32)),
            arrays.to_device(penalty_table(max(n, 1), pos.form, np.float32)), np.int32(1))


def check_positions_on(rope, alibi_slopes, alibi_form, *, H: int, D: int) -> Positions:
    """The spec's check of the positional keywords (float32 slopes); ``alibi_slopes`` may
    be a CuPy array (H numbers, copied to the host for the check)."""
    if _launch.is_cupy_array(alibi_slopes):
        alibi_slopes = alibi_slopes.get()
    return check_positions(rope, alibi_slopes, alibi_form, H=H, D=D, dtype=np.float32)


def prepare(q_BHTD, k_BGSD, v_BGSE, *, causal, scale, bias, mask, tile_t, tile_s,
            rope=None, alibi_slopes=None, alibi_form="linear",
            dtypes: tuple[np.dtype, ...] = (np.dtype(np.float32),),
            what: str = "the CUDA attention kernel") -> Call:
    """Validate a call as the spec does, move its arrays to the engine, build the rule args.

    Shared by the forward, backward and tensor-core launchers. Arrays stay where they
    are on the GPU (CuPy, C-contiguous) and are copied from NumPy; ``bias`` keeps its
    broadcast shape (the kernels address it through strides). The positional options
    become the ALiBi arguments of the rule (slopes and a penalty table of max(T, S)
    entries) and the RoPE tables of the positions min(0, S - T) .. S - 1.
    """
    shape, pos, scale = _check(q_BHTD, k_BGSD, v_BGSE, bias, mask, causal, tile_t, tile_s, scale,
                               rope, alibi_slopes, alibi_form, dtypes, what)
    arrays = _launch.Arrays(_launch.engine(), q_BHTD, k_BGSD, v_BGSE,
                            *(x for x in (bias, mask) if x is not None))
    dtype = np.dtype(q_BHTD.dtype)
    # absent bias/mask: a one-element placeholder the kernel never reads (has_* = 0)
    bias_dev = arrays.to_device(bias if bias is not None else np.zeros((1, 1, 1, 1), dtype))
    mask_dev = arrays.to_device(mask if mask is not None else np.ones((1, 1, 1, 1), bool))
    T, S = shape.T, shape.S
    rule = (bias_dev, *_strides(bias_dev, shape), mask_dev, *_strides(mask_dev, shape),
            np.int32(bias is not None), np.int32(mask is not None), np.int32(bool(causal)),
            np.float32(scale), *alibi_params(arrays, pos, max(T, S)))
    none = arrays.to_device(np.zeros(1, np.int32))
    return Call(shape, arrays, arrays.to_device(q_BHTD), arrays.to_device(k_BGSD),
                arrays.to_device(v_BGSE), rule, pos,
                rotary.kernel_params(arrays, pos.rope, shape.D, *rotary.query_key_span(T, S)),
                (none, none, np.int32(0)))


def flash_forward(q_BHTD, k_BGSD, v_BGSE, *, causal: bool = False, scale: float | None = None,
                  bias=None, mask=None, tile_t: int = 64, tile_s: int = 64,
                  rope: RoPE | None = None, alibi_slopes=None, alibi_form: str = "linear",
                  version: str = "v3") -> AttentionOut:
    """FlashAttention forward on CUDA, as :func:`spec.attention.tiled.flash_forward`.

    float32 NumPy (copied to the device) or CuPy (used in place) arrays; results come
    back as the kind of array that went in. D and E up to 128. ``rope``,
    ``alibi_slopes`` (H slopes, NumPy or CuPy) and ``alibi_form`` as the spec's, fused
    into the kernels. ``version``: ``"v1"``, ``"v2"`` or ``"v3"`` (see the module
    docstring and attention.cu).
    """
    if version not in VERSIONS:
        raise ValueError(f"version: expected one of {VERSIONS}, got {version!r}")
    call = prepare(q_BHTD, k_BGSD, v_BGSE, causal=causal, scale=scale, bias=bias, mask=mask,
                   tile_t=tile_t, tile_s=tile_s, rope=rope, alibi_slopes=alibi_slopes,
                   alibi_form=alibi_form)
    B, H, _, T, _, _, E = call.shape
    o = call.arrays.empty((B, H, T, E), np.float32)
    lse = call.arrays.empty((B, H, T), np.float32)
    _run(version, call, o, lse)
    return AttentionOut(call.arrays.result(o), call.arrays.result(lse))


def rows_per_block(version: str) -> int:
    """Query rows one block of ``version`` covers."""
    return {"v1": ROWS_V1, "v2": ROWS_V2, "v3": WARPS_V3 * ROWS_PER_WARP_V3}[version]


def launch(version: str, call: Call, o, lse, grid: tuple[int, int, int], T: int, S: int) -> None:
    """Launch one version on a prepared call: grid (row blocks, H, B or N); T, S as the
    kernel takes them (a batch's lengths, or packed row counts)."""
    _, H, G, _, _, D, E = call.shape
    config = KERNELS[kernel_key(version, head_dim_bucket(call.shape), call.pos.any)]
    block = (32, WARPS_V3) if version == "v3" else (rows_per_block(version),)
    dims = tuple(np.int32(n) for n in (H, G, T, S, D, E))
    _launch.get_kernel(config)(grid, block, (call.q, call.k, call.v, o, lse, *call.layout, *dims,
                                             *call.rule, *call.rope),
                               shared_mem=config.dynamic_smem)


def _run(version: str, call: Call, o, lse) -> None:
    """Launch one version on a prepared padded batch (what main() times)."""
    B, H, _, T, S, _, _ = call.shape
    launch(version, call, o, lse, (-(-T // rows_per_block(version)), H, B), T, S)


def flops(shape: AttentionShape, causal: bool) -> int:
    """2·B·H·T·S·(D + E) for q·kᵀ and P·V, halved (about) under the causal mask."""
    B, H, _, T, S, D, E = shape
    if causal:
        visible = sum(min(S, max(0, t + 1 + S - T)) for t in range(T))
    else:
        visible = T * S
    return 2 * B * H * visible * (D + E)


def permuted_runs(run, q, k, v, do, *, bias, mask, causal: bool, names: tuple[str, ...],
                  rng: np.random.Generator, count: int) -> list[tuple]:
    """``run(q, k, v, do, bias, mask, causal)`` on the problem and on ``count`` copies whose
    axes T, S, D and E are permuted, each copy's outputs permuted back.

    Attention is exactly equivariant under those permutations (causal becomes an explicit
    mask first, since it is a statement about positions), so the runs differ only in the
    order of their sums: run on the spec in the working dtype, together they measure what
    that dtype costs better than one order's luck (the baselines of spec.tolerance, as
    in tests/backends/conformance.py). ``names`` are the outputs' names, whose suffix
    letters say which axes to permute back (``o_BHTE``, ``dk_BGSD``, ...).
    """
    B, H, T, D = q.shape
    S, E = k.shape[2], v.shape[3]
    full = (B, H, T, S)
    visible = np.ones(full, bool) if mask is None else np.broadcast_to(mask, full)
    if causal:
        visible = visible & causal_visible_TS(T, S)
    bias_full = None if bias is None else np.broadcast_to(bias, full)
    runs = [tuple(run(q, k, v, do, bias, mask, causal))]
    for _ in range(count):
        perm = {axis: rng.permutation(n) for axis, n in zip("TSDE", (T, S, D, E))}
        t, s, d, e = (perm[axis] for axis in "TSDE")
        out = run(q[:, :, t][..., d], k[:, :, s][..., d], v[:, :, s][..., e], do[:, :, t][..., e],
                  None if bias_full is None else bias_full[:, :, t][..., s],
                  visible[:, :, t][..., s], False)
        back = []
        for x, name in zip(out, names):
            for axis, letter in enumerate(name.rsplit("_", 1)[1]):
                if letter in perm:
                    x = np.take(x, np.argsort(perm[letter]), axis=axis)
            back.append(x)
        runs.append(tuple(back))
    return runs


REORDERINGS = 4
"""Extra rounding orders of the spec baseline in :func:`main` (as in the conformance tests)."""


def main(argv: list[str] | None = None) -> int:
    """Validate every version against the float64 spec; time each on a GPU.

    Validation: B=1, H=4, G=2 (GQA), T=77, S=131, D=min(--D, 128), a per-head bias and a
    per-key mask, causal and not; then the same with RoPE (rotate_half) and ALiBi
    (Press et al.'s slopes) on top. Judged by spec.tolerance against the float32 spec in
    1 + REORDERINGS rounding orders (with positions: on the problem with its positions
    materialised, spec.attention.positional.materialise). FLOPs: 2·B·H·(visible
    pairs)·(D + E) (q·kᵀ and P·V; exp not counted). Bytes: q, k, v read once and o written once, the minimum any
    kernel moves: 4·(B·H·T·D + 2·B·G·S·D + B·H·T·E) (+ lse). Timing: every version,
    causal and not, and causal with RoPE + ALiBi (the positional build). ``--sanitize``
    runs the validation alone, at a small size (for compute-sanitizer).
    """
    args = _timing.attention_arguments(main.__doc__, argv)
    engine = _launch.engine()
    timed = engine == "cupy" and not args.sanitize
    rng = np.random.default_rng(0)
    # validation: a problem with GQA, a broadcast bias, a mask and S != T, at the timed
    # head dimension (the kernels compiled for it), small enough for the float64 oracle
    # and for the emulator
    B, H, G, T, S, D = 1, 4, 2, 77, 131, min(args.D, HEAD_DIMS[-1])
    q, k, v = (rng.standard_normal(s).astype(np.float32)
               for s in ((B, H, T, D), (B, G, S, D), (B, G, S, D)))
    bias = rng.standard_normal((1, H, T, S)).astype(np.float32)
    mask = rng.random((B, 1, 1, S)) < 0.9
    print(f"attention forward  validate B={B} H={H} G={G} T={T} S={S} D={D}  engine={engine}  "
          f"{_timing.device_name()}")
    failed = False
    wide = oracle_dtype(np.float32)

    def spec_run(q, k, v, do, bias, mask, causal):
        return spec_flash_forward(q, k, v, causal=causal, bias=bias, mask=mask)

    for label, positions in (("", {}), ("rope+alibi ", example_positions(H))):
        pos = check_positions_on(positions.get("rope"), positions.get("alibi_slopes"), "linear",
                                 H=H, D=D)
        qm, km, bm = materialise(q, k, bias, pos)
        for causal in (False, True):
            opts = {"causal": causal, "bias": bias, "mask": mask}
            oracle = attention(*(x.astype(wide) for x in (q, k, v)), causal=causal,
                               bias=bias.astype(wide), mask=mask, **positions)
            bases = permuted_runs(spec_run, qm, km, v, np.zeros((B, H, T, D), np.float32),
                                  bias=bm, mask=mask, causal=causal, names=AttentionOut._fields,
                                  rng=rng, count=REORDERINGS)
            for version in VERSIONS:
                out = flash_forward(q, k, v, version=version, **opts, **positions)
                failed |= not report_version(f"{label}{version} causal={causal!s:5s}", out,
                                             oracle, bases)
    if timed:
        _time_versions(args, rng)
    elif not args.sanitize:
        print("  (timing skipped: the emulator's speed says nothing about a GPU's)")
    return 1 if failed else 0


def report_version(label: str, out, oracle, bases) -> bool:
    """Print one version's (o, lse) errors against the oracle and bounds; True if within."""
    reports = [compare(o, r, [b[i] for b in bases]) for i, (o, r) in enumerate(zip(out, oracle))]
    ok = all(r.ok for r in reports)
    print(f"  {label} " + "  ".join(f"{n} err {r.err:.1e} (bound {r.bound:.1e})"
                                    for n, r in zip(("o", "lse"), reports))
          + ("" if ok else "  FAILED"))
    return ok


def example_positions(H: int) -> dict:
    """The positional options main() validates and times: RoPE (rotate_half, base 10000)
    and ALiBi with Press et al.'s slopes (float32)."""
    return {"rope": RoPE(), "alibi_slopes": alibi_slopes(H).astype(np.float32)}


def _time_versions(args, rng) -> None:
    """Time every version at the requested size (B, H, T=S, D=E), causal and not, and
    PyTorch SDPA (float32) on the same GPU where PyTorch with CUDA is installed; then every
    version causal with RoPE + ALiBi (example_positions)."""
    import cupy

    B, H, T, D = args.B, args.H, args.T, args.D
    x = [cupy.asarray(rng.standard_normal((B, H, T, D)).astype(np.float32)) for _ in range(3)]
    print(f"attention forward  time B={B} H={H} T=S={T} D=E={D} float32")
    for causal in (False, True):
        call = prepare(*x, causal=causal, scale=None, bias=None, mask=None, tile_t=64, tile_s=64)
        o = cupy.empty((B, H, T, D), np.float32)
        lse = cupy.empty((B, H, T), np.float32)
        nbytes = 4 * (3 * B * H * T * D + B * H * T * D + B * H * T)
        sdpa = _timing.torch_sdpa_ms(B, H, T, D, causal, "float32")
        for version in VERSIONS:
            ms = _timing.time_ms(functools.partial(_run, version, call, o, lse), repeats=5)
            ratio = "" if sdpa is None else f"  {sdpa / ms:.2f}x SDPA's throughput"
            print(f"  {version} causal={causal!s:5s} "
                  + _timing.rates(ms, nbytes, flops(call.shape, causal), np.float32) + ratio)
        print(f"  PyTorch SDPA float32 causal={causal!s:5s} "
              + ("not installed with CUDA" if sdpa is None else f"{sdpa:.3f} ms"))
    # the positional build: RoPE tables (4·2·T·D/2 bytes) and the ALiBi penalties on top
    call = prepare(*x, causal=True, scale=None, bias=None, mask=None, tile_t=64, tile_s=64,
                   **example_positions(H))
    nbytes += 4 * (T * D + T + H)
    for version in VERSIONS:
        ms = _timing.time_ms(functools.partial(_run, version, call, o, lse), repeats=5)
        print(f"  rope+alibi {version} causal=True  "
              + _timing.rates(ms, nbytes, flops(call.shape, True), np.float32))


if __name__ == "__main__":
    sys.exit(main())
