"""The factored combination of RoPE and ALiBi "with a harmonic series" (Fulu Li, 2024).

Li, "The Nature of Mathematical Modeling and Probabilistic Optimization Engineering in
Generative AI" (arXiv 2410.18441) proposes "a factored combination of rotary
positional encoding (RoPE) and attention with linear biases (ALiBi) with a harmonic
series". The formula is not published in any source we could read
(shared/papers/notes.md, section 1.5), so this module implements three readings.
All three rotate q and k by RoPE and add a per-head distance penalty with the
harmonic slopes m_h = λ/h; they differ in the shape of the penalty:

``"additive"`` (the default, the most standard reading)
    a_hij = ⟨R_i q, R_j k⟩·scale - λ·m_h·d,        m_h = 1/h, d = |i - j|
    ALiBi's linear penalty with the harmonic series 1, 1/2, 1/3, ... as head slopes
    instead of ALiBi's geometric 2^(-8h/H). Head 1 is strongly local, head H nearly
    position-free (m_H = 1/H), a wider spread than the geometric slopes give.
``"harmonic_number"``
    a_hij = ⟨R_i q, R_j k⟩·scale - λ·m_h·H_d,      H_d = 1 + 1/2 + ... + 1/d
    the harmonic series summed over the distance: a penalty that grows like ln d + γ,
    so far context is damped logarithmically, not linearly.
``"multiplicative"``
    p_hij ∝ exp(⟨R_i q, R_j k⟩·scale) · (1 + d)^(-λ·m_h)
    the attention weight factorises into a rotary content term times a distance prior
    whose weights are the terms of the harmonic series (1, 1/2, 1/3, ... for λ·m_h = 1,
    head 1), a power law. Softmax turns the product into a sum of logits, so this is
    the additive bias -λ·m_h·ln(1 + d) and runs in the same fused kernels. (Multiplying
    the exponentials of any additive bias is the same function as adding it, so the
    factorisation read literally would only restate "additive"; the harmonic prior is
    what makes it a distinct scheme.)

Limits, each asserted by the tests: λ = 0 is plain RoPE attention in every reading;
``rope=None`` gives ALiBi-style attention with harmonic slopes (with ALiBi's own
linear penalty in the additive reading). Distances are |i - j| with the query at
i = t + S - T (bottom-right, as the causal mask), so causal attention sees i - j ≥ 0
and non-causal attention gets the symmetric penalty.
"""

from __future__ import annotations

import numpy as np

from spec.position.alibi import penalty
from spec.position.rope import RoPE

VARIANTS = {"additive": "linear", "harmonic_number": "harmonic_number", "multiplicative": "harmonic_prior"}
"""Reading of the combination -> the ``alibi_form`` the attention functions take."""


def harmonic_slopes(n_heads: int) -> np.ndarray:
    """m_h = 1/h for h = 1 .. H, in float64: the harmonic series as head slopes."""
    if isinstance(n_heads, (bool, np.bool_)) or not isinstance(n_heads, (int, np.integer)):
        raise TypeError(f"n_heads: expected an int, got {type(n_heads).__name__}")
    if n_heads < 1:
        raise ValueError(f"n_heads: expected at least 1, got {n_heads}")
    return 1.0 / np.arange(1, n_heads + 1, dtype=np.float64)


def options(
    n_heads: int, *, variant: str = "additive", lam: float = 1.0,
    rope: RoPE | None = RoPE(),  # noqa: B008 (a frozen dataclass)
) -> dict:
    """The attention keywords of one reading: ``attention(q, k, v, **options(H))``.

    Returns ``{"rope": rope, "alibi_slopes": λ·m_H, "alibi_form": ...}``. Every backend's
    attention function takes these, so the combination is computed inside the kernel
    with no T x S bias. ``lam`` (λ ≥ 0) weighs the distance penalty against RoPE.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {tuple(VARIANTS)}, got {variant!r}")
    if isinstance(lam, (bool, np.bool_)) or not isinstance(lam, (int, float, np.integer, np.floating)):
        raise TypeError(f"lam: expected a real number, got {type(lam).__name__}")
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam: expected a finite number >= 0, got {lam}")
    return {"rope": rope, "alibi_slopes": float(lam) * harmonic_slopes(n_heads),
            "alibi_form": VARIANTS[variant]}


def distance_prior(d: np.ndarray, slope: float) -> np.ndarray:
    """The multiplicative reading's prior weight (1 + d)^(-slope), in float64.

    For slope 1 these are the harmonic series' terms 1, 1/2, 1/3, ...; the fused kernels
    use its logarithm, -slope · ln(1 + d) (:func:`spec.position.alibi.penalty`).
    """
    return np.exp(-slope * penalty(d, "harmonic_prior"))
