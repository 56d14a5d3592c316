"""Launching one kernel: grid and block checks, strict argument checks, the ctypes call.

Arguments are checked as strictly as a careful reviewer would, because on a GPU a wrong
one is not an error but a wrong answer: a pointer parameter takes a C-contiguous NumPy
array of exactly the pointee's dtype (writable unless the pointee is ``const``), a
scalar parameter a NumPy scalar of exactly its dtype. A Python ``float`` is refused even
for a ``float`` parameter, since CuPy would pass it as a double and the kernel would read
garbage. The parameter types come from the compiler (see ``signature`` in
attnspec_emu.h), not from parsing C++.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import numpy as np

from backends.cuda.emulator._errors import KernelError

DEFAULT_DYNAMIC_SHARED = 48 * 1024
MAX_DYNAMIC_SHARED = 227 * 1024
"""The largest opt-in dynamic shared memory per block of sm_80/sm_90 (232448 bytes)."""

DEFAULT_STACK_KB = 64

# C++ type (g++'s spelling, cv-stripped) -> NumPy dtype of the array or scalar passed.
# numpy has no bfloat16: __nv_bfloat16 data travels as its bits in uint16.
DTYPES = {
    "float": np.float32, "double": np.float64, "__half": np.float16,
    "__nv_bfloat16": np.uint16, "bool": np.bool_,
    "char": np.int8, "signed char": np.int8, "unsigned char": np.uint8,
    "short int": np.int16, "short unsigned int": np.uint16,
    "int": np.int32, "unsigned int": np.uint32,
    "long int": np.int64, "long unsigned int": np.uint64,
    "long long int": np.int64, "long long unsigned int": np.uint64,
}
DTYPES = {name: np.dtype(t) for name, t in DTYPES.items()}


@dataclass(frozen=True)
class Param:
    """One kernel parameter as the compiler describes it."""

    index: int
    pointer: bool
    const: bool  # of the pointee
    type: str  # the (pointee) type, g++'s spelling
    source: str  # the declaration as written, or the type if unknown

    @property
    def dtype(self) -> np.dtype | None:
        return DTYPES.get(self.type)

    def label(self) -> str:
        return f"argument {self.index} (`{self.source}`)"


def parse_signature(text: str, declared: tuple[str, ...]) -> tuple[Param, ...]:
    """Parameters from the module's signature string (``"pointer|const|float;..."``),
    labelled with the declarations found in the source when their count agrees."""
    if text == "-":
        return ()
    params = []
    entries = text.split(";")
    for i, entry in enumerate(entries):
        kind, const, type_ = entry.split("|", 2)
        pointer = kind == "pointer"
        spelled = f"{'const ' if const else ''}{type_}{'*' if pointer else ''}"
        source = declared[i] if len(declared) == len(entries) else spelled
        params.append(Param(i, pointer, bool(const), type_, source))
    return tuple(params)


def check_dims(value, name: str) -> tuple[int, int, int]:
    """``grid`` or ``block`` as three ints, with CUDA's limits; ValueError/TypeError
    naming the argument."""
    dims = value if isinstance(value, tuple) else (value,)
    if not 1 <= len(dims) <= 3 or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) for d in dims
    ):
        raise TypeError(f"{name}: expected an int or a tuple of 1 to 3 ints, got {value!r}")
    x, y, z = (*(int(d) for d in dims), 1, 1)[:3]
    if min(x, y, z) < 1:
        raise ValueError(f"{name}: every dimension must be at least 1, got {(x, y, z)}")
    if name == "block":
        if x > 1024 or y > 1024 or z > 64:
            raise ValueError(f"block: {(x, y, z)} exceeds CUDA's limits x, y <= 1024, z <= 64")
        if x * y * z > 1024:
            raise ValueError(f"block: {(x, y, z)} has {x * y * z} threads; CUDA allows at most 1024")
    elif x > 2**31 - 1 or y > 65535 or z > 65535:
        raise ValueError(f"grid: {(x, y, z)} exceeds CUDA's limits x <= 2**31-1, y, z <= 65535")
    return x, y, z


def _check_array(param: Param, value) -> int:
    """The data address of an array argument, after checking it fits the parameter."""
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{param.label()}: expected a NumPy array for a pointer parameter, got "
            f"{type(value).__name__}"
        )
    if param.type != "void":
        if param.dtype is None:
            raise TypeError(f"{param.label()}: unsupported parameter type {param.type}*")
        if value.dtype != param.dtype:
            raise TypeError(
                f"{param.label()}: expected an array of dtype {param.dtype} for {param.type}*, "
                f"got {value.dtype}"
            )
    if not value.flags.c_contiguous:
        raise ValueError(f"{param.label()}: the array must be C-contiguous (np.ascontiguousarray)")
    if not param.const and not value.flags.writeable:
        raise ValueError(
            f"{param.label()}: the kernel may write through this non-const pointer, but the "
            "array is read-only"
        )
    return value.ctypes.data


def _check_scalar(param: Param, value) -> np.ndarray:
    """A 0-d array holding the scalar argument's bytes, after checking its type."""
    if param.dtype is None:
        raise TypeError(f"{param.label()}: unsupported parameter type {param.type}")
    if not isinstance(value, np.generic) or value.dtype != param.dtype:
        got = (f"a NumPy {value.dtype} scalar" if isinstance(value, np.generic)
               else "a 0-d array" if isinstance(value, np.ndarray)
               else f"a Python {type(value).__name__}")
        hint = (" (on a GPU CuPy passes a Python float as a double, which a float parameter "
                "misreads)" if isinstance(value, float) else "")
        raise TypeError(
            f"{param.label()}: expected a np.{param.dtype.name} scalar, got {got}{hint}"
        )
    return np.array(value)


def _env_int(name: str, default: int, minimum: int) -> int:
    text = os.environ.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value}: expected at least {minimum}")
    return value


class _ErrorInfo(ctypes.Structure):
    """Mirror of attnspec_emu::ErrorInfo."""

    _fields_ = [
        ("kind", ctypes.c_char * 64),
        ("file", ctypes.c_char * 512),
        ("line", ctypes.c_int),
        ("block", ctypes.c_uint * 3),
        ("thread", ctypes.c_uint * 3),
        ("detail", ctypes.c_char * 2048),
    ]


class Kernel:
    """One compiled kernel, called like CuPy's ``RawKernel``:
    ``kernel(grid, block, args, shared_mem=0)``."""

    def __init__(self, lib, name: str, declared: tuple[str, ...], schedule_seed: int | None):
        self.name = name
        signature = getattr(lib, f"attnspec_emu_signature__{name}")
        signature.restype = ctypes.c_char_p
        signature.argtypes = ()
        self.params = parse_signature(signature().decode(), declared)
        self._launch = getattr(lib, f"attnspec_emu_launch__{name}")
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = (
            ctypes.POINTER(ctypes.c_uint), ctypes.c_ulonglong, ctypes.c_ulonglong, ctypes.c_int,
            ctypes.c_int, ctypes.c_ulonglong, ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(_ErrorInfo),
        )
        self._seed = schedule_seed
        self._max_dynamic_shared = DEFAULT_DYNAMIC_SHARED

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        """Dynamic shared memory a launch may ask for; 48 KiB unless raised (up to 227 KiB),
        as with ``cudaFuncAttributeMaxDynamicSharedMemorySize`` on a GPU."""
        return self._max_dynamic_shared

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value: int) -> None:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"max_dynamic_shared_size_bytes: expected an int, got {value!r}")
        if not 0 <= value <= MAX_DYNAMIC_SHARED:
            raise ValueError(
                f"max_dynamic_shared_size_bytes: {value} is outside [0, {MAX_DYNAMIC_SHARED}]"
            )
        self._max_dynamic_shared = int(value)

    def _pack(self, args) -> tuple[ctypes.Array, list]:
        if not isinstance(args, tuple):
            raise TypeError(f"args: expected a tuple of kernel arguments, got {type(args).__name__}")
        if len(args) != len(self.params):
            decl = ", ".join(p.source for p in self.params)
            raise TypeError(
                f"kernel {self.name}({decl}) takes {len(self.params)} arguments, got {len(args)}"
            )
        slots = (ctypes.c_void_p * max(1, len(args)))()
        keep = []  # what the slots point into must live until the call returns
        for param, value in zip(self.params, args):
            if param.pointer:
                box = ctypes.c_void_p(_check_array(param, value))
                slots[param.index] = ctypes.addressof(box)
            else:
                box = _check_scalar(param, value)
                slots[param.index] = box.ctypes.data
            keep.append(box)
        return slots, keep

    def _seed_value(self) -> int | None:
        if self._seed is not None:
            return self._seed
        text = os.environ.get("ATTNSPEC_EMULATOR_SEED", "").strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"ATTNSPEC_EMULATOR_SEED={text!r}: expected an integer") from None

    def __call__(self, grid, block, args, shared_mem=0) -> None:
        grid3 = check_dims(grid, "grid")
        block3 = check_dims(block, "block")
        if not isinstance(shared_mem, (int, np.integer)) or isinstance(shared_mem, bool):
            raise TypeError(f"shared_mem: expected an int, got {shared_mem!r}")
        if shared_mem < 0:
            raise ValueError(f"shared_mem: expected at least 0, got {shared_mem}")
        if shared_mem > self._max_dynamic_shared:
            raise ValueError(
                f"shared_mem: {shared_mem} bytes exceeds the kernel's "
                f"max_dynamic_shared_size_bytes ({self._max_dynamic_shared}); raise that "
                f"attribute first (up to {MAX_DYNAMIC_SHARED}), as on a GPU"
            )
        slots, keep = self._pack(args)
        seed = self._seed_value()
        workers = _env_int("ATTNSPEC_EMULATOR_WORKERS", os.cpu_count() or 1, 1)
        stack_kb = _env_int("ATTNSPEC_EMULATOR_STACK_KB", DEFAULT_STACK_KB, 16)
        dims = (ctypes.c_uint * 6)(*grid3, *block3)
        error = _ErrorInfo()
        status = self._launch(dims, int(shared_mem), (seed or 0) % 2**64, seed is not None,
                              workers, stack_kb * 1024, slots, ctypes.byref(error))
        del keep
        if status != 0:
            raise KernelError(
                error.kind.decode(errors="replace"), self.name,
                error.file.decode(errors="replace"), error.line, tuple(error.block),
                tuple(error.thread), error.detail.decode(errors="replace"),
            )
