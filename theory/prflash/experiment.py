"""PrFlashAttention at equal compute: how far from exact causal attention is each block pattern?

The question (shared/papers/notes.md, section 1.6; the paper states no experiment and
no formula): PrFlashAttention computes only a random subset of the causal key blocks
of each query block, chosen by a distribution over the block distance δ = i - j. At a
given expected compute (the kept fraction of the causal blocks), how much does the
output move away from exact causal attention, for the spec's harmonic reading, its
importance-corrected variant, the normalised-harmonic categorical, and the uniform,
sliding-window and power-of-two baselines? And how much of the exact attention mass
do the dropped blocks carry?

Everything is measured with the spec (``spec.attention.prflash``; the Numba backend
can be picked with ``Config.backend = "cpu"`` for speed, the conformance suite holds it
to the spec): the distributions, the samplers, ``prflash_forward`` for every sampled
mask, ``flash_forward`` for the exact output, and ``block_sparse_forward`` on one key
block at a time for the attention mass of every (query, key block) pair.

Inputs (no downloads; both generated from the seed):

* ``"ar1"``: a latent sequence with local structure, x_t = ρ x_{t-1} + √(1 - ρ²) ε_t
  (an AR(1) process, unit variance, correlation ρ^|t-s|), projected per head by fixed
  random matrices to q, k, v, with k's projection correlated with q's (so that a query
  matches keys whose latent is close to its own: nearby ones), then RoPE on q and k
  (``spec.position.rope.rope_qk``). Attention decays with distance, as trained models'
  does on average.
* ``"text"``: real text statistics: bytes of a source file of the running Python's
  standard library (``inspect.getsourcefile`` of ``Config.text_module``, always
  present, no download; the file, and so the numbers, vary slightly between Python
  versions), a window of T bytes at an offset drawn from the seed, each byte embedded
  by a fixed random vector, smoothed causally over the preceding bytes (an
  exponentially decaying sum over ``text_context`` bytes, so a position carries its
  recent n-gram), projected like "ar1", with RoPE. Repeated identifiers and keywords
  far apart give the same smoothed vector, hence non-local attention peaks.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from spec.attention import prflash
from spec.attention.block_sparse import block_layout, block_sparse_forward
from spec.attention.tiled import flash_forward
from spec.position.rope import RoPE, rope_qk

DATASETS = ("ar1", "text")
PATTERNS = (
    "harmonic",              # harmonic_probs + sample_keep, the plain estimator
    "harmonic_importance",   # the same masks' distribution, with the log(1/p) correction
    "harmonic_categorical",  # sample_harmonic_categorical (the second reading)
    "uniform",               # uniform_probs + sample_keep
    "sliding_window",        # sliding_window_probs + sample_keep (random only in its last block)
    "power_of_two",          # power_of_two_probs, deterministic, one fixed fraction
)
LABELS = {
    "harmonic": "harmonic",
    "harmonic_importance": "harmonic + importance",
    "harmonic_categorical": "harmonic categorical",
    "uniform": "uniform",
    "sliding_window": "sliding window",
    "power_of_two": "power of two",
}


@dataclass(frozen=True)
class Config:
    """One experiment. Sizes are in tokens (T, block_size) and features."""

    T: int = 1024
    block_size: int = 32
    heads: int = 4
    width: int = 64
    """D = E of every head."""
    latent: int = 64
    """L, the width of the latent sequence (AR(1) state, byte embedding)."""
    rho: float = 0.99
    """AR(1) correlation per token: the latent forgets in about 1/(1 - ρ) tokens."""
    alignment: float = 0.8
    """Correlation of k's projection with q's: 0 makes q and k unrelated."""
    sharpness: float = 2.5
    """Multiplies q: the size of the logits (how peaked attention is)."""
    text_module: str = "argparse"
    text_decay: float = 0.7
    """Weight of the byte u steps back in the smoothed text embedding: decay**u."""
    text_context: int = 8
    fractions: tuple[float, ...] = (0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
    """Kept fractions of the causal blocks to run at (power of two's own is added)."""
    masks: int = 4
    """Sampled masks per (pattern, fraction); one mask is shared by all heads."""
    datasets: tuple[str, ...] = DATASETS
    backend: str = "spec"
    """Implementation of prflash_forward from backends.registry: "spec" or "cpu"."""

    @classmethod
    def tiny(cls) -> Config:
        """For the tests: T = 256 in 16 blocks of 16, 4 heads of width 64; seconds with the spec."""
        return cls(T=256, block_size=16, rho=0.98, fractions=(0.2, 0.4, 0.7, 1.0), masks=4)

    @classmethod
    def full(cls) -> Config:
        """The recorded run (README.md): T = 1024 in 32 blocks of 32, 4 heads of width 64."""
        return cls()

    @property
    def n_blocks(self) -> int:
        return -(-self.T // self.block_size)


# ------------------------------------------------------------------------- inputs


def text_bytes(cfg: Config, rng: np.random.Generator) -> tuple[np.ndarray, str, int]:
    """T bytes of the standard-library source file of ``cfg.text_module``, from an offset
    drawn from ``rng``: (bytes_T as int64, path, offset)."""
    path = inspect.getsourcefile(importlib.import_module(cfg.text_module))
    with open(path, "rb") as f:
        data = np.frombuffer(f.read(), np.uint8)
    if data.size < cfg.T:
        raise ValueError(f"text_module: {path} has {data.size} bytes, fewer than T={cfg.T}")
    offset = int(rng.integers(0, data.size - cfg.T + 1))
    return data[offset:offset + cfg.T].astype(np.int64), path, offset


def latent_ar1(cfg: Config, rng: np.random.Generator) -> np.ndarray:
    """x_TL with x_t = ρ x_{t-1} + √(1 - ρ²) ε_t, x_0 ~ N(0, I): unit variance."""
    x_TL = np.empty((cfg.T, cfg.latent))
    x_TL[0] = rng.standard_normal(cfg.latent)
    eps_TL = math.sqrt(1 - cfg.rho**2) * rng.standard_normal((cfg.T, cfg.latent))
    for t in range(1, cfg.T):
        x_TL[t] = cfg.rho * x_TL[t - 1] + eps_TL[t]
    return x_TL


def latent_text(cfg: Config, bytes_T: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x_t = Σ_{u < context} decay^u e[byte_{t-u}] / norm, with e[b] ~ N(0, I) per byte
    value: unit variance, and equal wherever the last bytes are equal."""
    emb_VL = rng.standard_normal((256, cfg.latent))
    x_TL = np.zeros((cfg.T, cfg.latent))
    for u in range(min(cfg.text_context, cfg.T)):
        x_TL[u:] += cfg.text_decay**u * emb_VL[bytes_T[:cfg.T - u]]
    return x_TL / math.sqrt(sum(cfg.text_decay**(2 * u) for u in range(cfg.text_context)))


def project(cfg: Config, x_TL: np.ndarray, rng: np.random.Generator):
    """q, k, v (1, H, T, D) from the latent, RoPE applied to q and k.

    W_k = a·W_q + √(1 - a²)·W' (a = ``alignment``): q_t·k_s is then about a·x_t·x_s
    (times D/L) plus noise, large where the latents agree. ``sharpness`` scales q.
    """
    H, L, D = cfg.heads, cfg.latent, cfg.width
    wq_HLD = rng.standard_normal((H, L, D)) / math.sqrt(L)
    wk_HLD = cfg.alignment * wq_HLD + math.sqrt(1 - cfg.alignment**2) * rng.standard_normal((H, L, D)) / math.sqrt(L)
    wv_HLD = rng.standard_normal((H, L, D)) / math.sqrt(L)
    q_1HTD = cfg.sharpness * np.einsum("TL,HLD->HTD", x_TL, wq_HLD)[None]
    k_1HTD = np.einsum("TL,HLD->HTD", x_TL, wk_HLD)[None]
    v_1HTD = np.einsum("TL,HLD->HTD", x_TL, wv_HLD)[None]
    q_1HTD, k_1HTD = rope_qk(q_1HTD, k_1HTD, rope=RoPE())
    return q_1HTD, k_1HTD, v_1HTD


def make_inputs(cfg: Config, dataset: str, rng: np.random.Generator):
    """(q, k, v, description) of one data set, everything drawn from ``rng``."""
    if dataset == "ar1":
        x_TL = latent_ar1(cfg, rng)
        about = f"AR(1) latent, rho={cfg.rho}, L={cfg.latent}"
    elif dataset == "text":
        bytes_T, path, offset = text_bytes(cfg, rng)
        x_TL = latent_text(cfg, bytes_T, rng)
        about = f"bytes {offset}..{offset + cfg.T - 1} of {path}"
    else:
        raise ValueError(f"dataset: expected one of {DATASETS}, got {dataset!r}")
    return (*project(cfg, x_TL, rng), about)


# ---------------------------------------------------------------------- measures


def block_mass(q, k, v, lse_1HT, block_size: int) -> np.ndarray:
    """mass_1HTN: the exact attention mass of query t on key block j, Σ_{s ∈ j} P_ts.

    From the spec: block_sparse_forward with only key block j kept (in every query
    block that can see it) gives lse over that block, so mass = exp(lse_j - lse).
    """
    T = q.shape[2]
    n = -(-T // block_size)
    mass_1HTN = np.zeros(q.shape[:3] + (n,))
    for j in range(n):
        keep_NN = np.zeros((n, n), np.bool_)
        keep_NN[j:, j] = True
        lse_j = block_sparse_forward(q, k, v, block_layout(keep_NN, block_size), causal=True).lse_BHT
        # rows before block j saw nothing: lse = -inf, mass 0
        mass_1HTN[..., j] = np.exp(lse_j - lse_1HT)
    return mass_1HTN


def dropped_mass(mass_1HTN: np.ndarray, keep_NN: np.ndarray, block_size: int) -> np.ndarray:
    """m_1HT: the exact attention mass of each query on the key blocks its block dropped."""
    T = mass_1HTN.shape[2]
    row_T = np.arange(T) // block_size
    return np.sum(mass_1HTN * ~keep_NN[row_T][None, None], axis=-1)


def _frobenius(x: np.ndarray) -> float:
    # a plain sum of squares: np.linalg.norm calls BLAS, slow on a busy machine's threads
    return math.sqrt(float(np.sum(np.square(x))))


def relative_error(o_1HTE: np.ndarray, exact_1HTE: np.ndarray) -> float:
    """||O - O_exact||_F / ||O_exact||_F over all heads and positions."""
    return _frobenius(o_1HTE - exact_1HTE) / _frobenius(exact_1HTE)


def mass_bound(m_1HT: np.ndarray, v_1HTE: np.ndarray, exact_1HTE: np.ndarray) -> float:
    """The plain estimator's error bound, relative like :func:`relative_error`.

    With m_t the dropped mass, o_exact = (1 - m) o_kept + m o_dropped (the softmax
    split over kept and dropped keys), so o_kept - o_exact = m (o_kept - o_dropped)
    and ||o_kept - o_exact|| <= 2 m max_s ||v_s|| (both outputs are averages of v).
    """
    vmax_1H1 = np.sqrt(np.sum(np.square(v_1HTE), axis=-1)).max(axis=-1, keepdims=True)
    return _frobenius(2 * m_1HT * vmax_1H1) / _frobenius(exact_1HTE)


# ------------------------------------------------------------------------ result


@dataclass
class Result:
    """Everything one run measured; arrays are [dataset, pattern, fraction, mask].

    Entries of power_of_two at fractions other than its own are NaN (it has one).
    """

    config: Config
    seeds: tuple[int, ...]
    fractions_F: np.ndarray
    """The kept fractions run, ascending, with power of two's own among them."""
    budgets_F: np.ndarray
    """Blocks per row b of each fraction."""
    power_of_two_index: int
    """Which fraction is power of two's."""
    error_XPFM: np.ndarray
    """Relative Frobenius error against exact causal attention."""
    kept_XPFM: np.ndarray
    """Kept fraction of the sampled mask itself (its compute)."""
    dropped_XPFM: np.ndarray
    """Exact attention mass on dropped blocks, averaged over queries and heads."""
    bound_XPFM: np.ndarray
    """:func:`mass_bound` of the mask (meaningful for the plain estimator)."""
    mass_by_distance_XSN: np.ndarray
    """Mean exact mass of one key block at block distance δ, [dataset, seed, δ]."""
    about: dict = field(default_factory=dict)
    """Where each data set's numbers came from, per seed."""

    def mean_std(self, dataset: str, pattern: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean error over masks and seeds, and the standard deviation over masks (within
        a seed, root-mean-square over seeds: the spread a new round gives on the same
        data), per fraction; NaN where the pattern was not run."""
        e_FSM = self.error(dataset, pattern).reshape(self.fractions_F.size, len(self.seeds), -1)
        return e_FSM.mean(axis=(1, 2)), np.sqrt(np.mean(e_FSM.var(axis=-1), axis=-1))

    def seed_spread(self, dataset: str, pattern: str) -> np.ndarray:
        """Standard deviation over seeds of the per-seed mean error, per fraction: the
        spread that new data (projections, AR(1) path, text window) gives."""
        e_FSM = self.error(dataset, pattern).reshape(self.fractions_F.size, len(self.seeds), -1)
        return e_FSM.mean(axis=-1).std(axis=-1)

    def error(self, dataset: str, pattern: str) -> np.ndarray:
        """error_FM of one data set and pattern."""
        return self.error_XPFM[self.config.datasets.index(dataset), PATTERNS.index(pattern)]


def _probs(pattern: str, n: int, budget: float) -> np.ndarray | None:
    if pattern in ("harmonic", "harmonic_importance"):
        return prflash.harmonic_probs(n, budget)
    if pattern == "uniform":
        return prflash.uniform_probs(n, budget)
    if pattern == "sliding_window":
        return prflash.sliding_window_probs(n, budget)
    if pattern == "power_of_two":
        return prflash.power_of_two_probs(n)
    return None  # the categorical samples directly


def run(cfg: Config, seed: int) -> Result:
    """Every pattern at every fraction on every data set, ``cfg.masks`` masks each.

    Pure: all randomness comes from ``np.random.default_rng(seed)`` (inputs first,
    then the masks), so a seed gives the same numbers every time.
    """
    from backends import registry

    forward = registry.get("attention.prflash_forward", cfg.backend)
    n, C = cfg.n_blocks, cfg.block_size
    pow2_fraction = prflash.kept_fraction(prflash.power_of_two_probs(n) > 0)
    fractions_F = np.array(sorted(set(cfg.fractions) | {pow2_fraction}))
    pow2_index = int(np.flatnonzero(fractions_F == pow2_fraction)[0])
    budgets_F = np.array([prflash.budget_for_fraction(n, f) for f in fractions_F])
    shape = (len(cfg.datasets), len(PATTERNS), fractions_F.size, cfg.masks)
    error, kept, dropped, bound = (np.full(shape, np.nan) for _ in range(4))
    mass_by_distance_XSN = np.zeros((len(cfg.datasets), 1, n))
    about = {}
    rng = np.random.default_rng(seed)
    delta_NN = prflash.block_distance(n)
    for x, dataset in enumerate(cfg.datasets):
        q, k, v, about[dataset] = make_inputs(cfg, dataset, rng)
        exact = flash_forward(q, k, v, causal=True, tile_t=C, tile_s=C)
        mass_1HTN = block_mass(q, k, v, exact.lse_BHT, C)
        # mean over query blocks i of the mean mass of a query of block i on block i - δ
        mass_1HNN = mass_1HTN.reshape(1, cfg.heads, n, -1, n).mean(axis=3) if cfg.T % C == 0 else \
            np.stack([mass_1HTN[:, :, i * C:(i + 1) * C].mean(axis=2) for i in range(n)], axis=2)
        mass_by_distance_XSN[x, 0] = [mass_1HNN[..., delta_NN == d].mean() for d in range(n)]
        for p, pattern in enumerate(PATTERNS):
            for f, budget in enumerate(budgets_F):
                if pattern == "power_of_two" and f != pow2_index:
                    continue
                probs_NN = _probs(pattern, n, budget)
                importance = probs_NN if pattern == "harmonic_importance" else None
                previous = None
                for m in range(cfg.masks):
                    if pattern == "harmonic_categorical":
                        keep_NN = prflash.sample_harmonic_categorical(n, budget, rng)
                    else:
                        keep_NN = prflash.sample_keep(probs_NN, rng)
                    if previous is not None and np.array_equal(keep_NN, previous):
                        # the same mask again (a deterministic pattern): the same numbers
                        for a in (error, kept, dropped, bound):
                            a[x, p, f, m] = a[x, p, f, m - 1]
                        continue
                    previous = keep_NN
                    o = forward(q, k, v, keep_NN, block_size=C, importance=importance).o_BHTE
                    m_1HT = dropped_mass(mass_1HTN, keep_NN, C)
                    error[x, p, f, m] = relative_error(o, exact.o_BHTE)
                    kept[x, p, f, m] = prflash.kept_fraction(keep_NN)
                    dropped[x, p, f, m] = m_1HT.mean()
                    bound[x, p, f, m] = mass_bound(m_1HT, v, exact.o_BHTE)
    return Result(cfg, (seed,), fractions_F, budgets_F, pow2_index, error, kept, dropped, bound,
                  mass_by_distance_XSN, {seed: about})


def pool(results: Sequence[Result]) -> Result:
    """Several seeds' results as one: masks of every seed side by side."""
    first = results[0]
    for r in results[1:]:
        if r.config != first.config:
            raise ValueError("pool: results of different configs")

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(r, name) for r in results], axis=-1)

    return replace(
        first,
        seeds=tuple(s for r in results for s in r.seeds),
        error_XPFM=cat("error_XPFM"), kept_XPFM=cat("kept_XPFM"),
        dropped_XPFM=cat("dropped_XPFM"), bound_XPFM=cat("bound_XPFM"),
        mass_by_distance_XSN=np.concatenate([r.mass_by_distance_XSN for r in results], axis=1),
        about={k: v for r in results for k, v in r.about.items()},
    )


def table(result: Result) -> str:
    """The error table as Markdown, one per data set: mean ± std over masks (see
    :meth:`Result.mean_std`), and the dropped attention mass of the plain harmonic
    pattern in brackets."""
    out = []
    seeds, masks = len(result.seeds), result.error_XPFM.shape[-1] // len(result.seeds)
    for dataset in result.config.datasets:
        out.append(f"\n**{dataset}**: ‖O − O_exact‖ / ‖O_exact‖, mean over {seeds} seed(s) × {masks} masks "
                   f"± std over masks; [dropped mass], harmonic\n")
        out += ["| kept fraction | b | " + " | ".join(LABELS[p] for p in PATTERNS) + " |",
                "|" + "---|" * (len(PATTERNS) + 2)]
        x = result.config.datasets.index(dataset)
        stats = {p: result.mean_std(dataset, p) for p in PATTERNS}
        for f, frac in enumerate(result.fractions_F):
            cells = []
            for pattern in PATTERNS:
                mean, std = stats[pattern][0][f], stats[pattern][1][f]
                cells.append("" if not np.isfinite(mean) else
                             f"{mean:.4f} ± {std:.4f}" if std > 0 else f"{mean:.4f}")
            cells[0] += f" [{np.mean(result.dropped_XPFM[x, 0, f]):.3f}]"
            mark = " (power of two's)" if f == result.power_of_two_index else ""
            out.append(f"| {frac:.3f}{mark} | {result.budgets_F[f]:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# -------------------------------------------------------------------------- plot


def plot(result: Result):
    """Error against kept fraction (mean ± std) per data set, and the exact attention mass
    by block distance. Returns a matplotlib Figure (object API, no pyplot)."""
    from matplotlib.figure import Figure

    datasets = result.config.datasets
    fig = Figure(figsize=(5.2 * len(datasets), 8.0), dpi=100, layout="constrained")
    axes = fig.subplots(2, len(datasets), squeeze=False)
    markers = dict(zip(PATTERNS, "os^vDP"))
    for x, dataset in enumerate(datasets):
        ax = axes[0, x]
        for p, pattern in enumerate(PATTERNS):
            mean_F, std_F = result.mean_std(dataset, pattern)
            ok = np.isfinite(mean_F) & (result.fractions_F < 1)
            if not ok.any():
                continue
            ax.errorbar(result.fractions_F[ok], mean_F[ok], yerr=std_F[ok],
                        marker=markers[pattern], ms=5, capsize=3, lw=1,
                        ls="none" if pattern == "power_of_two" else "-", label=LABELS[pattern])
        ax.set_yscale("log")
        ax.set(xlabel="kept fraction of causal blocks (compute)", ylabel="‖O − O_exact‖ / ‖O_exact‖",
               title=f"{dataset}: error at equal compute (± std over masks)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[1, x]
        mbd_N = result.mass_by_distance_XSN[x].mean(axis=0)
        d_N = np.arange(mbd_N.size)
        ax.loglog(d_N[1:], mbd_N[1:], "o-", ms=3, label="exact mass of one key block")
        ax.loglog(d_N[1:], mbd_N[1] / d_N[1:], ":", color="0.5", label="∝ 1/δ")
        ax.set(xlabel="block distance δ = i − j", ylabel="mean attention mass",
               title=f"{dataset}: mass by distance (δ = 0 holds {mbd_N[0]:.2f})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def main(argv: Sequence[str] | None = None) -> Result:
    """The recorded run (README.md): ``python -m theory.prflash.experiment [--backend cpu]
    [--seeds 3] [--png PATH]``. Prints the setting, the data windows, the table and the
    mass by distance; writes the figure only where ``--png`` says."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--backend", default="spec", help="prflash_forward from the registry: spec | cpu")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. n-1, pooled")
    parser.add_argument("--tiny", action="store_true", help="Config.tiny() instead of Config.full()")
    parser.add_argument("--png", default=None, help="write the figure here")
    args = parser.parse_args(argv)
    cfg = replace(Config.tiny() if args.tiny else Config.full(), backend=args.backend)
    t0 = time.perf_counter()
    res = pool([run(cfg, seed) for seed in range(args.seeds)])
    print(f"{cfg}\nseeds {res.seeds}: {time.perf_counter() - t0:.0f} s")
    for seed, about in res.about.items():
        print(f"  seed {seed}: {about}")
    print(table(res))
    for x, dataset in enumerate(cfg.datasets):
        mass_N = res.mass_by_distance_XSN[x].mean(axis=0)
        print(f"{dataset}: mass of one key block at δ = 0..7: {np.round(mass_N[:8], 4).tolist()}, "
              f"all of δ >= 8: {mass_N[8:].sum():.4f} (summed over δ)")
    if args.png:
        plot(res).savefig(args.png)
    return res


if __name__ == "__main__":
    main()
