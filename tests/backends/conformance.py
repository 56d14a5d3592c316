"""The conformance checks of the attention ops, as plain functions.

The pytest suites (``test_attention_conformance.py``, ``test_softmax_conformance.py``)
run them on every registered backend over hypothesis-drawn problems; the lessons'
``check()`` runs the very same functions on a learner's implementation.

For a working dtype ``dtype`` (see :mod:`spec.tolerance`):
    oracle    = the oracle (spec.attention.naive; the float64-validated tiled backward)
                on the inputs widened to oracle_dtype(dtype)
    baselines = the spec function the implementation mirrors, in ``dtype``, on the
                problem as given and on REORDERINGS copies whose axes T, S, D and E
                are permuted (and the results permuted back): attention is exactly
                equivariant under those, so the copies differ from the first only in
                rounding order, and together they measure what ``dtype`` costs better
                than one order's luck does
    out       = the implementation under test, in ``dtype``
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from spec.attention.naive import attention, causal_visible_TS
from spec.attention.softmax import softmax
from spec.attention.tiled import flash_backward, flash_forward
from spec.tolerance import assert_close, oracle_dtype
from tests.strategies import AttentionProblem, SoftmaxProblem

REORDERINGS = 16


class _Inputs(NamedTuple):
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    do: np.ndarray
    bias: np.ndarray | None
    mask: np.ndarray | None
    causal: bool


class _Reordering(NamedTuple):
    """Permutations of the axes T (q, dO, bias, mask), S (k, v, bias, mask), D (q, k)
    and E (v, dO). Attention is exactly equivariant under each (causal becomes an
    explicit mask first), so only the order of the sums changes."""

    t: np.ndarray
    s: np.ndarray
    d: np.ndarray
    e: np.ndarray

    def apply(self, x: _Inputs) -> _Inputs:
        B, H, T, _ = x.q.shape
        S = x.k.shape[2]
        # causal is a statement about positions; after permuting S it becomes a mask
        mask = x.mask
        if x.causal:
            causal = causal_visible_TS(T, S)[None, None]
            mask = causal if mask is None else mask & causal
        full = (B, H, T, S)
        return _Inputs(
            q=x.q[:, :, self.t][..., self.d],
            k=x.k[:, :, self.s][..., self.d],
            v=x.v[:, :, self.s][..., self.e],
            do=x.do[:, :, self.t][..., self.e],
            bias=None if x.bias is None else np.broadcast_to(x.bias, full)[:, :, self.t][..., self.s],
            mask=None if mask is None else np.broadcast_to(mask, full)[:, :, self.t][..., self.s],
            causal=False,
        )

    def undo_outputs(self, o, lse):
        t_inv = np.argsort(self.t)
        return o[:, :, t_inv][..., np.argsort(self.e)], lse[:, :, t_inv]

    def undo_grads(self, dq, dk, dv):
        t_inv, s_inv = np.argsort(self.t), np.argsort(self.s)
        d_inv, e_inv = np.argsort(self.d), np.argsort(self.e)
        return dq[:, :, t_inv][..., d_inv], dk[:, :, s_inv][..., d_inv], dv[:, :, s_inv][..., e_inv]


def _inputs(problem: AttentionProblem, dtype) -> tuple[_Inputs, _Inputs]:
    """The problem's inputs in ``dtype`` and the same values widened for the oracle."""
    a = problem.arrays(dtype)
    wide = oracle_dtype(dtype)
    w = {n: (None if x is None else x.astype(wide)) for n, x in a.items() if n != "mask"}
    return (
        _Inputs(a["q"], a["k"], a["v"], a["do"], a["bias"], a["mask"], problem.causal),
        _Inputs(w["q"], w["k"], w["v"], w["do"], w["bias"], a["mask"], problem.causal),
    )


def _reorderings(problem: AttentionProblem) -> list[_Reordering]:
    rng = np.random.default_rng(problem.seed ^ 0x5EED)
    return [
        _Reordering(*(rng.permutation(n) for n in (problem.T, problem.S, problem.D, problem.E)))
        for _ in range(REORDERINGS)
    ]


def _check_dtype_kept(name: str, x: np.ndarray, dtype) -> None:
    assert isinstance(x, np.ndarray), f"{name}: expected numpy.ndarray, got {type(x).__name__}"
    assert x.dtype == dtype, f"{name}: expected dtype {dtype}, got {x.dtype}"


def _assert_all(names, outs, oracles, baselines, dtype, problem) -> None:
    for i, (name, got, want) in enumerate(zip(names, outs, oracles)):
        _check_dtype_kept(name, got, dtype)
        assert got.shape == want.shape, f"{name}: expected shape {want.shape}, got {got.shape}"
        assert_close(got, want, [b[i] for b in baselines], name=f"{name} {problem}")


def check_forward(fn: Callable, problem: AttentionProblem, dtype, *, spec_fn=flash_forward) -> None:
    """``fn`` (flash_forward's signature) agrees with the oracle on ``problem``."""
    dtype = np.dtype(dtype)
    x, w = _inputs(problem, dtype)
    tiles = {"tile_t": problem.tile_t, "tile_s": problem.tile_s}

    def run(f, y: _Inputs, **extra):
        return f(y.q, y.k, y.v, bias=y.bias, mask=y.mask, causal=y.causal, scale=problem.scale, **extra)

    oracle = run(attention, w)
    baselines = [run(spec_fn, x, **tiles)]
    baselines += [r.undo_outputs(*run(spec_fn, r.apply(x), **tiles)) for r in _reorderings(problem)]
    out = run(fn, x, **tiles)
    _assert_all(("o_BHTE", "lse_BHT"), out, oracle, baselines, dtype, problem)


def check_backward(
    fn: Callable, problem: AttentionProblem, dtype, *, forward_fn: Callable,
    spec_fn=flash_backward,
) -> None:
    """``fn`` (flash_backward's signature) agrees with the float64-validated spec backward.

    Each backward is fed the forward outputs (o, lse) of its own side: ``fn`` those
    of ``forward_fn`` (the same backend's forward), each baseline those of the spec's
    forward on the same reordered inputs, the oracle those of the wide forward. This
    is how a backward is used, and it matters: with logits of 1e4 one rounding of a
    score moves exp(score - lse) by ~1e-3 relative, so a backward fed an lse whose
    scores were rounded differently from its own is judged on the mismatch, not on
    itself.
    """
    dtype = np.dtype(dtype)
    x, w = _inputs(problem, dtype)
    tiles = {"tile_t": problem.tile_t, "tile_s": problem.tile_s}

    def run(fwd_fn, bwd_fn, y: _Inputs):
        opts = {"bias": y.bias, "mask": y.mask, "causal": y.causal, "scale": problem.scale, **tiles}
        fwd = fwd_fn(y.q, y.k, y.v, **opts)
        return bwd_fn(y.q, y.k, y.v, *fwd, y.do, **opts)

    oracle = run(flash_forward, flash_backward, w)
    baselines = [run(flash_forward, spec_fn, x)]
    for r in _reorderings(problem):
        baselines.append(r.undo_grads(*run(flash_forward, spec_fn, r.apply(x))))
    out = run(forward_fn, fn, x)
    _assert_all(("dq_BHTD", "dk_BGSD", "dv_BGSE"), out, oracle, baselines, dtype, problem)


def check_softmax(fn: Callable, problem: SoftmaxProblem, dtype, *, spec_fn=softmax) -> None:
    """``fn`` (softmax's signature) agrees with the oracle on ``problem``.

    The softmax is exactly equivariant under permuting rows and columns, so the
    baselines are the spec on REORDERINGS permuted copies as well, as for attention.
    """
    dtype = np.dtype(dtype)
    x = problem.x(dtype)
    oracle = softmax(x.astype(oracle_dtype(dtype)))
    baselines = [spec_fn(x)]
    rng = np.random.default_rng(problem.seed ^ 0x5EED)
    for _ in range(REORDERINGS):
        t, s = rng.permutation(problem.T), rng.permutation(problem.S)
        p, lse = spec_fn(x[t][:, s])
        t_inv = np.argsort(t)
        baselines.append((p[t_inv][:, np.argsort(s)], lse[t_inv]))
    out = fn(x)
    _assert_all(("p_TS", "lse_T"), out, oracle, baselines, dtype, problem)
