"""theory/icl_regression: the paper's claims hold on the recorded paper-setting runs
(results/*.json, 5×10⁵ Adam steps each; README.md gives the numbers beside the paper's).

These runs take minutes to hours, so CI checks the recorded results rather than
retraining; tests/theory/test_icl_regression_claims.py trains tiny models itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from theory.icl_regression import claims
from theory.icl_regression.experiment import Config, Result

RESULTS = Path(__file__).resolve().parents[2] / "theory" / "icl_regression" / "results"
RUNS = {  # file -> kind of claims
    "paper_softmax_H1.json": "single_head",
    "paper_softmax_H2.json": "multi_head",
    "paper_softmax_H4.json": "multi_head",
    "paper_softmax_H8.json": "multi_head",
    "paper_linear_H2.json": "linear",
    "paper_softmax_H2_rho0.5.json": "anisotropic",
    "paper_softmax_H2_seed2.json": "stalled",
    "paper_softmax_H2_seed5.json": "stalled",
}


NOT_YET = {
    ("paper_softmax_H8.json", "trained_homogeneous"),
    ("paper_softmax_H8.json", "trained_diagonal_kq"),
}
"""Claims the H = 8 run does not meet after 5×10⁵ steps (README.md, "The learned weights"):
its two weakest heads' |ω| lag (spread 0.13), and five heads keep off-diagonal parts of
0.08–0.16. Strict: a recording that meets them fails here, so this list stays true."""


def _cases():
    return [pytest.param(name, claim, id=f"{name[:-5]}-{claim.__name__}",
                         marks=[pytest.mark.xfail(strict=True, reason="not met by this run: README.md")]
                         if (name, claim.__name__) in NOT_YET else [])
            for name, kind in RUNS.items() for claim in claims.RECORDED_CLAIMS[kind]]


@pytest.mark.parametrize("name, claim", _cases())
def test_recorded_run_claim(name, claim):
    result = Result.load(RESULTS / name)
    measured, bound = claim(result)
    assert measured <= bound, f"{name} {claim.__name__}: measured {measured:.4g}, bound {bound:.4g}"


@pytest.mark.parametrize("name", RUNS)
def test_recorded_runs_are_the_paper_setting(name):
    result = Result.load(RESULTS / name)
    cfg = result.config
    paper = Config.paper(heads=cfg.heads, attention=cfg.attention, cov_rho=cfg.cov_rho, backend=cfg.backend)
    assert cfg == paper, f"{name}: {cfg} is not Config.paper()"
