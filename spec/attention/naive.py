"""Softmax attention, written out in full: the oracle every other form is measured against.

Called on float64 inputs this is the reference of the tolerance policy; called on
float32 or float16 inputs it is the low-precision baseline (it computes in the
dtype it is given).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spec.attention.checks import check_attention_inputs, check_scale
from spec.attention.positional import add_bias, alibi_tile, check_positions, rotate_qk
from spec.position.rope import RoPE


class AttentionOut(NamedTuple):
    """Output of an attention forward pass."""

    o_BHTE: np.ndarray
    """The attention output."""
    lse_BHT: np.ndarray
    """log Σ_s exp(score_ts) over visible keys: what the backward pass needs; -inf for a row
    with no visible key."""


def causal_visible_TS(T: int, S: int, t0: int = 0, t1: int | None = None,
                      s0: int = 0, s1: int | None = None) -> np.ndarray:
    """Bottom-right causal mask: query t sees key s iff s <= t + (S - T).

    The last query is aligned with the last key, as in FlashAttention 2 and in
    decoding with a KV cache (T new queries after S - T cached keys). When S < T the
    first T - S queries see no key at all. ``t0:t1, s0:s1`` select one tile of it
    (the whole T x S mask by default), built without the rest.
    """
    t_T1 = np.arange(t0, T if t1 is None else t1)[:, None]
    s_1S = np.arange(s0, S if s1 is None else s1)[None, :]
    return s_1S <= t_T1 + (S - T)


def expand_kv_heads(x_BGSX: np.ndarray, H: int) -> np.ndarray:
    """Repeat each key/value head H/G times: query head h reads kv head h // (H/G).

    This is the grouping of GQA (Ainslie et al., 2023) and of PyTorch's
    ``enable_gqa``: consecutive query heads share one key/value head.
    """
    return np.repeat(x_BGSX, H // x_BGSX.shape[1], axis=1)


def attention(
    q_BHTD: np.ndarray,
    k_BGSD: np.ndarray,
    v_BGSE: np.ndarray,
    *,
    causal: bool = False,
    scale: float | None = None,
    bias: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    rope: RoPE | None = None,
    alibi_slopes: np.ndarray | None = None,
    alibi_form: str = "linear",
) -> AttentionOut:
    """Scaled dot-product softmax attention (the oracle).

    Math
        score_ts = scale · q_t · k_s + bias_ts                          (Vaswani et al., 2017, eq. 1)
        with positions (spec.attention.positional): q_t ← R_i q_t, k_s ← R_s k_s
        (``rope``) and bias_ts ← bias_ts - m_h · f(|i - s|) (``alibi_slopes``,
        ``alibi_form``), where query t sits at i = t + S - T
        visible_ts = causal_ts ∧ mask_ts ∧ (score_ts > -inf)
        m_t = max_{s visible} score_ts
        p_ts = exp(score_ts - m_t) · [visible_ts],   l_t = Σ_s p_ts
        o_t = Σ_s p_ts v_s / l_t,                     lse_t = m_t + log l_t

    Shapes
        q_BHTD, k_BGSD, v_BGSE with G dividing H (MHA G=H, GQA, MQA G=1); query head h
        reads key/value head h // (H/G). ``bias`` (float, q's dtype) and ``mask`` (bool,
        True = may attend) are 4-D with each dimension 1 or equal to (B, H, T, S).
        ``alibi_slopes`` is a float array of shape (H,); ``rope`` needs D even.
        Returns o_BHTE and lse_BHT.

    Numerics
        Computes in the input dtype: float16, float32, float64, or longdouble (the
        oracle of float64 work, see spec.tolerance). ``scale`` defaults to 1/sqrt(D). ``causal`` is
        bottom-right aligned: query t sees keys s <= t + S - T (see
        :func:`causal_visible_TS`). Subtracting the row maximum keeps logits of
        any finite size (1e4 and beyond) from overflowing. A row with no visible key
        is defined, not NaN: o = 0 and lse = -inf. NaN in q, k or v propagates to the
        rows that read it; bias rejects NaN and +inf.
    """
    B, H, G, T, S, D, E = check_attention_inputs(q_BHTD, k_BGSD, v_BGSE, bias=bias, mask=mask,
                                                   causal=causal)
    dtype = q_BHTD.dtype
    scale = dtype.type(check_scale(scale, D))
    pos = check_positions(rope, alibi_slopes, alibi_form, H=H, D=D, dtype=dtype)
    # q ← R_i q, k ← R_j k
    q_BHTD, k_BGSD = rotate_qk(q_BHTD, k_BGSD, pos)
    k_BHSD = expand_kv_heads(k_BGSD, H)
    v_BHSE = expand_kv_heads(v_BGSE, H)

    # score = scale · q kᵀ + bias
    score_BHTS = scale * np.einsum("BHTD,BHSD->BHTS", q_BHTD, k_BHSD)
    bias = add_bias(bias, alibi_tile(pos, T, S, 0, T, 0, S, dtype))
    if bias is not None:
        score_BHTS = score_BHTS + bias
    # a -inf score (from bias) is masked; NaN stays visible so that it propagates
    visible_BHTS = score_BHTS != -np.inf
    if causal:
        visible_BHTS = visible_BHTS & causal_visible_TS(T, S)
    if mask is not None:
        visible_BHTS = visible_BHTS & mask
    # m = rowmax over visible keys; rows with none get 0 so that exp() below stays finite
    score_BHTS = np.where(visible_BHTS, score_BHTS, dtype.type(-np.inf))
    m_BHT = np.max(score_BHTS, axis=-1)
    any_BHT = visible_BHTS.any(axis=-1)
    m_safe_BHT = np.where(any_BHT, m_BHT, dtype.type(0))
    # p = exp(score - m) on visible keys (masked scores are -inf, so p = 0), l = Σ p
    p_BHTS = np.exp(score_BHTS - m_safe_BHT[..., None])
    l_BHT = p_BHTS.sum(axis=-1)
    # o = p v / l;  lse = m + log l  (o = 0, lse = -inf on rows with no visible key)
    l_safe_BHT = np.where(any_BHT, l_BHT, dtype.type(1))
    o_BHTE = np.einsum("BHTS,BHSE->BHTE", p_BHTS, v_BHSE) / l_safe_BHT[..., None]
    with np.errstate(divide="ignore"):
        lse_BHT = np.where(any_BHT, m_safe_BHT + np.log(l_safe_BHT), dtype.type(-np.inf))
    return AttentionOut(o_BHTE.astype(dtype, copy=False), lse_BHT.astype(dtype, copy=False))
