"""What the in-context regression experiment measures to be true, one function per claim.

Every function returns ``(measured, bound)``; the claim holds when ``measured <= bound``.
Three kinds of evidence, each claim taking one:

* an estimator table (:func:`~theory.icl_regression.experiment.estimator_table`:
  risks and Monte-Carlo standard errors of the paper's five predictors at fixed
  constants, lengths :data:`TABLE_LENGTHS`);
* a trained model (:class:`~theory.icl_regression.experiment.Result`);
* a gradient flow on the reduced loss (:class:`~theory.icl_regression.reduced.Flow`).

The paper is He, Pan, Chen, Yang (2025), "In-Context Linear Regression Demystified",
arXiv 2503.12734 (ICML 2025); the numbers come from its code's executed notebooks and the
authors' blog (shared/papers/notes.md section 2). Bounds that are not the paper's are
explained where they are set, and were checked on more seeds than the tests run
(README.md, "Claims and how robust they are").
"""

from __future__ import annotations

import math

import numpy as np

from theory.icl_regression import estimators, patterns
from theory.icl_regression.experiment import ESTIMATORS, PAPER_MU, PAPER_OMEGA, Result
from theory.icl_regression.reduced import Flow

TABLE_LENGTHS = (10, 20, 40, 60, 80, 100)
PAPER_TABLE = np.array([
    # multi-head  GD     debiased GD  single head  ridge
    [0.604, 0.643, 0.614, 0.875, 0.194],   # L = 10
    [0.367, 0.371, 0.369, 0.586, 0.135],   # L = 20
    [0.243, 0.241, 0.243, 0.405, 0.115],   # L = 40
    [0.200, 0.198, 0.199, 0.339, 0.109],   # L = 60
    [0.176, 0.174, 0.176, 0.302, 0.106],   # L = 80
    [0.164, 0.162, 0.163, 0.284, 0.104],   # L = 100
])
"""Test MSE (noise included) of the paper's estimator comparison at d = 5, σ² = 0.1, with
the constants learned at L = 40 (two heads ω = ±0.13, μ = ±3.45; GD and debiased GD
with η = 2ωμ; single head ω = 1/√d and μ at L = 40), 50,000 prompts per length:
``plots.ipynb`` cell 1 of the authors' code (notes 2.7a). Columns are ESTIMATORS."""
TABLE_PROMPTS = 50_000
PAPER_TOLERANCE = 0.01
NOISE_SIGMAS = 3.0


def _paper_allowance(stderr_NX: np.ndarray) -> np.ndarray:
    """±0.01, or more where two independent 5×10⁴-prompt estimates (ours and the
    paper's, each with standard error ``stderr``) cannot be expected to agree that
    well: NOISE_SIGMAS standard deviations of their difference, 3·√2·se."""
    return np.maximum(PAPER_TOLERANCE, NOISE_SIGMAS * math.sqrt(2) * stderr_NX)


def table_matches_paper(table) -> tuple[float, float]:
    """Every cell of the estimator table is within its allowance of the paper's value
    (:func:`_paper_allowance`): the largest ratio |ours − paper| / allowance.

    At L ≥ 40 the allowance is the ±0.01 the issue asks for (3·√2·se is below it); at
    L = 10 and 20 the Monte-Carlo error of 5×10⁴ prompts is 0.004–0.006, and the paper's
    own value can be off by as much: its GD risk at L = 10 is 0.643, the exact risk is
    0.6336 (:func:`table_gd_is_exact`)."""
    risk_NX, stderr_NX = table
    return float(np.max(np.abs(risk_NX - PAPER_TABLE) / _paper_allowance(stderr_NX))), 1.0


def table_within_001_of_paper_from_l40(table) -> tuple[float, float]:
    """At L ∈ {40, 60, 80, 100}, where 5×10⁴ prompts measure to ±0.002, every estimator's
    risk is within 0.01 of the paper's: the largest |ours − paper|."""
    risk_NX, _ = table
    rows = [TABLE_LENGTHS.index(L) for L in (40, 60, 80, 100)]
    return float(np.max(np.abs(risk_NX[rows] - PAPER_TABLE[rows]))), PAPER_TOLERANCE


def table_gd_is_exact(table) -> tuple[float, float]:
    """GD's risk has a closed form (:func:`~theory.icl_regression.estimators.gd_risk`):
    the measured risk is within 4 standard errors of it at every length, which checks
    the sampler and the estimators, not the paper: the largest |ours − exact| / se."""
    risk_NX, stderr_NX = table
    g = ESTIMATORS.index("gd")
    exact = np.array([estimators.gd_risk(2 * PAPER_OMEGA * PAPER_MU, 5, L) for L in TABLE_LENGTHS])
    return float(np.max(np.abs(risk_NX[:, g] - exact) / stderr_NX[:, g])), 4.0


def table_multi_head_is_debiased_gd(table) -> tuple[float, float]:
    """The ± pair of softmax heads (ω = ±0.13, μ = ±3.45) predicts like debiased GD with
    η = 2ωμ (Theorem 1.1): their risks differ by at most 0.01 at every length L ≥ 20.
    At L = 10 the paper's own two differ by 0.01 (0.604 and 0.614): the first-order
    expansion is weakest with few examples."""
    risk_NX, _ = table
    m, dgd = ESTIMATORS.index("multi_head"), ESTIMATORS.index("debiased_gd")
    return float(np.max(np.abs(risk_NX[1:, m] - risk_NX[1:, dgd]))), 0.01


def table_ordering(table) -> tuple[float, float]:
    """At every length: ridge (Bayes) < multi-head < single head, the paper's ordering.
    Measured: the largest of risk(ridge)/risk(multi-head) and risk(multi)/risk(single)."""
    risk_NX, _ = table
    m, s, r = (ESTIMATORS.index(n) for n in ("multi_head", "single_head", "ridge"))
    return float(max(np.max(risk_NX[:, r] / risk_NX[:, m]), np.max(risk_NX[:, m] / risk_NX[:, s]))), 1.0


TABLE_CLAIMS = (table_matches_paper, table_within_001_of_paper_from_l40, table_gd_is_exact,
                table_multi_head_is_debiased_gd, table_ordering)


# ------------------------------------------------------------------ trained model


def _patterns(result: Result) -> patterns.Patterns:
    return patterns.extract(result.kq_HDD, result.ov_HD, L=result.config.L, sigma2=result.config.sigma2)


def trained_sign_matching(result: Result) -> tuple[float, float]:
    """sign ω_h = sign μ_h for every head that is not a dummy (notes 2.5): the number of
    heads where the signs differ."""
    p = _patterns(result)
    return float(np.sum(np.sign(p.omega_H[p.active_H]) != np.sign(p.mu_H[p.active_H]))), 0.0


def trained_zero_sum(result: Result) -> tuple[float, float]:
    """Σ_h μ_h ≈ 0 (notes 2.5): |Σ μ| / Σ |μ| at most 0.05 (the paper's runs, and the
    tiny runs that left the single-head saddle, are below 0.02)."""
    return _patterns(result).zero_sum, 0.05


def trained_last_entry_ov(result: Result) -> tuple[float, float]:
    """Only the last entry of each active head's output–value row matters: ‖ov_h[:d]‖ at
    most 5% of |μ_h|."""
    p = _patterns(result)
    return float(np.max(p.ov_rest_H[p.active_H])), 0.05


def trained_diagonal_kq(result: Result) -> tuple[float, float]:
    """Each active head's key–query block is ω·I_d: the off-diagonal part is at most 10%
    of the block (Frobenius), and the y row at most 10%."""
    p = _patterns(result)
    return float(max(np.max(p.kq_offdiag_H[p.active_H]), np.max(p.kq_yrow_H[p.active_H]))), 0.1


def trained_step_is_eta_star(result: Result) -> tuple[float, float]:
    """The model implements debiased GD with step η = 2γμ₊ close to the optimum
    η* = (1 + (1+σ²)d/L)⁻¹ (Theorem 1.2; the paper's run: 0.897 against 0.879):
    |η/η* − 1| at most 5%."""
    cfg = result.config
    p = _patterns(result)
    return abs(p.eta / estimators.eta_star(cfg.d, cfg.L, cfg.sigma2) - 1), 0.05


def trained_beats_single_head(result: Result) -> tuple[float, float]:
    """Two heads beat the single head's optimum: the trained model's test risk at L = 40
    as a fraction of the single-head kernel estimator's in the paper's table (0.405), is
    below 1 (the paper's two-head model: 0.243/0.405 = 0.6)."""
    single = PAPER_TABLE[TABLE_LENGTHS.index(40), ESTIMATORS.index("single_head")]
    return result.test_mse_at(40) / single, 1.0


TRAINING_CLAIMS = (trained_sign_matching, trained_zero_sum, trained_last_entry_ov, trained_diagonal_kq,
                   trained_step_is_eta_star, trained_beats_single_head)


# ------------------------------------------------ the recorded paper-setting runs


def trained_homogeneous(result: Result) -> tuple[float, float]:
    """Stage II (notes 2.6): |ω_h| is the same for every head that is not a dummy: the
    spread (max − min)/mean of |ω| over active heads at most 10%. It forms late (after the
    sign pattern), so it is asserted on the 5×10⁵-step runs, not on the tiny ones."""
    return _patterns(result).homogeneity, 0.1


def single_head_is_the_kernel_estimator(result: Result) -> tuple[float, float]:
    """A single head learns the kernel estimator (notes 2.7b: H = 1 at L = 40 scores 0.406,
    the single-head kernel estimator 0.405): |risk − 0.405| at most 0.02."""
    single = PAPER_TABLE[TABLE_LENGTHS.index(40), ESTIMATORS.index("single_head")]
    return abs(result.test_mse_at(40) - single), 0.02


def softmax_improves_past_training_length(result: Result) -> tuple[float, float]:
    """Softmax attention trained at L = 40 keeps improving on longer prompts (notes 2.7d):
    its risk at L = 100 as a fraction of its risk at L = 40 is below 1."""
    return result.test_mse_at(100) / result.test_mse_at(40), 1.0


def linear_degrades_past_training_length(result: Result) -> tuple[float, float]:
    """Linear attention with its training normaliser gets worse once the test L exceeds
    the training L (notes 2.7d): its risk at L = 40 as a fraction of its risk at L = 100
    is below 1."""
    return result.test_mse_at(40) / result.test_mse_at(100), 1.0


def heads_share_one_sign(result: Result) -> tuple[float, float]:
    """The single-head solution of an H-head model: every head's μ has one sign, so the
    heads add up to one kernel estimator and Σμ does not vanish. Measured: 1 − |Σμ|/Σ|μ|
    (0 on that solution, 1 on the paper's ± pattern), bounded by rounding."""
    return 1 - _patterns(result).zero_sum, 1e-12


def trained_kq_block_is_sigma_inverse(result: Result) -> tuple[float, float]:
    """With correlated covariates x ~ N(0, Σ) the key–query block becomes ±γΩ with
    Ω ≈ Σ⁻¹ (notes 2.8): every active head's block, scaled to a unit mean diagonal, is
    at least three times closer to Σ⁻¹ (scaled alike) than the identity is, in relative
    Frobenius distance. Measured: the largest ratio of the two distances (below 1/3)."""
    cov = result.config.cov
    if cov is None:
        raise ValueError("trained_kq_block_is_sigma_inverse: the run has isotropic covariates (cov_rho None)")
    d = result.config.d
    target = _unit_diagonal(np.linalg.inv(cov))
    p = _patterns(result)
    identity = np.linalg.norm(np.eye(d) - target)
    return float(max(np.linalg.norm(_unit_diagonal(result.kq_HDD[h, :d, :d]) - target) / identity
                     for h in np.flatnonzero(p.active_H))), 1 / 3


def _unit_diagonal(m: np.ndarray) -> np.ndarray:
    return m / np.mean(np.diag(m))


RECORDED_CLAIMS = {
    "multi_head": TRAINING_CLAIMS + (trained_homogeneous, softmax_improves_past_training_length),
    "single_head": (single_head_is_the_kernel_estimator, softmax_improves_past_training_length),
    "linear": (linear_degrades_past_training_length,),
    "anisotropic": (trained_sign_matching, trained_zero_sum, trained_last_entry_ov,
                    trained_kq_block_is_sigma_inverse),
    "stalled": (heads_share_one_sign, single_head_is_the_kernel_estimator),
}
"""Claims of the recorded runs (README.md), by kind of run: softmax with H ≥ 2, softmax
with H = 1, linear attention, softmax with H = 2 on correlated covariates, and the two
H = 2 seeds that stay on the single-head solution for all 5×10⁵ steps."""


# ---------------------------------------------------------------- reduced model


def _flow_patterns(flow: Flow) -> patterns.Patterns:
    return patterns.of_reduced(flow.omega_KH[-1], flow.mu_KH[-1], d=flow.d, L=flow.L, sigma2=flow.sigma2)


def flow_reaches_solution_manifold(flow: Flow) -> tuple[float, float]:
    """Gradient descent on L̃ ends on the paper's solution manifold: signs matched, μ
    summing to zero, |ω| homogeneous, and μ₊ = μ_γ(γ) (notes 2.6). Measured: the largest
    of |Σμ|/Σ|μ|, the relative spread of |ω| and |μ₊/μ_γ − 1|, each bounded by 1%
    (infinite if a sign does not match)."""
    p = _flow_patterns(flow)
    if not p.sign_match:
        return math.inf, 0.01
    return float(max(p.zero_sum, p.homogeneity, abs(p.mu_plus / p.mu_gamma - 1))), 0.01


def flow_step_is_eta_star(flow: Flow) -> tuple[float, float]:
    """On the manifold the model is debiased GD with η = 2γμ_γ, which tends to η* as γ → 0
    (Theorem 1.2): |η/η* − 1| below 1% at the flow's end."""
    p = _flow_patterns(flow)
    return abs(p.eta / estimators.eta_star(flow.d, flow.L, flow.sigma2) - 1), 0.01


def flow_loss_decreases(flow: Flow) -> tuple[float, float]:
    """Gradient descent with a small step never increases L̃: the largest rise between
    records (at most 0)."""
    return float(np.max(np.diff(flow.loss_K))), 0.0


FLOW_CLAIMS = (flow_reaches_solution_manifold, flow_step_is_eta_star, flow_loss_decreases)
