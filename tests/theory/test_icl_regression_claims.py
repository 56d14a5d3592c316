"""theory/icl_regression: the paper's claims hold on the estimator table at 5×10⁴ prompts,
on tiny training runs, and on the reduced model's gradient flow (claims.py, README.md)."""

from __future__ import annotations

import pytest

from theory.icl_regression import claims
from theory.icl_regression.experiment import Config, estimator_table, run
from theory.icl_regression.reduced import gradient_flow

TRAINING_SEEDS = (0, 1)
"""Two of the seeds whose tiny run left the single-head saddle by step 10⁴; README.md
gives how many of 12 seeds did, and what the others look like."""


@pytest.fixture(scope="module")
def table():
    return estimator_table(claims.TABLE_LENGTHS, claims.TABLE_PROMPTS, seed=0)


@pytest.fixture(scope="module", params=TRAINING_SEEDS, ids=lambda s: f"seed{s}")
def trained(request):
    return run(Config.tiny(), request.param)


@pytest.fixture(scope="module")
def flow():
    import numpy as np

    rng = np.random.default_rng(0)
    return gradient_flow(rng.normal(0, 0.1, 4), rng.normal(0, 0.1, 4), 5, 40, lr=1e-2, steps=100_000, records=60)


def _holds(claim, evidence):
    measured, bound = claim(evidence)
    assert measured <= bound, f"{claim.__name__}: measured {measured:.4g}, bound {bound:.4g}"


@pytest.mark.parametrize("claim", claims.TABLE_CLAIMS, ids=lambda c: c.__name__)
def test_table_claim(table, claim):
    _holds(claim, table)


@pytest.mark.parametrize("claim", claims.TRAINING_CLAIMS, ids=lambda c: c.__name__)
def test_training_claim(trained, claim):
    _holds(claim, trained)


@pytest.mark.parametrize("claim", claims.FLOW_CLAIMS, ids=lambda c: c.__name__)
def test_flow_claim(flow, claim):
    _holds(claim, flow)
