"""Launcher of ``readout.cu``: the in-context regression read-out (H full-width heads, one
query) and the gradient of its mean squared error, on CUDA.

Mirrors :func:`spec.attention.readout.readout_forward` and
:func:`spec.attention.readout.readout_mse` (same signatures, same NamedTuples, the spec's
checks and messages), as ``backends/cpu/readout.py`` does: one block per prompt runs its
heads forward, sums their predictions and, for the MSE, runs the prompt's backward with
∂ŷ_b = 2(ŷ_b − y_b)/B, writing two rows per head (this prompt's ∂ov_h, and its ∂KQ_h
before the outer product with z_q); a second kernel sums them over the batch in a fixed
order, one thread per output, and the loss with them. No atomics: the result does not
depend on the schedule, and two calls give the same bits.

Arithmetic is float64 whatever the storage dtype (``REAL=double`` in every configuration,
as the Numba backend): float32 inputs give float32 results rounded once from float64
values, closer to the float64 spec than the float32 spec is, which spec.tolerance accepts.
float32 and float64 inputs; others raise TypeError naming the argument. A prompt's
tokens and per-head weights and values live in the block's shared memory,
:func:`smem_bytes` of it, at most :data:`MAX_SMEM` (S·(D + 2H) of about 12 000 values in
float64: the paper's S = 40 to 100 with D = 6, H = 8 take a few KiB); a larger prompt is
a ValueError.

NumPy inputs are copied to the device and the results copied back; CuPy inputs are used
in place and the results stay on the device (the loss is a Python float either way).

    >>> import os; os.environ["ATTNSPEC_CUDA"] = "emulator"   # no GPU here
    >>> from backends.cuda.readout import readout_mse
    >>> loss, dkq_HDD, dov_HD, yhat_B = readout_mse(z_BSD, zq_BD, y_B, kq_HDD, ov_HD)
"""

from __future__ import annotations

import argparse
import functools
import sys

import numpy as np

from backends.cuda import _launch, _timing
from backends.cuda._launch import KernelConfig
from spec.attention.readout import (
    Readout,
    ReadoutMSE,
    check_readout_inputs,
    check_targets,
    rounding_baselines,
)
from spec.attention.readout import readout_forward as spec_readout_forward
from spec.attention.readout import readout_mse as spec_readout_mse
from spec.tolerance import compare, oracle_dtype

SPEC = ("spec.attention.readout:readout_forward", "spec.attention.readout:readout_mse")
"""The spec functions this family mirrors."""
SOURCE = "readout.cu"

THREADS = 128  # threads per block (one block per prompt; readout_reduce_v1: per 128 outputs)
WARPS = THREADS // 32
MAX_SMEM = 96 * 1024
"""Dynamic shared memory a prompt may take: fits every sm_80+ GPU's per-block opt-in
(99 KiB on the consumer parts, 163 KiB on A100, 227 KiB on H100/H200)."""

# storage dtype -> (SCALAR, REAL): computed in double whatever the storage
_TYPES = {
    np.dtype(np.float32): ("float", "double"),
    np.dtype(np.float64): ("double", "double"),
}
DTYPES = tuple(_TYPES)
_NUMPY_REAL = {"float": np.float32, "double": np.float64}
_SIZEOF = {"float": 4, "double": 8}

VERSIONS = ("v1",)
KERNEL_NAMES = ("readout_forward_v1", "readout_v1", "readout_reduce_v1")


def _config(kernel: str, dtype: np.dtype) -> KernelConfig:
    # One module per dtype holds the three kernels: every config defines every macro.
    scalar, real = _TYPES[dtype]
    defines = (("SCALAR", scalar), ("REAL", real), ("THREADS", str(THREADS)))
    smem = 0 if kernel == "readout_reduce_v1" else MAX_SMEM
    return KernelConfig(SOURCE, kernel, defines, threads=THREADS, dynamic_smem=smem)


KERNELS: dict[tuple[str, np.dtype], KernelConfig] = {
    (kernel, dtype): _config(kernel, dtype) for kernel in KERNEL_NAMES for dtype in DTYPES
}
"""Every configuration this launcher uses; the compile gate compiles exactly these."""


def smem_bytes(H: int, S: int, D: int, dtype) -> int:
    """Dynamic shared memory of one block (readout.cu's layout): REAL a_HS, v_HS, u_HD,
    ov_HD, out_H, 2·WARPS reduction slots and 2·THREADS partial sums, then the SCALAR
    tokens z_SD."""
    scalar, real = _TYPES[np.dtype(dtype)]
    return (_SIZEOF[real] * (2 * H * S + 2 * H * D + H + 2 * WARPS + 2 * THREADS)
            + _SIZEOF[scalar] * S * D)


# ------------------------------------------------------------------ checks


def _proxy(x):
    return _launch.shape_proxy(x) if _launch.is_cupy_array(x) else x


def _check(z_BSD, zq_BD, kq_HDD, ov_HD, activation, scale, norm, y_B=None):
    """The spec's checks, in its order and with its messages (on shape proxies for CuPy
    arrays), then this kernel's: dtype, sizes. Returns (dtype, scale, norm)."""
    scale, norm = check_readout_inputs(_proxy(z_BSD), _proxy(zq_BD), _proxy(kq_HDD),
                                       _proxy(ov_HD), activation=activation, scale=scale,
                                       norm=norm)
    if y_B is not None:
        check_targets(_proxy(y_B), z_BSD.shape[0], z_BSD.dtype)
    dtype = np.dtype(z_BSD.dtype)
    if dtype not in _TYPES:
        raise TypeError(f"z_BSD: the CUDA read-out takes float32 or float64, got {dtype}")
    B, S, D = z_BSD.shape
    H = kq_HDD.shape[0]
    if B > np.iinfo(np.int32).max:
        raise ValueError(f"z_BSD: at most 2^31 - 1 prompts per call (one block each), got {B}")
    need = smem_bytes(H, S, D, dtype)
    if need > MAX_SMEM:
        raise ValueError(
            f"z_BSD, kq_HDD: a prompt of S={S} tokens of width D={D} with H={H} heads needs "
            f"{need} B of shared memory in {dtype}, more than the kernel's {MAX_SMEM} B")
    return dtype, scale, norm


# ------------------------------------------------------------------ launches


def _kernel_args(dtype: np.dtype, softmax: bool, scale: float, norm: float) -> tuple:
    real = _NUMPY_REAL[_TYPES[dtype][1]]
    return np.int32(softmax), real(scale), real(norm)


def run_forward(z, zq, kq, ov, softmax: bool, scale: float, norm: float, yhat, a, v) -> None:
    """Launch readout_forward_v1 on checked, contiguous device arrays (what main() times)."""
    B, S, D = z.shape
    H = kq.shape[0]
    if B == 0:
        return
    dtype = np.dtype(z.dtype)
    _launch.get_kernel(KERNELS[("readout_forward_v1", dtype)])(
        (B,), (THREADS,),
        (z, zq, kq, ov, np.int32(H), np.int32(S), np.int32(D),
         *_kernel_args(dtype, softmax, scale, norm), yhat, a, v),
        shared_mem=smem_bytes(H, S, D, dtype))


def run_mse(z, zq, y, kq, ov, softmax: bool, scale: float, norm: float, yhat, r, gw, gr,
            dkq, dov, loss) -> None:
    """Launch readout_v1 and readout_reduce_v1 on checked, contiguous device arrays
    (B ≥ 1): ŷ, the residuals r (REAL), the rows gw and gr (REAL), then ∂KQ, ∂ov and the
    loss (REAL, one element). What main() times."""
    B, S, D = z.shape
    H = kq.shape[0]
    dtype = np.dtype(z.dtype)
    _launch.get_kernel(KERNELS[("readout_v1", dtype)])(
        (B,), (THREADS,),
        (z, zq, y, kq, ov, np.int32(B), np.int32(H), np.int32(S), np.int32(D),
         *_kernel_args(dtype, softmax, scale, norm), yhat, r, gw, gr),
        shared_mem=smem_bytes(H, S, D, dtype))
    outputs = H * D * D + H * D + 1
    _launch.get_kernel(KERNELS[("readout_reduce_v1", dtype)])(
        (-(-outputs // THREADS),), (THREADS,),
        (gw, gr, zq, r, np.int32(B), np.int32(H), np.int32(D), dkq, dov, loss))


# ------------------------------------------------------------------ public functions


def readout_forward(z_BSD, zq_BD, kq_HDD, ov_HD, *, activation: str = "softmax",
                    scale: float | None = None, norm: float | None = None) -> Readout:
    """:func:`spec.attention.readout.readout_forward` on CUDA: ŷ, the attention weights and
    the values, as arrays of the inputs' dtype and kind (NumPy or CuPy)."""
    dtype, scale, norm = _check(z_BSD, zq_BD, kq_HDD, ov_HD, activation, scale, norm)
    arrays = _launch.Arrays(_launch.engine(), z_BSD, zq_BD, kq_HDD, ov_HD)
    z, zq, kq, ov = (arrays.to_device(x) for x in (z_BSD, zq_BD, kq_HDD, ov_HD))
    B, S, _ = z_BSD.shape
    H = kq_HDD.shape[0]
    yhat = arrays.empty((B,), dtype)
    a, v = arrays.empty((B, H, S), dtype), arrays.empty((B, H, S), dtype)
    run_forward(z, zq, kq, ov, activation == "softmax", scale, norm, yhat, a, v)
    return Readout(arrays.result(yhat), arrays.result(a), arrays.result(v))


def readout_mse(z_BSD, zq_BD, y_B, kq_HDD, ov_HD, *, activation: str = "softmax",
                scale: float | None = None, norm: float | None = None) -> ReadoutMSE:
    """:func:`spec.attention.readout.readout_mse` on CUDA: the batch's mean squared error (a
    Python float), ∂KQ, ∂ov and ŷ (arrays of the inputs' dtype and kind); two launches,
    the batch sums in a fixed order on the device."""
    dtype, scale, norm = _check(z_BSD, zq_BD, kq_HDD, ov_HD, activation, scale, norm, y_B)
    arrays = _launch.Arrays(_launch.engine(), z_BSD, zq_BD, y_B, kq_HDD, ov_HD)
    z, zq, y, kq, ov = (arrays.to_device(x) for x in (z_BSD, zq_BD, y_B, kq_HDD, ov_HD))
    B, _, D = z_BSD.shape
    H = kq_HDD.shape[0]
    real = _NUMPY_REAL[_TYPES[dtype][1]]
    yhat, r = arrays.empty((B,), dtype), arrays.empty((B,), real)
    gw, gr = arrays.empty((B, H, D), real), arrays.empty((B, H, D), real)
    dkq, dov = arrays.empty((H, D, D), dtype), arrays.empty((H, D), dtype)
    loss = arrays.empty((1,), real)
    run_mse(z, zq, y, kq, ov, activation == "softmax", scale, norm, yhat, r, gw, gr, dkq, dov, loss)
    return ReadoutMSE(float(loss[0]), arrays.result(dkq), arrays.result(dov), arrays.result(yhat))


# ------------------------------------------------------------------ validation


def compare_with_spec(got: tuple, args: tuple, options: dict, rng: np.random.Generator,
                      count: int = 16) -> list:
    """spec.tolerance reports of a result of :func:`readout_forward` (y None) or
    :func:`readout_mse` on NumPy ``args`` = (z, zq, y or None, kq, ov): the oracle is the
    spec on oracle_dtype, the baselines the spec on ``count`` permuted copies
    (:func:`spec.attention.readout.rounding_baselines`). The loss is compared in the
    working dtype.

    Why sixteen copies, as the conformance suite (tests/backends/conformance.py): this
    kernel sums per head by warp butterflies and then over heads, the spec's einsum over
    heads and positions at once, and with a handful of entries one order can be lucky.
    Measured on the emulator: with three copies 1 in 1500 drawn problems put a float64
    output just outside the bound (the Numba backend: 9 in 1500), with eight 1 in 3000,
    and CI's derandomized examples hit one of those (B=3, S=3, H=4: ∂KQ 1.90e-14 against
    a bound of 1.54e-14, 2.38e-14 with sixteen copies)."""
    dtype = args[0].dtype
    wide = tuple(None if x is None else x.astype(oracle_dtype(dtype)) for x in args)
    z, zq, y, kq, ov = wide
    if y is None:
        oracle = tuple(spec_readout_forward(z, zq, kq, ov, **options))
        got = tuple(got)
    else:
        loss, *rest = spec_readout_mse(z, zq, y, kq, ov, **options)
        oracle = (np.asarray(loss, oracle_dtype(dtype)), *rest)
        got = (np.asarray(got[0], dtype), *got[1:])
    baselines = rounding_baselines(*args, rng=rng, count=count, **options)
    return [compare(g, o, [b[k] for b in baselines]) for k, (g, o) in enumerate(zip(got, oracle))]


def problem(B: int, S: int, D: int, H: int, dtype, rng: np.random.Generator) -> tuple:
    """(z, zq, y, kq, ov) in ``dtype``: standard normal tokens, queries and targets, weights
    of scale 1/√D (scores of order one)."""
    z = rng.standard_normal((B, S, D))
    zq = rng.standard_normal((B, D))
    y = rng.standard_normal(B)
    kq = rng.standard_normal((H, D, D)) / np.sqrt(D)
    ov = rng.standard_normal((H, D)) / np.sqrt(D)
    return tuple(x.astype(dtype) for x in (z, zq, y, kq, ov))


VALIDATION_SHAPES = ((5, 1, 6, 1), (7, 40, 6, 2), (4, 40, 6, 8), (3, 100, 5, 3), (2, 200, 7, 5))
"""(B, S, D, H) that main() validates: S = 1, the paper's 40, 100, and 200 > THREADS (not
a multiple of the block size; neither are the others); one to eight heads, G = 4, 2, 1
warps per head."""


def _validate(rng: np.random.Generator) -> bool:
    failed = False
    for dtype in DTYPES:
        for B, S, D, H in VALIDATION_SHAPES:
            args = problem(B, S, D, H, dtype, rng)
            z, zq, y, kq, ov = args
            for options in ({"activation": "softmax"}, {"activation": "linear", "norm": 40.0}):
                fwd = readout_forward(z, zq, kq, ov, **options)
                mse = readout_mse(z, zq, y, kq, ov, **options)
                reports = (compare_with_spec(fwd, (z, zq, None, kq, ov), options, rng)
                           + compare_with_spec(mse, args, options, rng))
                names = ("yhat", "a", "v", "loss", "dkq", "dov", "yhat")
                ok = all(r.ok for r in reports)
                failed |= not ok
                worst = max(range(len(reports)),
                            key=lambda k: reports[k].err / max(reports[k].bound, 1e-300))
                print(f"  v1 {dtype.name:8s} {options['activation']:7s} "
                      f"B={B} S={S:3d} D={D} H={H}  "
                      f"worst {names[worst]} err {reports[worst].err:.1e} "
                      f"(bound {reports[worst].bound:.1e})" + ("" if ok else "  FAILED"))
                for name, r in zip(names, reports):
                    if not r.ok:
                        print("    " + r.message(name))
    return failed


# ------------------------------------------------------------------ main


def step_bytes(B: int, S: int, D: int, H: int, dtype) -> int:
    """Bytes one training step moves (readout_v1 + readout_reduce_v1; main()'s docstring)."""
    s = np.dtype(dtype).itemsize
    r = 8  # REAL = double
    return (s * (B * S * D + B * D + B + H * D * D + H * D)  # z, zq, y, KQ, ov read
            + s * B + r * B + 2 * r * B * H * D               # ŷ, r, gw, gr written
            + 2 * r * B * H * D + s * B * D + r * B            # gw, gr, zq, r read back
            + s * (H * D * D + H * D) + r)                     # ∂KQ, ∂ov, loss written


def step_flops(B: int, S: int, D: int, H: int) -> int:
    """FLOPs of one training step, counting exp as one (main()'s docstring)."""
    forward = 2 * H * D * D + 4 * H * S * D + 7 * H * S
    backward = 2 * H * S + 4 * H * S * D + 2 * H * D
    return B * (forward + backward) + 2 * B * H * D * D + B * H * D + 2 * B


def _time(rng: np.random.Generator, *, B: int = 256, S: int = 40, D: int = 6,
          heads: tuple[int, ...] = (1, 2, 4, 8)) -> None:
    """Time the training step on device arrays (default: the paper's, d = 5) for each H
    in both dtypes."""
    import cupy

    bandwidth, _ = _timing.peaks()
    print(f"readout_mse  time the training step: B={B} S={S} D={D}, softmax")
    for dtype in DTYPES:
        real = _NUMPY_REAL[_TYPES[dtype][1]]
        for H in heads:
            z, zq, y, kq, ov = (cupy.asarray(x) for x in problem(B, S, D, H, dtype, rng))
            yhat, r = cupy.empty(B, dtype), cupy.empty(B, real)
            gw, gr = cupy.empty((B, H, D), real), cupy.empty((B, H, D), real)
            dkq, dov = cupy.empty((H, D, D), dtype), cupy.empty((H, D), dtype)
            loss = cupy.empty(1, real)
            ms = _timing.time_ms(functools.partial(
                run_mse, z, zq, y, kq, ov, True, 1 / np.sqrt(D), 1.0, yhat, r, gw, gr, dkq, dov,
                loss))
            nbytes, flops = step_bytes(B, S, D, H, dtype), step_flops(B, S, D, H)
            gbs, gflops = nbytes / (ms * 1e-3) / 1e9, flops / (ms * 1e-3) / 1e9
            print(f"  v1 {dtype.name:8s} H={H}  {ms:.4f} ms  {gbs:.1f} GB/s "
                  f"({100 * gbs * 1e9 / bandwidth:.1f}% of {bandwidth / 1e9:.0f})  "
                  f"{gflops:.1f} GFLOP/s  [{nbytes} B, {flops} FLOP]")


def main(argv: list[str] | None = None) -> int:
    """Validate both kernels and every dtype against the float64 spec; time the training
    step on a GPU.

    Validation (every engine): (B, S, D, H) of :data:`VALIDATION_SHAPES` (S = 1, 40, 100,
    200; H = 1 .. 8), float32 and float64, softmax and linear (norm 40), forward and MSE,
    each output within spec.tolerance of the spec on oracle_dtype, with the spec in the
    working dtype on the problem and sixteen permuted copies as baselines.

    Timing (CuPy engine, not --sanitize): the paper's training step, readout_mse at
    B = 256, S = 40, D = 6, H = 1, 2, 4, 8, float32 and float64, the two kernels on device
    arrays. Bytes (s = the dtype's size, 8 for the float64 rows): z, z_q, y, KQ, ov read
    once, s·(BSD + BD + B + HD² + HD); ŷ, r and the rows gw, gr written, s·B + 8·B +
    16·BHD; read back by the reduction with z_q and r, 16·BHD + s·BD + 8·B; ∂KQ, ∂ov and
    the loss written, s·(HD² + HD) + 8. FLOPs, exp counted as one, per prompt: u = KQ z_q
    2HD², scores and values 4HSD, scale and softmax 5HS, out 2HS; backward ds 2HS, the two
    row sums 4HSD, their scaling 2HD; then the batch sums 2BHD² + BHD and the loss 2B.
    The figures are ms (median of CUDA events), GB/s and GFLOP/s: at this size a step is a
    few microseconds of launch latency and 256 blocks, far from any peak.
    ``--sanitize`` validates only.
    """
    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--sanitize", action="store_true", help="validate only, and skip timing")
    args = parser.parse_args(argv)
    engine = _launch.engine()
    rng = np.random.default_rng(0)
    print(f"readout  validate  engine={engine}  {_timing.device_name()}")
    failed = _validate(rng)
    if engine == "cupy" and not args.sanitize:
        _time(rng)
    elif not args.sanitize:
        print("  (timing skipped: the emulator's speed says nothing about a GPU's)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
