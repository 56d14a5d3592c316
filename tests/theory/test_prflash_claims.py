"""theory/prflash: the claims of the equal-compute experiment hold on Config.tiny().

Two seeds pooled (8 masks per pattern and fraction); the claims were checked on 16
such pairs of seeds and 32 seeds alone (theory/prflash/claims.py, README.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from theory.prflash import claims
from theory.prflash.experiment import PATTERNS, Config, pool, run

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def result():
    return pool([run(Config.tiny(), seed) for seed in SEEDS])


@pytest.mark.parametrize("claim", claims.CLAIMS, ids=lambda c: c.__name__)
def test_claim(result, claim):
    measured, bound = claim(result)
    assert measured <= bound, f"{claim.__name__}: measured {measured:.4g}, bound {bound:.4g}"


def test_run_is_pure():
    small = dataclasses.replace(Config.tiny(), datasets=("ar1",), fractions=(0.3, 1.0), masks=2)
    first, second = run(small, 5), run(small, 5)
    np.testing.assert_array_equal(first.error_XPFM, second.error_XPFM)
    assert not np.array_equal(first.error_XPFM, run(small, 6).error_XPFM)


def test_masks_have_the_asked_compute(result):
    # sampled masks keep about the asked fraction; deterministic ones exactly
    kept_F = np.nanmean(result.kept_XPFM, axis=(0, 1, 3))
    np.testing.assert_allclose(kept_F, result.fractions_F, atol=0.05)
    p2 = PATTERNS.index("power_of_two")
    assert np.all(result.kept_XPFM[:, p2, result.power_of_two_index] == result.fractions_F[result.power_of_two_index])
