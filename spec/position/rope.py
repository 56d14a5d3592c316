"""Rotary position embedding (RoPE): rotate pairs of q/k features by position-dependent angles.

Su et al., 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding"
(arXiv 2104.09864), section 3.2, eqs. 14-16. A query at position i and a key at
position j are rotated by R_i and R_j before their dot product; since rotations
compose, ``<R_i q, R_j k> = <q, R_{j-i} k>`` depends on the positions only through
i - j, which is what makes RoPE a relative encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

LAYOUTS = ("rotate_half", "interleaved")


@dataclass(frozen=True)
class RoPE:
    """A RoPE configuration, as the attention functions take it (``rope=RoPE()``).

    ``base`` is θ of Su et al. (10000 in the paper; 5e5 in Llama 3). ``layout`` says which
    features form a rotated pair: ``"rotate_half"`` pairs feature k with k + D/2
    (GPT-NeoX, Llama in Hugging Face), ``"interleaved"`` pairs 2k with 2k+1 (the
    paper's eq. 15, GPT-J, Meta's Llama). The two give the same scores up to a fixed
    permutation of the features of q and k, so a checkpoint must be read with the
    layout it was trained with.
    """

    base: float = 10000.0
    layout: str = "rotate_half"

    def __post_init__(self) -> None:
        check_base(self.base)
        check_layout(self.layout)


def check_base(base) -> float:
    if isinstance(base, (bool, np.bool_)) or not isinstance(base, (int, float, np.integer, np.floating)):
        raise TypeError(f"base: expected a real number, got {type(base).__name__}")
    if not (np.isfinite(base) and base > 1.0):
        raise ValueError(f"base: expected a finite number > 1, got {base}")
    return float(base)


def check_layout(layout) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    return layout


def inverse_frequencies(D: int, base: float = 10000.0) -> np.ndarray:
    """θ_k = base^(-2k/D) for k = 0 .. D/2 - 1 (Su et al., eq. 15), in float64."""
    if D % 2:
        raise ValueError(f"D: RoPE rotates pairs of features, so the width must be even, got {D}")
    return float(base) ** (-2.0 * np.arange(D // 2) / D)


class RopeTables(NamedTuple):
    """cos and sin of every angle position · θ_k, in the working dtype."""

    cos_TP: np.ndarray
    sin_TP: np.ndarray


def tables(positions_T: np.ndarray, D: int, base: float, dtype) -> RopeTables:
    """The cos/sin tables that :func:`rope` and every backend's kernel read.

    Angles are formed and evaluated in float64 and rounded once to ``dtype``: a float32
    angle at position 4096 would already be off by about 2e-4 rad. Kernels take these
    tables as input rather than calling sin/cos themselves, so that the spec and every
    backend rotate by bit-identical factors (this is also what fast implementations
    do: a cos/sin cache indexed by position).
    """
    # angle_tk = position_t · θ_k
    angle_TP = positions_T.astype(np.float64)[:, None] * inverse_frequencies(D, base)[None, :]
    return RopeTables(np.cos(angle_TP).astype(dtype), np.sin(angle_TP).astype(dtype))


def _check_positions(positions, T: int) -> np.ndarray:
    if not isinstance(positions, np.ndarray):
        raise TypeError(f"positions: expected a numpy.ndarray of ints, got {type(positions).__name__}")
    if positions.dtype.kind not in "iu":
        raise TypeError(f"positions: expected an integer dtype, got {positions.dtype}")
    if positions.shape != (T,):
        raise ValueError(f"positions: expected shape (T,)=({T},) like x_BHTD, got {positions.shape}")
    return positions.astype(np.int64)


def rotate(x_BHTD: np.ndarray, cos_TP: np.ndarray, sin_TP: np.ndarray, layout: str) -> np.ndarray:
    """Apply the rotation given by the tables: the arithmetic every backend reproduces.

    For each pair (x1, x2) and its angle: (x1·cos - x2·sin, x2·cos + x1·sin), two
    products and one sum per output, each rounded in x's dtype (no fused multiply-add).
    """
    P = x_BHTD.shape[-1] // 2
    if layout == "rotate_half":
        x1_BHTP, x2_BHTP = x_BHTD[..., :P], x_BHTD[..., P:]
    else:
        x1_BHTP, x2_BHTP = x_BHTD[..., 0::2], x_BHTD[..., 1::2]
    # R_θ (x1, x2) = (x1 cos θ - x2 sin θ, x2 cos θ + x1 sin θ)   (Su et al., eq. 13)
    y1_BHTP = x1_BHTP * cos_TP - x2_BHTP * sin_TP
    y2_BHTP = x2_BHTP * cos_TP + x1_BHTP * sin_TP
    y_BHTD = np.empty_like(x_BHTD)
    if layout == "rotate_half":
        y_BHTD[..., :P], y_BHTD[..., P:] = y1_BHTP, y2_BHTP
    else:
        y_BHTD[..., 0::2], y_BHTD[..., 1::2] = y1_BHTP, y2_BHTP
    return y_BHTD


def check_rope_input(name: str, x) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name}: expected 4 dimensions, got shape {x.shape}")
    if x.dtype not in (np.float16, np.float32, np.float64, np.longdouble):
        raise TypeError(f"{name}: expected a float dtype, got {x.dtype}")
    if x.shape[3] % 2:
        raise ValueError(f"{name}: RoPE rotates pairs of features, so D must be even, got {x.shape}")


def rope(
    x_BHTD: np.ndarray,
    *,
    positions: np.ndarray | None = None,
    offset: int = 0,
    base: float = 10000.0,
    layout: str = "rotate_half",
) -> np.ndarray:
    """Rotary position embedding of queries or keys.

    Math (Su et al., 2021, eqs. 14-15)
        θ_k = base^(-2k/D),  k = 0 .. D/2 - 1
        for the k-th pair (x1, x2) of the row at position p:
            (x1, x2) ↦ (x1 cos pθ_k - x2 sin pθ_k,  x2 cos pθ_k + x1 sin pθ_k)
        ⟨rope(q)_i, rope(k)_j⟩ depends on i and j only through i - j.

    Shapes
        x_BHTD with D even (any 4-D float array: keys are rotated as k_BGSD). Positions
        are ``positions`` (int array of shape (T,), any integers, negative included) if
        given, else ``offset + arange(T)``: a decoding step with a cache of n tokens
        rotates its new rows with ``offset=n``. Returns an array like x.

    Numerics
        Computes in x's dtype with the cos/sin of :func:`tables` (float64 angles rounded
        once). Each output is two rounded products and one rounded sum. NaN in a
        feature reaches only the other feature of its pair.
    """
    check_rope_input("x_BHTD", x_BHTD)
    T, D = x_BHTD.shape[2], x_BHTD.shape[3]
    base, layout = check_base(base), check_layout(layout)
    if positions is None:
        if isinstance(offset, (bool, np.bool_)) or not isinstance(offset, (int, np.integer)):
            raise TypeError(f"offset: expected an int, got {type(offset).__name__}")
        positions_T = int(offset) + np.arange(T, dtype=np.int64)
    else:
        if offset != 0:
            raise ValueError("offset: give either positions or offset, not both")
        positions_T = _check_positions(positions, T)
    cos_TP, sin_TP = tables(positions_T, D, base, x_BHTD.dtype)
    return rotate(x_BHTD, cos_TP, sin_TP, layout)


class RotatedQK(NamedTuple):
    """q and k rotated at the positions the attention functions give them."""

    q_BHTD: np.ndarray
    k_BGSD: np.ndarray


def rope_qk(q_BHTD: np.ndarray, k_BGSD: np.ndarray, *, rope: RoPE = RoPE()) -> RotatedQK:
    """Rotate queries and keys as attention with ``rope=`` does, for callers who want it apart.

    Math
        k_s ← R_s k_s for s = 0 .. S-1 and q_t ← R_i q_t with i = t + S - T: the query
        positions are bottom-right aligned with the keys (the last query sits at the
        last key's position), as the causal mask is, so T new queries after S - T
        cached keys are rotated at their true positions. Then
        ``attention(*rope_qk(q, k), v)`` equals ``attention(q, k, v, rope=rope)``.

    Shapes
        q_BHTD, k_BGSD (one float dtype, D even); returns RotatedQK(q_BHTD, k_BGSD).

    Numerics
        :func:`rope`'s: float64 angles, tables rounded once, two products and a sum.
    """
    if not isinstance(rope, RoPE):
        raise TypeError(f"rope: expected a spec.position.rope.RoPE, got {type(rope).__name__}")
    check_rope_input("q_BHTD", q_BHTD)
    check_rope_input("k_BGSD", k_BGSD)
    if q_BHTD.dtype != k_BGSD.dtype:
        raise TypeError(f"q_BHTD, k_BGSD: expected one dtype, got {q_BHTD.dtype}, {k_BGSD.dtype}")
    if q_BHTD.shape[3] != k_BGSD.shape[3] or q_BHTD.shape[0] != k_BGSD.shape[0]:
        raise ValueError(f"q_BHTD, k_BGSD: expected the same B and D, got {q_BHTD.shape}, {k_BGSD.shape}")
    T, S, D = q_BHTD.shape[2], k_BGSD.shape[2], q_BHTD.shape[3]
    q_cos, q_sin = tables(np.arange(T, dtype=np.int64) + (S - T), D, rope.base, q_BHTD.dtype)
    k_cos, k_sin = tables(np.arange(S, dtype=np.int64), D, rope.base, k_BGSD.dtype)
    return RotatedQK(rotate(q_BHTD, q_cos, q_sin, rope.layout),
                     rotate(k_BGSD, k_cos, k_sin, rope.layout))


def long_term_decay(distances_N: np.ndarray, D: int, base: float = 10000.0) -> np.ndarray:
    """Su et al.'s upper bound on |score| as a function of relative distance (section 3.4.3).

    Math
        With S_j = Σ_{k<j} exp(i·n·θ_k) (n the distance i - j of the two positions),
        Abel summation gives |Σ_k h_k exp(i·n·θ_k)| ≤ max_k |h_{k+1} - h_k| · Σ_j |S_j|,
        and the paper plots the relative bound (1 / (D/2)) · Σ_{j=1..D/2} |S_j|, which
        decays (with oscillations) as n grows: far tokens can only score less.

    Shapes
        distances_N any real distances; returns the bound at each, in float64.
    """
    theta_P = inverse_frequencies(D, base)
    phase_NP = np.exp(1j * np.asarray(distances_N, dtype=np.float64)[:, None] * theta_P[None, :])
    partial_NP = np.cumsum(phase_NP, axis=1)  # S_1 .. S_{D/2}
    return np.abs(partial_NP).mean(axis=1)
