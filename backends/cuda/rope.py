"""Launcher of ``rope.cu``: RoPE of queries and keys on CUDA, float32.

Mirrors :func:`spec.position.rope.rope_qk` (same signature plus ``inplace=``, same
:class:`~spec.position.rope.RotatedQK`): q_t rotated at position t + S - T, k_s at s, with
the spec's cos/sin tables (float64 angles rounded once to float32, computed here on the
host and passed to the kernel) and the spec's arithmetic, so the result is the spec's bit
for bit. ``inplace=True`` writes the rotation into the arrays given (CuPy arrays: no copy;
NumPy arrays: copied to the device and written back).

The tables and the kernel are shared: the attention forward (``backends.cuda.attention``)
passes :func:`kernel_params` to its fused rotation, and the backward
(``backends.cuda.attention_backward``) rotates q, k with :func:`launch` before its kernels
and carries dq, dk back with the tables of the negated positions.

    >>> import os; os.environ["ATTNSPEC_CUDA"] = "emulator"   # no GPU here
    >>> from backends.cuda.rope import rope_qk
    >>> q_BHTD, k_BGSD = rope_qk(q_BHTD, k_BGSD, rope=RoPE(layout="interleaved"))
"""

from __future__ import annotations

import functools
import sys
from typing import NamedTuple

import numpy as np

from backends.cuda import _launch, _timing
from backends.cuda._launch import KernelConfig
from backends.rope_cache import rope_tables
from spec.position.rope import RoPE, RotatedQK, check_rope_input
from spec.position.rope import rope_qk as spec_rope_qk
from spec.tolerance import compare, oracle_dtype

SPEC = "spec.position.rope:rope_qk"
SOURCE = "rope.cu"

THREADS = 256
VERSIONS = ("v1",)

LAYOUTS = {"rotate_half": 1, "interleaved": 2}
"""RoPE layouts as the kernels take them (ROPE_ROTATE_HALF, ROPE_INTERLEAVED of
attention_common.cuh; 0 is no rotation)."""

KERNELS: dict[str, KernelConfig] = {
    "v1": KernelConfig(SOURCE, "rope_qk_v1", (("THREADS", str(THREADS)),), threads=THREADS),
}
"""Every configuration this launcher uses; the compile gate compiles exactly these."""


class Tables(NamedTuple):
    """cos/sin tables on the device for the positions lo .. hi: row r holds position lo + r."""

    cos_TP: object
    sin_TP: object
    row0: np.int32
    """The row of position 0 (-lo), as the kernels take it."""


def query_key_span(T: int, S: int) -> tuple[int, int]:
    """(lo, hi): the positions T queries (t + S - T) and S keys (s) take, bottom-right."""
    return min(0, S - T), S - 1


def device_tables(arrays: _launch.Arrays, rope: RoPE, D: int, lo: int, hi: int, *,
                  inverse: bool = False) -> Tables:
    """The spec's tables (:func:`spec.position.rope.tables`, float32) of positions lo .. hi
    on the device; ``inverse``: of the negated positions, R_pᵀ = R_{-p}, as
    :func:`spec.attention.positional.unrotate` takes them; host copies kept between calls
    by :mod:`backends.rope_cache`)."""
    cos_TP, sin_TP = rope_tables(lo, hi + 1, D, rope.base, np.float32, negate=inverse)
    return Tables(arrays.to_device(cos_TP), arrays.to_device(sin_TP), np.int32(-lo))


def kernel_params(arrays: _launch.Arrays, rope: RoPE | None, D: int, lo: int, hi: int) -> tuple:
    """The ROPE_PARAMS arguments of the attention kernels (attention_common.cuh): tables of
    positions lo .. hi and the layout, or one-element placeholders and 0 without RoPE."""
    if rope is None:
        none = arrays.to_device(np.zeros(1, np.float32))
        return none, none, np.int32(0), np.int32(0)
    t = device_tables(arrays, rope, D, lo, hi)
    return t.cos_TP, t.sin_TP, t.row0, np.int32(LAYOUTS[rope.layout])


def launch(q_in, k_in, q_out, k_out, t: Tables, layout: str, T: int, S: int) -> None:
    """Rotate q_in (B, H, T, D) and k_in (B, G, S, D) into q_out and k_out (which may be
    q_in and k_in): query row t at position t + S - T, key row s at s, through ``t``."""
    B, H, _, D = q_in.shape
    G = k_in.shape[1]
    q_rows, k_rows = B * H * T, B * G * S
    pairs = (q_rows + k_rows) * (D // 2)
    if pairs == 0:
        return
    _launch.get_kernel(KERNELS["v1"])(
        (-(-pairs // THREADS),), (THREADS,),
        (q_in, k_in, q_out, k_out, t.cos_TP, t.sin_TP, np.int64(q_rows), np.int64(k_rows),
         np.int32(T), np.int32(S), np.int32(D), t.row0, np.int32(LAYOUTS[layout])))


def _proxy(x):
    return _launch.shape_proxy(x) if _launch.is_cupy_array(x) else x


def _check(q_BHTD, k_BGSD, rope, inplace) -> None:
    """The spec's checks of rope_qk, in its order and with its messages, then this kernel's."""
    if not isinstance(rope, RoPE):
        raise TypeError(f"rope: expected a spec.position.rope.RoPE, got {type(rope).__name__}")
    check_rope_input("q_BHTD", _proxy(q_BHTD))
    check_rope_input("k_BGSD", _proxy(k_BGSD))
    if q_BHTD.dtype != k_BGSD.dtype:
        raise TypeError(f"q_BHTD, k_BGSD: expected one dtype, got {q_BHTD.dtype}, {k_BGSD.dtype}")
    if q_BHTD.shape[3] != k_BGSD.shape[3] or q_BHTD.shape[0] != k_BGSD.shape[0]:
        raise ValueError(f"q_BHTD, k_BGSD: expected the same B and D, got {q_BHTD.shape}, "
                         f"{k_BGSD.shape}")
    if np.dtype(q_BHTD.dtype) != np.float32:
        raise TypeError(f"q_BHTD, k_BGSD: the CUDA rope kernel takes float32, got "
                        f"{np.dtype(q_BHTD.dtype)}")
    if not isinstance(inplace, (bool, np.bool_)):
        raise TypeError(f"inplace: expected a bool, got {type(inplace).__name__}")
    if inplace:
        for name, x in (("q_BHTD", q_BHTD), ("k_BGSD", k_BGSD)):
            if isinstance(x, np.ndarray) and not x.flags.writeable:
                raise ValueError(f"{name}: inplace=True needs a writable array")
        if _may_share_memory(q_BHTD, k_BGSD):
            raise ValueError("q_BHTD, k_BGSD: inplace=True needs q and k in separate memory")


def _may_share_memory(a, b) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.may_share_memory(a, b)
    if _launch.is_cupy_array(a) and _launch.is_cupy_array(b):
        import cupy

        return cupy.may_share_memory(a, b)
    return False  # one on the host, one on the device


DEFAULT_ROPE = RoPE()
"""The spec's default: base 10000, rotate_half."""


def rope_qk(q_BHTD, k_BGSD, *, rope: RoPE = DEFAULT_ROPE, inplace: bool = False) -> RotatedQK:
    """q and k rotated at their positions on CUDA, as :func:`spec.position.rope.rope_qk`.

    float32 NumPy (copied to the device) or CuPy (used in place) arrays; results come back
    as the kind of array that went in, equal to the spec's bit for bit. ``inplace``: rotate
    the given arrays themselves and return them (q and k must not share memory).
    """
    _check(q_BHTD, k_BGSD, rope, inplace)
    arrays = _launch.Arrays(_launch.engine(), q_BHTD, k_BGSD)
    q, k = arrays.to_device(q_BHTD), arrays.to_device(k_BGSD)
    T, S, D = q_BHTD.shape[2], k_BGSD.shape[2], q_BHTD.shape[3]
    t = device_tables(arrays, rope, D, *query_key_span(T, S))
    if not inplace:
        q_out, k_out = arrays.empty(q.shape, np.float32), arrays.empty(k.shape, np.float32)
        launch(q, k, q_out, k_out, t, rope.layout, T, S)
        return RotatedQK(arrays.result(q_out), arrays.result(k_out))
    launch(q, k, q, k, t, rope.layout, T, S)
    for given, rotated in ((q_BHTD, q), (k_BGSD, k)):
        if rotated is not given:  # rotated in a copy (on the device, or contiguous): write back
            given[...] = arrays.result(rotated)
    return RotatedQK(q_BHTD, k_BGSD)


def _validate(B: int, H: int, G: int, T: int, S: int, D: int, rng) -> bool:
    """Both layouts, T < S and T > S, out of place and in place: equal to the float32 spec,
    and within spec.tolerance of the float64 spec. True if any check fails."""
    failed = False
    for T_, S_ in ((T, S), (S, T)):
        q = rng.standard_normal((B, H, T_, D)).astype(np.float32)
        k = rng.standard_normal((B, G, S_, D)).astype(np.float32)
        for layout in LAYOUTS:
            config = RoPE(base=10000.0, layout=layout)
            want = spec_rope_qk(q, k, rope=config)
            oracle = spec_rope_qk(q.astype(oracle_dtype(np.float32)),
                                  k.astype(oracle_dtype(np.float32)), rope=config)
            got = rope_qk(q, k, rope=config)
            q_in, k_in = q.copy(), k.copy()
            rope_qk(q_in, k_in, rope=config, inplace=True)
            exact = all(np.array_equal(g, w) for g, w in zip((*got, q_in, k_in), (*want, *want)))
            reports = [compare(g, o, w) for g, o, w in zip(got, oracle, want)]
            ok = exact and all(r.ok for r in reports)
            failed |= not ok
            print(f"  {layout:11s} T={T_:3d} S={S_:3d} "
                  + "  ".join(f"{n} err {r.err:.1e} (bound {r.bound:.1e})"
                              for n, r in zip(("q", "k"), reports))
                  + f"  {'equal to' if exact else 'DIFFERS from'} the float32 spec (in place too)"
                  + ("" if ok else "  FAILED"))
    return failed


def main(argv: list[str] | None = None) -> int:
    """Validate against the spec (bit for bit in float32, and the float64 spec's tolerance);
    time on a GPU.

    Validation: B=1, H=4, G=2, T=77, S=131 and T=131, S=77 (negative query positions),
    D=min(--D, 128), both layouts, out of place and in place. Timing (CuPy engine, not
    --sanitize): B, H = G, T = S, D from the arguments, rotate_half, out of place and in
    place. Bytes: q and k read and written once and the tables read once,
    8·(B·H·T·D + B·G·S·D) + 8·max(T, S)·D/2. FLOPs: 3 per element of q and k (two
    products, one sum). ``--sanitize`` validates only, at the small size.
    """
    args = _timing.attention_arguments(main.__doc__, argv)
    engine = _launch.engine()
    timed = engine == "cupy" and not args.sanitize
    rng = np.random.default_rng(0)
    B, H, G, T, S, D = 1, 4, 2, 77, 131, min(args.D, 128)
    print(f"rope_qk  validate B={B} H={H} G={G} D={D}  engine={engine}  {_timing.device_name()}")
    failed = _validate(B, H, G, T, S, D, rng)
    if timed:
        _time(args, rng)
    elif not args.sanitize:
        print("  (timing skipped: the emulator's speed says nothing about a GPU's)")
    return 1 if failed else 0


def _time(args, rng) -> None:
    """Time the kernel at (B, H = G, T = S, D), out of place and in place."""
    import cupy

    B, H, T, D = args.B, args.H, args.T, args.D
    q, k = (cupy.asarray(rng.standard_normal((B, H, T, D)).astype(np.float32)) for _ in range(2))
    q_out, k_out = (cupy.empty((B, H, T, D), np.float32) for _ in range(2))
    arrays = _launch.Arrays(_launch.engine(), q, k)
    t = device_tables(arrays, RoPE(), D, *query_key_span(T, T))
    elements = 2 * B * H * T * D
    nbytes = 4 * (2 * elements + 2 * T * (D // 2))
    print(f"rope_qk  time B={B} H=G={H} T=S={T} D={D} float32 rotate_half")
    for name, outputs in (("out of place", (q_out, k_out)), ("in place", (q, k))):
        ms = _timing.time_ms(functools.partial(launch, q, k, *outputs, t, "rotate_half", T, T))
        print(f"  v1 {name:12s} " + _timing.rates(ms, nbytes, 3 * elements, np.float32))


if __name__ == "__main__":
    sys.exit(main())
