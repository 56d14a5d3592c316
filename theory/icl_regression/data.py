"""Linear-regression prompts (He et al. 2025, shared/papers/notes.md section 2.2).

Each prompt draws its own task β ~ N(0, I_d/d) (so E‖β‖² = 1), L examples
x_ℓ ~ N(0, Σ) with Σ = I_d unless ``cov`` is given, a query x_q from the same law, and
labels y = βᵀx + ε with ε ~ N(0, σ²) for the examples and the query alike. The model
sees the examples as tokens z_ℓ = [x_ℓ; y_ℓ] and the query as [x_q; 0] (:func:`embed`).

The notebook of the paper's code says β ~ N(0, I_d), but its code scales by √(1/d) and
the authors' blog says I_d/d; we follow the code (notes 2.9).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Prompts(NamedTuple):
    """A batch of regression prompts."""

    X_BLD: np.ndarray
    y_BL: np.ndarray
    xq_BD: np.ndarray
    yq_B: np.ndarray
    """The query's label, with noise: what a prediction is scored against."""
    beta_BD: np.ndarray


def ar_covariance(d: int, rho: float) -> np.ndarray:
    """Σ_ij = ρ^|i−j|, the anisotropic covariance of the paper's code
    (``generate_covariance_matrix``, default ρ = 0.5; notes 2.8)."""
    if not -1 < rho < 1:
        raise ValueError(f"rho: expected -1 < rho < 1 (a positive definite Σ), got {rho}")
    i = np.arange(d)
    return rho ** np.abs(i[:, None] - i[None, :])


def _cov_factor(cov, d: int) -> np.ndarray | None:
    """The Cholesky factor C of Σ = C Cᵀ, or None for Σ = I."""
    if cov is None:
        return None
    cov = np.asarray(cov, dtype=np.float64)
    if cov.shape != (d, d):
        raise ValueError(f"cov: expected shape ({d}, {d}), got {cov.shape}")
    if not np.allclose(cov, cov.T):
        raise ValueError("cov: expected a symmetric matrix")
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError("cov: expected a positive definite matrix") from None


def _check_size(name: str, value, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name}: expected at least {low}, got {value}")
    return int(value)


def sample_prompts(B: int, L: int, d: int, rng: np.random.Generator, *, sigma2: float = 0.1,
                   cov=None) -> Prompts:
    """B fresh prompts of L examples in dimension d, drawn from ``rng`` (float64).

    Draw order (fixed, so a seed fixes the prompts): covariates of the examples and
    the query as one (B, L + 1, d) normal array, then β (B, d), then the noise (B, L + 1).
    """
    B, L, d = _check_size("B", B, 1), _check_size("L", L, 1), _check_size("d", d, 1)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if not (math.isfinite(sigma2) and sigma2 >= 0):
        raise ValueError(f"sigma2: expected a finite noise variance ≥ 0, got {sigma2}")
    factor_DD = _cov_factor(cov, d)
    x_BLD = rng.standard_normal((B, L + 1, d))
    if factor_DD is not None:
        # x = C n with Σ = C Cᵀ
        x_BLD = x_BLD @ factor_DD.T
    # β ~ N(0, I/d)
    beta_BD = rng.standard_normal((B, d)) / math.sqrt(d)
    # y = βᵀx + ε, ε ~ N(0, σ²)
    y_BL = np.einsum("BLD,BD->BL", x_BLD, beta_BD) + math.sqrt(sigma2) * rng.standard_normal((B, L + 1))
    return Prompts(x_BLD[:, :L], y_BL[:, :L], x_BLD[:, L], y_BL[:, L], beta_BD)


def embed(X_BLD: np.ndarray, y_BL: np.ndarray, xq_BD: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's tokens: z_BSD with z_ℓ = [x_ℓ; y_ℓ] and zq_BD = [x_q; 0] (D = d + 1)."""
    z_BSD = np.concatenate([X_BLD, y_BL[..., None]], axis=-1)
    zq_BD = np.concatenate([xq_BD, np.zeros(xq_BD.shape[:-1] + (1,), xq_BD.dtype)], axis=-1)
    return z_BSD, zq_BD
