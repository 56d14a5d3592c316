"""The tolerance policy itself: it passes what it should and fails what it should."""

from __future__ import annotations

import numpy as np
import pytest

from spec.tolerance import assert_close, compare, oracle_dtype, rounding_floor


def _setup(seed=0):
    oracle = np.random.default_rng(seed).standard_normal(1000)
    baseline = (oracle.astype(np.float32) * np.float32(1.0 + 1e-6)).astype(np.float32)
    return oracle, baseline


def test_an_output_as_good_as_the_baseline_passes():
    oracle, baseline = _setup()
    report = assert_close(baseline.copy(), oracle, baseline)
    assert report.ok and report.err == report.baseline_err


def test_an_output_three_times_worse_than_the_baseline_fails():
    oracle, baseline = _setup()
    worse = (oracle + 3 * (baseline.astype(np.float64) - oracle)).astype(np.float32)
    report = compare(worse, oracle, baseline)
    assert not report.ok and report.err > report.bound
    with pytest.raises(AssertionError, match=r"outside tolerance; err=.* bound=.* at \(\d+,\)"):
        assert_close(worse, oracle, baseline)


def test_the_floor_admits_one_rounding_of_an_exact_baseline():
    oracle = np.array([1.0 / 3.0, 2.0 / 3.0])
    exact = oracle.astype(np.float32)
    one_ulp_off = np.nextafter(exact, np.float32(2))
    assert compare(one_ulp_off, oracle, exact).ok
    assert not compare(one_ulp_off + np.float32(1e-3), oracle, exact).ok
    assert rounding_floor(oracle, np.float32) == 2 * np.spacing(np.float32(2.0 / 3.0 + 0.3))


@pytest.mark.parametrize(
    "out, oracle",
    [
        ([np.nan, 1.0], [0.5, 1.0]),  # NaN where the truth is finite
        ([0.0, 1.0], [-np.inf, 1.0]),  # finite where the truth is -inf
        ([np.inf, 1.0], [-np.inf, 1.0]),  # wrong infinity
    ],
)
def test_non_finite_mismatches_fail(out, oracle):
    out, oracle = np.array(out, np.float32), np.array(oracle)
    report = compare(out, oracle, oracle.astype(np.float32))
    assert not report.ok and report.reason == "non-finite mismatch" and report.worst_index == (0,)


def test_matching_infinities_and_nans_pass():
    oracle = np.array([-np.inf, np.nan, 2.0])
    assert compare(oracle.astype(np.float32), oracle, oracle.astype(np.float32)).ok


def test_float64_results_are_judged_against_a_wider_oracle():
    assert oracle_dtype(np.float32) == np.float64 and oracle_dtype(np.float16) == np.float64
    assert oracle_dtype(np.float64) == np.longdouble


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        compare(np.zeros(3, np.float32), np.zeros(4), np.zeros(4, np.float32))
