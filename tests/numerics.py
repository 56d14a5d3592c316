"""Numerical checks shared by the tests and the lessons' live checks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def central_differences(loss_of: Callable[[], float], w: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """∂loss/∂w entry by entry, (loss(w + ε) − loss(w − ε)) / 2ε, float64.

    ``loss_of`` takes no argument and reads ``w`` itself (a closure over the arrays of a
    model); each entry of ``w`` is changed in place and restored before the next.
    """
    g = np.zeros_like(w)
    for i in np.ndindex(w.shape):
        old = w[i]
        w[i] = old + eps
        up = loss_of()
        w[i] = old - eps
        down = loss_of()
        w[i] = old
        g[i] = (up - down) / (2 * eps)
    return g
