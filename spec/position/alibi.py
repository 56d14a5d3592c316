"""ALiBi: attention with linear biases, and the distance penalties the fused kernels take.

Press, Smith and Lewis, 2022, "Train Short, Test Long: Attention with Linear Biases
Enables Input Length Extrapolation" (ICLR 2022, arXiv 2108.12409), section 3. No
position is added to the embeddings; instead each head h adds -m_h · (i - j) to the
score of query i and key j, with a fixed, head-specific slope m_h.
"""

from __future__ import annotations

import math

import numpy as np

FORMS = ("linear", "harmonic_number", "harmonic_prior")
"""Penalty shapes f(d) of the distance d ≥ 0 (bias = -m·f(d)): ``linear`` is ALiBi's d;
the two harmonic ones are readings of the RoPE–ALiBi combination
(:mod:`spec.position.rope_alibi`): the harmonic number H_d, and ln(1 + d), the log of
the harmonic-series weight 1/(1 + d)."""


def _power_of_two_slopes(n: int) -> list[float]:
    # the geometric sequence starting at 2^(-8/n) with that same ratio, written as
    # 2^(-8h/n) so that every slope is one correctly rounded power (exact for 2^-k)
    return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]


def slopes(n_heads: int) -> np.ndarray:
    """ALiBi's head slopes m_1 .. m_H (Press et al., section 3), in float64.

    For H a power of two: the geometric sequence 2^(-8/H), 2^(-16/H), ..., 2^(-8)
    (H = 8 gives 1/2, 1/4, ..., 1/256). For other H the paper's recipe: the slopes of
    the largest power of two n below H, followed by every other slope of 2n
    (the odd-numbered ones, 2^(-4/n), 2^(-12/n), ...) until there are H; these
    interleave between the first set, so the slopes stay spread over the same range.
    """
    if isinstance(n_heads, (bool, np.bool_)) or not isinstance(n_heads, (int, np.integer)):
        raise TypeError(f"n_heads: expected an int, got {type(n_heads).__name__}")
    if n_heads < 1:
        raise ValueError(f"n_heads: expected at least 1, got {n_heads}")
    n = 1 << (int(n_heads).bit_length() - 1)  # the largest power of two <= H
    m = _power_of_two_slopes(n)
    m += _power_of_two_slopes(2 * n)[0::2][: n_heads - n]
    return np.array(m, dtype=np.float64)


def penalty(d: np.ndarray, form: str = "linear") -> np.ndarray:
    """f(d) for distances d ≥ 0 (ints), in float64: d, H_d = Σ_{k≤d} 1/k, or ln(1 + d)."""
    check_form(form)
    d = np.asarray(d, dtype=np.int64)
    if (d < 0).any():
        raise ValueError("d: distances must be >= 0")
    if form == "linear":
        return d.astype(np.float64)
    if form == "harmonic_prior":
        return np.log1p(d.astype(np.float64))
    # H_d from a prefix sum of 1/k; H_0 = 0
    top = int(d.max()) if d.size else 0
    h_N = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1, dtype=np.float64))])
    return h_N[d]


def check_form(form) -> str:
    if form not in FORMS:
        raise ValueError(f"alibi_form: expected one of {FORMS}, got {form!r}")
    return form


def bias(
    slopes_H: np.ndarray, T: int, S: int, *, symmetric: bool = False, form: str = "linear"
) -> np.ndarray:
    """The ALiBi bias of every (head, query, key), materialised: what fused kernels avoid.

    Math (Press et al., section 3, fig. 3)
        i' = i + S - T                      (bottom-right aligned, as causal attention)
        causal:     bias_hij = -m_h · (i' - j)
        symmetric:  bias_hij = -m_h · |i' - j|    (encoders: MosaicBERT, BEACON)
    With ``form`` other than ``"linear"`` the distance is replaced by f(|i' - j|) of
    :func:`penalty` (the harmonic readings of :mod:`spec.position.rope_alibi`).

    Shapes
        slopes_H (float, any dtype), T queries, S keys; returns bias_HTS in slopes' dtype.

    Numerics
        Each entry is -(m_h · f(d)), one rounded product in slopes' dtype, as the fused
        kernels compute it. The non-symmetric bias is +m_h · (j - i') for keys after the
        query: under causal attention those keys are masked, which is how Press et al.
        use it; non-causal use wants ``symmetric=True``. Non-linear forms are defined on
        |i' - j| only.
    """
    slopes_H = _check_slopes(slopes_H)
    check_form(form)
    i_T1 = np.arange(T)[:, None] + (S - T)
    j_1S = np.arange(S)[None, :]
    d_TS = i_T1 - j_1S
    if form != "linear" and not symmetric:
        raise ValueError(f"alibi_form {form!r} is defined on |i - j|: pass symmetric=True")
    if symmetric:
        f_TS = penalty(np.abs(d_TS), form)
    else:
        f_TS = d_TS.astype(np.float64)
    f_TS = f_TS.astype(slopes_H.dtype)
    # bias = -m · f(d)
    return -(slopes_H[:, None, None] * f_TS[None])


def _check_slopes(slopes_H) -> np.ndarray:
    if not isinstance(slopes_H, np.ndarray):
        raise TypeError(f"slopes_H: expected a numpy.ndarray, got {type(slopes_H).__name__}")
    if slopes_H.ndim != 1 or slopes_H.dtype.kind != "f":
        raise TypeError(f"slopes_H: expected a 1-D float array, got shape {slopes_H.shape} dtype {slopes_H.dtype}")
    if not np.isfinite(slopes_H).all():
        raise ValueError("slopes_H: expected finite slopes")
    return slopes_H


def low_rank_qk(
    q_BHTD: np.ndarray, k_BGSD: np.ndarray, slopes_H: np.ndarray, *, scale: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """ALiBi as a rank-2 augmentation of q and k (FlashBias; Wu et al., 2025, arXiv 2505.12044).

    Math
        -m_h (i' - j) = m_h · (j - i') = ⟨m_h · [1, -i'], [j, 1]⟩, a rank-2 bias, so
            q'_i = [scale · q_i | m_h, -m_h · i'],   k'_j = [k_j | j, 1]
        give ⟨q'_i, k'_j⟩ = scale · q_i·k_j - m_h (i' - j): plain attention with
        ``scale=1`` on (q', k') is causal ALiBi attention on (q, k), and any kernel
        without bias support (or with fast D + 2 paths) runs it. (The issue text writes
        k' = [k | -j, 1], which has the opposite sign of the bias.)

    Shapes
        q_BHTD, k_BGSD, slopes_H; returns q_BHT(D+2), k_BGS(D+2). k' carries no head
        slope, so GQA/MQA sharing of key heads is preserved.

    Numerics
        Only the linear, causal form is rank 2 (|i - j| and the harmonic forms have full
        rank); use it with ``causal=True``, where keys after the query are masked. In
        floating point the bias arises as m·j - m·i' (two products of size m·T, then a
        cancellation), so its error grows with T: about ulp(m·T) per score, against
        ulp(m·(i' - j)) for the direct bias.
    """
    B, H, T, D = q_BHTD.shape
    S = k_BGSD.shape[2]
    slopes_H = _check_slopes(slopes_H)
    if slopes_H.shape != (H,):
        raise ValueError(f"slopes_H: expected shape (H,)=({H},), got {slopes_H.shape}")
    dtype = q_BHTD.dtype
    scale = dtype.type(1.0 / math.sqrt(D) if scale is None else scale)
    m_H11 = slopes_H.astype(dtype)[:, None, None]
    i_T = (np.arange(T) + (S - T)).astype(dtype)
    # q' = [scale·q | m, -m·i']
    q_aug = np.concatenate(
        [scale * q_BHTD,
         np.broadcast_to(m_H11[None], (B, H, T, 1)),
         np.broadcast_to(-(m_H11 * i_T[None, :, None])[None], (B, H, T, 1))],
        axis=-1,
    )
    # k' = [k | j, 1]
    G = k_BGSD.shape[1]
    j_S1 = np.arange(S, dtype=dtype)[:, None]
    k_aug = np.concatenate(
        [k_BGSD,
         np.broadcast_to(j_S1, (B, G, S, 1)),
         np.ones((B, G, S, 1), dtype)],
        axis=-1,
    )
    return q_aug, k_aug
