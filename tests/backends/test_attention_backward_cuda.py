"""The CUDA FlashAttention backward (backends/cuda/attention_backward.cu): what the
registry's conformance suite does not reach.

The suite (test_attention_conformance.py) runs this backend on drawn problems of up to
40 positions and width 24, so every one of them fits one block of each kernel and the
HEAD_DIM=32 build. Here: sizes at the kernels' block and tile edges and in the 64 and
128 builds, GQA/MQA head grouping, the spec's own rejections, NaN reaching exactly what
it reaches in the spec, determinism under shuffled thread schedules, and main(). Where
there is no GPU, tests/conftest.py selects the emulator, which runs the unmodified .cu.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.cuda import attention_backward as launcher
from backends.cuda.attention import flash_forward
from backends.cuda.attention_backward import flash_backward
from spec.attention.tiled import flash_backward as spec_backward
from spec.attention.tiled import flash_forward as spec_forward
from spec.tolerance import assert_close
from tests.backends.conformance import check_backward
from tests.strategies import AttentionProblem

F32 = np.float32


def _arrays(B=1, H=4, G=2, T=5, S=6, D=3, E=2, dtype=F32, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v, do = (rng.standard_normal(s).astype(dtype)
                   for s in ((B, H, T, D), (B, G, S, D), (B, G, S, E), (B, H, T, E)))
    o, lse = spec_forward(q, k, v)
    return [q, k, v, o, lse, do]


# ------------------------------------------------------------------ bad input


def _swap(args, i, x):
    args = list(args)
    args[i] = x
    return args


BAD = [
    ("o wrong E", 3, lambda x: x[..., :1]),
    ("o float16", 3, lambda x: x.astype(np.float16)),
    ("o is a list", 3, lambda x: x.tolist()),
    ("lse wrong T", 4, lambda x: x[:, :, :3]),
    ("lse 2-D", 4, lambda x: x[0]),
    ("lse float64", 4, lambda x: x.astype(np.float64)),
    ("do 3-D", 5, lambda x: x[0]),
    ("do wrong B", 5, lambda x: np.concatenate([x, x])),
    ("do int32", 5, lambda x: x.astype(np.int32)),
]


@pytest.mark.parametrize("i, make", [pytest.param(*c[1:], id=c[0]) for c in BAD])
def test_bad_o_lse_do_are_rejected_as_the_spec_rejects_them(i, make):
    args = _arrays()
    args = _swap(args, i, make(args[i]))
    with pytest.raises((TypeError, ValueError)) as want:
        spec_backward(*args)
    with pytest.raises(want.type) as got:
        flash_backward(*args)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_float_dtypes_are_a_type_error_naming_float32(dtype):
    spec_backward(*_arrays(dtype=dtype))  # the spec takes them
    with pytest.raises(TypeError, match=rf"takes float32, got {np.dtype(dtype)}"):
        flash_backward(*_arrays(dtype=dtype))


@pytest.mark.parametrize("D, E", [(129, 8), (8, 129)])
def test_head_dims_over_128_are_a_value_error(D, E):
    args = _arrays(T=2, S=3, D=D, E=E)
    spec_backward(*args)
    with pytest.raises(ValueError, match=rf"up to 128, got D={D}, E={E}"):
        flash_backward(*args)


# --------------------------------------------------------- sizes and layouts

# (T, S, D, E): one position; the dkdv block (64 keys) and the dq block (64 rows) at and
# around their edges; widths at the edges of the 32/64/128 builds, whose smaller tiles
# (32 and 16 rows) are crossed too; each with GQA and causal S != T somewhere.
EDGES = [
    AttentionProblem(B=1, H=1, G=1, T=1, S=1, D=1, E=1, causal=True, seed=1),
    AttentionProblem(B=1, H=2, G=1, T=1, S=65, D=8, E=5, causal=True, mask="per_key", seed=2),
    AttentionProblem(B=2, H=2, G=2, T=65, S=1, D=4, E=9, causal=True, seed=3),
    AttentionProblem(B=1, H=2, G=1, T=63, S=64, D=32, E=32, bias="per_head", tile_t=8, seed=4),
    AttentionProblem(B=1, H=2, G=2, T=64, S=65, D=31, E=3, causal=True, bias="neg_inf",
                     tile_s=16, seed=5),
    AttentionProblem(B=1, H=3, G=1, T=65, S=63, D=33, E=17, causal=True, mask="empty_rows",
                     seed=6),
    AttentionProblem(B=1, H=2, G=1, T=40, S=70, D=64, E=64, mask="random", logit=30.0, seed=7),
    AttentionProblem(B=1, H=2, G=2, T=33, S=17, D=65, E=128, causal=True, bias="full", seed=8),
    AttentionProblem(B=1, H=4, G=2, T=18, S=35, D=128, E=100, causal=True, mask="per_key",
                     tile_t=4, tile_s=5, seed=9),
]


@pytest.mark.parametrize("problem", EDGES, ids=lambda p: f"T{p.T}-S{p.S}-D{p.D}-E{p.E}")
def test_block_and_tile_edges_conform(problem):
    check_backward(flash_backward, problem, F32, forward_fn=flash_forward)


# ------------------------------------------------------------------------ GQA


@pytest.mark.parametrize("H, G", [(6, 2), (4, 1), (3, 3)])
def test_gqa_and_mqa_conform_over_several_blocks(H, G):
    p = AttentionProblem(B=2, H=H, G=G, T=70, S=130, D=16, E=8, causal=True, bias="per_key",
                         seed=10 + H)
    check_backward(flash_backward, p, F32, forward_fn=flash_forward)


def test_each_query_head_reaches_only_its_key_head():
    """With dO zero on every query head but one, the dk and dv of that head's key head
    are exactly the backward of that head alone (zero heads add exact zeros), and the
    other key heads' are zero: query head h reads key head h // (H/G)."""
    B, H, G, T, S, D, E = 1, 6, 3, 9, 11, 5, 4
    rng = np.random.default_rng(20)
    q, k, v = (rng.standard_normal(s).astype(F32) for s in ((B, H, T, D), (B, G, S, D), (B, G, S, E)))
    o, lse = flash_forward(q, k, v, causal=True)
    for h in range(H):
        g = h // (H // G)
        do = np.zeros((B, H, T, E), F32)
        do[:, h] = rng.standard_normal((B, T, E))
        dq, dk, dv = flash_backward(q, k, v, o, lse, do, causal=True)
        one = slice(h, h + 1)
        dq1, dk1, dv1 = flash_backward(q[:, one], k[:, g:g + 1], v[:, g:g + 1], o[:, one],
                                       lse[:, one], do[:, one], causal=True)
        np.testing.assert_array_equal(dk[:, g], dk1[:, 0])
        np.testing.assert_array_equal(dv[:, g], dv1[:, 0])
        np.testing.assert_array_equal(dq[:, h], dq1[:, 0])
        others = [i for i in range(G) if i != g]
        assert not dk[:, others].any() and not dv[:, others].any()
        assert not np.delete(dq, h, axis=1).any()


# ------------------------------------------------------------ NaN, empty rows


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("where", ["q", "k", "v", "do"])
def test_nan_reaches_exactly_what_it_reaches_in_the_spec(where, causal):
    """NaN in one row of an input: every gradient is NaN exactly where the spec's is.

    Under causal the spec skips (query tile, key tile) pairs past the diagonal of *its*
    tiles and visits masked pairs of the others (0 · NaN = NaN there): small, unequal
    tiles make that pattern differ from both the causal mask and the kernels' blocks.
    Both backwards are fed the spec's forward, so that o and lse carry the same NaN.
    """
    B, H, G, T, S, D, E = 1, 2, 1, 9, 11, 4, 3
    rng = np.random.default_rng(30)
    arrays = {n: rng.standard_normal(s) for n, s in
              (("q", (B, H, T, D)), ("k", (B, G, S, D)), ("v", (B, G, S, E)), ("do", (B, H, T, E)))}
    row = {"q": (0, 1, 4), "k": (0, 0, 6), "v": (0, 0, 6), "do": (0, 1, 4)}[where]
    arrays[where][row] = np.nan
    mask = rng.random((B, 1, T, S)) < 0.8
    opts = {"causal": causal, "mask": mask, "tile_t": 2, "tile_s": 3}
    wide = [arrays[n] for n in ("q", "k", "v")]
    narrow = [x.astype(F32) for x in wide]
    oracle = spec_backward(*wide, *spec_forward(*wide, **opts), arrays["do"], **opts)
    fwd = spec_forward(*narrow, **opts)
    base = spec_backward(*narrow, *fwd, arrays["do"].astype(F32), **opts)
    out = flash_backward(*narrow, *fwd, arrays["do"].astype(F32), **opts)
    nan = [np.isnan(w) for w in oracle]
    assert any(n.any() for n in nan)
    if causal:  # the pattern the tiles decide is not all or nothing
        assert not all(n.all() for n in nan)
    for name, got, want, b in zip(("dq", "dk", "dv"), out, oracle, base):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
        assert_close(got, want, b, name=name)


def test_rows_with_no_key_or_one_key_have_exactly_zero_dq():
    """Causal with S < T leaves the first T - S queries no key (lse = -inf: P = 0), and a
    mask empties another row: their dq is 0. The next query sees one key: its o is that
    key's v exactly, Δ is summed in dP's order, so dS = dP - Δ = 0 exactly, as it is in
    exact arithmetic (a softmax over one key does not depend on its score)."""
    B, H, G, T, S, D, E = 1, 2, 2, 12, 5, 6, 4
    rng = np.random.default_rng(40)
    q, k, v, do = (rng.standard_normal(s).astype(F32)
                   for s in ((B, H, T, D), (B, G, S, D), (B, G, S, E), (B, H, T, E)))
    mask = np.ones((B, H, T, S), bool)
    mask[0, 1, 9] = False
    o, lse = flash_forward(q, k, v, causal=True, mask=mask)
    dq, _, _ = flash_backward(q, k, v, o, lse, do, causal=True, mask=mask)
    empty = lse == -np.inf
    assert empty[0, :, :T - S].all() and empty[0, 1, 9] and empty.sum() == 2 * (T - S) + 1
    one_key = np.zeros_like(empty)
    one_key[0, :, T - S] = True
    assert (dq[empty] == 0).all() and (dq[one_key] == 0).all()
    assert (dq[~empty & ~one_key] != 0).all()


# ------------------------------------------------------- determinism, tiles


def _problem_for_determinism():
    p = AttentionProblem(B=1, H=4, G=2, T=150, S=190, D=24, E=16, causal=True, bias="per_head",
                         mask="per_key", seed=50)
    a = p.arrays(F32)
    opts = {"causal": True, "bias": a["bias"], "mask": a["mask"]}
    return a, opts


def test_result_does_not_depend_on_the_thread_schedule(monkeypatch):
    """Several blocks of each kernel, run with shuffled fiber and block orders: bitwise
    the same gradients (a missing barrier or a shared-memory race would show)."""
    a, opts = _problem_for_determinism()
    fwd = flash_forward(a["q"], a["k"], a["v"], **opts)
    want = flash_backward(a["q"], a["k"], a["v"], *fwd, a["do"], **opts)
    for seed in (1, 2):
        monkeypatch.setenv("ATTNSPEC_EMULATOR_SEED", str(seed))
        got = flash_backward(a["q"], a["k"], a["v"], *fwd, a["do"], **opts)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_tiles_change_nothing_for_finite_inputs():
    """tile_t, tile_s only decide which masked pairs are visited, which add exact zeros."""
    a, opts = _problem_for_determinism()
    fwd = flash_forward(a["q"], a["k"], a["v"], **opts)
    want = flash_backward(a["q"], a["k"], a["v"], *fwd, a["do"], **opts)
    for tile_t, tile_s in ((1, 1), (7, 3), (1000, 5)):
        got = flash_backward(a["q"], a["k"], a["v"], *fwd, a["do"], tile_t=tile_t,
                             tile_s=tile_s, **opts)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_non_contiguous_inputs_are_accepted_and_numpy_comes_back():
    q, k, v, _, _, do = _arrays(T=10, S=12, D=6, E=4)
    q_view, do_view = q[:, :, ::2], do[:, :, ::2]
    q_copy, do_copy = np.ascontiguousarray(q_view), np.ascontiguousarray(do_view)
    fwd = spec_forward(q_copy, k, v)
    got = flash_backward(q_view, k, v, *fwd, do_view)
    want = flash_backward(q_copy, k, v, *fwd, do_copy)
    for g, w in zip(got, want):
        assert isinstance(g, np.ndarray) and g.dtype == F32 and g.flags.c_contiguous
        np.testing.assert_array_equal(g, w)


# --------------------------------------------------------------- GPU, main


@pytest.mark.gpu
def test_cupy_arrays_stay_on_the_device(monkeypatch):
    import cupy

    monkeypatch.setenv("ATTNSPEC_CUDA", "cupy")
    args = _arrays(T=7, S=9, D=16, E=8)
    out = flash_backward(*(cupy.asarray(x) for x in args))
    want = flash_backward(*args)
    for g, w in zip(out, want):
        assert isinstance(g, cupy.ndarray)
        np.testing.assert_array_equal(g.get(), w)


def test_every_kernel_configuration_is_listed_for_the_compile_gate():
    assert set(launcher.KERNELS) == {(k, n) for k in launcher.KERNEL_NAMES for n in (32, 64, 128)}


def test_launcher_main_validates(capsys):
    """``python -m backends.cuda.attention_backward --sanitize``: validation only."""
    assert launcher.main(["--sanitize"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "causal=" in line]
    assert len(lines) == 2 and "FAILED" not in out, out
