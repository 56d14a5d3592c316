"""Launcher of ``softmax.cu``: the row softmax and log-sum-exp on CUDA.

Mirrors :func:`spec.attention.softmax.softmax` (same signature plus ``version=``).
It is the worked example of the CUDA gates: compiled by NVRTC in the compile gate,
run on the CPU emulator by the conformance tests in CI, timed on a GPU by
:func:`main`. Which engine runs it is ``backends.cuda._launch.engine()``.

    >>> import os; os.environ["ATTNSPEC_CUDA"] = "emulator"   # no GPU here
    >>> from backends.cuda.softmax import softmax
    >>> p_TS, lse_T = softmax(x_TS, version="v2")
"""

from __future__ import annotations

import argparse
import functools
import sys

import numpy as np

from backends.cuda import _launch, _timing
from backends.cuda._launch import KernelConfig
from spec.attention.softmax import SoftmaxOut, check_softmax_input, check_softmax_layout
from spec.attention.softmax import softmax as spec_softmax
from spec.tolerance import compare, oracle_dtype

SPEC = "spec.attention.softmax:softmax"
SOURCE = "softmax.cu"

# storage dtype -> (SCALAR, ACC): float16 is stored as __half and computed in float
_TYPES = {
    np.dtype(np.float16): ("__half", "float"),
    np.dtype(np.float32): ("float", "float"),
    np.dtype(np.float64): ("double", "double"),
}
DTYPES = tuple(_TYPES)

WARPS_V1 = 4  # rows per block of v1
THREADS_V2 = 128  # threads per row of v2


def _row_stats_bytes(acc: str) -> int:
    return 2 * (8 if acc == "double" else 4)


def _config(version: str, dtype: np.dtype) -> KernelConfig:
    # Both versions live in one module per dtype, so every config defines every macro.
    scalar, acc = _TYPES[dtype]
    defines = (("SCALAR", scalar), ("ACC", acc),
               ("WARPS", str(WARPS_V1)), ("THREADS", str(THREADS_V2)))
    if version == "v1":
        return KernelConfig(SOURCE, "softmax_v1", defines, threads=32 * WARPS_V1)
    return KernelConfig(SOURCE, "softmax_v2", defines, threads=THREADS_V2,
                        dynamic_smem=THREADS_V2 // 32 * _row_stats_bytes(acc))


VERSIONS = ("v1", "v2")
KERNELS: dict[tuple[str, np.dtype], KernelConfig] = {
    (version, dtype): _config(version, dtype) for version in VERSIONS for dtype in DTYPES
}
"""Every configuration this launcher uses; the compile gate compiles exactly these."""


def _check(x_TS) -> None:
    """The spec's checks, also for arrays on the GPU (layout on a proxy, +inf on device)."""
    if not _launch.is_cupy_array(x_TS):
        check_softmax_input(x_TS)
        return
    check_softmax_layout(_launch.shape_proxy(x_TS))
    import cupy

    if bool(cupy.isposinf(x_TS).any()):
        check_softmax_input(np.array([[np.inf]], dtype=x_TS.dtype))  # raises the spec's error


def softmax(x_TS, *, version: str = "v2") -> SoftmaxOut:
    """Row softmax and log-sum-exp, as :func:`spec.attention.softmax.softmax`.

    ``x_TS``: NumPy (copied to the device) or CuPy (used in place) array of float16,
    float32 or float64; results come back as the same kind of array. ``version``:
    ``"v1"`` (a warp per row) or ``"v2"`` (a block per row), see softmax.cu.
    """
    if version not in VERSIONS:
        raise ValueError(f"version: expected one of {VERSIONS}, got {version!r}")
    _check(x_TS)
    dtype = np.dtype(x_TS.dtype)
    if dtype not in _TYPES:
        raise TypeError(f"x_TS: the CUDA softmax takes float16, float32 or float64, got {dtype}")
    arrays = _launch.Arrays(_launch.engine(), x_TS)
    T, S = x_TS.shape
    x = arrays.to_device(x_TS)
    p = arrays.empty((T, S), dtype)
    lse = arrays.empty((T,), dtype)
    _run(version, x, p, lse)
    return SoftmaxOut(arrays.result(p), arrays.result(lse))


def _run(version: str, x, p, lse) -> None:
    """Launch one version on checked device arrays (what main() times)."""
    config = KERNELS[(version, np.dtype(x.dtype))]
    T, S = x.shape
    if version == "v1":
        grid, block = (-(-T // WARPS_V1),), (32, WARPS_V1)
    else:
        grid, block = (T,), (THREADS_V2,)
    _launch.get_kernel(config)(grid, block, (x, p, lse, np.int32(T), np.int32(S)),
                               shared_mem=config.dynamic_smem)


def main(argv: list[str] | None = None) -> int:
    """Validate every version and dtype against the float64 spec; time them on a GPU.

    Traffic per call: x is read twice (statistics, then p) and p written once, so
    bytes = 3·T·S·itemsize (+ T·itemsize for lse). FLOPs, counting exp as one:
    about 5 per element (max test, exp and add for l; exp, multiply for p).
    ``--sanitize`` runs the validation alone, at a small size (for compute-sanitizer,
    which slows every access down and whose verdict does not depend on the size).
    """
    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--T", type=int, default=4096)
    parser.add_argument("--S", type=int, default=4096)
    parser.add_argument("--sanitize", action="store_true",
                        help="validate at a small size (T=64, S=300) and skip timing")
    args = parser.parse_args(argv)
    engine = _launch.engine()
    timed = engine == "cupy" and not args.sanitize
    # S=300: rows longer than two strides of a v2 block (128 threads), not a multiple of 32
    T, S = (args.T, args.S) if timed else (min(args.T, 64), min(args.S, 300))
    rng = np.random.default_rng(0)
    x64 = rng.standard_normal((T, S)) * 4
    x64[:, ::7] = -np.inf  # masked scores on every row
    print(f"softmax  T={T} S={S}  engine={engine}  {_timing.device_name()}")
    failed = False
    for version, dtype in KERNELS:
        x = x64.astype(dtype)
        oracle = spec_softmax(x.astype(oracle_dtype(dtype)))
        out = softmax(x, version=version)
        reports = [compare(o, r, b) for o, r, b in zip(out, oracle, spec_softmax(x))]
        ok = all(r.ok for r in reports)
        failed |= not ok
        line = f"  {version} {dtype.name:8s} " + "  ".join(
            f"{name} err {r.err:.1e} (bound {r.bound:.1e})" for name, r in zip(("p", "lse"), reports)
        )
        if timed:
            import cupy

            # the kernel alone, on device buffers: the input check would add a pass over x
            x_dev, p_dev = cupy.asarray(x), cupy.empty((T, S), dtype)
            lse_dev = cupy.empty((T,), dtype)
            ms = _timing.time_ms(functools.partial(_run, version, x_dev, p_dev, lse_dev))
            nbytes = (3 * T * S + T) * dtype.itemsize
            flops = 5 * T * S
            line += "  " + _timing.rates(ms, nbytes, flops, dtype)
        print(line + ("" if ok else "  FAILED"))
    if engine != "cupy" and not args.sanitize:
        print("  (timing skipped: the emulator's speed says nothing about a GPU's)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
