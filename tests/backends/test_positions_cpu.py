"""The CPU backend's positional options, packed varlen kernel and rope_qk: what the
generic conformance suite does not pin.

The conformance suite (test_attention_conformance.py) holds every backend to the
tolerance policy on drawn problems. These tests add exact properties that follow from
how the CPU kernels are built (the rotation and the ALiBi term are the spec's
arithmetic, fused; a packed sequence runs the batched kernel's tile code), the
in-place rope_qk, empty and decoding-shaped packed sequences, and the errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.cpu import attention as cpu
from backends.cpu.rope import rope_qk
from backends.cpu.varlen import flash_varlen_forward
from spec.attention import tiled, varlen
from spec.attention.positional import check_positions, query_positions, unrotate
from spec.position import rope as spec_rope
from spec.position.alibi import bias as alibi_bias
from spec.position.alibi import slopes
from spec.position.rope import RoPE
from spec.position.rope_alibi import options
from tests.backends.conformance import check_varlen
from tests.strategies import VarlenProblem

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


def _qkv(B, H, G, T, S, D, E, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, H, T, D)).astype(dtype),
            rng.standard_normal((B, G, S, D)).astype(dtype),
            rng.standard_normal((B, G, S, E)).astype(dtype))


# ------------------------------------------------------------------- rope_qk


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("layout", ["rotate_half", "interleaved"])
@pytest.mark.parametrize("T, S", [(3000, 7), (7, 3000), (1, 1)])
def test_rope_qk_is_the_spec_bit_for_bit(dtype, layout, T, S):
    """Far positions (large angles, negative ones when T > S), GQA, a non-contiguous k."""
    q, k, _ = _qkv(2, 4, 2, T, S, 8, 1, dtype)
    k = np.ascontiguousarray(k.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    config = RoPE(base=5e5, layout=layout)
    got, want = rope_qk(q, k, rope=config), spec_rope.rope_qk(q, k, rope=config)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, w)


def test_rope_qk_in_place_rotates_the_given_arrays():
    q, k, _ = _qkv(1, 4, 2, 5, 9, 8, 1, F32)
    want = spec_rope.rope_qk(q, k)
    out = rope_qk(q, k, inplace=True)
    assert out.q_BHTD is q and out.k_BGSD is k
    np.testing.assert_array_equal(q, want.q_BHTD)
    np.testing.assert_array_equal(k, want.k_BGSD)


def test_rope_qk_in_place_refuses_what_it_cannot_rotate_in_place():
    q, k, _ = _qkv(1, 2, 2, 4, 4, 8, 1, F32)
    readonly = q.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="q_BHTD: inplace=True needs a writable"):
        rope_qk(readonly, k, inplace=True)
    with pytest.raises(ValueError, match="k_BGSD: inplace=True needs a C-contiguous"):
        rope_qk(q, k.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2), inplace=True)
    # q and k the same memory (self-attention on one buffer) would be rotated twice
    with pytest.raises(ValueError, match="do not overlap"):
        rope_qk(q, q, inplace=True)
    with pytest.raises(TypeError, match="inplace: expected a bool"):
        rope_qk(q, k, inplace=1)
    # nothing was rotated by the refused calls
    np.testing.assert_array_equal(q, _qkv(1, 2, 2, 4, 4, 8, 1, F32)[0])


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble])
def test_rope_qk_names_the_argument_for_dtypes_it_does_not_compute_in(dtype):
    q, k, _ = _qkv(1, 1, 1, 2, 2, 4, 1, dtype)
    with pytest.raises(TypeError, match="q_BHTD: the cpu backend supports dtype float32 and float64"):
        rope_qk(q, k)


# --------------------------------------------------------- fused positions


@pytest.mark.parametrize("T, S, causal", [(70, 150, True), (150, 70, False), (150, 70, True)])
def test_fused_rope_equals_plain_attention_on_rotated_inputs(T, S, causal):
    """Rotating while tiles are copied is the same arithmetic as rotating first: equal
    outputs, and the backward's dq, dk are the pre-rotated problem's, carried back
    through the rotation exactly as the spec's unrotate does. (T > S: negative query
    positions.)"""
    q, k, v = _qkv(1, 4, 2, T, S, 32, 16, F32)
    opts = {"causal": causal, "tile_t": 32, "tile_s": 64, "alibi_slopes": slopes(4),
            "alibi_form": "harmonic_prior"}
    config = RoPE(base=50.0, layout="interleaved")
    fused = cpu.flash_forward(q, k, v, rope=config, **opts)
    qr, kr = rope_qk(q, k, rope=config)
    first = cpu.flash_forward(qr, kr, v, **opts)
    np.testing.assert_array_equal(fused.o_BHTE, first.o_BHTE)
    np.testing.assert_array_equal(fused.lse_BHT, first.lse_BHT)

    do = np.random.default_rng(1).standard_normal(fused.o_BHTE.shape).astype(F32)
    grads = cpu.flash_backward(q, k, v, *fused, do, rope=config, **opts)
    dqr, dkr, dv = cpu.flash_backward(qr, kr, v, *first, do, **opts)
    pos = check_positions(config, None, "linear", H=4, D=32, dtype=F32)
    np.testing.assert_array_equal(grads.dq_BHTD, unrotate(dqr, query_positions(T, S), pos))
    np.testing.assert_array_equal(grads.dk_BGSD, unrotate(dkr, np.arange(S), pos))
    np.testing.assert_array_equal(grads.dv_BGSE, dv)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_alibi_equals_its_materialised_bias(causal):
    """-(m·f) formed in the score loop, and (bias + alibi) summed before it meets
    scale·q·k, is the spec's order: the same numbers as a dense bias that holds
    bias + alibi, bit for bit. Causal uses Press et al.'s i - j (equal to |i - j| on
    every visible key), non-causal the symmetric form."""
    T, S, H = 40, 90, 4
    q, k, v = _qkv(1, H, 1, T, S, 16, 8, F32)
    m_H = slopes(H)
    user_1H1S = np.random.default_rng(2).standard_normal((1, H, 1, S)).astype(F32)
    dense_1HTS = alibi_bias(m_H.astype(F32), T, S, symmetric=not causal)[None]
    opts = {"causal": causal, "tile_t": 16, "tile_s": 32}
    for user in (None, user_1H1S):
        both = dense_1HTS if user is None else user + dense_1HTS
        fused = cpu.flash_forward(q, k, v, bias=user, alibi_slopes=m_H, **opts)
        dense = cpu.flash_forward(q, k, v, bias=both, **opts)
        np.testing.assert_array_equal(fused.o_BHTE, dense.o_BHTE)
        np.testing.assert_array_equal(fused.lse_BHT, dense.lse_BHT)


# ------------------------------------------------------------------- varlen


def _packed(lengths_q, lengths_k, H, G, D, E, seed=0):
    rng = np.random.default_rng(seed)
    cu_q = np.concatenate([[0], np.cumsum(lengths_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lengths_k)]).astype(np.int32)
    return (rng.standard_normal((cu_q[-1], H, D)).astype(F32),
            rng.standard_normal((cu_k[-1], G, D)).astype(F32),
            rng.standard_normal((cu_k[-1], G, E)).astype(F32), cu_q, cu_k)


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_is_each_sequence_alone_through_flash_forward(causal):
    """Empty sequences (no queries, no keys, neither), T_b < S_b (a decoding step),
    T_b > S_b and sequences of many tiles: each sequence's rows are, bit for bit,
    those of the batched kernel run on that sequence alone, and a sequence without
    keys gets o = 0, lse = -inf."""
    lengths_q, lengths_k = (3, 0, 70, 5, 0, 1, 40), (9, 4, 65, 0, 0, 33, 40)
    q, k, v, cu_q, cu_k = _packed(lengths_q, lengths_k, H=4, G=2, D=16, E=8)
    opts = {"causal": causal, "tile_t": 16, "tile_s": 8, **options(4, variant="harmonic_number")}
    o, lse = flash_varlen_forward(q, k, v, cu_q, cu_k, **opts)
    for b in range(len(lengths_q)):
        t0, t1, s0, s1 = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
        if t0 == t1:
            continue
        if s0 == s1:
            assert (o[t0:t1] == 0).all() and (lse[:, t0:t1] == -np.inf).all()
            continue
        alone = cpu.flash_forward(q[t0:t1].transpose(1, 0, 2)[None], k[s0:s1].transpose(1, 0, 2)[None],
                                  v[s0:s1].transpose(1, 0, 2)[None], **opts)
        np.testing.assert_array_equal(o[t0:t1], alone.o_BHTE[0].transpose(1, 0, 2))
        np.testing.assert_array_equal(lse[:, t0:t1], alone.lse_BHT[0])


def test_varlen_meets_the_tolerance_policy_with_empty_sequences_and_positions():
    """Against the spec per sequence (oracle in float64, the spec in float32 as the
    baseline): causal with T_b != S_b, sequences without queries or keys, RoPE and ALiBi."""
    p = VarlenProblem(lengths_q=(0, 5, 3, 0, 66), lengths_k=(2, 0, 12, 0, 70), H=4, G=2, D=8, E=4,
                      causal=True, tile_t=16, tile_s=8, seed=7, rope="rotate_half",
                      alibi="linear")
    check_varlen(flash_varlen_forward, p, F32)


# ------------------------------------------------------------------- errors


def _raises_like_spec(spec_fn, cpu_fn, *args, **kwargs):
    """Both raise, with the same exception type and message."""
    with pytest.raises(Exception) as spec_error:
        spec_fn(*args, **kwargs)
    with pytest.raises(spec_error.type) as cpu_error:
        cpu_fn(*args, **kwargs)
    assert str(cpu_error.value) == str(spec_error.value)


BAD_POSITIONS = [
    pytest.param({"alibi_slopes": np.ones(3)}, id="slopes-shape"),
    pytest.param({"alibi_slopes": np.array([0.5, np.nan])}, id="slopes-nan"),
    pytest.param({"alibi_slopes": np.array([0.5, -0.5])}, id="slopes-negative"),
    pytest.param({"alibi_slopes": np.array([1, 2])}, id="slopes-int"),
    pytest.param({"alibi_slopes": np.ones(2), "alibi_form": "quadratic"}, id="form"),
    pytest.param({"rope": "rotate_half"}, id="rope-not-a-RoPE"),
    pytest.param({"rope": RoPE(), "odd": True}, id="rope-odd-D"),
]


@pytest.mark.parametrize("bad", BAD_POSITIONS)
def test_bad_positional_options_raise_the_spec_errors(bad):
    bad = dict(bad)
    D = 5 if bad.pop("odd", False) else 4
    q, k, v = _qkv(1, 2, 1, 3, 4, D, 2, F32)
    _raises_like_spec(tiled.flash_forward, cpu.flash_forward, q, k, v, **bad)
    o, lse = tiled.flash_forward(q, k, v)
    _raises_like_spec(tiled.flash_backward, cpu.flash_backward, q, k, v, o, lse, o, **bad)
    qp, kp, vp = (x[0].transpose(1, 0, 2) for x in (q, k, v))
    cu_q, cu_k = np.array([0, 3]), np.array([0, 4])
    _raises_like_spec(varlen.flash_varlen_forward, flash_varlen_forward, qp, kp, vp, cu_q, cu_k, **bad)


@pytest.mark.parametrize("cu_q, cu_k", [
    pytest.param(np.array([0, 2, 1, 5]), np.array([0, 2, 3, 6]), id="decreasing"),
    pytest.param(np.array([0, 2, 4]), np.array([0, 2, 6]), id="wrong-end"),
    pytest.param(np.array([1, 2, 5]), np.array([0, 3, 6]), id="wrong-start"),
    pytest.param(np.array([0.0, 5.0]), np.array([0, 6]), id="float"),
    pytest.param(np.array([0, 2, 5]), np.array([0, 6]), id="different-counts"),
    pytest.param(np.array([5]), np.array([6]), id="no-sequence"),
    pytest.param([0, 5], np.array([0, 6]), id="list"),
])
def test_bad_cu_seqlens_raise_the_spec_errors(cu_q, cu_k):
    q, k, v, _, _ = _packed((5,), (6,), H=2, G=1, D=4, E=2)
    _raises_like_spec(varlen.flash_varlen_forward, flash_varlen_forward, q, k, v, cu_q, cu_k)


def test_varlen_names_the_argument_for_float16():
    q, k, v, cu_q, cu_k = _packed((5,), (6,), H=2, G=1, D=4, E=2)
    with pytest.raises(TypeError, match="q_THD: the cpu backend supports dtype float32 and float64"):
        flash_varlen_forward(*(x.astype(np.float16) for x in (q, k, v)), cu_q, cu_k)
