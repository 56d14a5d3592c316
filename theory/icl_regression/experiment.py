"""Train the H-head attention model on fresh regression prompts and read what it learned.

The question (He, Pan, Chen, Yang 2025, "In-Context Linear Regression Demystified";
shared/papers/notes.md section 2): trained by Adam on linear-regression prompts, what
does a one-layer, H-head softmax attention model compute? The paper's answer: every
head's key–query block becomes ω_h I_d, every head's output–value row keeps only its
last entry μ_h, the signs of ω_h and μ_h agree, |ω_h| is the same for every head that
is not a dummy, and the μ's sum to zero; the model then computes debiased gradient
descent with step 2γμ (a ± pair of heads), close to the Bayes-optimal ridge predictor,
and, unlike linear attention, keeps improving on prompts longer than the training ones.

:func:`run` trains one model (softmax or linear attention) with the paper's recipe,
Adam at lr 1e-3 on 256 fresh prompts per step (``Config.paper()``: d = 5, L = 40,
5×10⁵ steps), and records the loss curves, snapshots of the merged weights, and the
test risk at prompt lengths 10..100. :func:`estimator_table` measures the paper's
estimator comparison (notes 2.7a). The read-out's step runs on the backend named in the
config (``backends.registry``, op ``attention.readout_mse``): the spec, or the Numba
backend, which makes the paper's setting a matter of minutes per H on two cores
(README.md records the times).

Data are generated (``data.sample_prompts``); a seed fixes everything: the initial
weights, the training prompts, the validation prompts and the test prompts come from
four independent streams of ``numpy.random.SeedSequence(seed)``.

Run from the command line (``python -m theory.icl_regression.experiment --help``) to
train one model and write its result as JSON (no pickle), as the recorded runs were.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from backends import registry
from theory.icl_regression import data, estimators
from theory.icl_regression.model import Adam, Params, init_params, loss_and_grads, merge

TEST_LENGTHS = tuple(range(10, 101, 10))


@dataclass(frozen=True)
class Config:
    """One training run."""

    d: int = 5
    L: int = 40
    heads: int = 2
    sigma2: float = 0.1
    attention: str = "softmax"
    """"softmax" (the paper's model) or "linear" (its LinTF: scores divided by the
    training length L, kept at every test length)."""
    cov_rho: float | None = None
    """None: x ~ N(0, I); else x ~ N(0, Σ) with Σ_ij = ρ^|i−j| (``data.ar_covariance``)."""
    steps: int = 500_000
    batch: int = 256
    lr: float = 1e-3
    eval_every: int = 1000
    """Steps between records of the mean training loss and one fresh validation batch."""
    snapshots: int = 40
    """Merged weights are kept at this many steps, log-spaced from 0 to ``steps``."""
    test_prompts: int = 50_000
    test_lengths: tuple[int, ...] = TEST_LENGTHS
    backend: str = "cpu"

    @classmethod
    def tiny(cls, **changes) -> Config:
        """For the tests: H = 2, 10⁴ steps (the sign pattern has formed on most seeds),
        5000 test prompts; about 15 s with the cpu backend."""
        return dataclasses.replace(cls(steps=10_000, eval_every=500, snapshots=12, test_prompts=5000,
                                       test_lengths=(10, 40, 100)), **changes)

    @classmethod
    def paper(cls, **changes) -> Config:
        """The paper's setting (notes 2.4): d = 5, L = 40, σ² = 0.1, Adam lr 1e-3, batch
        256, 5×10⁵ steps; pass ``heads`` (the paper runs 1, 2, 4, 8)."""
        return dataclasses.replace(cls(), **changes)

    @property
    def readout(self) -> dict:
        """The read-out's keywords for this model."""
        if self.attention == "linear":
            return {"activation": "linear", "norm": float(self.L)}
        return {"activation": "softmax"}

    @property
    def cov(self) -> np.ndarray | None:
        return None if self.cov_rho is None else data.ar_covariance(self.d, self.cov_rho)


@dataclass
class Result:
    """What one run measured. Arrays are NumPy; :meth:`save`/:meth:`load` use JSON."""

    config: Config
    seed: int
    steps_E: np.ndarray
    """Steps at which the losses were recorded (every ``eval_every``)."""
    train_loss_E: np.ndarray
    """Mean training loss over the ``eval_every`` steps before each record."""
    val_loss_E: np.ndarray
    """Loss on one fresh batch at each record (the paper's validation)."""
    snapshot_steps_K: np.ndarray
    kq_KHDD: np.ndarray
    """Merged key–query matrices at the snapshot steps (the last is the final model)."""
    ov_KHD: np.ndarray
    params: Params
    test_lengths: tuple[int, ...]
    test_mse_N: np.ndarray
    """Test MSE (with the label noise) at each test length, N = len(test_lengths)."""
    seconds: float
    """Wall time of the training loop."""
    extra: dict = field(default_factory=dict)

    @property
    def kq_HDD(self) -> np.ndarray:
        return self.kq_KHDD[-1]

    @property
    def ov_HD(self) -> np.ndarray:
        return self.ov_KHD[-1]

    def test_mse_at(self, L: int) -> float:
        return float(self.test_mse_N[self.test_lengths.index(L)])

    ARRAYS = ("steps_E", "train_loss_E", "val_loss_E", "snapshot_steps_K", "kq_KHDD", "ov_KHD", "test_mse_N")
    """The array fields, as JSON lists."""

    def to_json(self) -> dict:
        arrays = {k: getattr(self, k).tolist() for k in self.ARRAYS}
        return {"config": dataclasses.asdict(self.config), "seed": self.seed, **arrays,
                "params": {k: v.tolist() for k, v in self.params._asdict().items()},
                "test_lengths": list(self.test_lengths), "seconds": self.seconds, "extra": self.extra}

    @classmethod
    def from_json(cls, obj: dict) -> Result:
        cfg = {**obj["config"], "test_lengths": tuple(obj["config"]["test_lengths"])}
        arrays = {k: np.asarray(obj[k], float) for k in cls.ARRAYS}
        return cls(config=Config(**cfg), seed=int(obj["seed"]), **arrays,
                   params=Params(**{k: np.asarray(v, float) for k, v in obj["params"].items()}),
                   test_lengths=tuple(obj["test_lengths"]), seconds=float(obj["seconds"]),
                   extra=dict(obj.get("extra", {})))

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f)

    @classmethod
    def load(cls, path) -> Result:
        with open(path) as f:
            return cls.from_json(json.load(f))


def _check_config(cfg: Config) -> None:
    if cfg.attention not in ("softmax", "linear"):
        raise ValueError(f"attention: expected 'softmax' or 'linear', got {cfg.attention!r}")
    for name in ("d", "L", "heads", "steps", "batch", "eval_every", "snapshots", "test_prompts"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}: expected at least 1, got {getattr(cfg, name)}")
    if cfg.steps % cfg.eval_every:
        raise ValueError(f"steps: expected a multiple of eval_every={cfg.eval_every}, got {cfg.steps}")


def snapshot_steps(cfg: Config) -> np.ndarray:
    """0 and ``snapshots - 1`` steps log-spaced up to ``steps`` (distinct, increasing)."""
    steps = np.unique(np.round(np.geomspace(1, cfg.steps, cfg.snapshots - 1)).astype(int))
    return np.concatenate([[0], steps])


def mse(kq_HDD, ov_HD, prompts: data.Prompts, forward, readout: dict) -> float:
    """Mean (ŷ − y_q)² of the model with merged weights (kq, ov) on ``prompts``."""
    z_BSD, zq_BD = data.embed(prompts.X_BLD, prompts.y_BL, prompts.xq_BD)
    r_B = forward(z_BSD, zq_BD, kq_HDD, ov_HD, **readout).yhat_B - prompts.yq_B
    return float(np.mean(r_B * r_B))


def test_risks(cfg: Config, kq_HDD, ov_HD, rng: np.random.Generator, forward) -> np.ndarray:
    """Test MSE at every test length, ``test_prompts`` fresh prompts each (in chunks)."""
    out = []
    for L in cfg.test_lengths:
        total, left = 0.0, cfg.test_prompts
        while left:
            n = min(left, 10_000)
            p = data.sample_prompts(n, L, cfg.d, rng, sigma2=cfg.sigma2, cov=cfg.cov)
            total += n * mse(kq_HDD, ov_HD, p, forward, cfg.readout)
            left -= n
        out.append(total / cfg.test_prompts)
    return np.array(out)


def train_step(cfg: Config, params: Params, adam: Adam, rng: np.random.Generator, step_fn) -> tuple[Params, float]:
    """One step of the paper's recipe: ``cfg.batch`` fresh prompts from ``rng``, the
    read-out's loss and gradient by ``step_fn`` (``attention.readout_mse`` of a backend),
    the chain rule to Q, K, V, O and one Adam step. Returns (new params, the batch's loss)."""
    p = data.sample_prompts(cfg.batch, cfg.L, cfg.d, rng, sigma2=cfg.sigma2, cov=cfg.cov)
    z_BSD, zq_BD = data.embed(p.X_BLD, p.y_BL, p.xq_BD)
    loss, grads, _ = loss_and_grads(params, z_BSD, zq_BD, p.yq_B, step_fn, **cfg.readout)
    return adam.step(params, grads), loss


def run(cfg: Config, seed: int, *, progress=None) -> Result:
    """Train the model of ``cfg`` from ``seed`` and measure it (module docstring).

    ``progress``: optional callable(step, train_loss) called at every record.
    """
    _check_config(cfg)
    init_ss, train_ss, val_ss, test_ss = np.random.SeedSequence(seed).spawn(4)
    train_rng, val_rng = np.random.default_rng(train_ss), np.random.default_rng(val_ss)
    step_fn = registry.get("attention.readout_mse", cfg.backend)
    forward = registry.get("attention.readout_forward", cfg.backend)
    params = init_params(cfg.heads, cfg.d + 1, np.random.default_rng(init_ss))
    adam = Adam(lr=cfg.lr)
    snap_steps = snapshot_steps(cfg)
    kq_K, ov_K = [], []
    steps_E, train_E, val_E = [], [], []
    window = 0.0
    start = time.perf_counter()
    for step in range(cfg.steps + 1):
        if step == snap_steps[len(kq_K)]:
            kq, ov = merge(params)
            kq_K.append(kq)
            ov_K.append(ov)
        if step == cfg.steps:
            break
        params, loss = train_step(cfg, params, adam, train_rng, step_fn)
        window += loss
        if (step + 1) % cfg.eval_every == 0:
            val = data.sample_prompts(cfg.batch, cfg.L, cfg.d, val_rng, sigma2=cfg.sigma2, cov=cfg.cov)
            steps_E.append(step + 1)
            train_E.append(window / cfg.eval_every)
            val_E.append(mse(*merge(params), val, forward, cfg.readout))
            window = 0.0
            if progress is not None:
                progress(step + 1, train_E[-1])
    seconds = time.perf_counter() - start
    kq, ov = merge(params)
    test = test_risks(cfg, kq, ov, np.random.default_rng(test_ss), forward)
    return Result(cfg, seed, np.array(steps_E), np.array(train_E), np.array(val_E), snap_steps,
                  np.array(kq_K), np.array(ov_K), params, tuple(cfg.test_lengths), test, seconds)


# -------------------------------------------------------------- estimator table

PAPER_OMEGA, PAPER_MU = 0.13, 3.45
"""The two-head constants the paper's estimator table fixes (notes 2.7a): learned at L = 40."""

ESTIMATORS = ("multi_head", "gd", "debiased_gd", "single_head", "ridge")


def estimator_predictions(p: data.Prompts, d: int, *, omega: float = PAPER_OMEGA, mu: float = PAPER_MU,
                          train_L: int = 40, sigma2: float = 0.1) -> dict[str, np.ndarray]:
    """The paper's five predictors on ``p`` (notes 2.7a): the ± two-head model (ω, μ), GD
    and debiased GD with η = 2ωμ, the single-head kernel estimator with its optimum at
    ``train_L`` (ω = 1/√d), and ridge with λ = σ²d."""
    eta = 2 * omega * mu
    args = (p.X_BLD, p.y_BL, p.xq_BD)
    return {
        "multi_head": estimators.multi_head(*args, [omega, -omega], [mu, -mu]),
        "gd": estimators.gd(*args, eta),
        "debiased_gd": estimators.debiased_gd(*args, eta),
        "single_head": estimators.single_head_kernel(*args, 1 / math.sqrt(d),
                                                     estimators.single_head_mu(d, train_L, sigma2)),
        "ridge": estimators.ridge(*args, sigma2=sigma2),
    }


def estimator_table(lengths, prompts: int, seed: int, *, d: int = 5, sigma2: float = 0.1,
                    **constants) -> tuple[np.ndarray, np.ndarray]:
    """(risk_NX, stderr_NX): the test MSE of each estimator of :data:`ESTIMATORS` (X) at
    each length (N) on ``prompts`` fresh prompts per length, and its Monte-Carlo standard
    error (the standard deviation of the squared errors over √prompts)."""
    rng = np.random.default_rng(seed)
    risk, stderr = [], []
    for L in lengths:
        p = data.sample_prompts(prompts, L, d, rng, sigma2=sigma2)
        sq = [(yhat - p.yq_B) ** 2 for yhat in
              estimator_predictions(p, d, sigma2=sigma2, **constants).values()]
        risk.append([s.mean() for s in sq])
        stderr.append([s.std() / math.sqrt(prompts) for s in sq])
    return np.array(risk), np.array(stderr)


# --------------------------------------------------------------------- figures


def plot(result: Result, axes=None):
    """Training and validation loss against steps (log-log), and test risk against L."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    cfg = result.config
    axes[0].loglog(result.steps_E, result.train_loss_E, label="train (window mean)")
    axes[0].loglog(result.steps_E, result.val_loss_E, alpha=0.5, label="validation (one batch)")
    axes[0].set(xlabel="Adam step", ylabel="MSE", title=f"{cfg.attention}, H={cfg.heads}, L={cfg.L}")
    axes[0].legend()
    axes[1].plot(result.test_lengths, result.test_mse_N, "o-", label=f"{cfg.attention} H={cfg.heads}")
    axes[1].axvline(cfg.L, color="gray", lw=0.8, ls=":")
    axes[1].set(xlabel="prompt length L at test", ylabel="test MSE", title="length generalisation")
    axes[1].legend()
    return axes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train one in-context regression model and save its Result as JSON.")
    parser.add_argument("--config", choices=("tiny", "paper"), default="paper")
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--attention", choices=("softmax", "linear"), default="softmax")
    parser.add_argument("--cov-rho", type=float, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    changes = {"heads": args.heads, "attention": args.attention, "cov_rho": args.cov_rho, "backend": args.backend}
    if args.steps is not None:
        changes["steps"] = args.steps
    cfg = getattr(Config, args.config)(**changes)
    every = max(cfg.steps // 20, cfg.eval_every)

    def progress(step, loss):
        if step % every == 0:
            print(f"step {step:>7d}  train loss {loss:.4f}", file=sys.stderr, flush=True)

    result = run(cfg, args.seed, progress=progress)
    result.save(args.out)
    print(f"{cfg.attention} H={cfg.heads}: {result.seconds:.0f} s, test MSE at L={cfg.L}: "
          f"{result.test_mse_at(cfg.L) if cfg.L in result.test_lengths else float('nan'):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
