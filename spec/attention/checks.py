"""Input validation shared by every attention function (spec and backends).

Every public attention function calls :func:`check_attention_inputs` first, so a
bad call fails the same way whichever implementation it reaches: a ``TypeError``
for a wrong type or dtype, a ``ValueError`` for a wrong shape or value, each naming
the argument, what was expected and what was received.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# longdouble (x86-64: 80-bit extended) is accepted so that the spec can serve as the
# oracle for float64 results (see spec.tolerance.oracle_dtype).
FLOAT_DTYPES = tuple(
    dict.fromkeys(np.dtype(t) for t in (np.float16, np.float32, np.float64, np.longdouble))
)


class AttentionShape(NamedTuple):
    """The sizes of one attention problem, read off validated inputs."""

    B: int
    H: int
    G: int
    T: int
    S: int
    D: int
    E: int


def _check_array(name: str, x, ndim: int, letters: str) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(
            f"{name}: expected {ndim} dimensions ({letters}), got shape {x.shape}"
        )


def _check_float(name: str, x: np.ndarray) -> None:
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name}: expected dtype float16, float32, float64 or longdouble, got {x.dtype}"
        )


def check_scale(scale, D: int) -> float:
    """Return the softmax scale as a Python float; ``None`` means ``1/sqrt(D)``."""
    if scale is None:
        return 1.0 / math.sqrt(D)
    if isinstance(scale, (bool, np.bool_)) or not isinstance(
        scale, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"scale: expected a real number or None, got {type(scale).__name__}")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite number, got {scale}")
    return scale


def _check_broadcastable(name: str, x: np.ndarray, full: tuple[int, ...]) -> None:
    """Explicit broadcasting only: 4 dimensions, each 1 or the full size."""
    _check_array(name, x, 4, "BHTS")
    if any(n not in (1, f) for n, f in zip(x.shape, full)):
        raise ValueError(
            f"{name}: expected shape broadcastable to (B,H,T,S)={full} "
            f"(each dimension 1 or full), got {x.shape}"
        )


def check_attention_inputs(
    q_BHTD, k_BGSD, v_BGSE, *, bias=None, mask=None, causal=False
) -> AttentionShape:
    """Validate q, k, v, the optional bias and mask, and ``causal``; return the problem sizes.

    Rules: q, k, v are 4-D float arrays of one dtype; B and the key/value length S
    agree; G (key/value heads) divides H (query heads), which covers MHA (G = H),
    GQA and MQA (G = 1); ``bias`` is a float array of the same dtype and ``mask`` a
    bool array, both 4-D with each dimension 1 or equal to (B, H, T, S). ``bias``
    may hold -inf (a masked score) but not +inf or NaN, which define no
    probability. ``causal`` is a bool (NumPy's too): a truthy string or array would
    otherwise pick a mask silently.
    """
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    _check_array("q_BHTD", q_BHTD, 4, "BHTD")
    _check_array("k_BGSD", k_BGSD, 4, "BGSD")
    _check_array("v_BGSE", v_BGSE, 4, "BGSE")
    for name, x in (("q_BHTD", q_BHTD), ("k_BGSD", k_BGSD), ("v_BGSE", v_BGSE)):
        _check_float(name, x)
    if not (q_BHTD.dtype == k_BGSD.dtype == v_BGSE.dtype):
        raise TypeError(
            "q_BHTD, k_BGSD, v_BGSE: expected one dtype, got "
            f"{q_BHTD.dtype}, {k_BGSD.dtype}, {v_BGSE.dtype}"
        )
    B, H, T, D = q_BHTD.shape
    Bk, G, S, Dk = k_BGSD.shape
    Bv, Gv, Sv, E = v_BGSE.shape
    if Bk != B or Bv != B:
        raise ValueError(
            f"batch size B differs: q_BHTD {q_BHTD.shape}, k_BGSD {k_BGSD.shape}, "
            f"v_BGSE {v_BGSE.shape}"
        )
    if Dk != D:
        raise ValueError(
            f"k_BGSD: expected width D={D} as in q_BHTD {q_BHTD.shape}, got {k_BGSD.shape}"
        )
    if Gv != G or Sv != S:
        raise ValueError(
            f"v_BGSE: expected G={G} heads and S={S} positions as in k_BGSD "
            f"{k_BGSD.shape}, got {v_BGSE.shape}"
        )
    if min(B, H, T, D, G, S, E) == 0:
        # An empty problem has nothing to define; reject it rather than return
        # arrays whose meaning (e.g. lse of a row over zero keys) is a convention.
        raise ValueError(
            "q_BHTD, k_BGSD, v_BGSE: every dimension must be at least 1, got "
            f"{q_BHTD.shape}, {k_BGSD.shape}, {v_BGSE.shape}"
        )
    if H % G != 0:
        raise ValueError(
            f"k_BGSD: key/value heads G={G} must divide query heads H={H} "
            f"(q_BHTD {q_BHTD.shape}, k_BGSD {k_BGSD.shape})"
        )
    full = (B, H, T, S)
    if bias is not None:
        _check_broadcastable("bias", bias, full)
        if bias.dtype != q_BHTD.dtype:
            raise TypeError(f"bias: expected dtype {q_BHTD.dtype} like q_BHTD, got {bias.dtype}")
        if np.isnan(bias).any() or np.isposinf(bias).any():
            raise ValueError("bias: +inf and NaN are not allowed (use -inf or mask to forbid a key)")
    if mask is not None:
        _check_broadcastable("mask", mask, full)
        if mask.dtype != np.bool_:
            raise TypeError(f"mask: expected dtype bool (True = may attend), got {mask.dtype}")
    return AttentionShape(B, H, G, T, S, D, E)


def check_tile(name: str, tile) -> int:
    """Tile sizes are positive Python or NumPy integers."""
    if isinstance(tile, (bool, np.bool_)) or not isinstance(tile, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive int, got {type(tile).__name__}")
    if tile < 1:
        raise ValueError(f"{name}: expected a positive int, got {tile}")
    return int(tile)


def check_backward_inputs(shape: AttentionShape, q_BHTD, o_BHTE, lse_BHT, do_BHTE) -> None:
    """The forward outputs and the output gradient must match the problem."""
    B, H, T, E = shape.B, shape.H, shape.T, shape.E
    for name, x, letters, want in (
        ("o_BHTE", o_BHTE, "BHTE", (B, H, T, E)),
        ("lse_BHT", lse_BHT, "BHT", (B, H, T)),
        ("do_BHTE", do_BHTE, "BHTE", (B, H, T, E)),
    ):
        _check_array(name, x, len(want), letters)
        if x.shape != want:
            raise ValueError(f"{name}: expected shape {want}, got {x.shape}")
        if x.dtype != q_BHTD.dtype:
            raise TypeError(f"{name}: expected dtype {q_BHTD.dtype} like q_BHTD, got {x.dtype}")
