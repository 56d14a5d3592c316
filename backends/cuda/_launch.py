"""What every CUDA kernel family's launcher shares: the engine, compiled modules, arrays.

**Engine.** Which engine runs a CUDA backend call is explicit, never a silent
fallback. By default it is CuPy on a GPU; ``ATTNSPEC_CUDA=emulator`` selects the CPU
emulator (``backends.cuda.emulator``), which is what the tests and lessons set where
no GPU exists. Without a GPU and without that setting a call raises
:class:`CudaUnavailableError`, whose message says how to emulate.

**Configurations.** A family's launcher lists every configuration it launches with
as :class:`KernelConfig` (kernel name, ``-D`` macros, threads per block, dynamic
shared memory). The same list feeds the launcher (:func:`get_kernel`) and the
compile gate (``backends.cuda.nvrtc_check``), so that what CI compiles is exactly
what runs.

**Arrays.** Launchers accept CuPy arrays without copying and NumPy arrays by copying
them to the device; results come back as the kind of array that went in. On the
emulator, "device" memory is NumPy memory.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_VAR = "ATTNSPEC_CUDA"

# -std for both compilers; the emulator reads it as g++'s default C++20 (a superset).
CXX_STANDARD = "-std=c++17"
FMAD = "--fmad=false"
CUDA_DIR = Path(__file__).parent


class CudaUnavailableError(RuntimeError):
    """A CUDA backend was called where no engine can run it."""


def engine() -> str:
    """``"cupy"`` (a GPU through CuPy) or ``"emulator"``, from ``ATTNSPEC_CUDA``.

    Unset (or ``cupy``) means a GPU: an error if none is usable. ``emulator`` means
    the CPU emulator. Any other value is an error, so a typo never picks an engine.
    """
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value == "emulator":
        return "emulator"
    if value not in ("", "cupy"):
        raise ValueError(f"{ENV_VAR}={value!r}: expected 'emulator', 'cupy' or unset")
    reason = gpu_unusable_reason()
    if reason is not None:
        raise CudaUnavailableError(
            f"no CUDA GPU to run this kernel ({reason}). To run the CUDA kernels on the "
            f"CPU emulator instead, set {ENV_VAR}=emulator."
        )
    return "cupy"


def emulate_if_no_gpu() -> str:
    """Choose the emulator where no engine is chosen and no GPU is usable; return the engine.

    For programs that must run the CUDA kernels wherever they are (the tour, the
    lessons): the choice is made by setting ``ATTNSPEC_CUDA=emulator``, so it is
    visible and the caller can say so. A setting made outside is kept.
    """
    if ENV_VAR not in os.environ and gpu_unusable_reason() is not None:
        os.environ[ENV_VAR] = "emulator"
    return engine()


@functools.cache
def gpu_unusable_reason() -> str | None:
    """Why CuPy cannot run kernels here (no CuPy, no driver, no device), or None."""
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed: {exc}; pip install -e '.[cuda]'"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device: CuPy raises its own runtime errors
        return f"CuPy found no device: {exc}"
    return None if count > 0 else "CuPy found no device"


@dataclass(frozen=True)
class KernelConfig:
    """One kernel compiled with one set of macros, as a launcher uses it."""

    source: str
    """File name of the ``.cu`` source under ``backends/cuda``."""
    kernel: str
    """The ``extern "C"`` kernel's name."""
    defines: tuple[tuple[str, str], ...]
    """``-D`` macros, in order."""
    threads: int
    """Threads per block it is launched with (bounds its registers per thread)."""
    dynamic_smem: int = 0
    """Bytes of dynamic shared memory per block it is launched with."""

    @property
    def label(self) -> str:
        macros = " ".join(f"{k}={v}" for k, v in self.defines)
        return f"{self.source}:{self.kernel} [{macros}]"

    def options(self) -> tuple[str, ...]:
        """Compiler options common to NVRTC (CuPy, compile gate) and the emulator.

        ``--fmad=false``: the GPU rounds ``a * b + c`` twice, as g++ does for the
        emulator (no FMA contraction without ``-march``), so that both engines round
        alike and a kernel fuses only where its source writes ``fmaf``. ``-I`` names
        this folder, for headers the kernel families share (``attention_common.cuh``).
        """
        return (CXX_STANDARD, FMAD, f"-I{CUDA_DIR}", *(f"-D{k}={v}" for k, v in self.defines))


def read_source(name: str) -> str:
    """The text of ``backends/cuda/<name>``."""
    return (CUDA_DIR / name).read_text()


@functools.cache
def cuda_include_dir() -> str | None:
    """CUDA's headers (cuda_fp16.h ...) from the ``nvidia-cuda-runtime`` wheel, if any.

    NVRTC has no built-in cuda_fp16.h; on a machine with a CUDA toolkit CuPy finds
    the toolkit's headers itself, elsewhere the wheel's are needed. The emulator
    never uses them: it has its own.
    """
    spec = importlib.util.find_spec("nvidia")
    for root in spec.submodule_search_locations if spec else ():
        for include in sorted(Path(root).glob("cu*/include")):
            if (include / "cuda_fp16.h").is_file():
                return str(include)
    return None


def nvrtc_options(config: KernelConfig) -> tuple[str, ...]:
    include = cuda_include_dir()
    return config.options() + ((f"-I{include}",) if include else ())


@functools.cache
def _module(engine_name: str, source_name: str, options: tuple[str, ...]):
    code = read_source(source_name)
    if engine_name == "emulator":
        from backends.cuda import emulator

        return emulator.RawModule(code=code, options=options, source_name=source_name)
    import cupy

    return cupy.RawModule(code=code, options=options)


def get_kernel(config: KernelConfig) -> Callable:
    """The kernel of ``config`` on the selected engine, compiled once per process.

    Called as ``kernel(grid, block, args, shared_mem=...)`` on either engine.
    """
    name = engine()
    options = config.options() if name == "emulator" else nvrtc_options(config)
    kernel = _module(name, config.source, options).get_function(config.kernel)
    if config.dynamic_smem > 48 * 1024:
        kernel.max_dynamic_shared_size_bytes = config.dynamic_smem
    return kernel


def is_cupy_array(x) -> bool:
    """True for a ``cupy.ndarray``, without importing CuPy."""
    return type(x).__module__.split(".")[0] == "cupy" and hasattr(x, "__cuda_array_interface__")


def shape_proxy(x) -> np.ndarray:
    """A zero-byte NumPy view with the shape and dtype of a device array.

    The spec's layout checks (type, ndim, dtype, shape) then run unchanged on
    arrays that live on the GPU, and raise the spec's own messages.
    """
    # zeros, not empty: value checks (NaN, +inf) run on the proxy must find nothing
    return np.broadcast_to(np.zeros((), dtype=x.dtype), x.shape)


class Arrays:
    """Moves one call's arrays to the engine and its results back.

    ``to_device`` takes NumPy arrays (copied for CuPy) and CuPy arrays (used in
    place when C-contiguous); ``empty`` allocates an output filled with NaN, so an
    element the kernel forgets stays visible; ``result`` returns an output as the
    kind of array the caller passed in.
    """

    def __init__(self, engine_name: str, *inputs):
        self.engine = engine_name
        self.any_numpy = any(isinstance(x, np.ndarray) for x in inputs)
        if engine_name == "emulator":
            bad = [type(x).__name__ for x in inputs if is_cupy_array(x)]
            if bad:
                raise TypeError(
                    f"the CUDA emulator runs on NumPy arrays, got {', '.join(bad)}; pass "
                    f"NumPy arrays, or unset {ENV_VAR} to run on the GPU"
                )
            self.xp = np
        else:
            import cupy

            self.xp = cupy

    def to_device(self, x):
        return self.xp.asarray(x, order="C")

    def empty(self, shape: tuple[int, ...], dtype):
        return self.xp.full(shape, np.nan, dtype=dtype)

    def result(self, x):
        return x.get() if self.any_numpy and self.xp is not np else x
