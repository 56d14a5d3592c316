"""Launcher of packed variable-length attention on CUDA, float32: ``attention.cu``'s kernels.

Mirrors :func:`spec.attention.varlen.flash_varlen_forward` (same signature plus
``version=``, same :class:`~spec.attention.varlen.VarlenOut`): sequences packed along one
axis (q_THD, k_SGD, v_SGE) and described by cu_seqlens_q, cu_seqlens_k; each sequence
attends to its own keys only, with causal alignment and positions (RoPE, ALiBi) of its
own, and a sequence without keys gives its rows o = 0, lse = -inf. GQA/MQA as the padded
forward.

There is no kernel of its own: every version of ``attention.cu`` takes a padded batch
or packed sequences (its ``packed`` argument), so the versions, builds and configurations
are :mod:`backends.cuda.attention`'s. The grid is (query-row blocks of the longest
sequence, H, N); a block reads its sequence's offsets from cu_seqlens, leaves at once
when the sequence has fewer rows, and reads no row of another sequence. The work is
what the tokens cost: blocks past a short sequence's end do nothing.

    >>> import os; os.environ["ATTNSPEC_CUDA"] = "emulator"   # no GPU here
    >>> from backends.cuda.attention_varlen import flash_varlen_forward
    >>> o_THE, lse_HT = flash_varlen_forward(q_THD, k_SGD, v_SGE, cu_q, cu_k, causal=True)
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from backends.cuda import _launch, _timing
from backends.cuda import attention as forward
from backends.cuda import rope as rotary
from backends.cuda.attention import (
    Call,
    alibi_params,
    check_positions_on,
    head_dim_bucket,
)
from spec.attention.checks import check_scale, check_tile
from spec.attention.naive import AttentionOut
from spec.attention.positional import materialise
from spec.attention.tiled import flash_forward as spec_flash_forward
from spec.attention.varlen import VarlenOut, VarlenShape, check_varlen_inputs, pack
from spec.attention.varlen import flash_varlen_forward as spec_flash_varlen_forward
from spec.position.rope import RoPE
from spec.tolerance import oracle_dtype

SPEC = "spec.attention.varlen:flash_varlen_forward"
SOURCE = forward.SOURCE
VERSIONS = forward.VERSIONS
KERNELS = forward.KERNELS
"""The configurations it launches: the forward's (the compile gate compiles them once)."""

MAX_SEQUENCES = 65535
"""Sequences go to the grid's z dimension, whose CUDA limit this is."""


def _proxy(x):
    return _launch.shape_proxy(x) if _launch.is_cupy_array(x) else x


def _host(x):
    """cu_seqlens are read on the host (validation, grid size): copied when on the GPU."""
    return x.get() if _launch.is_cupy_array(x) else x


def prepare(q_THD, k_SGD, v_SGE, cu_seqlens_q, cu_seqlens_k, *, causal, scale, tile_t, tile_s,
            rope, alibi_slopes, alibi_form) -> tuple[Call, VarlenShape, int]:
    """Validate as the spec does, then this kernel's limits; move everything to the engine.

    Returns the call (its ``shape`` the packed sizes), the sizes and the longest
    sequence's query count (the grid's extent).
    """
    shape, cu_q, cu_k = check_varlen_inputs(_proxy(q_THD), _proxy(k_SGD), _proxy(v_SGE),
                                            _host(cu_seqlens_q), _host(cu_seqlens_k), causal)
    check_tile("tile_t", tile_t)
    check_tile("tile_s", tile_s)
    scale = check_scale(scale, shape.D)
    pos = check_positions_on(rope, alibi_slopes, alibi_form, H=shape.H, D=shape.D)
    if np.dtype(q_THD.dtype) != np.float32:
        raise TypeError(f"q_THD, k_SGD, v_SGE: the CUDA varlen attention kernel takes float32, "
                        f"got {np.dtype(q_THD.dtype)}")
    head_dim_bucket(shape)
    if shape.N > MAX_SEQUENCES:
        raise ValueError(f"cu_seqlens_q: the CUDA varlen attention kernel takes at most "
                         f"{MAX_SEQUENCES} sequences, got {shape.N}")
    if max(shape.T, shape.S) > np.iinfo(np.int32).max:
        raise ValueError(f"q_THD, k_SGD: the CUDA varlen attention kernel takes int32 offsets, "
                         f"got T={shape.T}, S={shape.S} packed rows")
    lengths_q, lengths_k = np.diff(cu_q), np.diff(cu_k)
    arrays = _launch.Arrays(_launch.engine(), q_THD, k_SGD, v_SGE)
    # no bias, no mask: one-element placeholders (has_* = 0)
    bias = arrays.to_device(np.zeros((1, 1, 1, 1), np.float32))
    mask = arrays.to_device(np.ones((1, 1, 1, 1), bool))
    zero = np.int64(0)
    rule = (bias, zero, zero, zero, zero, mask, zero, zero, zero, zero, np.int32(0),
            np.int32(0), np.int32(bool(causal)), np.float32(scale),
            *alibi_params(arrays, pos, int(max(lengths_q.max(), lengths_k.max()))))
    # RoPE: sequence b's queries sit at S_b - T_b .. S_b - 1 (negative when it has no keys),
    # its keys at 0 .. S_b - 1; one table covers every sequence
    lo = min(0, int((lengths_k - lengths_q).min()))
    hi = max(0, int(lengths_k.max()) - 1)
    layout = (arrays.to_device(cu_q.astype(np.int32)), arrays.to_device(cu_k.astype(np.int32)),
              np.int32(1))
    call = Call(shape, arrays, arrays.to_device(q_THD), arrays.to_device(k_SGD),
                arrays.to_device(v_SGE), rule, pos,
                rotary.kernel_params(arrays, pos.rope, shape.D, lo, hi), layout)
    return call, shape, int(lengths_q.max())


def flash_varlen_forward(q_THD, k_SGD, v_SGE, cu_seqlens_q, cu_seqlens_k, *, causal: bool = False,
                         scale: float | None = None, tile_t: int = 64, tile_s: int = 64,
                         rope: RoPE | None = None, alibi_slopes=None, alibi_form: str = "linear",
                         version: str = "v3") -> VarlenOut:
    """Packed attention on CUDA, as :func:`spec.attention.varlen.flash_varlen_forward`.

    float32 NumPy (copied) or CuPy (used in place) arrays; cu_seqlens int arrays (NumPy
    or CuPy; read on the host for the grid). D and E up to 128, at most 65535 sequences.
    ``version``: ``"v1"``, ``"v2"`` or ``"v3"`` (see backends.cuda.attention). Returns
    o_THE and lse_HT as the kind of array that went in.
    """
    if version not in VERSIONS:
        raise ValueError(f"version: expected one of {VERSIONS}, got {version!r}")
    call, shape, longest = prepare(q_THD, k_SGD, v_SGE, cu_seqlens_q, cu_seqlens_k, causal=causal,
                                   scale=scale, tile_t=tile_t, tile_s=tile_s, rope=rope,
                                   alibi_slopes=alibi_slopes, alibi_form=alibi_form)
    o = call.arrays.empty((shape.T, shape.H, shape.E), np.float32)
    lse = call.arrays.empty((shape.H, shape.T), np.float32)
    _run(version, call, longest, o, lse)
    return VarlenOut(call.arrays.result(o), call.arrays.result(lse))


def _run(version: str, call: Call, longest: int, o, lse) -> None:
    """Launch one version on a prepared packed call (what main() times)."""
    N, H, _, T, S, _, _ = call.shape
    if longest == 0:
        return  # no sequence has a query: nothing to write
    grid = (-(-longest // forward.rows_per_block(version)), H, N)
    forward.launch(version, call, o, lse, grid, T, S)


def flops(lengths_q, lengths_k, H: int, D: int, E: int, causal: bool) -> int:
    """2·H·(visible pairs)·(D + E), summed over the sequences (as forward.flops)."""
    total = 0
    for T, S in zip(lengths_q, lengths_k):
        shape = forward.AttentionShape(1, H, H, int(T), int(S), D, E)
        total += forward.flops(shape, causal) if T and S else 0
    return total


def _lengths(rng, n: int, mean: int) -> np.ndarray:
    """n sequence lengths spread uniformly over 1 .. 2·mean, as a packed batch has them."""
    return rng.integers(1, 2 * mean + 1, size=n)


def _baselines(q, k, v, cu_q, cu_k, causal: bool, positions: dict, rng) -> list[VarlenOut]:
    """The float32 spec in 1 + REORDERINGS rounding orders: per sequence, the padded spec
    forward on the sequence with its positions materialised and its axes T, S, D, E
    permuted (backends.cuda.attention.permuted_runs), packed again."""
    H, D = q.shape[1], q.shape[2]
    pos = check_positions_on(positions.get("rope"), positions.get("alibi_slopes"), "linear",
                             H=H, D=D)
    runs = [VarlenOut(np.zeros((q.shape[0], H, v.shape[2]), np.float32),
                      np.full((H, q.shape[0]), -np.inf, np.float32))
            for _ in range(1 + forward.REORDERINGS)]

    def spec_run(q, k, v, do, bias, mask, causal):
        return spec_flash_forward(q, k, v, causal=causal, bias=bias, mask=mask)

    for t0, t1, s0, s1 in zip(cu_q[:-1], cu_q[1:], cu_k[:-1], cu_k[1:]):
        if t0 == t1 or s0 == s1:
            continue  # o = 0, lse = -inf
        # sequence b as a batch of one: (T_b, H, D) -> (1, H, T_b, D)
        q_b, k_b, v_b = (x[a:z].transpose(1, 0, 2)[None] for x, a, z in
                         ((q, t0, t1), (k, s0, s1), (v, s0, s1)))
        qm, km, bias = materialise(q_b, k_b, None, pos)
        do = np.zeros((1, H, t1 - t0, v.shape[2]), np.float32)
        outs = forward.permuted_runs(spec_run, qm, km, v_b, do, bias=bias, mask=None,
                                     causal=causal, names=AttentionOut._fields, rng=rng,
                                     count=forward.REORDERINGS)
        for run, (o, lse) in zip(runs, outs):
            run.o_THE[t0:t1] = o[0].transpose(1, 0, 2)
            run.lse_HT[:, t0:t1] = lse[0]
    return runs


def main(argv: list[str] | None = None) -> int:
    """Validate every version against the float64 spec; time each on a GPU.

    Validation: 5 sequences with lengths 0 .. 2·37 (one without queries, one without keys,
    one decoding step), H=4, G=2, D=min(--D, 128), causal and not, without positional
    options and with RoPE + ALiBi, judged by spec.tolerance against the float32 spec in
    1 + REORDERINGS rounding orders per sequence (:func:`_baselines`); the oracle is the
    spec in float64. Timing (CuPy engine, not --sanitize): --B sequences with lengths
    around --T/2 (packed T = S = their sum), --H heads, D = E = --D, causal and not,
    against the padded forward at the longest length (the cost of padding). Bytes: q, k,
    v read once and o written once, 4·(T·H·D + 2·S·H·D + T·H·E) (+ lse). FLOPs:
    2·H·(visible pairs)·(D + E) over the sequences.
    """
    args = _timing.attention_arguments(main.__doc__, argv)
    engine = _launch.engine()
    timed = engine == "cupy" and not args.sanitize
    rng = np.random.default_rng(0)
    H, G, D = 4, 2, min(args.D, forward.HEAD_DIMS[-1])
    lengths_q = np.array([37, 0, 1, 74, 20])
    lengths_k = np.array([37, 12, 50, 60, 0])
    q, cu_q = pack([rng.standard_normal((n, H, D)).astype(np.float32) for n in lengths_q])
    k, cu_k = pack([rng.standard_normal((n, G, D)).astype(np.float32) for n in lengths_k])
    v, _ = pack([rng.standard_normal((n, G, D)).astype(np.float32) for n in lengths_k])
    print(f"varlen attention forward  validate lengths_q={lengths_q.tolist()} "
          f"lengths_k={lengths_k.tolist()} H={H} G={G} D={D}  engine={engine}  "
          f"{_timing.device_name()}")
    failed = False
    wide = oracle_dtype(np.float32)
    for label, positions in (("", {}), ("rope+alibi ", forward.example_positions(H))):
        for causal in (False, True):
            opts = {"causal": causal, **positions}
            oracle = spec_flash_varlen_forward(*(x.astype(wide) for x in (q, k, v)), cu_q, cu_k,
                                               **opts)
            bases = _baselines(q, k, v, cu_q, cu_k, causal, positions, rng)
            for version in VERSIONS:
                out = flash_varlen_forward(q, k, v, cu_q, cu_k, version=version, **opts)
                failed |= not forward.report_version(f"{label}{version} causal={causal!s:5s}",
                                                     out, oracle, bases)
    if timed:
        _time(args, rng)
    elif not args.sanitize:
        print("  (timing skipped: the emulator's speed says nothing about a GPU's)")
    return 1 if failed else 0


def _time(args, rng) -> None:
    """Time every version on a packed batch, and the padded forward at the longest length."""
    import cupy

    N, H, D = args.B, args.H, args.D
    lengths = _lengths(rng, N, max(args.T // 2, 1))
    T = int(lengths.sum())
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    q, k, v = (cupy.asarray(rng.standard_normal((T, H, D)).astype(np.float32)) for _ in range(3))
    o = cupy.empty((T, H, D), np.float32)
    lse = cupy.empty((H, T), np.float32)
    nbytes = 4 * (4 * T * H * D + T * H)
    longest = int(lengths.max())
    print(f"varlen attention forward  time N={N} sequences, lengths {lengths.min()} .. {longest} "
          f"(T=S={T} packed) H={H} D=E={D} float32")
    padded = [cupy.asarray(rng.standard_normal((N, H, longest, D)).astype(np.float32))
              for _ in range(3)]
    o_pad = cupy.empty((N, H, longest, D), np.float32)
    lse_pad = cupy.empty((N, H, longest), np.float32)
    for causal in (False, True):
        call, _, _ = prepare(q, k, v, cu, cu, causal=causal, scale=None, tile_t=64, tile_s=64,
                             rope=None, alibi_slopes=None, alibi_form="linear")
        work = flops(lengths, lengths, H, D, D, causal)
        pad_call = forward.prepare(*padded, causal=causal, scale=None, bias=None, mask=None,
                                   tile_t=64, tile_s=64)
        for version in VERSIONS:
            ms = _timing.time_ms(functools.partial(_run, version, call, longest, o, lse), repeats=5)
            pad_ms = _timing.time_ms(functools.partial(forward._run, version, pad_call, o_pad,
                                                       lse_pad), repeats=5)
            print(f"  {version} causal={causal!s:5s} " + _timing.rates(ms, nbytes, work, np.float32)
                  + f"  padded to {longest}: {pad_ms:.3f} ms ({pad_ms / ms:.2f}x the packed time)")


if __name__ == "__main__":
    sys.exit(main())
