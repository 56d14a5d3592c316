"""What the PrFlashAttention experiment measures to be true, one function per claim.

Every function takes a :class:`~theory.prflash.experiment.Result` (one seed, or
several pooled with :func:`~theory.prflash.experiment.pool`) and returns
``(measured, bound)``; the claim holds when ``measured <= bound`` (ratios are arranged
so that this is the direction). The paper (Wang et al., "Probabilistic
FlashAttention"; abstract and summary only, shared/papers/notes.md, section 1.6)
states no result, so none of these cites an equation of it: the first three are
consequences of the definition (derived in the docstrings), the others are what the
experiment found, and were checked on 32 seeds of ``Config.tiny()`` (16 disjoint
pairs pooled as the tests pool them, and every seed alone) and on the recorded run
of ``Config.full()`` (README.md). Comparisons the experiment did not settle are
left out (README.md lists them).

"Error" is the relative Frobenius error ‖O − O_exact‖ / ‖O_exact‖ against exact
causal attention, averaged over the sampled masks; "inner" fractions are those
below 1 (where something is dropped).
"""

from __future__ import annotations

import numpy as np

from theory.prflash.experiment import PATTERNS, Result

BUDGETED = ("harmonic", "harmonic_importance", "harmonic_categorical", "uniform", "sliding_window")
"""The patterns run at every fraction (power of two has one)."""
PLAIN = ("harmonic", "harmonic_categorical", "uniform", "sliding_window", "power_of_two")
"""The patterns without the importance correction: exact attention over the kept blocks."""
ROUNDING = 1e-12


def _mean_error(result: Result, dataset: str, pattern: str) -> np.ndarray:
    """Mean error over masks, per fraction (NaN where the pattern was not run)."""
    e_FM = result.error(dataset, pattern)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(e_FM).all(axis=-1), e_FM.mean(axis=-1), np.nan)


def _inner(result: Result) -> np.ndarray:
    return result.fractions_F < 1


def exact_with_every_block_kept(result: Result) -> tuple[float, float]:
    """With every causal block kept (kept fraction 1, p ≡ 1) every pattern is exact
    causal attention, to float64 rounding: the largest error of any pattern, data set
    and mask at fraction 1. (The importance bias is log(1/1) = 0 there.)"""
    last = int(np.argmax(result.fractions_F))
    assert result.fractions_F[last] == 1.0, "the experiment must run the kept fraction 1"
    return float(np.nanmax(result.error_XPFM[:, :, last])), ROUNDING


def error_falls_as_budget_grows(result: Result) -> tuple[float, float]:
    """For every data set and budgeted pattern, the mean error falls strictly from one
    kept fraction of the config's grid to the next: the largest ratio of the error at
    a fraction to the error at the previous one must be below 1. (Power of two's
    fraction, added to the grid, is left out: it can lie close to a grid fraction,
    where a few masks do not resolve the difference.)"""
    grid = np.isin(result.fractions_F, result.config.fractions)
    ratios = []
    for dataset in result.config.datasets:
        for pattern in BUDGETED:
            e_F = _mean_error(result, dataset, pattern)[grid]
            ratios.append(np.max(e_F[1:] / e_F[:-1]))
    return float(max(ratios)), 1.0


def error_within_dropped_mass_bound(result: Result) -> tuple[float, float]:
    """Without the importance correction, the error is bounded by the attention mass
    the mask dropped.

    Derivation: with m_t the exact attention mass of query t on dropped keys, the
    softmax splits as o_exact = (1 − m) o_kept + m o_dropped, so
    o_kept − o_exact = m (o_kept − o_dropped) and ‖o_kept − o_exact‖ ≤ 2 m max_s ‖v_s‖.
    Measured: the largest ratio of the error to that bound (both relative to
    ‖O_exact‖, :func:`~theory.prflash.experiment.mass_bound`) over plain patterns, data
    sets, fractions below 1 and masks. Also a check of the experiment's masses.
    """
    idx = [PATTERNS.index(p) for p in PLAIN]
    inner = _inner(result)
    ratio = result.error_XPFM[:, idx][:, :, inner] / result.bound_XPFM[:, idx][:, :, inner]
    return float(np.nanmax(ratio)), 1.0


def harmonic_beats_uniform_on_local_input(result: Result) -> tuple[float, float]:
    """On the AR(1) input (attention decays with distance) both harmonic readings (the
    Bernoulli distribution and the categorical) err less than uniform sampling at equal
    expected compute: the larger of their error ratios to uniform, each averaged over
    the fractions below 1, must be below 1."""
    inner = _inner(result)
    uniform = _mean_error(result, "ar1", "uniform")[inner]
    ratios = [np.mean(_mean_error(result, "ar1", p)[inner] / uniform)
              for p in ("harmonic", "harmonic_categorical")]
    return float(max(ratios)), 1.0


def sliding_window_beats_harmonic_at_the_smallest_budget(result: Result) -> tuple[float, float]:
    """On the AR(1) input, at the smallest kept fraction, keeping the nearest blocks
    (sliding window) errs less than harmonic sampling: the ratio of their errors."""
    first = int(np.argmin(result.fractions_F))
    sliding = _mean_error(result, "ar1", "sliding_window")[first]
    return float(sliding / _mean_error(result, "ar1", "harmonic")[first]), 1.0


def importance_correction_hurts_at_the_smallest_budget(result: Result) -> tuple[float, float]:
    """On the AR(1) input, at the smallest kept fraction, the importance correction
    makes the error larger, not smaller: the ratio of the plain harmonic error to the
    corrected one (same distribution) is below 1. At a small budget far blocks have a
    small p, and a kept one gets the weight 1/p: the unbiased sums pay in variance.
    (From a kept fraction of about 0.35 on, and on the text input, the two are within
    noise of each other.)"""
    first = int(np.argmin(result.fractions_F))
    plain = _mean_error(result, "ar1", "harmonic")[first]
    return float(plain / _mean_error(result, "ar1", "harmonic_importance")[first]), 1.0


def power_of_two_beats_uniform_on_local_input(result: Result) -> tuple[float, float]:
    """On the AR(1) input, at power of two's own kept fraction, its fixed pattern
    (δ ∈ {0, 1, 2, 4, 8, ...}) errs less than uniform sampling: the ratio."""
    f = result.power_of_two_index
    power = _mean_error(result, "ar1", "power_of_two")[f]
    return float(power / _mean_error(result, "ar1", "uniform")[f]), 1.0


def text_input_is_harder(result: Result) -> tuple[float, float]:
    """The text input's non-local attention (repeated byte contexts far apart) costs
    every sparse pattern: the AR(1) input's error as a fraction of the text input's,
    for the plain harmonic pattern averaged over the fractions below 1, is below 1."""
    inner = _inner(result)
    ar1 = np.mean(_mean_error(result, "ar1", "harmonic")[inner])
    text = np.mean(_mean_error(result, "text", "harmonic")[inner])
    return float(ar1 / text), 1.0


CLAIMS = (
    exact_with_every_block_kept,
    error_falls_as_budget_grows,
    error_within_dropped_mass_bound,
    harmonic_beats_uniform_on_local_input,
    sliding_window_beats_harmonic_at_the_smallest_budget,
    importance_correction_hurts_at_the_smallest_budget,
    power_of_two_beats_uniform_on_local_input,
    text_input_is_harder,
)
