"""The CUDA block-sparse kernels (backends/cuda/block_sparse.cu) beyond the conformance suite.

The suite (test_block_sparse_conformance.py) draws block sizes 1 .. 16, lengths up to
40 and widths up to 17, so it runs one CUDA block per query (key) block and the
HEAD_DIM=32 build, plus one problem of blocks of 64. Here: blocks split over several
CUDA blocks and staged in several sub-tiles (C up to 128, in the 64 and 128 builds),
the equalities with the dense kernels when every causal tile is kept, shared and
per-head layouts, an empty layout, shuffled thread schedules, the spec's own rejections,
the kernels' limits, CuPy arrays (on a GPU) and main(). Where there is no GPU,
tests/conftest.py selects the emulator, which runs the unmodified .cu.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.cuda import attention, attention_backward
from backends.cuda import block_sparse as launcher
from backends.cuda.block_sparse import (
    block_sparse_backward,
    block_sparse_forward,
    prflash_backward,
    prflash_forward,
)
from spec.attention import block_sparse as spec
from spec.attention import prflash as spec_prflash
from spec.attention.block_sparse import (
    BlockLayout,
    block_layout,
    causal_blocks,
    dense_equivalent,
)
from tests.backends.conformance import (
    check_block_sparse_backward,
    check_block_sparse_forward,
)
from tests.strategies import BlockSparseProblem

F32 = np.float32


def _arrays(B=1, H=2, G=1, T=20, S=20, D=8, E=8, dtype=F32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype)
            for s in ((B, H, T, D), (B, G, S, D), (B, G, S, E), (B, H, T, E))]


def _layout(T=20, S=20, C=4, causal=True, seed=1, shape=()):
    rng = np.random.default_rng(seed)
    allowed = causal_blocks(T, S, C) if causal else np.ones((-(-T // C), -(-S // C)), bool)
    return block_layout(allowed & (rng.random(shape + allowed.shape) < 0.6), C)


def _assert_equal(got, want):
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


# ------------------------------------------------ block and head geometry of the kernels


@pytest.mark.parametrize("problem", [
    # C = 128 at HEAD_DIM 128: forward rows in 4 CUDA blocks of 32, keys in 4 sub-tiles of
    # 32; dkdv keys in 2 CUDA blocks of 64; dq rows in 2 CUDA blocks, keys in tiles of 8;
    # short last blocks (T, S not multiples of C), T != S
    BlockSparseProblem(B=1, H=2, G=1, T=200, S=190, D=128, E=100, block_size=128,
                       pattern="all", block_bias=True, seed=4),
    # C = 65 at HEAD_DIM 64: a second sub-tile of one key, a second CUDA block of one row
    BlockSparseProblem(B=1, H=4, G=2, T=131, S=131, D=40, E=64, block_size=65,
                       pattern="per_head", block_bias=True, logit=30.0, seed=5),
    # C = 100 not causal, a pattern per batch and head, MQA
    BlockSparseProblem(B=2, H=2, G=1, T=150, S=120, D=33, E=20, block_size=100, causal=False,
                       pattern="per_head", block_bias=True, seed=6),
    # C = 33 at HEAD_DIM 32: one CUDA block of 33 threads per query block
    BlockSparseProblem(B=1, H=2, G=2, T=70, S=99, D=32, E=32, block_size=33,
                       pattern="random", seed=7),
], ids=["C128-D128", "C65-D64", "C100-noncausal", "C33-D32"])
def test_blocks_split_over_cuda_blocks_and_sub_tiles(problem):
    check_block_sparse_forward(block_sparse_forward, problem, F32)
    check_block_sparse_backward(block_sparse_backward, problem, F32,
                                forward_fn=block_sparse_forward)


@pytest.mark.parametrize("causal, T, S, D, E", [(True, 70, 90, 24, 20), (True, 100, 64, 64, 48),
                                                (False, 45, 77, 17, 9)])
def test_every_causal_tile_kept_at_32_is_the_dense_v2_forward_bit_for_bit(causal, T, S, D, E):
    """With C = KEYS_V2 = 32 the forward folds the same tiles with the same arithmetic as
    attention.cu's v2 (tiles a row cannot see change nothing: α = 1, P = 0)."""
    q, k, v, _ = _arrays(B=2, H=4, G=2, T=T, S=S, D=D, E=E)
    keep = causal_blocks(T, S, 32) if causal else np.ones((-(-T // 32), -(-S // 32)), bool)
    got = block_sparse_forward(q, k, v, block_layout(keep, 32), causal=causal)
    _assert_equal(got, attention.flash_forward(q, k, v, causal=causal, version="v2"))


def test_prflash_with_every_block_kept_is_the_dense_v2_forward_bit_for_bit():
    q, k, v, _ = _arrays(B=1, H=2, T=96, S=96, D=16, E=16)
    keep = spec_prflash.sample_keep(spec_prflash.harmonic_probs(3, 3), np.random.default_rng(0))
    _assert_equal(prflash_forward(q, k, v, keep, block_size=32),
                  attention.flash_forward(q, k, v, causal=True, version="v2"))


@pytest.mark.parametrize("C, causal", [(16, True), (64, True), (128, True), (12, False)])
def test_every_tile_kept_is_the_dense_backward_bit_for_bit(C, causal):
    """Given the same o and lse, the backward over every causal tile equals
    attention_backward.cu's whenever C is a multiple of STEP: both sum the same pairs in
    steps of 4 rows (keys) at the same positions, in the same order (pairs either visits
    and the other does not are masked: exact zeros)."""
    T, S = (130, 100) if C == 128 else (50, 70)
    q, k, v, do = _arrays(B=2, H=4, G=2, T=T, S=S, D=100 if C == 128 else 40, E=36)
    keep = causal_blocks(T, S, C) if causal else np.ones((-(-T // C), -(-S // C)), bool)
    o, lse = attention.flash_forward(q, k, v, causal=causal, version="v2")
    got = block_sparse_backward(q, k, v, o, lse, do, block_layout(keep, C), causal=causal)
    _assert_equal(got, attention_backward.flash_backward(q, k, v, o, lse, do, causal=causal))


@pytest.mark.parametrize("heads", [(1, 1), (2, 1), (1, 4)])
def test_a_shared_pattern_equals_its_copies_per_batch_and_head(heads):
    """A layout row shared by heads (B' or H' = 1) gives the bits of its expanded copy."""
    B, H, T, C = 2, 4, 37, 8
    q, k, v, do = _arrays(B=B, H=H, G=2, T=T, S=T)
    keep = _layout(T, T, C, shape=(heads[0], heads[1]))
    keep_BHNN = spec.layout_keep(keep)
    full = block_layout(np.broadcast_to(keep_BHNN, (B, H) + keep_BHNN.shape[2:]).copy(), C)
    bias = np.random.default_rng(3).uniform(0, 2, keep_BHNN.shape).astype(F32)
    bias_K = bias[keep_BHNN]  # the kept tiles in layout order (C order of the mask)
    full_bias_K = np.broadcast_to(bias, (B, H) + bias.shape[2:])[spec.layout_keep(full)]
    shared = block_sparse_forward(q, k, v, keep, block_bias=bias_K)
    _assert_equal(shared, block_sparse_forward(q, k, v, full, block_bias=full_bias_K))
    _assert_equal(block_sparse_backward(q, k, v, *shared, do, keep, block_bias=bias_K),
                  block_sparse_backward(q, k, v, *shared, do, full, block_bias=full_bias_K))


def test_an_empty_layout_gives_empty_rows_and_zero_gradients():
    q, k, v, do = _arrays(B=2, H=2, G=1, T=9, S=13)
    layout = block_layout(np.zeros((3, 4), bool), 4)
    o, lse = block_sparse_forward(q, k, v, layout, causal=False)
    assert (o == 0).all() and (lse == -np.inf).all()
    for g in block_sparse_backward(q, k, v, o, lse, do, layout, causal=False):
        assert (g == 0).all()


def test_a_shuffled_thread_schedule_gives_the_same_bits(monkeypatch):
    """The emulator runs threads and blocks in a seeded random order: a missing barrier
    (a thread reading a tile another has not finished writing) would change the bits."""
    from backends.cuda import _launch

    if _launch.engine() != "emulator":
        pytest.skip("schedules are shuffled by the emulator only")
    q, k, v, do = _arrays(B=1, H=4, G=2, T=90, S=90, D=24, E=20)
    layout = _layout(90, 90, 40, shape=(1, 4))
    bias = np.linspace(0, 1, layout.n_kept, dtype=F32)
    fwd = block_sparse_forward(q, k, v, layout, block_bias=bias)
    bwd = block_sparse_backward(q, k, v, *fwd, do, layout, block_bias=bias)
    for seed in (1, 2):
        monkeypatch.setenv("ATTNSPEC_EMULATOR_SEED", str(seed))
        got = block_sparse_forward(q, k, v, layout, block_bias=bias)
        _assert_equal(got, fwd)
        _assert_equal(block_sparse_backward(q, k, v, *got, do, layout, block_bias=bias), bwd)


# ------------------------------------------------------------------------- bad input


def _with_layout(**change) -> BlockLayout:
    return _layout()._replace(**change)


_ASC = _layout()
_BAD = [
    ("layout not a BlockLayout", {"layout": np.ones((5, 5), bool)}),
    ("wrong block grid", {"layout": _layout(T=24, S=24)}),
    ("heads not 1 or H", {"layout": _layout(shape=(1, 3))}),
    ("offsets of the wrong length", {"layout": _with_layout(row_offsets=_ASC.row_offsets[:-1])}),
    ("key blocks not ascending", {"layout": _with_layout(key_block_K=_ASC.key_block_K[::-1].copy())}),
    ("float key blocks", {"layout": _with_layout(key_block_K=_ASC.key_block_K.astype(F32))}),
    ("a tile in the causal future", {"layout": _layout(causal=False, seed=2)}),
    ("block_bias float64", {"block_bias": np.zeros(_ASC.n_kept)}),
    ("block_bias one short", {"block_bias": np.zeros(_ASC.n_kept - 1, F32)}),
    ("block_bias -inf", {"block_bias": np.full(_ASC.n_kept, -np.inf, F32)}),
    ("block_bias a list", {"block_bias": [0.0] * _ASC.n_kept}),
    ("scale NaN", {"scale": float("nan")}),
    ("scale a string", {"scale": "1"}),
    ("causal not a bool", {"causal": 1}),
    ("q 3-D", {"q": lambda a: a[0]}),
    ("k of another D", {"k": lambda a: a[..., :3]}),
    ("G not dividing H", {"k": lambda a: np.concatenate([a, a, a], axis=1),
                          "v": lambda a: np.concatenate([a, a, a], axis=1)}),
]


def _bad_call(change: dict):
    q, k, v, do = _arrays()
    args = {name: change[name](x) if name in change else x
            for name, x in (("q", q), ("k", k), ("v", v))}
    layout = change.get("layout", _ASC)
    opts = {key: change[key] for key in ("block_bias", "scale", "causal") if key in change}
    return (args["q"], args["k"], args["v"], layout), opts, do


@pytest.mark.parametrize("change", [pytest.param(c, id=name) for name, c in _BAD])
def test_bad_inputs_are_rejected_as_the_spec_rejects_them(change):
    args, opts, do = _bad_call(change)
    with pytest.raises((TypeError, ValueError)) as want:
        spec.block_sparse_forward(*args, **opts)
    with pytest.raises(want.type) as got:
        block_sparse_forward(*args, **opts)
    assert str(got.value) == str(want.value)
    o, lse = np.zeros((1, 2, 20, 8), F32), np.zeros((1, 2, 20), F32)
    with pytest.raises(want.type) as got:
        block_sparse_backward(*args[:3], o, lse, do, args[3], **opts)
    assert str(got.value) == str(want.value)


_BAD_BACKWARD = [
    ("o of another E", 3, lambda x: x[..., :1]),
    ("o float16", 3, lambda x: x.astype(np.float16)),
    ("lse 2-D", 4, lambda x: x[0]),
    ("lse of another T", 4, lambda x: x[:, :, :3]),
    ("do int32", 5, lambda x: x.astype(np.int32)),
]


@pytest.mark.parametrize("i, make", [pytest.param(*c[1:], id=c[0]) for c in _BAD_BACKWARD])
def test_bad_o_lse_do_are_rejected_as_the_spec_rejects_them(i, make):
    q, k, v, do = _arrays()
    args = [q, k, v, *spec.block_sparse_forward(q, k, v, _ASC), do]
    args[i] = make(args[i])
    with pytest.raises((TypeError, ValueError)) as want:
        spec.block_sparse_backward(*args, _ASC)
    with pytest.raises(want.type) as got:
        block_sparse_backward(*args, _ASC)
    assert str(got.value) == str(want.value)


_KEEP = spec.layout_keep(_ASC)[0, 0]
_BAD_PRFLASH = [
    ("keep of another grid", {"keep": _KEEP[:3, :3]}),
    ("keep not bool", {"keep": _KEEP.astype(np.int8)}),
    ("a kept block in the future", {"keep": np.ones_like(_KEEP)}),
    ("block_size a float", {"block_size": 4.0}),
    ("importance 0 on a kept block", {"importance": np.zeros(_KEEP.shape)}),
    ("importance of another shape", {"importance": np.ones((3, 3))}),
]


@pytest.mark.parametrize("change", [pytest.param(c, id=name) for name, c in _BAD_PRFLASH])
def test_bad_prflash_inputs_are_rejected_as_the_spec_rejects_them(change):
    q, k, v, do = _arrays()
    opts = {"block_size": 4, **{key: val for key, val in change.items() if key != "keep"}}
    keep = change.get("keep", _KEEP)
    with pytest.raises((TypeError, ValueError)) as want:
        spec_prflash.prflash_forward(q, k, v, keep, **opts)
    with pytest.raises(want.type) as got:
        prflash_forward(q, k, v, keep, **opts)
    assert str(got.value) == str(want.value)
    o, lse = np.zeros((1, 2, 20, 8), F32), np.zeros((1, 2, 20), F32)
    with pytest.raises(want.type) as got:
        prflash_backward(q, k, v, o, lse, do, keep, **opts)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_float_dtypes_are_a_type_error_naming_float32(dtype):
    q, k, v, do = _arrays(dtype=dtype)
    out = spec.block_sparse_forward(q, k, v, _ASC)  # the spec takes them
    with pytest.raises(TypeError, match=rf"takes float32, got {np.dtype(dtype)}"):
        block_sparse_forward(q, k, v, _ASC)
    with pytest.raises(TypeError, match=rf"backward takes float32, got {np.dtype(dtype)}"):
        block_sparse_backward(q, k, v, *out, do, _ASC)
    with pytest.raises(TypeError, match=rf"takes float32, got {np.dtype(dtype)}"):
        prflash_forward(q, k, v, _KEEP, block_size=4, importance=np.full(_KEEP.shape, 0.5))


def test_block_sizes_over_128_are_a_value_error_naming_block_size():
    q, k, v, do = _arrays(T=130, S=130)
    keep = causal_blocks(130, 130, 129)
    spec.block_sparse_forward(q, k, v, block_layout(keep, 129))  # the spec takes them
    with pytest.raises(ValueError, match=r"^layout\.block_size: the CUDA block-sparse kernels "
                                         r"take block sizes up to 128, got 129$"):
        block_sparse_forward(q, k, v, block_layout(keep, 129))
    with pytest.raises(ValueError, match=r"^block_size: .* up to 128, got 129$"):
        prflash_forward(q, k, v, keep, block_size=129)
    with pytest.raises(ValueError, match=r"^block_size: .* up to 128, got 129$"):
        prflash_backward(q, k, v, q, q[..., 0], do, keep, block_size=129)


@pytest.mark.parametrize("D, E", [(129, 8), (8, 129)])
def test_head_dims_over_128_are_a_value_error(D, E):
    q, k, v, _ = _arrays(T=4, S=4, D=D, E=E)
    with pytest.raises(ValueError, match=rf"head dimensions D, E up to 128, got D={D}, E={E}"):
        block_sparse_forward(q, k, v, _layout(T=4, S=4))


# ------------------------------------------------------------- counts, arrays, main


@pytest.mark.parametrize("causal, T, S, C", [(True, 20, 20, 4), (True, 13, 30, 6),
                                             (True, 30, 13, 5), (False, 17, 9, 4)])
def test_the_flop_count_is_the_visible_pairs_of_the_kept_tiles(causal, T, S, C):
    layout = _layout(T, S, C, causal=causal, shape=(1, 2))
    mask, _ = dense_equivalent(layout, T, S)
    if causal:
        mask = mask & (np.arange(S)[None, :] <= np.arange(T)[:, None] + S - T)
    shape = launcher.AttentionShape(B=3, H=2, G=1, T=T, S=S, D=5, E=7)
    assert launcher.flops(layout, shape, causal) == 2 * 3 * int(mask.sum()) * 12


def test_non_contiguous_inputs_are_accepted_and_numpy_comes_back():
    q, k, v, _ = _arrays(T=40, S=40, D=16, E=16)
    layout = _layout(T=20, S=20, C=4)
    got = block_sparse_forward(q[:, :, ::2], k[:, :, ::2], v[:, :, ::2, ::2], layout)
    want = block_sparse_forward(*(np.ascontiguousarray(x) for x in (q[:, :, ::2], k[:, :, ::2],
                                                                     v[:, :, ::2, ::2])), layout)
    assert isinstance(got.o_BHTE, np.ndarray) and got.o_BHTE.shape == (1, 2, 20, 8)
    _assert_equal(got, want)


@pytest.mark.gpu
def test_cupy_arrays_stay_on_the_device(monkeypatch):
    import cupy

    monkeypatch.setenv("ATTNSPEC_CUDA", "cupy")
    q, k, v, do = _arrays(B=2, H=4, G=2, T=200, S=200, D=64, E=64)
    keep, p_NN = launcher.harmonic_keep(4, 0.5, np.random.default_rng(1), batch=(1, 4))
    on_gpu = [cupy.asarray(x) for x in (q, k, v, do)]
    fwd = prflash_forward(*on_gpu[:3], keep, block_size=64, importance=p_NN)
    assert all(isinstance(x, cupy.ndarray) for x in fwd)
    grads = prflash_backward(*on_gpu[:3], *fwd, on_gpu[3], keep, block_size=64, importance=p_NN)
    assert all(isinstance(x, cupy.ndarray) for x in grads)
    want = prflash_forward(q, k, v, keep, block_size=64, importance=p_NN)
    _assert_equal([x.get() for x in fwd], want)
    _assert_equal([x.get() for x in grads],
                  prflash_backward(q, k, v, *want, do, keep, block_size=64, importance=p_NN))


def test_launcher_main_validates_forward_and_backward(capsys):
    """``python -m backends.cuda.block_sparse``: on the emulator it validates, and skips timing."""
    assert launcher.main(["--sanitize", "--D", "32"]) == 0
    out = capsys.readouterr().out
    assert sum(line.split()[:1] == ["forward"] for line in out.splitlines()) == 3, out
    assert sum(line.split()[:1] == ["backward"] for line in out.splitlines()) == 3, out
    assert "FAILED" not in out
