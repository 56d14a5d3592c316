"""What "agrees with the spec" means for a floating-point result: the tolerance policy.

The rule is the one the FlashAttention repository's tests apply to its kernels
(Dao et al., tests/test_flash_attn.py): an implementation working in some dtype may
be at most twice as far from the truth as the spec itself is when run in that same
dtype, plus a floor for outputs that the spec happens to get exactly right.

    oracle   = spec(inputs widened to oracle_dtype(dtype))
    baseline = spec(inputs in the working dtype), possibly in several rounding orders
    floor    = 2 · max ulp_dtype(|oracle| + 0.3)
    pass  iff  max |out − oracle| ≤ 2 · max |baseline − oracle| + floor

The oracle is the spec in float64 for float16 and float32 work. For float64 work it
is the spec in ``np.longdouble`` (64-bit significand on x86-64), so that float64
backends are held to the same rule instead of a hand-picked 1e-12; where
longdouble is plain double (some ARM platforms) the bound degenerates to the floor.

The floor is one rounding step at the output's own magnitude, so the bound is never
tighter than the working dtype can express. FlashAttention's tests write it as
2 · max |((oracle → dtype) + 0.3 − 0.3) − oracle|: the rounding error of adding and
removing 0.3, whose size depends on where each value happens to fall between two
representable numbers. Over a large tensor its maximum approaches its worst case,
ulp(|oracle| + 0.3); over the few entries of a small property-test problem it can
be near zero by luck, and a correct kernel one ulp away from the oracle would then
fail. We use the worst case directly, which is deterministic. No hand-tuned atol.

Values that are not finite are compared exactly: where the oracle is -inf (the lse
of a row with no visible key) or NaN the output must be the same, and an output
that is not finite where the oracle is finite fails. This module is pure NumPy so
that anyone checking their own kernel against the spec can import it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ToleranceReport(NamedTuple):
    """The measured numbers behind one comparison."""

    ok: bool
    err: float
    """max |out − oracle| over entries where the oracle is finite."""
    baseline_err: float
    """max |baseline − oracle| over the same entries."""
    floor: float
    bound: float
    """2 · baseline_err + floor."""
    worst_index: tuple[int, ...] | None
    """Where err is reached (or the first non-finite mismatch)."""
    out_value: float | None
    oracle_value: float | None
    reason: str

    def message(self, name: str = "output") -> str:
        at = ""
        if self.worst_index is not None:
            at = f" at {self.worst_index}: out={self.out_value!r} oracle={self.oracle_value!r}"
        return (
            f"{name}: {self.reason}; err={self.err:.3e} bound={self.bound:.3e} "
            f"(baseline err={self.baseline_err:.3e}, floor={self.floor:.3e}){at}"
        )


def oracle_dtype(dtype) -> np.dtype:
    """The dtype the oracle runs in for results computed in ``dtype``."""
    dtype = np.dtype(dtype)
    return np.dtype(np.longdouble) if dtype.itemsize >= 8 else np.dtype(np.float64)


def rounding_floor(oracle: np.ndarray, dtype) -> float:
    """2 · max ulp_dtype(|oracle| + 0.3) over finite entries (0 if there are none)."""
    finite = np.isfinite(oracle)
    if not finite.any():
        return 0.0
    with np.errstate(over="ignore"):
        magnitude = (np.abs(oracle[finite]) + 0.3).astype(dtype)
    return float(2.0 * np.max(np.spacing(magnitude)))


def _max_abs_diff(baseline: np.ndarray, oracle: np.ndarray, finite: np.ndarray) -> float:
    # where the spec itself overflows in the working dtype it sets no bound there
    both = finite & np.isfinite(baseline)
    return float(np.max(np.abs(baseline[both] - oracle[both]), initial=0.0))


def compare(out, oracle, baseline) -> ToleranceReport:
    """Apply the policy to ``out`` (working dtype) against the wider ``oracle``.

    ``baseline`` is one spec result in the working dtype, or a list of several that
    differ only in rounding order (e.g. the spec run on inputs whose summation axes
    were permuted); the baseline error is then the largest of theirs, a better
    estimate of what the dtype costs than one rounding order's luck.
    """
    out = np.asarray(out)
    oracle = np.asarray(oracle)
    several = isinstance(baseline, (list, tuple))
    baselines = [np.asarray(b) for b in baseline] if several else [np.asarray(baseline)]
    if out.shape != oracle.shape or any(b.shape != oracle.shape for b in baselines):
        raise ValueError(
            f"shapes differ: out {out.shape}, oracle {oracle.shape}, "
            f"baseline {[b.shape for b in baselines]}"
        )
    wide = oracle.dtype
    out_w = out.astype(wide)
    finite = np.isfinite(oracle)
    floor = rounding_floor(oracle, out.dtype)
    baseline_err = max(_max_abs_diff(b.astype(wide), oracle, finite) for b in baselines)
    bound = 2.0 * baseline_err + floor

    # non-finite oracle entries must be reproduced exactly (same inf, or NaN)
    same_nonfinite = (out_w == oracle) | (np.isnan(out_w) & np.isnan(oracle))
    bad_nonfinite = ~finite & ~same_nonfinite
    # a non-finite output where the oracle is finite is always a failure
    bad_finite = finite & ~np.isfinite(out_w)
    bad = bad_nonfinite | bad_finite
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        return ToleranceReport(
            False, float("inf"), baseline_err, floor, bound, idx,
            float(out_w[idx]), float(oracle[idx]), "non-finite mismatch",
        )
    diff = np.abs(np.where(finite, out_w, 0) - np.where(finite, oracle, 0))
    if diff.size == 0:
        return ToleranceReport(True, 0.0, baseline_err, floor, bound, None, None, None, "empty")
    flat = int(np.argmax(diff))
    idx = tuple(int(i) for i in np.unravel_index(flat, diff.shape))
    err = float(diff[idx])
    ok = err <= bound
    return ToleranceReport(
        ok, err, baseline_err, floor, bound, idx, float(out_w[idx]), float(oracle[idx]),
        "within tolerance" if ok else "outside tolerance",
    )


def assert_close(out, oracle, baseline, name: str = "output") -> ToleranceReport:
    """Raise AssertionError with the full report unless ``out`` meets the policy."""
    report = compare(out, oracle, baseline)
    if not report.ok:
        raise AssertionError(report.message(name))
    return report
