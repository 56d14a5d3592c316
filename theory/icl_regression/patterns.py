"""Read the paper's patterns off trained weights (He et al. 2025; notes 2.5).

For each head h, from the merged key–query matrix KQ_h (D×D, D = d + 1) and the
output–value row ov_h (length D):

* ω_h, the *effective* key–query diagonal: the mean of diag(KQ_h[:d, :d]) times the
  softmax scale 1/√(d+1), so that the head weighs example ℓ by exp(ω_h x_ℓᵀ x_q). The
  paper's code logs mean diag/√(d+2) instead (notes 2.5, 2.9); :attr:`Patterns.omega_logged_H`
  is that number, the one the paper's "|ω| ≈ 0.13" is.
* how far the block is from ω·I: ‖KQ_h[:d, :d] − mean diag · I‖_F / ‖KQ_h[:d, :d]‖_F, and
  the y row KQ_h[d, :d] relative to the block (it multiplies y_ℓ into the score; the
  paper finds it ≈ 0). The last column multiplies the query's y slot, which is 0, and
  never affects the output.
* μ_h = ov_h[d], and ‖ov_h[:d]‖ relative to |μ_h| ("last entry only").
* dummy heads: |ω_h μ_h| below ``dummy_fraction`` of the largest head's (they add
  nothing to the prediction).
* sign matching (sign ω_h = sign μ_h for every head that is not a dummy), zero sum
  (|Σ_h μ_h| / Σ_h |μ_h|), homogeneity (spread of |ω_h| over heads that are not
  dummies, relative to their mean), and the fixed point: the positive heads' total μ
  against μ_γ at γ = mean |ω_h| (``reduced.mu_gamma``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from theory.icl_regression.estimators import reduced_weights
from theory.icl_regression.reduced import mu_gamma

DUMMY_FRACTION = 0.05


class Patterns(NamedTuple):
    omega_H: np.ndarray
    """Effective key–query diagonal (mean diag / √(d+1))."""
    omega_logged_H: np.ndarray
    """The paper's logged value (mean diag / √(d+2))."""
    kq_offdiag_H: np.ndarray
    """‖block − mean diag·I‖_F / ‖block‖_F."""
    kq_yrow_H: np.ndarray
    """‖KQ[d, :d]‖ / ‖block‖_F."""
    mu_H: np.ndarray
    ov_rest_H: np.ndarray
    """‖ov[:d]‖ / |μ|."""
    active_H: np.ndarray
    """Heads that are not dummies."""
    sign_match: bool
    zero_sum: float
    """|Σ μ| / Σ |μ| over all heads."""
    homogeneity: float
    """(max − min)/mean of |ω| over active heads (0 with one active head)."""
    gamma: float
    """Mean |ω| over active heads."""
    mu_plus: float
    """Σ μ over active heads with μ > 0."""
    mu_gamma: float
    """μ_γ at γ = ``gamma`` (the solution manifold's total positive μ)."""
    eta: float
    """2 γ μ₊, the debiased-GD step the model implements."""


def extract(kq_HDD, ov_HD, *, L: int, sigma2: float = 0.1, scale: float | None = None,
            dummy_fraction: float = DUMMY_FRACTION) -> Patterns:
    """The patterns of the merged weights (module docstring); L is the training length,
    ``scale`` the read-out's score scale (None: the softmax model's 1/√(d+1); a linear
    model's scores are unscaled, pass 1)."""
    kq_HDD, ov_HD = np.asarray(kq_HDD, float), np.asarray(ov_HD, float)
    if kq_HDD.ndim != 3 or kq_HDD.shape[1:] != (kq_HDD.shape[1],) * 2 or ov_HD.shape != kq_HDD.shape[:2]:
        raise ValueError(f"kq_HDD, ov_HD: expected shapes (H, D, D) and (H, D), got {kq_HDD.shape} and {ov_HD.shape}")
    d = kq_HDD.shape[1] - 1
    block_HDD = kq_HDD[:, :d, :d]
    diag_H = np.einsum("HDD->HD", block_HDD).mean(axis=1)
    block_norm_H = np.linalg.norm(block_HDD, axis=(1, 2))
    offdiag_H = np.linalg.norm(block_HDD - diag_H[:, None, None] * np.eye(d), axis=(1, 2)) / block_norm_H
    omega_H = diag_H * (1 / math.sqrt(d + 1) if scale is None else scale)
    mu_H = ov_HD[:, d]
    strength_H = np.abs(omega_H * mu_H)
    active_H = strength_H >= dummy_fraction * strength_H.max()
    gamma = float(np.abs(omega_H[active_H]).mean())
    spread = np.abs(omega_H[active_H])
    mu_plus = float(mu_H[active_H & (mu_H > 0)].sum())
    return Patterns(
        omega_H=omega_H,
        omega_logged_H=diag_H / math.sqrt(d + 2),
        kq_offdiag_H=offdiag_H,
        kq_yrow_H=np.linalg.norm(kq_HDD[:, d, :d], axis=1) / block_norm_H,
        mu_H=mu_H,
        ov_rest_H=np.linalg.norm(ov_HD[:, :d], axis=1) / np.abs(mu_H),
        active_H=active_H,
        sign_match=bool(np.all(np.sign(omega_H[active_H]) == np.sign(mu_H[active_H]))),
        zero_sum=float(abs(mu_H.sum()) / np.abs(mu_H).sum()),
        homogeneity=float((spread.max() - spread.min()) / spread.mean()),
        gamma=gamma,
        mu_plus=mu_plus,
        mu_gamma=mu_gamma(gamma, d, L, sigma2),
        eta=2 * gamma * mu_plus,
    )


def of_reduced(omega_H, mu_H, *, d: int, L: int, sigma2: float = 0.1) -> Patterns:
    """The patterns of a reduced model (ω, μ), e.g. a point of ``reduced.gradient_flow``:
    its weights KQ_h = ω_h I_d and ov_h = μ_h e_{d+1} at scale 1."""
    kq_HDD, ov_HD = reduced_weights(omega_H, mu_H, d)
    return extract(kq_HDD, ov_HD, L=L, sigma2=sigma2, scale=1.0)
