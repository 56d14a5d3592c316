"""The reduced (ω, μ) model: its approximate population loss and gradient dynamics.

Once the weights have the paper's pattern, head h is two numbers, the key–query
diagonal ω_h and the output–value entry μ_h, and the model is
ŷ = Σ_h μ_h Σ_ℓ y_ℓ softmax_ℓ(ω_h x_ℓᵀ x_q). He et al. (2025) approximate its loss for
x ~ N(0, I), β ~ N(0, I/d), noise σ² (the authors' blog and ``utils/funcs.py``; notes 2.6)
by, with exp taken elementwise::

    L̃(ω, μ) = 1 + σ² − 2 μᵀω + μᵀ M μ,     M = ωωᵀ + (1+σ²) L⁻¹ exp(d ωωᵀ)

and study gradient descent on it: Stage I gives sign matching (sign ω_h = sign μ_h) and
zero-sum μ (the low-order Taylor terms), Stage II homogeneous |ω_h| (the higher-order
terms). Its minimisers lie on a manifold ω_h = γ·sign(μ_h), Σ_{H+} μ = −Σ_{H−} μ = μ_γ,
and the loss falls towards γ → 0⁺, where the model is debiased GD with η* (Theorem 1).

The paper's code halves L̃ and its gradient; we keep L̃ as written, so its gradient is
the exact derivative (:func:`loss_grad`, checked by finite differences in the tests).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class ReducedGrad(NamedTuple):
    loss: float
    domega_H: np.ndarray
    dmu_H: np.ndarray


def _pair(omega_H, mu_H) -> tuple[np.ndarray, np.ndarray]:
    omega_H, mu_H = np.asarray(omega_H, float), np.asarray(mu_H, float)
    if omega_H.ndim != 1 or omega_H.shape != mu_H.shape or omega_H.size < 1:
        raise ValueError(f"omega_H, mu_H: expected two 1-D arrays of one length ≥ 1, got "
                         f"{omega_H.shape} and {mu_H.shape}")
    return omega_H, mu_H


def loss_matrix(omega_H, d: int, L: int, sigma2: float = 0.1) -> np.ndarray:
    """M_HH = ωωᵀ + (1+σ²) L⁻¹ exp(d ωωᵀ)."""
    omega_H = np.asarray(omega_H, float)
    outer_HH = np.outer(omega_H, omega_H)
    return outer_HH + (1 + sigma2) / L * np.exp(d * outer_HH)


def population_loss(omega_H, mu_H, d: int, L: int, sigma2: float = 0.1) -> float:
    """L̃(ω, μ) = 1 + σ² − 2 μᵀω + μᵀ M μ (module docstring)."""
    omega_H, mu_H = _pair(omega_H, mu_H)
    return float(1 + sigma2 - 2 * mu_H @ omega_H + mu_H @ loss_matrix(omega_H, d, L, sigma2) @ mu_H)


def loss_grad(omega_H, mu_H, d: int, L: int, sigma2: float = 0.1) -> ReducedGrad:
    """L̃ and its exact gradient::

        ∂L̃/∂μ = −2ω + 2Mμ
        ∂L̃/∂ω = −2μ + 2(μᵀω)μ + (2d(1+σ²)/L) (exp(dωωᵀ) ⊙ μμᵀ) ω
    """
    omega_H, mu_H = _pair(omega_H, mu_H)
    m_HH = loss_matrix(omega_H, d, L, sigma2)
    e_HH = np.exp(d * np.outer(omega_H, omega_H))
    dmu = -2 * omega_H + 2 * m_HH @ mu_H
    domega = (-2 * mu_H + 2 * (mu_H @ omega_H) * mu_H
              + 2 * d * (1 + sigma2) / L * (e_HH * np.outer(mu_H, mu_H)) @ omega_H)
    return ReducedGrad(population_loss(omega_H, mu_H, d, L, sigma2), domega, dmu)


def mu_star(omega_H, d: int, L: int, sigma2: float = 0.1) -> np.ndarray:
    """The best μ for fixed ω: μ*(ω) = M⁻¹ ω (the loss is quadratic in μ)."""
    omega_H = np.asarray(omega_H, float)
    return np.linalg.solve(loss_matrix(omega_H, d, L, sigma2), omega_H)


def mu_gamma(gamma: float, d: int, L: int, sigma2: float = 0.1) -> float:
    """The total positive output weight on the solution manifold at |ω| = γ:
    μ_γ = γ / (2(γ² + (1+σ²) L⁻¹ sinh(dγ²))) (notes 2.6); 3.38 at γ = 0.13, d = 5, L = 40."""
    return gamma / (2 * (gamma**2 + (1 + sigma2) / L * math.sinh(d * gamma**2)))


class Flow(NamedTuple):
    """A trajectory of gradient descent on L̃: rows are the recorded steps."""

    steps_K: np.ndarray
    omega_KH: np.ndarray
    mu_KH: np.ndarray
    loss_K: np.ndarray
    d: int
    L: int
    sigma2: float


def gradient_flow(omega0_H, mu0_H, d: int, L: int, sigma2: float = 0.1, *, lr: float = 1e-3,
                  steps: int = 100_000, records: int = 200) -> Flow:
    """Plain gradient descent (a discretised gradient flow) on L̃ from (ω₀, μ₀), with
    ``records`` log-spaced steps kept (the paper's ``funcs.gradient_flow``)."""
    omega_H, mu_H = (x.copy() for x in _pair(omega0_H, mu0_H))
    if not (lr > 0 and steps >= 1 and records >= 2):
        raise ValueError(f"lr, steps, records: expected lr > 0, steps ≥ 1, records ≥ 2, got {lr}, {steps}, {records}")
    keep = set(np.unique(np.round(np.geomspace(1, steps, records - 1)).astype(int)).tolist()) | {0}
    rec_steps, rec_omega, rec_mu, rec_loss = [], [], [], []
    for step in range(steps + 1):
        g = loss_grad(omega_H, mu_H, d, L, sigma2)
        if step in keep:
            rec_steps.append(step)
            rec_omega.append(omega_H.copy())
            rec_mu.append(mu_H.copy())
            rec_loss.append(g.loss)
        if step == steps:
            break
        omega_H -= lr * g.domega_H
        mu_H -= lr * g.dmu_H
    return Flow(np.array(rec_steps), np.array(rec_omega), np.array(rec_mu), np.array(rec_loss), d, L, sigma2)
