"""Every registered block-sparse and PrFlashAttention backend agrees with the spec."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings

from backends import registry
from spec.attention import prflash
from tests.backends.conformance import (
    check_block_sparse_backward,
    check_block_sparse_forward,
)
from tests.strategies import (
    BlockSparseProblem,
    block_sparse_problems,
    with_block_sparse_edge_examples,
)


def _cases(op: str):
    return [
        pytest.param(e, dt, id=f"{e.name}-{dt}")
        for e in registry.entries(op)
        if e.backend != "spec"
        for dt in e.dtypes
    ]


def _forward_of(entry: registry.Entry, op: str):
    return registry.get(f"attention.{op}_forward", entry.backend)


@pytest.mark.parametrize("entry, dtype", _cases("attention.block_sparse_forward"))
@settings(max_examples=60)
@with_block_sparse_edge_examples
@given(problem=block_sparse_problems())
def test_block_sparse_forward_conforms(entry, dtype, problem: BlockSparseProblem):
    check_block_sparse_forward(entry.load(), problem, dtype)


@pytest.mark.parametrize("entry, dtype", _cases("attention.block_sparse_backward"))
@settings(max_examples=40)
@with_block_sparse_edge_examples
@given(problem=block_sparse_problems())
def test_block_sparse_backward_conforms(entry, dtype, problem: BlockSparseProblem):
    check_block_sparse_backward(entry.load(), problem, dtype,
                                forward_fn=_forward_of(entry, "block_sparse"))


def _causal(problem: BlockSparseProblem) -> BlockSparseProblem:
    return dataclasses.replace(problem, causal=True)


@pytest.mark.parametrize("entry, dtype", _cases("attention.prflash_forward"))
@settings(max_examples=30)
@given(problem=block_sparse_problems())
def test_prflash_forward_conforms(entry, dtype, problem: BlockSparseProblem):
    check_block_sparse_forward(entry.load(), _causal(problem), dtype, op="prflash")


@pytest.mark.parametrize("entry, dtype", _cases("attention.prflash_backward"))
@settings(max_examples=20)
@given(problem=block_sparse_problems())
def test_prflash_backward_conforms(entry, dtype, problem: BlockSparseProblem):
    check_block_sparse_backward(entry.load(), _causal(problem), dtype,
                                forward_fn=_forward_of(entry, "prflash"), op="prflash")


@pytest.mark.parametrize("entry, dtype", _cases("attention.block_sparse_forward")
                         + _cases("attention.block_sparse_backward"))
def test_block_sparse_at_a_realistic_size(entry, dtype):
    """Many blocks of 64 with a sampled harmonic pattern per head, GQA."""
    p = BlockSparseProblem(B=1, H=4, G=2, T=300, S=300, D=64, E=64, block_size=64,
                           pattern="per_head", block_bias=True, seed=21)
    if entry.op.endswith("forward"):
        check_block_sparse_forward(entry.load(), p, dtype)
    else:
        check_block_sparse_backward(entry.load(), p, dtype, forward_fn=_forward_of(entry, "block_sparse"))


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name)
                                   for e in registry.entries("attention.prflash_forward")])
def test_prflash_with_every_block_kept_is_causal_flash_attention(entry):
    """The exactness property on every backend: p ≡ 1 keeps the whole lower triangle,
    and the result is causal attention within the dense forward's tolerance."""
    dtype = entry.dtypes[-1]
    rng = np.random.default_rng(5)
    n = 5
    keep = prflash.sample_keep(prflash.harmonic_probs(n, n), rng)
    p = BlockSparseProblem(B=1, H=2, G=1, T=70, S=70, D=16, E=16, block_size=16, pattern="all", seed=6)
    assert (keep == p.keep()).all()
    check_block_sparse_forward(entry.load(), p, dtype, op="prflash")


def test_conformance_check_catches_a_dropped_diagonal_mask():
    """The check can fail: a kernel that ignores the causal mask inside the diagonal block
    (attends to the future within the block) is rejected."""
    from spec.attention.block_sparse import block_sparse_forward

    def leaky(q, k, v, layout, *, causal=True, scale=None, block_bias=None):
        return block_sparse_forward(q, k, v, layout, causal=False, scale=scale, block_bias=block_bias)

    p = BlockSparseProblem(B=1, H=1, G=1, T=16, S=16, D=4, E=4, block_size=8, pattern="all")
    with pytest.raises(AssertionError, match="outside tolerance"):
        check_block_sparse_forward(leaky, p, np.float32)


def test_conformance_check_catches_a_wrong_importance_sign():
    """Adding log p instead of log 1/p is rejected."""
    def wrong_sign(q, k, v, keep, *, block_size, importance=None, scale=None):
        from spec.attention.block_sparse import block_layout, block_sparse_forward

        bias = prflash.importance_bias(importance, keep, q.dtype)
        return block_sparse_forward(q, k, v, block_layout(keep, block_size), scale=scale,
                                    block_bias=None if bias is None else -bias)

    p = BlockSparseProblem(B=1, H=2, G=1, T=24, S=24, D=4, E=4, block_size=4, block_bias=True, seed=2)
    with pytest.raises(AssertionError, match="outside tolerance"):
        check_block_sparse_forward(wrong_sign, p, np.float32, op="prflash")
