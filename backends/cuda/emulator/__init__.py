"""Runs unmodified CUDA C kernels on the CPU with CUDA semantics (see README.md here).

The API mirrors CuPy's, so that a launcher written for CuPy runs unchanged:

    >>> from backends.cuda.emulator import RawKernel
    >>> add = RawKernel(r'''
    ... extern "C" __global__ void add(const float* x, float* y, int n) {
    ...     int i = blockIdx.x * blockDim.x + threadIdx.x;
    ...     if (i < n) y[i] += x[i];
    ... }''', "add")
    >>> add((4,), (256,), (x, y, np.int32(n)))

Sources are compiled by g++ against the headers in ``include/`` and cached on disk.
"""

from __future__ import annotations

from backends.cuda.emulator import _build, _source
from backends.cuda.emulator._errors import EmulatorCompileError, KernelError
from backends.cuda.emulator._launch import Kernel

__all__ = ["EmulatorCompileError", "KernelError", "RawKernel", "RawModule"]


def _refuse(**given) -> None:
    for name, value in given.items():
        if value:
            raise ValueError(f"{name}={value!r} is not supported by the CUDA emulator")


def _check_seed(seed) -> int | None:
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"schedule_seed: expected None or an int >= 0, got {seed!r}")
    return seed


class RawModule:
    """A CUDA C source compiled for the emulator, like ``cupy.RawModule``.

    ``options`` are NVRTC-style: ``-D``/``-U``/``-I`` are passed to g++, options that
    only concern GPU code generation (``-std=``, ``-arch=``, ``--use_fast_math`` ...) are
    ignored, anything else is an error. ``source_name`` is the file name errors and
    compiler messages use. ``schedule_seed`` (or ``ATTNSPEC_EMULATOR_SEED``) shuffles the
    order blocks and threads run in, reproducibly, to expose order-dependent races.
    Compiled on first use of :meth:`get_function` (or :meth:`compile`).
    """

    def __init__(self, code: str | None = None, options=(), *, path=None, backend: str = "nvrtc",
                 translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 name_expressions=None, jitify: bool = False, source_name: str = "kernel.cu",
                 schedule_seed: int | None = None):
        _refuse(path=path, translate_cucomplex=translate_cucomplex,
                enable_cooperative_groups=enable_cooperative_groups,
                name_expressions=name_expressions, jitify=jitify)
        if backend != "nvrtc":
            raise ValueError(f"backend={backend!r} is not supported by the CUDA emulator")
        if not isinstance(code, str):
            raise TypeError(f"code: expected the CUDA C source as a str, got {type(code).__name__}")
        self.code = code
        self._flags = _build.compiler_flags(options)
        self.options = tuple(options)
        self.source_name = source_name
        self._seed = _check_seed(schedule_seed)
        self._tu = _source.translation_unit(code, source_name)
        self._module: _build.Module | None = None
        self._functions: dict[str, Kernel] = {}

    def compile(self) -> None:
        """Compile (or load from the cache) now rather than at first use."""
        if self._module is None:
            self._module = _build.load_module(self._tu, self._flags, self.source_name)

    def get_function(self, name: str) -> Kernel:
        """The ``extern "C" __global__`` kernel ``name``. Like a CUDA function handle, it
        is the same object on every call, so attributes set on it stay set."""
        kernel = self._functions.get(name)
        if kernel is not None:
            return kernel
        self.compile()
        decl = self._module.kernels.get(name)
        if decl is None:
            found = ", ".join(self._module.kernels) or "none"
            raise ValueError(
                f"no extern \"C\" __global__ kernel named {name!r} in {self.source_name} "
                f"(found: {found})"
            )
        kernel = self._functions[name] = Kernel(self._module.lib, name, decl.params, self._seed)
        return kernel


class RawKernel:
    """One kernel of a CUDA C source, like ``cupy.RawKernel``: compiled on first call,
    called as ``kernel(grid, block, args, shared_mem=0)``."""

    def __init__(self, code: str, name: str, options=(), backend: str = "nvrtc", *,
                 translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 jitify: bool = False, source_name: str = "kernel.cu",
                 schedule_seed: int | None = None):
        self.name = name
        self._module = RawModule(code, options, backend=backend,
                                 translate_cucomplex=translate_cucomplex,
                                 enable_cooperative_groups=enable_cooperative_groups,
                                 jitify=jitify, source_name=source_name,
                                 schedule_seed=schedule_seed)
        self._kernel: Kernel | None = None

    @property
    def code(self) -> str:
        return self._module.code

    @property
    def options(self) -> tuple[str, ...]:
        return self._module.options

    def compile(self) -> Kernel:
        """Compile (or load from the cache) now; returns the compiled kernel."""
        if self._kernel is None:
            self._kernel = self._module.get_function(self.name)
        return self._kernel

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        return self.compile().max_dynamic_shared_size_bytes

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value: int) -> None:
        self.compile().max_dynamic_shared_size_bytes = value

    def __call__(self, grid, block, args, shared_mem=0) -> None:
        self.compile()(grid, block, args, shared_mem=shared_mem)
