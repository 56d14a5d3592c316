"""Timing of kernels on a GPU for the launchers' ``main()``: CUDA events, peak rates.

Only meaningful with the CuPy engine; on the emulator the launchers skip it.
Peaks: memory bandwidth from the device's attributes (2 transfers per clock on
DDR-type memory × bus width); FP32 FLOP/s from the SM count, clock and the FP32
lanes per SM of its compute capability (NVIDIA CUDA C++ Programming Guide,
"Arithmetic Instructions" throughput table), with 2 FLOPs per fma.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import numpy as np

# cudaDeviceAttr values (CUDA runtime API, cudaDeviceAttr enum)
_ATTR_CLOCK_KHZ = 13
_ATTR_SM_COUNT = 16
_ATTR_MEM_CLOCK_KHZ = 36
_ATTR_BUS_WIDTH_BITS = 37
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76

# FP32 lanes per SM by compute capability (8.0: A100; 8.6/8.9: Ampere/Ada consumer; 9.0: H100/H200)
_FP32_LANES = {(8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128, (10, 0): 128}


def device_name() -> str:
    """The current GPU's name, or a note that there is none."""
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        return props["name"].decode()
    except Exception:  # no CuPy or no device: the launcher runs on the emulator
        return "(no GPU)"


def _attr(attr: int) -> int:
    import cupy

    return int(cupy.cuda.runtime.deviceGetAttribute(attr, cupy.cuda.Device().id))


def peaks() -> tuple[float, float | None]:
    """(bytes/s, FP32 FLOP/s or None when the architecture is not in the table)."""
    bandwidth = 2 * _attr(_ATTR_MEM_CLOCK_KHZ) * 1e3 * _attr(_ATTR_BUS_WIDTH_BITS) / 8
    lanes = _FP32_LANES.get((_attr(_ATTR_CC_MAJOR), _attr(_ATTR_CC_MINOR)))
    flops = None if lanes is None else 2 * lanes * _attr(_ATTR_SM_COUNT) * _attr(_ATTR_CLOCK_KHZ) * 1e3
    return bandwidth, flops


def time_ms(fn: Callable[[], object], repeats: int = 20) -> float:
    """Median milliseconds of ``fn()`` between CUDA events, after one warm-up call."""
    import cupy

    fn()
    times = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def rates(ms: float, nbytes: int, flops: int, dtype: np.dtype) -> str:
    """One line: time, GB/s, TFLOP/s and each as a percentage of the device's peak."""
    bandwidth, flop_peak = peaks()
    gbs = nbytes / (ms * 1e-3)
    tfs = flops / (ms * 1e-3)
    flop_part = f"{tfs / 1e12:.3f} TFLOP/s"
    if flop_peak is not None and np.dtype(dtype) != np.float64:
        flop_part += f" ({100 * tfs / flop_peak:.1f}% of FP32 peak)"
    return (f"{ms:.3f} ms  {gbs / 1e9:.0f} GB/s ({100 * gbs / bandwidth:.0f}% of "
            f"{bandwidth / 1e9:.0f})  {flop_part}  [{nbytes} B, {flops} FLOP]")


def torch_sdpa_ms(B: int, H: int, T: int, D: int, causal: bool, dtype: str, *,
                  backward: bool = False) -> float | None:
    """Median ms of PyTorch's scaled_dot_product_attention on this GPU (B, H, T=S, D=E),
    or None where PyTorch with CUDA is not installed: the anchor of the kernels' timings.

    ``backward``: the time of its backward alone (the gradients of q, k, v given dO;
    the forward excluded). With T = S, PyTorch's causal mask (top-left) is the spec's
    (bottom-right).
    """
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    dt = getattr(torch, dtype)
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dt, requires_grad=backward)
               for _ in range(3))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if backward:
        o = sdpa(q, k, v, is_causal=causal)
        do = torch.randn_like(o)

        def call():
            torch.autograd.grad(o, (q, k, v), do, retain_graph=True)
    else:
        def call():
            sdpa(q, k, v, is_causal=causal)

    call()
    times = []
    for _ in range(5):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def attention_arguments(main_doc: str, argv: list[str] | None,
                        head_dims: tuple[int, ...] | None = None) -> argparse.Namespace:
    """The command line of the attention launchers' ``main()``: the timed size (B, H,
    T = S, D = E; default the issue's B=4, H=16, T=4096, D=128) and ``--sanitize``."""
    parser = argparse.ArgumentParser(description=main_doc.split("\n")[0])
    parser.add_argument("--B", type=int, default=4)
    parser.add_argument("--H", type=int, default=16)
    parser.add_argument("--T", type=int, default=4096)
    parser.add_argument("--D", type=int, default=128, choices=head_dims)
    parser.add_argument("--sanitize", action="store_true",
                        help="validate at a small size and skip timing")
    return parser.parse_args(argv)

