"""The predictors the trained model is compared with (He et al. 2025; notes 2.6–2.7).

Every estimator maps a batch of prompts to predictions of the queries' labels:
``(X_BLD, y_BL, xq_BD, ...) -> yhat_B``.

* :func:`gd`: one step of gradient descent from β = 0 on the in-context least squares
  loss, ŷ = (η/L) Σ_ℓ y_ℓ x_ℓᵀ x_q.
* :func:`debiased_gd`: the same with the examples' mean removed,
  ŷ = (η/L) Σ_ℓ y_ℓ (x_ℓ − x̄)ᵀ Ω x_q (Ω = I, or a preconditioner in the anisotropic
  case). This is what a ± pair of softmax heads computes to first order in ω
  (notes 2.6): e^{ωt}/Σe^{ωt'} − e^{−ωt}/Σe^{−ωt'} ≈ (2ω/L)(t − t̄).
* :func:`multi_head` and :func:`single_head_kernel`: the reduced softmax model
  ŷ = Σ_h μ_h Σ_ℓ y_ℓ softmax_ℓ(ω_h x_ℓᵀ x_q), computed by the spec's read-out
  (``spec.attention.readout``) with KQ_h = ω_h I_d (zero y row and column) and
  ov_h = μ_h e_{d+1}: the trained model's form once its weights have the paper's
  pattern.
* :func:`ridge`: x_qᵀ (XᵀX + λI)⁻¹ Xᵀ y; with λ = σ² d it is the posterior mean of β
  under the prior N(0, I/d), the Bayes-optimal predictor (whatever the covariates' law).

:func:`eta_star`, :func:`single_head_mu` and :func:`gd_risk` are the paper's constants
and the one closed-form risk.
"""

from __future__ import annotations

import math

import numpy as np

from spec.attention.readout import readout_forward
from theory.icl_regression.data import embed


def _check_prompts(X_BLD, y_BL, xq_BD) -> tuple[int, int, int]:
    for name, x, nd in (("X_BLD", X_BLD, 3), ("y_BL", y_BL, 2), ("xq_BD", xq_BD, 2)):
        if not isinstance(x, np.ndarray) or x.ndim != nd:
            raise ValueError(f"{name}: expected a {nd}-D numpy array, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
    B, L, d = X_BLD.shape
    if y_BL.shape != (B, L) or xq_BD.shape != (B, d):
        raise ValueError(f"y_BL, xq_BD: expected shapes {(B, L)} and {(B, d)} (from X_BLD), "
                         f"got {y_BL.shape} and {xq_BD.shape}")
    if L < 1:
        raise ValueError(f"X_BLD: expected at least one example, got shape {X_BLD.shape}")
    return B, L, d


def eta_star(d: int, L: int, sigma2: float = 0.1) -> float:
    """The optimal debiased-GD step as the heads' γ → 0, η* = (1 + (1+σ²) d/L)⁻¹
    (Theorem 1.2 of the paper, notes 2.6): 0.879 at d = 5, L = 40, σ² = 0.1."""
    return 1.0 / (1.0 + (1.0 + sigma2) * d / L)


def single_head_mu(d: int, L: int, sigma2: float = 0.1) -> float:
    """μ of the single-head optimum at ω = 1/√d: √d / (1 + (1+σ²)(d/L) e)
    (Chen et al. 2024a, as the paper's code uses it; notes 2.6)."""
    return math.sqrt(d) / (1.0 + (1.0 + sigma2) * (d / L) * math.e)


def gd(X_BLD, y_BL, xq_BD, eta: float) -> np.ndarray:
    """ŷ = (η/L) Σ_ℓ y_ℓ x_ℓᵀ x_q."""
    _, L, _ = _check_prompts(X_BLD, y_BL, xq_BD)
    return (eta / L) * np.einsum("BL,BLD,BD->B", y_BL, X_BLD, xq_BD)


def debiased_gd(X_BLD, y_BL, xq_BD, eta: float, *, precond_DD=None) -> np.ndarray:
    """ŷ = (η/L) Σ_ℓ y_ℓ (x_ℓ − x̄)ᵀ Ω x_q, Ω = ``precond_DD`` (identity by default)."""
    _, L, _ = _check_prompts(X_BLD, y_BL, xq_BD)
    q_BD = xq_BD if precond_DD is None else xq_BD @ np.asarray(precond_DD).T
    centred_BLD = X_BLD - X_BLD.mean(axis=1, keepdims=True)
    return (eta / L) * np.einsum("BL,BLD,BD->B", y_BL, centred_BLD, q_BD)


def ridge(X_BLD, y_BL, xq_BD, *, lam: float | None = None, sigma2: float = 0.1) -> np.ndarray:
    """ŷ = x_qᵀ (XᵀX + λI)⁻¹ Xᵀ y; ``lam=None`` is λ = σ² d, the Bayes-optimal predictor."""
    _, _, d = _check_prompts(X_BLD, y_BL, xq_BD)
    lam = sigma2 * d if lam is None else lam
    if not lam >= 0:
        raise ValueError(f"lam: expected λ ≥ 0, got {lam}")
    gram_BDD = np.einsum("BLD,BLE->BDE", X_BLD, X_BLD) + lam * np.eye(d)
    beta_BD = np.linalg.solve(gram_BDD, np.einsum("BLD,BL->BD", X_BLD, y_BL)[..., None])[..., 0]
    return np.einsum("BD,BD->B", beta_BD, xq_BD)


def reduced_weights(omega_H, mu_H, d: int, *, precond_DD=None) -> tuple[np.ndarray, np.ndarray]:
    """The read-out's merged weights of the reduced model: KQ_h = ω_h Ω (top-left d×d
    block, Ω = I unless given; zero y row and column) and ov_h = μ_h e_{d+1}."""
    omega_H, mu_H = np.atleast_1d(np.asarray(omega_H, float)), np.atleast_1d(np.asarray(mu_H, float))
    if omega_H.ndim != 1 or omega_H.shape != mu_H.shape or omega_H.size < 1:
        raise ValueError(f"omega_H, mu_H: expected two 1-D arrays of one length ≥ 1, got "
                         f"{omega_H.shape} and {mu_H.shape}")
    block_DD = np.eye(d) if precond_DD is None else np.asarray(precond_DD, float)
    kq_HDD = np.zeros((omega_H.size, d + 1, d + 1))
    kq_HDD[:, :d, :d] = omega_H[:, None, None] * block_DD
    ov_HD = np.zeros((omega_H.size, d + 1))
    ov_HD[:, d] = mu_H
    return kq_HDD, ov_HD


def multi_head(X_BLD, y_BL, xq_BD, omega_H, mu_H, *, precond_DD=None) -> np.ndarray:
    """ŷ = Σ_h μ_h Σ_ℓ y_ℓ softmax_ℓ(ω_h x_ℓᵀ Ω x_q), by the spec's read-out (scale 1)."""
    _, _, d = _check_prompts(X_BLD, y_BL, xq_BD)
    kq_HDD, ov_HD = reduced_weights(omega_H, mu_H, d, precond_DD=precond_DD)
    return readout_forward(*embed(X_BLD, y_BL, xq_BD), kq_HDD, ov_HD, scale=1.0).yhat_B


def single_head_kernel(X_BLD, y_BL, xq_BD, omega: float, mu: float) -> np.ndarray:
    """The one-head kernel (Nadaraya–Watson-type) predictor μ Σ_ℓ y_ℓ softmax_ℓ(ω x_ℓᵀ x_q)."""
    return multi_head(X_BLD, y_BL, xq_BD, [omega], [mu])


def gd_risk(eta: float, d: int, L: int, sigma2: float = 0.1) -> float:
    """E(ŷ_gd − y_q)² for x ~ N(0, I), β ~ N(0, I/d), exactly:
    σ² + 1 − 2η + η² (L + d + 1)/L + η² σ² d/L.

    Derivation: ŷ − y_q = x_qᵀ(η Σ̂ β − β) + (η/L) x_qᵀXᵀε − ε_q with Σ̂ = XᵀX/L, and
    E tr Σ̂² = d (L + d + 1)/L for the Wishart XᵀX (E W² = L(L + d + 1) I).
    """
    return sigma2 + 1.0 - 2.0 * eta + eta**2 * (L + d + 1) / L + eta**2 * sigma2 * d / L
