"""The cpu block-sparse backend's own properties (its agreement with the spec is
tests/backends/test_block_sparse_conformance.py):

* bad input raises the spec's error, same type and message; float16, which the spec
  accepts, is a TypeError here;
* with every tile kept (every causal one under ``causal``) and no block bias, forward
  and backward equal the dense cpu kernels with ``tile_t = tile_s = block_size`` bit
  for bit: the two share their tile code (``_attend_tiles``, ``_backward_tile``) and
  visit the same tiles in the same order;
* the result does not depend on the number of threads.
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np
import pytest
from hypothesis import given, settings

from backends.cpu import attention as dense
from backends.cpu import block_sparse as cpu
from spec.attention import block_sparse as spec
from spec.attention import prflash as spec_prflash
from spec.attention.block_sparse import BlockLayout, block_layout, causal_blocks
from tests.strategies import BlockSparseProblem, block_sparse_problems

F32 = np.float32


def _arrays(dtype=F32, B=1, H=4, G=2, T=9, S=9, D=3, E=2):
    rng = np.random.default_rng(0)
    shapes = ((B, H, T, D), (B, G, S, D), (B, G, S, E), (B, H, T, E), (B, H, T), (B, H, T, E))
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _layout(T=9, S=9, C=4):
    return block_layout(causal_blocks(T, S, C), C)


def _swap(args, i, x):
    args = list(args)
    args[i] = x
    return args


def _bad_layouts(lay: BlockLayout):
    """(name, layout) pairs that check_layout rejects for the problem of _arrays()."""
    ascending = lay._replace(key_block_K=lay.key_block_K[::-1].copy())
    return [
        ("not a layout", "keep"),
        ("grid", lay._replace(n_blocks=(2, 3))),
        ("heads", lay._replace(heads=(1, 3))),
        ("offsets float", lay._replace(row_offsets=lay.row_offsets.astype(np.float64))),
        ("offsets short", lay._replace(row_offsets=lay.row_offsets[:-1])),
        ("key block out of range", lay._replace(key_block_K=lay.key_block_K + 5)),
        ("descending", ascending),
        ("causal future", block_layout(np.ones((3, 3), np.bool_), 4)),
    ]


BAD = []
for _name, _bad in _bad_layouts(_layout()):
    BAD.append(pytest.param(lambda a, bad=_bad: (a, {"layout": bad}), id=f"layout {_name}"))
BAD += [
    pytest.param(lambda a: (a, {"block_bias": np.zeros(_layout().n_kept, np.float64)}), id="bias dtype"),
    pytest.param(lambda a: (a, {"block_bias": np.zeros(2, F32)}), id="bias shape"),
    pytest.param(lambda a: (a, {"block_bias": np.full(_layout().n_kept, np.inf, F32)}), id="bias inf"),
    pytest.param(lambda a: (a, {"block_bias": [0.0] * _layout().n_kept}), id="bias list"),
    pytest.param(lambda a: (a, {"scale": np.nan}), id="scale nan"),
    pytest.param(lambda a: (a, {"scale": "1"}), id="scale str"),
    pytest.param(lambda a: (_swap(a, 0, a[0][0]), {}), id="q 3-D"),
    pytest.param(lambda a: (_swap(a, 1, a[1].astype(np.float64)), {}), id="mixed dtypes"),
    pytest.param(lambda a: (_swap(a, 2, a[2][:, :, :4]), {}), id="v short"),
]
BAD_BACKWARD = [
    pytest.param(lambda a: (_swap(a, 3, a[3][..., :1]), {}), id="o width"),
    pytest.param(lambda a: (_swap(a, 4, a[4][..., :2]), {}), id="lse length"),
    pytest.param(lambda a: (_swap(a, 5, a[5].astype(np.float64)), {}), id="do dtype"),
]


def _call(fn, args, kw, backward):
    kw = dict(kw)
    layout = kw.pop("layout", _layout())
    arrays = args if backward else args[:3]
    return fn(*arrays, layout, **kw)


def _same_error(spec_fn, cpu_fn, args, kw, backward):
    with pytest.raises((TypeError, ValueError)) as want:
        _call(spec_fn, args, kw, backward)
    with pytest.raises(want.type) as got:
        _call(cpu_fn, args, kw, backward)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("make", BAD)
def test_bad_input_raises_the_spec_error_forward(make):
    args, kw = make(_arrays())
    _same_error(spec.block_sparse_forward, cpu.block_sparse_forward, args, kw, False)


@pytest.mark.parametrize("make", BAD + BAD_BACKWARD)
def test_bad_input_raises_the_spec_error_backward(make):
    args, kw = make(_arrays())
    _same_error(spec.block_sparse_backward, cpu.block_sparse_backward, args, kw, True)


PRFLASH_BAD = [
    pytest.param({"keep": np.ones((3, 3), np.int8)}, id="keep int"),
    pytest.param({"keep": np.ones((3,), np.bool_)}, id="keep 1-D"),
    pytest.param({"keep": np.ones((2, 2), np.bool_)}, id="keep grid"),
    pytest.param({"keep": np.ones((3, 3), np.bool_)}, id="keep future"),
    pytest.param({"block_size": 0}, id="block_size 0"),
    pytest.param({"importance": np.full((3, 3), 2.0)}, id="importance > 1"),
    pytest.param({"importance": np.zeros((3, 3))}, id="importance 0"),
    pytest.param({"importance": np.full((2, 2), 0.5)}, id="importance shape"),
]


@pytest.mark.parametrize("kw", PRFLASH_BAD)
@pytest.mark.parametrize("fn", ["forward", "backward"])
def test_prflash_bad_input_raises_the_spec_error(kw, fn):
    a = _arrays()
    kw = {"keep": np.tril(np.ones((3, 3), np.bool_)), "block_size": 4, **kw}
    keep = kw.pop("keep")
    arrays = a if fn == "backward" else a[:3]
    spec_fn, cpu_fn = getattr(spec_prflash, f"prflash_{fn}"), getattr(cpu, f"prflash_{fn}")
    with pytest.raises((TypeError, ValueError)) as want:
        spec_fn(*arrays, keep, **kw)
    with pytest.raises(want.type) as got:
        cpu_fn(*arrays, keep, **kw)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("fn", ["block_sparse_forward", "block_sparse_backward",
                                "prflash_forward", "prflash_backward"])
def test_float16_is_a_type_error_here_but_not_in_the_spec(fn):
    a = _arrays(np.float16)
    arrays = a if fn.endswith("backward") else a[:3]
    if fn.startswith("prflash"):
        rest, kw = (np.tril(np.ones((3, 3), np.bool_)),), {"block_size": 4}
    else:
        rest, kw = (_layout(),), {}
    getattr(spec if fn.startswith("block") else spec_prflash, fn)(*arrays, *rest, **kw)
    with pytest.raises(TypeError, match=r"q_BHTD: the cpu backend supports dtype float32 and float64"):
        getattr(cpu, fn)(*arrays, *rest, **kw)


def _all_tiles(problem: BlockSparseProblem) -> BlockSparseProblem:
    return dataclasses.replace(problem, pattern="all", block_bias=False)


@settings(max_examples=40, deadline=None)
@given(problem=block_sparse_problems(max_len=70))
def test_every_tile_kept_is_the_dense_kernel_bit_for_bit(problem):
    """With the whole (causal) grid kept, forward and backward are flash_forward and
    flash_backward with tile_t = tile_s = block_size, to the last bit."""
    p = _all_tiles(problem)
    a = p.arrays(np.float32 if p.seed % 2 else np.float64)
    q, k, v, do = a["q"], a["k"], a["v"], a["do"]
    C, causal = p.block_size, p.causal
    opts = {"causal": causal, "scale": p.scale}
    got = cpu.block_sparse_forward(q, k, v, p.layout(), **opts)
    want = dense.flash_forward(q, k, v, tile_t=C, tile_s=C, **opts)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    got_g = cpu.block_sparse_backward(q, k, v, *got, do, p.layout(), **opts)
    want_g = dense.flash_backward(q, k, v, *want, do, tile_t=C, tile_s=C, **opts)
    for g, w in zip(got_g, want_g):
        np.testing.assert_array_equal(g, w)


def test_every_block_kept_prflash_is_causal_flash_attention_bit_for_bit():
    """At a realistic size: 64-row blocks, GQA, T = S = 300 (a short last block)."""
    p = BlockSparseProblem(B=1, H=4, G=2, T=300, S=300, D=64, E=64, block_size=64,
                           pattern="all", seed=3)
    a = p.arrays(F32)
    got = cpu.prflash_forward(a["q"], a["k"], a["v"], p.keep(), block_size=64)
    want = dense.flash_forward(a["q"], a["k"], a["v"], causal=True)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_result_does_not_depend_on_the_thread_count(dtype):
    """Per-head sampled layouts (uneven rows and columns), block bias, GQA; 1 thread
    against 2: the same bits for o, lse, dq, dk, dv."""
    p = BlockSparseProblem(B=2, H=4, G=2, T=200, S=200, D=16, E=8, block_size=16,
                           pattern="per_head", block_bias=True, seed=11)
    a = p.arrays(dtype)
    layout = p.layout()
    bias = p.bias_of(layout, dtype)
    before = numba.get_num_threads()

    def run(threads):
        numba.set_num_threads(threads)
        try:
            fwd = cpu.block_sparse_forward(a["q"], a["k"], a["v"], layout, block_bias=bias)
            bwd = cpu.block_sparse_backward(a["q"], a["k"], a["v"], *fwd, a["do"], layout,
                                            block_bias=bias)
        finally:
            numba.set_num_threads(before)
        return (*fwd, *bwd)

    for one, two in zip(run(1), run(2)):
        np.testing.assert_array_equal(one, two)
