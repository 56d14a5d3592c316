"""theory/icl_regression's parts: data, estimators, the model's chain rule and Adam, the
reduced loss's gradient, pattern extraction, and the experiment's bookkeeping."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from backends import registry
from tests.numerics import central_differences
from theory.icl_regression import data, estimators, patterns, reduced
from theory.icl_regression.experiment import Config, Result, run, snapshot_steps
from theory.icl_regression.model import Adam, Params, init_params, loss_and_grads, merge


def test_prompts_follow_the_data_model():
    p = data.sample_prompts(20_000, 8, 5, np.random.default_rng(0), sigma2=0.1)
    assert p.X_BLD.shape == (20_000, 8, 5) and p.y_BL.shape == (20_000, 8) and p.xq_BD.shape == (20_000, 5)
    # E‖β‖² = 1, Var x = 1, and y − βᵀx has variance σ²
    assert abs(np.mean(np.sum(p.beta_BD**2, axis=1)) - 1) < 0.02
    assert abs(p.X_BLD.var() - 1) < 0.01
    noise = p.y_BL - np.einsum("BLD,BD->BL", p.X_BLD, p.beta_BD)
    assert abs(noise.var() - 0.1) < 0.003
    assert abs(np.var(p.yq_B - np.einsum("BD,BD->B", p.xq_BD, p.beta_BD)) - 0.1) < 0.005


def test_anisotropic_covariates_have_the_asked_covariance():
    cov = data.ar_covariance(4, 0.5)
    p = data.sample_prompts(20_000, 10, 4, np.random.default_rng(1), cov=cov)
    emp = np.cov(p.X_BLD.reshape(-1, 4).T)
    np.testing.assert_allclose(emp, cov, atol=0.02)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"B": 0}, ValueError, "B: expected at least 1"),
    ({"L": 2.5}, TypeError, "L: expected an int"),
    ({"sigma2": -1.0}, ValueError, "sigma2"),
    ({"cov": np.eye(3)}, ValueError, r"cov: expected shape \(5, 5\)"),
    ({"cov": -np.eye(5)}, ValueError, "cov: expected a positive definite"),
    ({"rng": 0}, TypeError, "rng: expected a numpy.random.Generator"),
])
def test_sample_prompts_rejects_bad_input(kwargs, error, match):
    args = {"B": 2, "L": 3, "d": 5, "rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(error, match=match):
        data.sample_prompts(args.pop("B"), args.pop("L"), args.pop("d"), args.pop("rng"), **args)


def test_ridge_is_the_posterior_mean():
    """With λ = σ²d, ridge equals the Gaussian posterior mean of β under N(0, I/d)."""
    p = data.sample_prompts(4, 6, 3, np.random.default_rng(2))
    got = estimators.ridge(p.X_BLD, p.y_BL, p.xq_BD, sigma2=0.1)
    for b in range(4):
        X, y = p.X_BLD[b], p.y_BL[b]
        precision = X.T @ X / 0.1 + 3 * np.eye(3)          # prior precision d·I
        mean = np.linalg.solve(precision, X.T @ y / 0.1)
        assert math.isclose(got[b], mean @ p.xq_BD[b], rel_tol=1e-10, abs_tol=1e-12)


def test_a_pair_of_small_heads_is_debiased_gd():
    """First order in ω: μ Σ y (softmax(ωt) − softmax(−ωt)) = (2ωμ/L) Σ y (t − t̄) + O(ω²)."""
    p = data.sample_prompts(50, 40, 5, np.random.default_rng(3))
    args = (p.X_BLD, p.y_BL, p.xq_BD)
    for omega in (1e-2, 1e-3):
        mu = 0.5 / omega
        pair = estimators.multi_head(*args, [omega, -omega], [mu, -mu])
        dgd = estimators.debiased_gd(*args, 2 * omega * mu)
        assert np.max(np.abs(pair - dgd)) < 20 * omega   # the gap shrinks with ω


def test_eta_star_and_mu_gamma_at_the_paper_setting():
    assert round(estimators.eta_star(5, 40, 0.1), 3) == 0.879      # notes 2.6
    assert round(reduced.mu_gamma(0.13, 5, 40, 0.1), 2) == 3.38     # notes 2.6


def test_full_model_gradient_matches_central_differences():
    """Loss → merged gradient (spec) → chain rule to Q, K, V, O, against central differences."""
    rng = np.random.default_rng(4)
    H, d = 3, 4
    p = init_params(H, d + 1, rng)
    prompts = data.sample_prompts(6, 9, d, rng)
    z, zq = data.embed(prompts.X_BLD, prompts.y_BL, prompts.xq_BD)
    spec = registry.get("attention.readout_mse", "spec")
    for readout in ({"activation": "softmax"}, {"activation": "linear", "norm": 9.0}):
        _, grads, _ = loss_and_grads(p, z, zq, prompts.yq_B, spec, **readout)
        def loss(readout=readout):
            return loss_and_grads(p, z, zq, prompts.yq_B, spec, **readout)[0]

        for name, x, g in zip(Params._fields, p, grads):
            np.testing.assert_allclose(g, central_differences(loss, x), rtol=1e-6, atol=1e-9,
                                       err_msg=f"{name} {readout}")


def test_adam_matches_its_definition():
    """Two steps by hand (PyTorch's formula) on a scalar parameter."""
    opt = Adam(lr=0.1)
    p = Params(*(np.array([1.0]) for _ in range(4)))
    g1 = Params(*(np.array([0.5]) for _ in range(4)))
    g2 = Params(*(np.array([-2.0]) for _ in range(4)))
    p = opt.step(opt.step(p, g1), g2)
    m, v, x = 0.0, 0.0, 1.0
    for t, g in ((1, 0.5), (2, -2.0)):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        x -= 0.1 * (m / (1 - 0.9**t)) / (math.sqrt(v / (1 - 0.999**t)) + 1e-8)
    assert math.isclose(p.q_HDD[0], x, rel_tol=1e-14)


def test_reduced_gradient_matches_central_differences():
    rng = np.random.default_rng(5)
    omega, mu = rng.normal(0, 0.3, 4), rng.normal(0, 2, 4)
    g = reduced.loss_grad(omega, mu, 5, 40)
    for x, got in ((omega, g.domega_H), (mu, g.dmu_H)):
        num = central_differences(lambda: reduced.population_loss(omega, mu, 5, 40), x)
        np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-8)


def test_mu_star_minimises_the_reduced_loss_in_mu():
    omega = np.array([0.2, -0.1, 0.05])
    best = reduced.mu_star(omega, 5, 40)
    assert np.allclose(reduced.loss_grad(omega, best, 5, 40).dmu_H, 0, atol=1e-12)


def test_patterns_of_constructed_weights():
    kq, ov = estimators.reduced_weights(np.array([0.3, -0.3, 0.001]) * math.sqrt(6), [2.0, -2.0, 0.01], 5)
    p = patterns.extract(kq, ov, L=40)
    np.testing.assert_allclose(p.omega_H, [0.3, -0.3, 0.001])
    assert p.active_H.tolist() == [True, True, False]
    assert p.sign_match and p.zero_sum < 0.01 and p.homogeneity < 1e-12
    assert p.mu_plus == 2.0 and math.isclose(p.eta, 2 * 0.3 * 2.0)
    kq[1, 0, 1] = 5.0        # an off-diagonal entry, and a sign that no longer matches
    ov[1, 5] = 2.0
    p = patterns.extract(kq, ov, L=40)
    assert p.kq_offdiag_H[1] > 0.5 and not p.sign_match


def test_run_is_pure_and_its_result_round_trips(tmp_path):
    cfg = Config.tiny(steps=60, eval_every=20, snapshots=4, test_prompts=100, test_lengths=(5, 40))
    first, second = run(cfg, 3), run(cfg, 3)
    np.testing.assert_array_equal(first.kq_KHDD, second.kq_KHDD)
    np.testing.assert_array_equal(first.test_mse_N, second.test_mse_N)
    assert not np.array_equal(first.kq_KHDD[-1], run(cfg, 4).kq_KHDD[-1])
    assert first.kq_KHDD.shape == (4, 2, 6, 6) and first.steps_E.tolist() == [20, 40, 60]
    np.testing.assert_array_equal(first.kq_KHDD[-1], merge(first.params)[0])
    first.save(tmp_path / "r.json")
    back = Result.load(tmp_path / "r.json")
    assert back.config == cfg
    for field in ("kq_KHDD", "ov_KHD", "train_loss_E", "test_mse_N"):
        np.testing.assert_array_equal(getattr(back, field), getattr(first, field))


def test_backends_train_the_same_model():
    """The spec and the Numba step give the same weights after 30 Adam steps (to rounding)."""
    cfg = Config.tiny(steps=30, eval_every=10, snapshots=3, test_prompts=10, test_lengths=(40,))
    spec, cpu = run(dataclasses.replace(cfg, backend="spec"), 7), run(cfg, 7)
    np.testing.assert_allclose(cpu.kq_KHDD, spec.kq_KHDD, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cpu.train_loss_E, spec.train_loss_E, rtol=1e-12)


def test_snapshot_steps_are_log_spaced_and_distinct():
    steps = snapshot_steps(Config(steps=500_000, snapshots=40))
    assert steps[0] == 0 and steps[-1] == 500_000 and np.all(np.diff(steps) > 0)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="attention"):
        run(Config.tiny(attention="relu"), 0)
    with pytest.raises(ValueError, match="multiple of eval_every"):
        run(Config.tiny(steps=1001, eval_every=200), 0)
