"""Which implementations exist of which op, and the spec function each one mirrors.

An entry names its implementation as ``"module:function"`` and is imported only when
asked for, so listing the registry compiles nothing (Numba) and needs no GPU (CUDA).

    >>> from backends import registry
    >>> flash = registry.get("attention.flash_forward", "cpu")

The ``spec`` backend is the reference itself; every other backend is tested against
it by the conformance suite (``tests/backends``), which is parametrised over
:func:`entries`.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)


@dataclass(frozen=True)
class Entry:
    """One implementation of one op."""

    op: str
    """Dotted op name, e.g. ``"attention.flash_forward"``."""
    backend: str
    """``"spec"``, ``"cpu"`` or ``"cuda"``."""
    version: str | None
    """Kernel version within a family (``"v1"``...), or None where there is one."""
    target: str
    """``"module:function"`` of the implementation."""
    spec_target: str
    """``"module:function"`` of the spec function it mirrors (same signature)."""
    dtypes: tuple[np.dtype, ...]
    """Input dtypes it accepts; others raise TypeError. Empty for the ``tokenize.*`` ops:
    their inputs are text, word tables or int32 code points, and their results are
    discrete (compared for equality, not within a tolerance)."""
    gpu_only: bool = False
    """Runs only on a GPU (tensor cores): the emulator cannot run it, so its tests need one."""
    head_dims: tuple[int, ...] | None = None
    """Head widths it takes (D = E, one of these; tensor-core tiles), or None for any."""
    positions: bool = True
    """Implements the positional keywords (``rope``, ``alibi_slopes``, ``alibi_form``) of
    an attention op; False where it rejects them (the tensor-core kernel)."""

    def load(self) -> Callable:
        """The implementation; for a versioned kernel, with ``version=`` bound."""
        fn = _import(self.target)
        return fn if self.version is None else functools.partial(fn, version=self.version)

    def load_spec(self) -> Callable:
        return _import(self.spec_target)

    @property
    def name(self) -> str:
        suffix = f"[{self.version}]" if self.version else ""
        return f"{self.op}/{self.backend}{suffix}"


def _import(target: str) -> Callable:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


_FWD_SPEC = "spec.attention.tiled:flash_forward"
_BWD_SPEC = "spec.attention.tiled:flash_backward"

_SOFTMAX_SPEC = "spec.attention.softmax:softmax"
_VARLEN_SPEC = "spec.attention.varlen:flash_varlen_forward"
_ROPE_SPEC = "spec.position.rope:rope_qk"
_SPARSE = "spec.attention.block_sparse"
_BPE, _SWE = "spec.tokenize.bpe", "spec.tokenize.swe"
_PRFLASH = "spec.attention.prflash"
_READOUT = "spec.attention.readout"

_ENTRIES: tuple[Entry, ...] = (
    Entry("attention.flash_forward", "spec", None, _FWD_SPEC, _FWD_SPEC, (F16, F32, F64)),
    Entry("attention.flash_backward", "spec", None, _BWD_SPEC, _BWD_SPEC, (F16, F32, F64)),
    Entry(
        "attention.flash_forward", "cpu", None,
        "backends.cpu.attention:flash_forward", _FWD_SPEC, (F32, F64),
    ),
    Entry(
        "attention.flash_backward", "cpu", None,
        "backends.cpu.attention:flash_backward", _BWD_SPEC, (F32, F64),
    ),
    Entry("attention.softmax", "spec", None, _SOFTMAX_SPEC, _SOFTMAX_SPEC, (F16, F32, F64)),
    *(
        Entry("attention.softmax", "cuda", version, "backends.cuda.softmax:softmax",
              _SOFTMAX_SPEC, (F16, F32, F64))
        for version in ("v1", "v2")
    ),
    *(
        Entry("attention.flash_forward", "cuda", version, "backends.cuda.attention:flash_forward",
              _FWD_SPEC, (F32,))
        for version in ("v1", "v2", "v3")
    ),
    Entry("attention.flash_forward", "cuda", "tc", "backends.cuda.attention_tc:flash_forward",
          _FWD_SPEC, (F16,), gpu_only=True, head_dims=(64, 128), positions=False),
    Entry("attention.flash_backward", "cuda", None,
          "backends.cuda.attention_backward:flash_backward", _BWD_SPEC, (F32,)),
    Entry("attention.flash_varlen_forward", "spec", None, _VARLEN_SPEC, _VARLEN_SPEC, (F16, F32, F64)),
    Entry("attention.flash_varlen_forward", "cpu", None,
          "backends.cpu.varlen:flash_varlen_forward", _VARLEN_SPEC, (F32, F64)),
    *(
        Entry("attention.flash_varlen_forward", "cuda", version,
              "backends.cuda.attention_varlen:flash_varlen_forward", _VARLEN_SPEC, (F32,))
        for version in ("v1", "v2", "v3")
    ),
    Entry("position.rope_qk", "spec", None, _ROPE_SPEC, _ROPE_SPEC, (F16, F32, F64)),
    Entry("position.rope_qk", "cpu", None, "backends.cpu.rope:rope_qk", _ROPE_SPEC, (F32, F64)),
    Entry("position.rope_qk", "cuda", None, "backends.cuda.rope:rope_qk", _ROPE_SPEC, (F32,)),
    *(
        Entry(f"attention.{module}_{fn}", "spec", None, f"{spec}:{module}_{fn}",
              f"{spec}:{module}_{fn}", (F16, F32, F64))
        for module, spec in (("block_sparse", _SPARSE), ("prflash", _PRFLASH))
        for fn in ("forward", "backward")
    ),
    *(
        Entry(f"attention.{module}_{fn}", backend, None, f"backends.{backend}.block_sparse:{module}_{fn}",
              f"{spec}:{module}_{fn}", dtypes)
        for backend, dtypes in (("cpu", (F32, F64)), ("cuda", (F32,)))
        for module, spec in (("block_sparse", _SPARSE), ("prflash", _PRFLASH))
        for fn in ("forward", "backward")
    ),
    *(
        Entry(f"tokenize.{op}", backend, None, target, f"{spec}:{fn}", ())
        for op, spec, fn, targets in (
            ("bpe_train", _BPE, "train", {"cpu": "backends.cpu.tokenize.bpe:train"}),
            ("pair_counts", _BPE, "pair_counts", {"cuda": "backends.cuda.tokenize:pair_counts"}),
            ("swe_train", _SWE, "train", {"cpu": "backends.cpu.tokenize.swe:train"}),
            ("segment_batch", _SWE, "segment_batch", {"cpu": "backends.cpu.tokenize.swe:segment_batch",
                                                      "cuda": "backends.cuda.tokenize:segment_batch"}),
        )
        for backend, target in {"spec": f"{spec}:{fn}", **targets}.items()
    ),
    *(
        Entry(f"attention.{fn}", backend, None, f"{module}:{fn}", f"{_READOUT}:{fn}", dtypes)
        for fn in ("readout_forward", "readout_mse")
        for backend, module, dtypes in (("spec", _READOUT, (F16, F32, F64)),
                                        ("cpu", "backends.cpu.readout", (F32, F64)),
                                        ("cuda", "backends.cuda.readout", (F32, F64)))
    ),
)


def entries(op: str | None = None, backend: str | None = None) -> list[Entry]:
    """All registered entries, optionally filtered by op and backend."""
    return [
        e for e in _ENTRIES
        if (op is None or e.op == op) and (backend is None or e.backend == backend)
    ]


def ops() -> list[str]:
    """Registered op names, in registration order."""
    return list(dict.fromkeys(e.op for e in _ENTRIES))


def backends(op: str | None = None) -> list[str]:
    """Backends that implement ``op`` (or any op), in registration order."""
    return list(dict.fromkeys(e.backend for e in entries(op)))


def entry(op: str, backend: str, version: str | None = None) -> Entry:
    """The entry of ``op`` on ``backend``; ``version`` picks a kernel where there are several."""
    found = entries(op, backend)
    if version is not None:
        found = [e for e in found if e.version == version]
    if not found:
        raise KeyError(
            f"no implementation of op {op!r} on backend {backend!r}"
            + (f" version {version!r}" if version else "")
            + f"; registered ops: {ops()}, backends of {op!r}: {backends(op)}"
        )
    if len(found) > 1:
        raise KeyError(
            f"op {op!r} on backend {backend!r} has versions "
            f"{[e.version for e in found]}; pass version="
        )
    return found[0]


def get(op: str, backend: str, version: str | None = None) -> Callable:
    """The implementation of ``op`` on ``backend`` (imported, and so compiled, on first use)."""
    return entry(op, backend, version).load()


def get_default(op: str, backend: str) -> Callable:
    """The implementation of ``op`` on ``backend`` with its own default version.

    Where a backend has versions, this is the function without ``version=`` bound
    (it picks its default kernel); entries that need a GPU are not considered.
    """
    found = [e for e in entries(op, backend) if not e.gpu_only]
    if not found:
        raise KeyError(f"no implementation of op {op!r} on backend {backend!r} runs without a GPU")
    return _import(found[0].target)

