"""Array helpers of the CPU backends: every output starts as NaN; inputs in one layout.

DESIGN.md: "Outputs of backends are allocated through one helper that poisons them
with NaN". A kernel that forgets to write an element then returns NaN there, which
every conformance test sees, instead of whatever the allocator left behind (often
zeros, which can look right).
"""

from __future__ import annotations

import numpy as np


def poisoned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A new C-contiguous array of ``shape`` and float ``dtype``, filled with NaN.

    Use it for every array a backend returns; the kernel must overwrite all of it.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype: expected a float dtype to poison with NaN, got {dtype}")
    return np.full(shape, np.nan, dtype=dtype)


def contiguous(x: np.ndarray) -> np.ndarray:
    """x itself if C-contiguous and writable, else a copy: one Numba type per dtype (a
    strided or read-only array would be another type, and another compilation)."""
    if x.flags.c_contiguous and x.flags.writeable:
        return x
    return np.array(x, order="C", copy=True)
