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

A sum's association is not part of the mechanism either, and NumPy's ``einsum`` picks
one that depends on the machine's SIMD width (lane-parallel partial sums, close to
pairwise, once D reaches a vector's width). Compiled kernels sum q·k left to right over
d, an order whose rounding error is up to a few times larger on the same inputs; with
logits of 30 or 1e4, exp turns that into output error. So SEQUENTIAL of the baselines
are the spec with its scores summed left to right over d (on the problem as given and
on the first reorderings): :func:`_scores_summed_in_order` feeds the spec the
difference between the two scores through its bias, which reproduces the sequential
score exactly (checked, else that baseline is left out). Measured before this was
added: 1 in 1500 drawn float32 problems put the Numba forward just outside the bound.

With positional options (RoPE, ALiBi forms) the permutations of T and S would move
positions, so the baselines run on the problem with its positions materialised in
``dtype`` (q and k rotated, the distance bias added to the bias) through the
spec's own functions: that is the spec's arithmetic, and it is permutable.
Implementation and oracle get the positional keywords themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from spec.attention import prflash
from spec.attention.block_sparse import (
    block_layout,
    block_sparse_backward,
    block_sparse_forward,
    dense_equivalent,
)
from spec.attention.checks import check_scale
from spec.attention.naive import attention, causal_visible_TS, expand_kv_heads
from spec.attention.positional import (
    check_positions,
    materialise,
    query_positions,
    unrotate,
)
from spec.attention.readout import readout_forward, readout_mse, rounding_baselines
from spec.attention.softmax import softmax
from spec.attention.tiled import flash_backward, flash_forward
from spec.position.rope import rope_qk
from spec.tolerance import assert_close, oracle_dtype
from tests.strategies import (
    AttentionProblem,
    BlockSparseProblem,
    ReadoutProblem,
    SoftmaxProblem,
    VarlenProblem,
)

REORDERINGS = 16
SEQUENTIAL = 4


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
    return _reorderings_of(problem.T, problem.S, problem.D, problem.E, problem.seed)


def _reorderings_of(T: int, S: int, D: int, E: int, seed: int) -> list[_Reordering]:
    rng = np.random.default_rng(seed ^ 0x5EED)
    return [_Reordering(*(rng.permutation(n) for n in (T, S, D, E))) for _ in range(REORDERINGS)]


def _scores_summed_in_order(x: _Inputs, scale: float | None) -> _Inputs | None:
    """The problem whose spec scores are fl(fl(scale · Σ_d q_d k_d, left to right) + bias).

    The spec computes fl(fl(scale · einsum(q, k)) + bias'); with bias' = fl(b - a) for
    the wanted score b and the einsum score a, a + bias' = b exactly whenever b - a is
    representable (Sterbenz: a and b within a factor of two), which holds here since
    the two differ by rounding only. Every entry is checked; None where one is not exact.
    """
    B, H, T, D = x.q.shape
    dtype = x.q.dtype
    scale = dtype.type(check_scale(scale, D))
    k = expand_kv_heads(x.k, H)
    with np.errstate(invalid="ignore", over="ignore"):
        dot = np.zeros((B, H, T, k.shape[2]), dtype)
        for d in range(D):  # left to right over d, each product and sum rounded in dtype
            dot = dot + x.q[..., d, None] * k[..., None, :, d]
        wanted = scale * dot
        if x.bias is not None:
            wanted = wanted + x.bias
        spec_score = scale * np.einsum("BHTD,BHSD->BHTS", x.q, k)
        bias = wanted - spec_score
        bias[np.isneginf(wanted)] = -np.inf
        exact = (spec_score + bias == wanted) | np.isneginf(wanted)
    if not exact.all() or not np.isfinite(bias[~np.isneginf(bias)]).all():
        return None
    return x._replace(bias=bias)


def _baseline_inputs(xm: _Inputs, reorderings: list[_Reordering], scale):
    """(reordering or None, inputs) of every baseline: the problem, its REORDERINGS, and
    the sequential-score variants of the first SEQUENTIAL of those (where one is not
    exact, the einsum-score input it came from stands in, so the count is fixed)."""
    runs = [(None, xm)] + [(r, r.apply(xm)) for r in reorderings]
    for r, y in runs[:SEQUENTIAL]:
        z = _scores_summed_in_order(y, scale)
        runs.append((r, y if z is None else z))
    return runs


def _materialise(x: _Inputs, positions: dict) -> _Inputs:
    """The same problem without positional options (spec.attention.positional.materialise)."""
    if not positions:
        return x
    _, H, _, D = x.q.shape
    pos = check_positions(positions.get("rope"), positions.get("alibi_slopes"),
                          positions.get("alibi_form", "linear"), H=H, D=D, dtype=x.q.dtype)
    q, k, bias = materialise(x.q, x.k, x.bias, pos)
    return x._replace(q=q, k=k, bias=bias)


def _unrotate_grads(grads, positions: dict, T: int, S: int):
    """Gradients with respect to rotated q, k carried back through the rotation."""
    if "rope" not in positions:
        return grads
    dq, dk, dv = grads
    pos = check_positions(positions["rope"], None, "linear", H=dq.shape[1], D=dq.shape[3],
                          dtype=dq.dtype)
    return unrotate(dq, query_positions(T, S), pos), unrotate(dk, np.arange(S), pos), dv


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
    positions = problem.positions()

    def run(f, y: _Inputs, **extra):
        return f(y.q, y.k, y.v, bias=y.bias, mask=y.mask, causal=y.causal, scale=problem.scale, **extra)

    oracle = run(attention, w, **positions)
    xm = _materialise(x, positions)
    baselines = []
    for r, y in _baseline_inputs(xm, _reorderings(problem), problem.scale):
        res = run(spec_fn, y, **tiles)
        baselines.append(res if r is None else r.undo_outputs(*res))
    out = run(fn, x, **tiles, **positions)
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
    positions = problem.positions()

    def run(fwd_fn, bwd_fn, y: _Inputs, **extra):
        opts = {"bias": y.bias, "mask": y.mask, "causal": y.causal, "scale": problem.scale,
                **tiles, **extra}
        fwd = fwd_fn(y.q, y.k, y.v, **opts)
        return bwd_fn(y.q, y.k, y.v, *fwd, y.do, **opts)

    def back(grads):
        return _unrotate_grads(grads, positions, problem.T, problem.S)

    oracle = run(flash_forward, flash_backward, w, **positions)
    xm = _materialise(x, positions)
    baselines = []
    for r, y in _baseline_inputs(xm, _reorderings(problem), problem.scale):
        res = run(flash_forward, spec_fn, y)
        baselines.append(back(res if r is None else r.undo_grads(*res)))
    out = run(forward_fn, fn, x, **positions)
    _assert_all(("dq_BHTD", "dk_BGSD", "dv_BGSE"), out, oracle, baselines, dtype, problem)


def check_varlen(fn: Callable, problem: VarlenProblem, dtype) -> None:
    """``fn`` (flash_varlen_forward's signature) agrees with the oracle run per sequence.

    Oracle and baselines are built sequence by sequence exactly as in
    :func:`check_forward` (each sequence its own problem, positions from 0) and packed;
    ``fn`` runs once on the packed batch. Rows of a sequence without keys must be
    o = 0, lse = -inf in every one of them.
    """
    dtype = np.dtype(dtype)
    wide = oracle_dtype(dtype)
    a = problem.arrays(dtype)
    positions = problem.positions()
    cu_q, cu_k = problem.cu_seqlens()
    T, H, E = a["q"].shape[0], problem.H, problem.E
    tiles = {"tile_t": problem.tile_t, "tile_s": problem.tile_s}

    def empty(dt):
        return np.zeros((T, H, E), dt), np.full((H, T), -np.inf, dt)

    oracle = empty(wide)
    baselines = [empty(dtype) for _ in range(1 + REORDERINGS + SEQUENTIAL)]

    def store(into, o_BHTE, lse_BHT, t0, t1):
        into[0][t0:t1] = o_BHTE[0].transpose(1, 0, 2)
        into[1][:, t0:t1] = lse_BHT[0]

    for b in range(len(problem.lengths_q)):
        t0, t1, s0, s1 = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
        if t0 == t1 or s0 == s1:
            continue
        x = _Inputs(
            q=a["q"][t0:t1].transpose(1, 0, 2)[None], k=a["k"][s0:s1].transpose(1, 0, 2)[None],
            v=a["v"][s0:s1].transpose(1, 0, 2)[None], do=np.zeros((1, H, t1 - t0, E), dtype),
            bias=None, mask=None, causal=problem.causal,
        )
        w = x._replace(q=x.q.astype(wide), k=x.k.astype(wide), v=x.v.astype(wide))

        def run(f, y: _Inputs, **extra):
            return f(y.q, y.k, y.v, causal=y.causal, mask=y.mask, bias=y.bias,
                     scale=problem.scale, **extra)

        store(oracle, *run(attention, w, **positions), t0, t1)
        xm = _materialise(x, positions)
        reorderings = _reorderings_of(t1 - t0, s1 - s0, problem.D, E, problem.seed ^ b)
        for (r, y), into in zip(_baseline_inputs(xm, reorderings, problem.scale), baselines):
            res = run(flash_forward, y, **tiles)
            store(into, *(res if r is None else r.undo_outputs(*res)), t0, t1)
    out = fn(a["q"], a["k"], a["v"], cu_q, cu_k, **problem.options())
    _assert_all(("o_THE", "lse_HT"), out, oracle, baselines, dtype, problem)



class _SparseCase(NamedTuple):
    """A block-sparse problem three ways: the call of the op under test, its spec call,
    and the dense problem with the expanded block mask (and bias) it equals."""

    call: Callable
    """call(fn, q, k, v) for the op's forward; call(fn, q, k, v, o, lse, do) for its backward."""
    x: _Inputs
    wide: _Inputs


def _sparse_case(problem: BlockSparseProblem, dtype, op: str) -> _SparseCase:
    """``op`` is "block_sparse" (the CSR layout and block_bias) or "prflash" (the boolean
    mask and importance probabilities, causal)."""
    a = problem.arrays(dtype)
    keep = problem.keep()
    layout = block_layout(keep, problem.block_size)
    opts = {"scale": problem.scale}
    if op == "prflash":
        assert problem.causal, "PrFlashAttention is causal"
        importance = None
        if problem.block_bias:
            rng = np.random.default_rng(problem.seed + 3)
            importance = rng.uniform(0.05, 1.0, keep.shape)
        block_bias = prflash.importance_bias(importance, keep, dtype)
        opts.update(block_size=problem.block_size, importance=importance)
        layout_arg = keep
    else:
        block_bias = problem.bias_of(layout, dtype)
        opts.update(causal=problem.causal, block_bias=block_bias)
        layout_arg = layout

    def call(fn, *arrays):
        return fn(*arrays, layout_arg, **opts)

    mask, bias = dense_equivalent(layout, problem.T, problem.S, block_bias)
    wide_dt = oracle_dtype(dtype)
    x = _Inputs(a["q"], a["k"], a["v"], a["do"], bias, mask, problem.causal)
    wide = _Inputs(*(y.astype(wide_dt) for y in (x.q, x.k, x.v, x.do)),
                   None if bias is None else bias.astype(wide_dt), mask, problem.causal)
    return _SparseCase(call, x, wide)


def _dense_reorderings(problem: BlockSparseProblem, x: _Inputs):
    """The dense equivalent's baselines: it is an attention problem with a mask, so the
    reordered and sequential-score copies of :func:`_baseline_inputs` apply to it."""
    reorderings = _reorderings_of(problem.T, problem.S, problem.D, problem.E, problem.seed)
    return _baseline_inputs(x, reorderings, problem.scale)


def check_block_sparse_forward(fn: Callable, problem: BlockSparseProblem, dtype, *,
                               op: str = "block_sparse") -> None:
    """``fn`` (block_sparse_forward's or prflash_forward's signature, per ``op``) agrees
    with the oracle on the dense equivalent of the layout.

    Baselines: the block-sparse spec in ``dtype`` (the kept tiles in layout order), and
    the dense tiled spec on the dense equivalent and its reorderings.
    """
    dtype = np.dtype(dtype)
    case = _sparse_case(problem, dtype, op)
    x, w = case.x, case.wide

    def dense(f, y: _Inputs):
        return f(y.q, y.k, y.v, bias=y.bias, mask=y.mask, causal=y.causal, scale=problem.scale)

    oracle = dense(attention, w)
    spec_fn = prflash.prflash_forward if op == "prflash" else block_sparse_forward
    baselines = [case.call(spec_fn, x.q, x.k, x.v)]
    for r, y in _dense_reorderings(problem, x):
        res = dense(flash_forward, y)
        baselines.append(res if r is None else r.undo_outputs(*res))
    out = case.call(fn, x.q, x.k, x.v)
    _assert_all(("o_BHTE", "lse_BHT"), out, oracle, baselines, dtype, problem)


def check_block_sparse_backward(fn: Callable, problem: BlockSparseProblem, dtype, *,
                                forward_fn: Callable, op: str = "block_sparse") -> None:
    """``fn`` (block_sparse_backward's or prflash_backward's signature) agrees with the
    float64-validated dense backward on the dense equivalent; each side is fed its own
    forward's o, lse, as in :func:`check_backward`."""
    dtype = np.dtype(dtype)
    case = _sparse_case(problem, dtype, op)
    x, w = case.x, case.wide

    def dense(y: _Inputs):
        opts = {"bias": y.bias, "mask": y.mask, "causal": y.causal, "scale": problem.scale}
        fwd = flash_forward(y.q, y.k, y.v, **opts)
        return flash_backward(y.q, y.k, y.v, *fwd, y.do, **opts)

    def sparse(fwd_fn, bwd_fn):
        fwd = case.call(fwd_fn, x.q, x.k, x.v)
        return case.call(bwd_fn, x.q, x.k, x.v, *fwd, x.do)

    oracle = dense(w)
    spec_pair = ((prflash.prflash_forward, prflash.prflash_backward) if op == "prflash"
                 else (block_sparse_forward, block_sparse_backward))
    baselines = [sparse(*spec_pair)]
    for r, y in _dense_reorderings(problem, x):
        res = dense(y)
        baselines.append(res if r is None else r.undo_grads(*res))
    out = sparse(forward_fn, fn)
    _assert_all(("dq_BHTD", "dk_BGSD", "dv_BGSE"), out, oracle, baselines, dtype, problem)

def check_rope_qk(fn: Callable, problem: AttentionProblem, dtype) -> None:
    """``fn`` (rope_qk's signature) rotates exactly as the spec: equal, not close.

    A rotation has no reduction and the spec fixes its arithmetic (two rounded
    products and a rounded sum per element, the tables rounded once), so there is no
    rounding order to tolerate.
    """
    dtype = np.dtype(dtype)
    a = problem.arrays(dtype)
    config = problem.positions()["rope"]
    want = rope_qk(a["q"], a["k"], rope=config)
    got = fn(a["q"], a["k"], rope=config)
    for name, g, w in zip(("q_BHTD", "k_BGSD"), got, want):
        _check_dtype_kept(name, g, dtype)
        np.testing.assert_array_equal(g, w, err_msg=f"{name} {problem}")


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


# ------------------------------------------------------------ in-context read-out


def check_readout(fn: Callable, problem: ReadoutProblem, dtype, *, spec_fn=readout_mse) -> None:
    """``fn`` (readout_mse's signature, or readout_forward's: told apart by ``spec_fn``)
    agrees with the oracle on ``problem``; the baselines are the spec in ``dtype`` on
    the problem and on REORDERINGS permuted copies
    (:func:`spec.attention.readout.rounding_baselines`)."""
    dtype = np.dtype(dtype)
    z, zq, y, kq, ov = problem.arrays(dtype)
    mse = spec_fn.__name__ == "readout_mse"
    names = ("loss", "dkq_HDD", "dov_HD", "yhat_B") if mse else ("yhat_B", "a_BHS", "v_BHS")
    wide = [a.astype(oracle_dtype(dtype)) for a in (z, zq, y, kq, ov)]
    if mse:
        oracle = tuple(np.asarray(x) for x in readout_mse(*wide, **problem.options))
        out = tuple(np.asarray(x) for x in fn(z, zq, y, kq, ov, **problem.options))
    else:
        oracle = tuple(readout_forward(wide[0], wide[1], wide[3], wide[4], **problem.options))
        out = tuple(fn(z, zq, kq, ov, **problem.options))
    baselines = rounding_baselines(z, zq, y if mse else None, kq, ov, rng=np.random.default_rng(problem.seed ^ 0x5EED),
                                   count=REORDERINGS, **problem.options)
    for i, name in enumerate(names):
        if name == "loss":  # a Python float: compared as a 0-d array in the working dtype
            assert_close(np.asarray(out[i], dtype), oracle[i], [b[i] for b in baselines], name=f"loss {problem}")
            continue
        _check_dtype_kept(name, out[i], dtype)
        assert out[i].shape == oracle[i].shape, f"{name}: expected shape {oracle[i].shape}, got {out[i].shape}"
        assert_close(out[i], oracle[i], [b[i] for b in baselines], name=f"{name} {problem}")
