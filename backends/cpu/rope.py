"""Rotary position embedding of queries and keys on the CPU, compiled with Numba.

Mirrors :func:`spec.position.rope.rope_qk`: queries are rotated at the positions
t + S - T (bottom-right aligned with the keys), keys at s. The cos/sin tables are the
spec's own (:func:`spec.position.rope.tables`, float64 angles rounded once to the
working dtype), computed on the host; the kernel does only the rotation, with the
spec's arithmetic: for each pair (x1, x2) and its angle,

    y1 = x1·cos - x2·sin,    y2 = x2·cos + x1·sin

two rounded products and one rounded sum per output, no fused multiply-add (Numba
without fast-math emits no contraction, so LLVM keeps the products separate). The
result is therefore equal to the spec's bit for bit, not merely close.

The row rotation (:func:`rotate_row`) and the shared table (:func:`position_tables`)
are also what the fused attention kernels of :mod:`backends.cpu.attention` use.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from backends.cpu._alloc import contiguous, poisoned_empty
from backends.rope_cache import rope_tables
from spec.position.rope import RoPE, RotatedQK, check_rope_input

_SUPPORTED = (np.dtype(np.float32), np.dtype(np.float64))


@njit(inline="always")
def rotate_row(x_D, cos_P, sin_P, interleaved, y_D):
    """y = R x for one row: pairs (k, k + D/2) (rotate_half) or (2k, 2k + 1) (interleaved).

    Both features of a pair are read before either is written, so ``y_D`` may be
    ``x_D`` itself (in-place rotation).
    """
    P = cos_P.shape[0]
    for k in range(P):
        i1, i2 = (2 * k, 2 * k + 1) if interleaved else (k, k + P)
        x1, x2, c, s = x_D[i1], x_D[i2], cos_P[k], sin_P[k]
        # R_θ (x1, x2) = (x1 cos θ - x2 sin θ, x2 cos θ + x1 sin θ)   (Su et al., eq. 13)
        y_D[i1] = x1 * c - x2 * s
        y_D[i2] = x2 * c + x1 * s


def position_tables(p_min: int, p_end: int, D: int, rope: RoPE, dtype, *, negate: bool = False):
    """cos_TP, sin_TP for the positions p_min .. p_end - 1 (row p - p_min), or for their
    negatives with ``negate`` (the un-rotation of gradients, as spec.attention.positional.unrotate).

    One table serves queries and keys: their positions overlap (keys 0 .. S-1, queries
    S-T .. S-1), so one table of max(T, S) rows replaces two. The rows are the spec's
    ``tables``, which works element by element, so each row is what the spec computes
    for that position (kept between calls by :mod:`backends.rope_cache`).
    """
    return rope_tables(p_min, p_end, D, rope.base, dtype, negate=negate)


@njit(parallel=True, cache=True)
def _rope_qk_kernel(q_TD, k_SD, qo_TD, ko_SD, T, S, cos_TP, sin_TP, p_min, interleaved):
    """Rotate every row of q (position t + S - T, t = row % T) and of k (s = row % S),
    one parallel loop over both so that a small q and a large k share the threads.
    q_TD and k_SD hold all B·H·T and B·G·S rows (batch and heads merged)."""
    n_q, n_k = q_TD.shape[0], k_SD.shape[0]
    for r in prange(n_q + n_k):
        if r < n_q:
            p = r % T + S - T - p_min
            rotate_row(q_TD[r], cos_TP[p], sin_TP[p], interleaved, qo_TD[r])
        else:
            p = (r - n_q) % S - p_min
            rotate_row(k_SD[r - n_q], cos_TP[p], sin_TP[p], interleaved, ko_SD[r - n_q])


def rotate_qk_rows(q_BHTD, k_BGSD, qo_BHTD, ko_BGSD, T: int, S: int, cos_TP, sin_TP,
                   p_min: int, interleaved: bool) -> None:
    """Run the kernel on C-contiguous 4-D arrays (outputs may be the inputs)."""
    D = q_BHTD.shape[3]
    n_q, n_k = math.prod(q_BHTD.shape[:3]), math.prod(k_BGSD.shape[:3])
    _rope_qk_kernel(q_BHTD.reshape(n_q, D), k_BGSD.reshape(n_k, D),
                    qo_BHTD.reshape(n_q, D), ko_BGSD.reshape(n_k, D),
                    T, S, cos_TP, sin_TP, p_min, interleaved)


def _check_inplace(name: str, x: np.ndarray) -> None:
    if not x.flags.c_contiguous:
        raise ValueError(f"{name}: inplace=True needs a C-contiguous array, got strides {x.strides}")
    if not x.flags.writeable:
        raise ValueError(f"{name}: inplace=True needs a writable array, got a read-only one")


def rope_qk(q_BHTD: np.ndarray, k_BGSD: np.ndarray, *,
            rope: RoPE = RoPE(),  # noqa: B008 (a frozen dataclass: the spec's default)
            inplace: bool = False) -> RotatedQK:
    """Rotate queries and keys as attention with ``rope=`` does: spec.position.rope.rope_qk, compiled.

    Math
        k_s ← R_s k_s, q_t ← R_i q_t with i = t + S - T (the spec's positions).

    Shapes
        q_BHTD, k_BGSD (one dtype, float32 or float64, D even); returns
        RotatedQK(q_BHTD, k_BGSD). With ``inplace=True`` the given arrays are rotated
        in place and returned; they must be C-contiguous, writable and must not
        overlap (else ValueError).

    Parallel
        One ``prange`` over all rows of q and k.

    Numerics
        Bit-identical to the spec: the spec's tables and its two products and one sum
        per element. Same validation and errors as the spec, plus a ``TypeError`` for
        float16 and longdouble (this backend computes in float32 and float64 only).
    """
    if not isinstance(rope, RoPE):
        raise TypeError(f"rope: expected a spec.position.rope.RoPE, got {type(rope).__name__}")
    check_rope_input("q_BHTD", q_BHTD)
    check_rope_input("k_BGSD", k_BGSD)
    if q_BHTD.dtype != k_BGSD.dtype:
        raise TypeError(f"q_BHTD, k_BGSD: expected one dtype, got {q_BHTD.dtype}, {k_BGSD.dtype}")
    if q_BHTD.shape[3] != k_BGSD.shape[3] or q_BHTD.shape[0] != k_BGSD.shape[0]:
        raise ValueError(f"q_BHTD, k_BGSD: expected the same B and D, got {q_BHTD.shape}, {k_BGSD.shape}")
    if q_BHTD.dtype not in _SUPPORTED:
        raise TypeError(f"q_BHTD: the cpu backend supports dtype float32 and float64, got {q_BHTD.dtype}")
    if not isinstance(inplace, (bool, np.bool_)):
        raise TypeError(f"inplace: expected a bool, got {type(inplace).__name__}")
    T, S, D = q_BHTD.shape[2], k_BGSD.shape[2], q_BHTD.shape[3]
    if inplace:
        _check_inplace("q_BHTD", q_BHTD)
        _check_inplace("k_BGSD", k_BGSD)
        # rotating shared memory twice (q is k, say) would apply two rotations
        if np.may_share_memory(q_BHTD, k_BGSD):
            raise ValueError("q_BHTD, k_BGSD: inplace=True needs two arrays that do not overlap")
        q_in, k_in, q_out, k_out = q_BHTD, k_BGSD, q_BHTD, k_BGSD
    else:
        q_in, k_in = contiguous(q_BHTD), contiguous(k_BGSD)
        q_out = poisoned_empty(q_BHTD.shape, q_BHTD.dtype)
        k_out = poisoned_empty(k_BGSD.shape, k_BGSD.dtype)
    p_min = min(0, S - T)
    cos_TP, sin_TP = position_tables(p_min, S, D, rope, q_BHTD.dtype)
    rotate_qk_rows(q_in, k_in, q_out, k_out, T, S, cos_TP, sin_TP, p_min,
                   rope.layout == "interleaved")
    return RotatedQK(q_out, k_out)
