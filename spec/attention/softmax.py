"""The row softmax of attention and its one-pass (online) form.

Attention normalises every row of its score matrix with a softmax and keeps the
row's log-sum-exp for the backward pass. FlashAttention never holds a whole row,
so it computes the normaliser *online*: a running maximum m and a running sum l
that is rescaled whenever m grows (Milakov & Gimelshein, 2018, "Online normalizer
calculation for softmax", Algorithm 3). This module states both forms on a plain
score matrix, without q, k and v, so that the recurrence can be read, tested and
ported on its own: it is the worked example that every CUDA gate (NVRTC compile,
CPU emulator, GPU) is proven on first (``backends/cuda/softmax.cu``).

Ladder: :func:`softmax` (two passes, the oracle) → :func:`online_softmax` (one pass
for m and l over tiles of ``tile_s`` columns, then one for p); they agree to
~1e-12 in float64.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spec.attention.checks import FLOAT_DTYPES, check_tile


class SoftmaxOut(NamedTuple):
    """Row probabilities and the row log-sum-exp."""

    p_TS: np.ndarray
    lse_T: np.ndarray


def check_softmax_layout(x_TS) -> None:
    """``x_TS`` is a 2-D float array with at least one row and one column."""
    if not isinstance(x_TS, np.ndarray):
        raise TypeError(f"x_TS: expected a numpy.ndarray, got {type(x_TS).__name__}")
    if x_TS.ndim != 2:
        raise ValueError(f"x_TS: expected 2 dimensions (TS), got shape {x_TS.shape}")
    if x_TS.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"x_TS: expected dtype float16, float32, float64 or longdouble, got {x_TS.dtype}"
        )
    if min(x_TS.shape) == 0:
        raise ValueError(f"x_TS: every dimension must be at least 1, got shape {x_TS.shape}")


def check_softmax_input(x_TS) -> None:
    """The layout of :func:`check_softmax_layout`, and no +inf.

    -inf is a masked score (probability 0). NaN propagates to its row. +inf defines
    no probability (exp(inf - inf) is NaN) and is rejected, as attention's bias
    rejects it. Backends whose arrays live on a GPU check the layout on a proxy and
    the values on the device.
    """
    check_softmax_layout(x_TS)
    if np.isposinf(x_TS).any():
        raise ValueError("x_TS: +inf is not allowed (use -inf to mask a score)")


def _normalise(x_TS: np.ndarray, m_T: np.ndarray, l_T: np.ndarray) -> SoftmaxOut:
    """p = exp(x - m) / l and lse = m + log l, with empty rows defined."""
    dtype = x_TS.dtype
    # a row of only -inf scores has no visible entry: p = 0, lse = -inf (as attention)
    empty_T = m_T == -np.inf
    m_safe_T = np.where(empty_T, dtype.type(0), m_T)
    l_safe_T = np.where(empty_T, dtype.type(1), l_T)
    # p_ts = exp(x_ts - m_t) / l_t
    with np.errstate(over="ignore"):  # x - m below float16's range is -inf: exp gives 0, as it should
        p_TS = np.exp(x_TS - m_safe_T[:, None]) / l_safe_T[:, None]
    # lse_t = m_t + log l_t
    lse_T = np.where(empty_T, dtype.type(-np.inf), m_safe_T + np.log(l_safe_T))
    return SoftmaxOut(p_TS.astype(dtype, copy=False), lse_T.astype(dtype, copy=False))


def softmax(x_TS: np.ndarray) -> SoftmaxOut:
    """Softmax of every row of a score matrix, and the row log-sum-exp (the oracle).

    Math
        m_t = max_s x_ts,   l_t = Σ_s exp(x_ts - m_t)
        p_ts = exp(x_ts - m_t) / l_t,   lse_t = m_t + log l_t = log Σ_s exp(x_ts)

    Shapes
        x_TS: rows t (queries), columns s (keys). Returns p_TS and lse_T.

    Numerics
        Computes in the input dtype (float16, float32, float64, or longdouble as the
        oracle of float64 work). Subtracting m keeps any finite score from
        overflowing; in float16, x - m may round to -inf (below -65504), where exp
        gives 0, the right answer. -inf is a masked score: p = 0 there; a row of
        only -inf is defined, p = 0 and lse = -inf. NaN anywhere in a row makes the
        whole row (p and lse) NaN. +inf is rejected.
    """
    check_softmax_input(x_TS)
    # m_t = max_s x_ts (NaN propagates through np.max)
    m_T = np.max(x_TS, axis=1)
    # l_t = Σ_s exp(x_ts - m_t); on empty rows m = -inf and _normalise ignores l
    with np.errstate(invalid="ignore", over="ignore"):
        l_T = np.exp(x_TS - m_T[:, None]).sum(axis=1)
    return _normalise(x_TS, m_T, l_T)


def online_softmax(x_TS: np.ndarray, *, tile_s: int = 64) -> SoftmaxOut:
    """The same softmax with m and l computed in one pass over column tiles.

    Math (Milakov & Gimelshein, 2018, Algorithm 3, per tile instead of per element)
        for each tile X of ``tile_s`` columns:
            m' = max(m, rowmax X)
            l  = l · exp(m - m') + Σ_s exp(X_s - m'),   m = m'
        then p and lse as in :func:`softmax`. Starts from m = -inf, l = 0.

    Shapes
        As :func:`softmax`.

    Numerics
        As :func:`softmax`. While a row has seen only -inf, m' = -inf and the
        rescale exp(m - m') would be exp(-inf + inf) = NaN, so l stays 0 instead:
        nothing has been summed yet. Each tile rescales l once, so the result
        differs from :func:`softmax` only by the rounding of the rescales.
    """
    check_softmax_input(x_TS)
    tile_s = check_tile("tile_s", tile_s)
    T, S = x_TS.shape
    dtype = x_TS.dtype
    m_T = np.full(T, -np.inf, dtype=dtype)
    l_T = np.zeros(T, dtype=dtype)
    for s0 in range(0, S, tile_s):
        x_TC = x_TS[:, s0:s0 + tile_s]
        # m' = max(m, rowmax X)
        m_new_T = np.maximum(m_T, np.max(x_TC, axis=1))
        seen_T = m_new_T != -np.inf
        m_safe_T = np.where(seen_T, m_new_T, dtype.type(0))
        # l = l · exp(m - m') + Σ exp(X - m'), only on rows that have seen a score
        with np.errstate(invalid="ignore", over="ignore"):
            rescale_T = np.exp(m_T - m_safe_T)
            tile_sum_T = np.exp(x_TC - m_safe_T[:, None]).sum(axis=1)
        l_T = np.where(seen_T, l_T * rescale_T + tile_sum_T, l_T)
        m_T = m_new_T
    return _normalise(x_TS, m_T, l_T)
