"""Every registered attention backend agrees with the spec (tolerance policy in spec.tolerance)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings

from backends import registry
from tests.backends.conformance import check_backward, check_forward, check_rope_qk, check_varlen
from tests.strategies import (
    AttentionProblem,
    VarlenProblem,
    attention_problems,
    varlen_problems,
    with_position_edge_examples,
    with_varlen_edge_examples,
)


def _marks(entry: registry.Entry):
    """Entries that only a GPU can run (tensor cores) carry the gpu marker."""
    return (pytest.mark.gpu,) if entry.gpu_only else ()


def _cases(op: str):
    """(entry, dtype) for every non-spec implementation of ``op`` and each dtype it takes."""
    return [
        pytest.param(e, dt, id=f"{e.name}-{dt}", marks=_marks(e))
        for e in registry.entries(op)
        if e.backend != "spec"
        for dt in e.dtypes
    ]


def _fit(entry: registry.Entry, problem: AttentionProblem) -> AttentionProblem:
    """The problem as the entry takes it: D = E set to a width it takes, where it takes
    only some; without positional options, where it implements none."""
    if not entry.positions:
        problem = dataclasses.replace(problem, rope="none", alibi="none")
    if entry.head_dims is None:
        return problem
    width = entry.head_dims[problem.seed % len(entry.head_dims)]
    return dataclasses.replace(problem, D=width, E=width)


def _entries(op: str):
    return [pytest.param(e, id=e.name, marks=_marks(e)) for e in registry.entries(op)]


def _forward_of(entry: registry.Entry):
    """The forward of the same backend: a backward is fed its own forward's o, lse.

    The same version where the backward has versions; else the backend's default
    forward (the function itself, without ``version=``).
    """
    if entry.version is not None:
        return registry.get("attention.flash_forward", entry.backend, entry.version)
    return registry.get_default("attention.flash_forward", entry.backend)


@pytest.mark.parametrize("entry, dtype", _cases("attention.flash_forward"))
@settings(max_examples=80)
@with_position_edge_examples
@given(problem=attention_problems(positions=True))
def test_flash_forward_conforms(entry, dtype, problem: AttentionProblem):
    check_forward(entry.load(), _fit(entry, problem), dtype, spec_fn=entry.load_spec())


@pytest.mark.parametrize("entry, dtype", _cases("attention.flash_backward"))
@settings(max_examples=60)
@with_position_edge_examples
@given(problem=attention_problems(positions=True))
def test_flash_backward_conforms(entry, dtype, problem: AttentionProblem):
    check_backward(entry.load(), _fit(entry, problem), dtype, forward_fn=_forward_of(entry), spec_fn=entry.load_spec())


@pytest.mark.parametrize("entry, dtype", _cases("attention.flash_forward"))
def test_forward_at_a_realistic_size(entry, dtype):
    """One larger problem (many tiles, GQA, causal, S > T) beyond the drawn sizes."""
    p = AttentionProblem(B=1, H=4, G=2, T=200, S=333, D=64, E=64, causal=True,
                         bias="per_head", tile_t=64, tile_s=64, seed=11)
    check_forward(entry.load(), p, dtype, spec_fn=entry.load_spec())


@pytest.mark.parametrize("entry, dtype", [c for c in _cases("attention.flash_forward")
                                          if c.values[0].positions])
def test_forward_with_positions_at_a_realistic_size(entry, dtype):
    """RoPE and the harmonic-number penalty over many tiles, GQA, causal with S > T."""
    p = AttentionProblem(B=1, H=4, G=2, T=70, S=150, D=32, E=32, causal=True, mask="per_key",
                         tile_t=32, tile_s=64, seed=13, rope="rotate_half", alibi="harmonic_number")
    check_forward(entry.load(), p, dtype, spec_fn=entry.load_spec())


@pytest.mark.parametrize("entry, dtype", _cases("attention.flash_backward"))
def test_backward_at_a_realistic_size(entry, dtype):
    p = AttentionProblem(B=1, H=4, G=2, T=150, S=190, D=64, E=32, causal=True,
                         mask="per_key", tile_t=32, tile_s=64, seed=12)
    check_backward(entry.load(), p, dtype, forward_fn=_forward_of(entry), spec_fn=entry.load_spec())


@pytest.mark.parametrize("entry", _entries("attention.flash_forward"))
def test_nan_in_a_query_propagates_to_its_row_only(entry):
    rng = np.random.default_rng(4)
    dtype = entry.dtypes[-1]
    width = entry.head_dims[0] if entry.head_dims else 3
    q, k, v = (rng.standard_normal((2, 2, 5, width)).astype(dtype) for _ in range(3))
    q[1, 0, 3, 1] = np.nan
    o, lse = entry.load()(q, k, v, tile_t=2, tile_s=2)
    assert np.isnan(o[1, 0, 3]).all() and np.isnan(lse[1, 0, 3])
    o[1, 0, 3], lse[1, 0, 3] = 0, 0
    assert np.isfinite(o).all() and np.isfinite(lse).all()


@pytest.mark.parametrize("entry, dtype", _cases("attention.flash_varlen_forward"))
@settings(max_examples=30)
@with_varlen_edge_examples
@given(problem=varlen_problems())
def test_flash_varlen_forward_conforms(entry, dtype, problem: VarlenProblem):
    check_varlen(entry.load(), problem, dtype)


@pytest.mark.parametrize("entry, dtype", _cases("position.rope_qk"))
@settings(max_examples=40)
@given(problem=attention_problems(positions=True).filter(lambda p: p.rope != "none"))
def test_rope_qk_conforms(entry, dtype, problem: AttentionProblem):
    check_rope_qk(entry.load(), problem, dtype)


def test_conformance_check_catches_a_wrong_causal_alignment():
    """The check can fail: top-left causal alignment (a common bug) is rejected."""
    from spec.attention.naive import attention

    def top_left(q, k, v, *, causal=False, scale=None, bias=None, mask=None, tile_t=64, tile_s=64):
        T, S = q.shape[2], k.shape[2]
        if causal:
            tl = np.arange(S)[None, :] <= np.arange(T)[:, None]
            mask = tl[None, None] if mask is None else mask & tl
        return attention(q, k, v, scale=scale, bias=bias, mask=mask)

    p = AttentionProblem(B=1, H=1, G=1, T=3, S=6, D=4, E=4, causal=True)
    with pytest.raises(AssertionError, match="outside tolerance|non-finite mismatch"):
        check_forward(top_left, p, np.float32)


def test_conformance_check_catches_top_left_positions():
    """Query positions counted from 0 instead of S - T (RoPE and ALiBi both) are rejected."""
    from spec.attention.naive import attention

    def positions_from_zero(q, k, v, *, rope=None, alibi_slopes=None, alibi_form="linear",
                            tile_t=64, tile_s=64, **kw):
        T, S = q.shape[2], k.shape[2]
        pad = np.zeros(q.shape[:2] + (S - T, q.shape[3]), q.dtype)
        o, lse = attention(np.concatenate([q, pad], axis=2), k, v, rope=rope,
                           alibi_slopes=alibi_slopes, alibi_form=alibi_form, **kw)
        return o[:, :, :T], lse[:, :, :T]

    for extra in ({"rope": "rotate_half"}, {"alibi": "linear"}):
        p = AttentionProblem(B=1, H=2, G=1, T=3, S=8, D=4, E=4, seed=5, **extra)
        with pytest.raises(AssertionError, match="outside tolerance"):
            check_forward(positions_from_zero, p, np.float32)


def test_conformance_check_catches_reading_across_sequences():
    """A packed kernel that lets a sequence see the keys of the one before is rejected."""
    from spec.attention.varlen import flash_varlen_forward

    def leaky(q, k, v, cu_q, cu_k, **kw):
        return flash_varlen_forward(q, k, v, np.array([0, q.shape[0]]), np.array([0, k.shape[0]]), **kw)

    p = VarlenProblem(lengths_q=(3, 4), lengths_k=(5, 2), H=1, G=1, D=4, E=2, seed=3)
    with pytest.raises(AssertionError, match="outside tolerance"):
        check_varlen(leaky, p, np.float32)
