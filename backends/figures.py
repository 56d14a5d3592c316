"""The figures of the lessons, as functions of measured data.

Each ``*_figure`` function takes numbers that someone measured (a lesson cell, a
benchmark, ``attnspec tour``) and returns a :class:`matplotlib.figure.Figure`. They
compute nothing themselves, so a figure shows exactly the data it was given.

The figures are built with matplotlib's object-oriented API (``Figure()``, never
``pyplot``): no GUI backend is selected and no global figure state is touched, so
they work on a machine with no display (``Figure.savefig`` renders PNG with Agg)
and in Jupyter (the inline backend displays a returned Figure). matplotlib is
imported inside the functions, so importing this module costs nothing and does not
require matplotlib.

:func:`attention_figures` measures the data of lesson 01 (spec, and the cpu backend
where it can be loaded) and writes its key figures as PNG files.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

_DPI = 110


def _new_figure(width: float, height: float, ncols: int = 1, nrows: int = 1, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def online_softmax_trace_figure(
    score_S: np.ndarray,
    tile_s: int,
    m_N: np.ndarray,
    l_N: np.ndarray,
    alpha_N: np.ndarray,
) -> "Figure":
    """The online softmax on one query row, one key tile at a time.

    Parameters
        score_S: the row's scores against S keys (-inf = masked, not drawn).
        tile_s: keys per tile; tile j covers keys [j·tile_s, (j+1)·tile_s).
        m_N, l_N: running maximum and running denominator after each of the
            N = ceil(S / tile_s) tiles, l measured relative to the current m.
        alpha_N: the rescaling factor exp(m_old - m_new) applied at each tile
            (alpha_N[0] is not drawn: the first tile has nothing to rescale).

    Top panel: the scores and the running maximum m. Bottom panel: the running
    denominator l after each tile, labelled with the factor α that rescaled the
    old l when m moved (α = 1 when it did not).
    """
    score_S = np.asarray(score_S, dtype=float)
    S = score_S.size
    N = len(m_N)
    fig, axes = _new_figure(7.5, 5.2, nrows=2, sharex=True)
    ax_s, ax_l = axes[0, 0], axes[1, 0]
    keys = np.arange(S)
    colors = [f"C{j % 10}" for j in keys // tile_s]
    finite = np.isfinite(score_S)
    ax_s.scatter(keys[finite], score_S[finite], c=np.array(colors)[finite], s=22, zorder=3,
                 label="score of key s")
    ends = np.minimum(np.arange(1, N + 1) * tile_s, S)
    starts = np.arange(N) * tile_s
    for j in range(N):
        ax_s.hlines(m_N[j], starts[j] - 0.5, ends[j] - 0.5, colors="k", lw=2,
                    label="running max m" if j == 0 else None)
        if j > 0 and m_N[j] != m_N[j - 1]:
            ax_s.vlines(starts[j] - 0.5, m_N[j - 1], m_N[j], colors="k", lw=1, ls=":")
    for ax in (ax_s, ax_l):
        for b in starts[1:]:
            ax.axvline(b - 0.5, color="0.8", lw=0.8, zorder=0)
    ax_s.set_ylabel("score")
    ax_s.set_title(f"Online softmax over one query row: S={S} keys in tiles of {tile_s}")
    ax_s.legend(loc="upper left", fontsize=8)
    ax_l.plot(ends - 0.5, l_N, "o-", color="C3", label="running denominator l after the tile")
    for j in range(N):
        # the first tile has no old state to rescale
        text = "first tile" if j == 0 else f"α={alpha_N[j]:.2g}"
        ax_l.annotate(text, (ends[j] - 0.5, l_N[j]), textcoords="offset points", xytext=(-4, 8),
                      ha="right", fontsize=8)
    ax_l.set_xlabel("key index s (grey lines: tile boundaries)")
    ax_l.set_ylabel("l = Σ exp(score − m)")
    ax_l.set_ylim(0, max(1.0, float(np.max(l_N))) * 1.25)
    ax_l.legend(loc="upper left", fontsize=8)
    return fig


def tile_error_figure(
    tile_t_list: Sequence[int],
    tile_s_list: Sequence[int],
    errors: Mapping[str, np.ndarray],
    bounds: Mapping[str, float],
    *,
    title: str = "FlashAttention forward: error against the oracle for every tile size",
) -> "Figure":
    """Max error of the tiled forward against the oracle, over a grid of tile sizes.

    Parameters
        tile_t_list, tile_s_list: the query and key tile sizes that were run.
        errors: for each working dtype name, an array [i_t, i_s] of
            max |o − oracle| for tile_t_list[i_t] × tile_s_list[i_s].
        bounds: for each dtype name, the tolerance bound of spec.tolerance
            (2 · baseline error + floor) that the errors must stay under.

    One panel per dtype, log-log: x is tile_s, one line per tile_t (distinct
    markers, since the lines often coincide: the query tiling changes no row's
    arithmetic), the dashed line is the bound. Lines under the bound are the
    claim "the result does not depend on the tiling".
    """
    names = list(errors)
    fig, axes = _new_figure(5.0 * len(names), 3.8, ncols=len(names))
    styles = [("o", 9, "-"), ("s", 6, "--"), ("x", 7, ":"), ("^", 5, "-."), ("+", 8, "-")]
    for ax, name in zip(axes[0], names):
        err = np.asarray(errors[name], dtype=float)
        for i, tt in enumerate(tile_t_list):
            marker, size, ls = styles[i % len(styles)]
            # an exact 0 has no place on a log axis: draw it at the smallest float
            ax.plot(tile_s_list, np.maximum(err[i], np.finfo(float).tiny), marker=marker,
                    ms=size, ls=ls, mfc="none" if marker in "os^" else None,
                    label=f"tile_t = {tt}")
        ax.axhline(bounds[name], color="k", ls="--", lw=1, label="tolerance bound")
        ax.set_xscale("log", base=2)
        ax.set_xticks(tile_s_list, [str(t) for t in tile_s_list])
        ax.set_yscale("log")
        ax.set_xlabel("tile_s (keys per tile)")
        ax.set_ylabel("max |o − oracle|")
        ax.set_title(f"inputs in {name}")
        positive = err[err > 0]
        low = min(positive.min() if positive.size else bounds[name], bounds[name]) / 30
        ax.set_ylim(low, bounds[name] * 30)
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(title)
    return fig


def timing_figure(
    T_list: Sequence[int],
    seconds: Mapping[str, Sequence[float]],
    *,
    title: str = "Attention forward: time against sequence length",
    note: str = "",
) -> "Figure":
    """Wall time of several implementations against the sequence length T (= S).

    Parameters
        T_list: the sequence lengths that were timed.
        seconds: for each implementation's label, its best time per T.
        note: a line under the title (e.g. the problem shape and the machine).

    Log-log axes; a grey T² guide through the first point of the first series
    shows the quadratic cost every exact attention pays in FLOPs.
    """
    fig, axes = _new_figure(6.4, 4.2)
    ax = axes[0, 0]
    T_arr = np.asarray(T_list, dtype=float)
    for label, s in seconds.items():
        ax.plot(T_arr, s, "o-", label=label)
    first = np.asarray(next(iter(seconds.values())), dtype=float)
    ax.plot(T_arr, first[0] * (T_arr / T_arr[0]) ** 2, color="0.6", ls=":", label="∝ T² guide")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(T_arr, [str(int(t)) for t in T_arr])
    ax.set_xlabel("sequence length T = S")
    ax.set_ylabel("seconds per call (best of repeats)")
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    return fig


def napkin_figure(
    labels: Sequence[str],
    predicted_s: Sequence[float],
    measured_s: Sequence[float],
    *,
    title: str = "Napkin math against the stopwatch",
) -> "Figure":
    """Predicted (roofline) against measured time for each implementation, as bars.

    Parameters
        labels: one per implementation.
        predicted_s: max(FLOPs / peak rate, bytes / bandwidth) for each.
        measured_s: the measured time of each.
    """
    fig, axes = _new_figure(6.0, 3.6)
    ax = axes[0, 0]
    x = np.arange(len(labels))
    # milliseconds on a linear axis: bar lengths on a log axis would mean nothing
    for offset, values, label in ((-0.2, predicted_s, "predicted (roofline bound)"),
                                  (0.2, measured_s, "measured")):
        bars = ax.bar(x + offset, np.asarray(values) * 1e3, 0.4, label=label)
        ax.bar_label(bars, fmt="%.3g ms", fontsize=8, padding=2)
    ax.set_xticks(x, labels)
    ax.set_ylabel("milliseconds")
    ax.margins(y=0.15)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


# --- data for attention_figures ------------------------------------------------------


def best_time(fn: Callable, *args, repeat: int = 3, min_total_s: float = 0.2, **kwargs) -> float:
    """The fastest call in seconds (the least disturbed measurement).

    One untimed warm-up call (compilation and first-touch page faults are not the
    kernel), then ``fn`` at least ``repeat`` times and, for fast functions, until
    ``min_total_s`` has passed (at most 100 calls), so that a short call is not
    judged by a few samples on a busy machine.
    """
    fn(*args, **kwargs)
    best, total, calls = float("inf"), 0.0, 0
    while calls < repeat or (total < min_total_s and calls < 100):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        dt = time.perf_counter() - t0
        best, total, calls = min(best, dt), total + dt, calls + 1
    return best


def _trace_data(S: int, tile_s: int, seed: int = 0):
    """A row of scores with an upward drift (so the maximum moves) and its running stats.

    m_j and l_j are computed from their definitions on the prefix of the first j
    tiles (max, and Σ exp(score − max)); α_j = exp(m_{j−1} − m_j).
    """
    rng = np.random.default_rng(seed)
    score_S = 1.5 * rng.standard_normal(S) + np.linspace(0.0, 4.0, S)
    ends = list(range(tile_s, S, tile_s)) + [S]
    m_N = np.array([score_S[:e].max() for e in ends])
    l_N = np.array([np.exp(score_S[:e] - m).sum() for e, m in zip(ends, m_N)])
    alpha_N = np.exp(np.concatenate([[m_N[0]], m_N[:-1]]) - m_N)
    return score_S, m_N, l_N, alpha_N


def _tile_error_data(small: bool):
    from spec.attention.naive import attention
    from spec.attention.tiled import flash_forward
    from spec.tolerance import compare, oracle_dtype

    T, S = (48, 80) if small else (200, 300)
    tile_t_list = [5, 16, 64]
    tile_s_list = [1, 2, 3, 5, 8, 16, 32, 64, 128] + ([] if small else [256, 512])
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal(s) for s in ((1, 2, T, 16), (1, 1, S, 16), (1, 1, S, 16)))
    errors, bounds = {}, {}
    for dtype in (np.float64, np.float32):
        a = [x.astype(dtype) for x in (q, k, v)]
        wide = [x.astype(oracle_dtype(dtype)) for x in a]
        oracle = attention(*wide, causal=True).o_BHTE
        baseline = attention(*a, causal=True).o_BHTE
        err = np.zeros((len(tile_t_list), len(tile_s_list)))
        bound = 0.0
        for i, tt in enumerate(tile_t_list):
            for j, ts in enumerate(tile_s_list):
                out = flash_forward(*a, causal=True, tile_t=tt, tile_s=ts).o_BHTE
                rep = compare(out, oracle, baseline)
                err[i, j], bound = rep.err, rep.bound
        errors[np.dtype(dtype).name] = err
        bounds[np.dtype(dtype).name] = bound
    return tile_t_list, tile_s_list, errors, bounds


def _timing_data(small: bool):
    from backends import registry
    from spec.attention.naive import attention
    from spec.attention.tiled import flash_forward

    T_list = [128, 256, 512] if small else [256, 512, 1024, 2048]
    H, D = 2, 64
    impls: dict[str, Callable] = {
        "spec naive (NumPy)": attention,
        "spec flash_forward (NumPy)": flash_forward,
        "cpu flash_forward (Numba)": registry.get("attention.flash_forward", "cpu"),
    }
    rng = np.random.default_rng(2)
    seconds: dict[str, list[float]] = {name: [] for name in impls}
    for T in T_list:
        q, k, v = (rng.standard_normal((1, H, T, D)).astype(np.float32) for _ in range(3))
        for name, fn in impls.items():
            seconds[name].append(best_time(fn, q, k, v, repeat=2 if small else 3))
    return T_list, seconds, f"B=1, H={H}, D=E={D}, float32, not causal"


def attention_figures(out_dir, *, small: bool) -> list[Path]:
    """Measure the data of lesson 01 and write its key figures to ``out_dir`` as PNG.

    Writes ``attention_online_softmax.png`` (the running max and denominator on one
    row), ``attention_tile_error.png`` (error against the oracle over a grid of tile
    sizes, float64 and float32) and ``attention_timing.png`` (spec naive, spec
    flash and the Numba backend, against T). ``small`` picks the
    sizes of the lessons' small mode (seconds) instead of the default ones (about a
    minute). Returns the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig, name: str) -> None:
        path = out_dir / name
        fig.savefig(path)
        written.append(path)

    S, tile_s = 32, 8
    score_S, m_N, l_N, alpha_N = _trace_data(S, tile_s)
    save(online_softmax_trace_figure(score_S, tile_s, m_N, l_N, alpha_N),
         "attention_online_softmax.png")
    save(tile_error_figure(*_tile_error_data(small)), "attention_tile_error.png")
    T_list, seconds, note = _timing_data(small)
    save(timing_figure(T_list, seconds, note=note), "attention_timing.png")
    return written
