"""Positional options of the attention functions: RoPE and ALiBi-style distance penalties.

Every attention function (spec and backends) takes ``rope=None`` (a
:class:`spec.position.rope.RoPE`), ``alibi_slopes=None`` (m_H) and ``alibi_form``
(the penalty shape, :data:`spec.position.alibi.FORMS`). This module validates them and
holds the two pieces of arithmetic the spec and every kernel share:

    positions        query t sits at i = t + S - T, key s at j = s (bottom-right, like
                     the causal mask), so the last query and the last key coincide
    rotation         q_t ← R_i q_t, k_s ← R_j k_s with the cos/sin tables of
                     :func:`spec.position.rope.tables`
    distance bias    score_ts = scale · q̃_t·k̃_s + (bias_ts + alibi_hts),
                     alibi_hts = -(m_h · f(|i - j|))

The distance is |i - j| as in FlashAttention's ``alibi_slopes``: under causal
attention that is i - j on every visible key (Press et al.'s bias), without causal it
is the symmetric bias of encoders (MosaicBERT). f(d) is tabulated once per call
(:func:`penalty_table`) so that kernels index a table of max(T, S) numbers instead of
holding a T x S bias.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spec.position.alibi import check_form, penalty
from spec.position.rope import RoPE, rope_qk, rotate, tables


class Positions(NamedTuple):
    """Validated positional options, slopes already in the working dtype."""

    rope: RoPE | None
    slopes_H: np.ndarray | None
    form: str

    @property
    def any(self) -> bool:
        return self.rope is not None or self.slopes_H is not None


NO_POSITIONS = Positions(None, None, "linear")


def check_positions(rope, alibi_slopes, alibi_form, *, H: int, D: int, dtype) -> Positions:
    """Validate the positional keywords of an attention call with H heads of width D."""
    if rope is not None:
        if not isinstance(rope, RoPE):
            raise TypeError(f"rope: expected a spec.position.rope.RoPE or None, got {type(rope).__name__}")
        if D % 2:
            raise ValueError(f"rope: RoPE rotates pairs of features, so D must be even, got D={D}")
    check_form(alibi_form)
    slopes_H = None
    if alibi_slopes is not None:
        if not isinstance(alibi_slopes, np.ndarray):
            raise TypeError(f"alibi_slopes: expected a numpy.ndarray, got {type(alibi_slopes).__name__}")
        if alibi_slopes.dtype.kind != "f":
            raise TypeError(f"alibi_slopes: expected a float dtype, got {alibi_slopes.dtype}")
        if alibi_slopes.shape != (H,):
            raise ValueError(f"alibi_slopes: expected shape (H,)=({H},), got {alibi_slopes.shape}")
        if not np.isfinite(alibi_slopes).all() or (alibi_slopes < 0).any():
            raise ValueError("alibi_slopes: expected finite slopes >= 0 (a penalty, not a reward)")
        slopes_H = alibi_slopes.astype(dtype)
    return Positions(rope, slopes_H, alibi_form)


def query_positions(T: int, S: int) -> np.ndarray:
    """i = t + S - T for t = 0 .. T-1: bottom-right aligned (negative when T > S)."""
    return np.arange(T, dtype=np.int64) + (S - T)


def rotate_qk(q_BHTD, k_BGSD, pos: Positions):
    """q and k rotated at their positions (unchanged without RoPE)."""
    if pos.rope is None:
        return q_BHTD, k_BGSD
    return rope_qk(q_BHTD, k_BGSD, rope=pos.rope)


def unrotate(dx_BHTD, positions_T, pos: Positions):
    """Rᵀ dx: the gradient through a rotation is the rotation by the opposite angle."""
    if pos.rope is None:
        return dx_BHTD
    cos_TP, sin_TP = tables(-positions_T, dx_BHTD.shape[3], pos.rope.base, dx_BHTD.dtype)
    return rotate(dx_BHTD, cos_TP, sin_TP, pos.rope.layout)


def penalty_table(n: int, form: str, dtype) -> np.ndarray:
    """f(0) .. f(n-1) in the working dtype: the table kernels index by distance."""
    return penalty(np.arange(n), form).astype(dtype)


def alibi_tile(pos: Positions, T: int, S: int, t0: int, t1: int, s0: int, s1: int, dtype):
    """alibi_1HCC = -(m_h · f(|i - j|)) on queries [t0, t1) and keys [s0, s1), or None."""
    if pos.slopes_H is None:
        return None
    i_C1 = query_positions(T, S)[t0:t1, None]
    j_1C = np.arange(s0, s1)[None, :]
    f_CC = penalty(np.abs(i_C1 - j_1C), pos.form).astype(dtype)
    # alibi = -(m · f(d))
    return -(pos.slopes_H[None, :, None, None] * f_CC[None, None])


def materialise(q_BHTD, k_BGSD, bias, pos: Positions):
    """(q̃, k̃, bias + alibi): the same problem without positional options, in q's dtype
    exactly as the spec computes it. Plain attention on it is attention with ``pos``;
    unlike the fused form it is equivariant under permuting T and S, which is what the
    tolerance baselines of the backends' checks need. The bias is T x S: for checks only.
    """
    if not pos.any:
        return q_BHTD, k_BGSD, bias
    T, S = q_BHTD.shape[2], k_BGSD.shape[2]
    q_BHTD, k_BGSD = rotate_qk(q_BHTD, k_BGSD, pos)
    return q_BHTD, k_BGSD, add_bias(bias, alibi_tile(pos, T, S, 0, T, 0, S, q_BHTD.dtype))


def add_bias(bias_BHCC, alibi_1HCC):
    """bias + alibi, the one term the score adds (either may be absent)."""
    if alibi_1HCC is None:
        return bias_BHCC
    if bias_BHCC is None:
        return alibi_1HCC
    return bias_BHCC + alibi_1HCC
