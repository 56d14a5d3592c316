"""Bad input gets a clear TypeError/ValueError naming the argument, on every implementation.

NaN policy (stated in spec.attention.naive): NaN in q, k or v is not an error; it
propagates to the rows that read it (tested in the conformance and ladder tests).
A bias of +inf or NaN is an error, since it defines no probability; -inf is a mask.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends import registry
from spec.position.rope import RoPE

F32 = np.float32


def _good(dtype=F32, B=1, H=4, G=2, T=5, S=6, D=3, E=2):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(dtype) for s in ((B, H, T, D), (B, G, S, D), (B, G, S, E))]


def _backward_args(dtype=F32):
    q, k, v = _good(dtype)
    o = np.zeros((1, 4, 5, 2), dtype)
    lse = np.zeros((1, 4, 5), dtype)
    return [q, k, v, o, lse, np.ones_like(o)]


FORWARD = registry.entries("attention.flash_forward")
BACKWARD = registry.entries("attention.flash_backward")
ALL = [pytest.param(e, id=e.name) for e in FORWARD + BACKWARD]


def _call(entry, args, **kw):
    fn = entry.load()
    if entry.op == "attention.flash_backward" and len(args) == 3:
        args = list(args) + _backward_args()[3:]
    return fn(*args, **kw)


def _swap(args, i, x):
    args = list(args)
    args[i] = x
    return args


BAD_QKV = [
    ("q 3-D", lambda a: _swap(a, 0, a[0][0]), ValueError, r"q_BHTD: expected 4 dimensions"),
    ("k is a list", lambda a: _swap(a, 1, a[1].tolist()), TypeError, r"k_BGSD: expected a numpy.ndarray"),
    ("v int", lambda a: _swap(a, 2, a[2].astype(np.int32)), TypeError, r"v_BGSE: expected dtype float"),
    ("q bool", lambda a: _swap(a, 0, a[0] > 0), TypeError, r"q_BHTD: expected dtype float"),
    ("mixed dtypes", lambda a: _swap(a, 1, a[1].astype(np.float64)), TypeError, r"expected one dtype"),
    ("batch differs", lambda a: _swap(a, 1, np.concatenate([a[1]] * 2)), ValueError, r"batch size B differs"),
    ("D differs", lambda a: _swap(a, 1, a[1][..., :2]), ValueError, r"k_BGSD: expected width D=3"),
    ("S differs", lambda a: _swap(a, 2, a[2][:, :, :4]), ValueError, r"v_BGSE: expected G=2 heads and S=6"),
    ("G does not divide H", lambda a: [a[0][:, :3]] + a[1:], ValueError, r"G=2 must divide query heads H=3"),
    ("empty T", lambda a: _swap(a, 0, a[0][:, :, :0]), ValueError, r"at least 1"),
]


@pytest.mark.parametrize("entry", ALL)
@pytest.mark.parametrize("make, exc, match", [pytest.param(*c[1:], id=c[0]) for c in BAD_QKV])
def test_bad_q_k_v(entry, make, exc, match):
    with pytest.raises(exc, match=match):
        _call(entry, make(_good()))


BAD_OPTIONS = [
    ("bias 3-D", {"bias": np.zeros((4, 5, 6), F32)}, ValueError, r"bias: expected 4 dimensions"),
    ("bias wrong T", {"bias": np.zeros((1, 4, 2, 6), F32)}, ValueError, r"bias: expected shape broadcastable"),
    ("bias float64", {"bias": np.zeros((1, 1, 5, 6))}, TypeError, r"bias: expected dtype float32"),
    ("bias +inf", {"bias": np.full((1, 1, 5, 6), np.inf, F32)}, ValueError, r"bias: \+inf and NaN"),
    ("bias NaN", {"bias": np.full((1, 1, 1, 6), np.nan, F32)}, ValueError, r"bias: \+inf and NaN"),
    ("mask float", {"mask": np.ones((1, 1, 5, 6), F32)}, TypeError, r"mask: expected dtype bool"),
    ("mask wrong S", {"mask": np.ones((1, 1, 5, 5), bool)}, ValueError, r"mask: expected shape broadcastable"),
    ("tile_t 0", {"tile_t": 0}, ValueError, r"tile_t: expected a positive int"),
    ("tile_s float", {"tile_s": 2.0}, TypeError, r"tile_s: expected a positive int"),
    ("scale bool", {"scale": True}, TypeError, r"scale: expected a real number"),
    ("scale NaN", {"scale": float("nan")}, ValueError, r"scale: expected a finite number"),
    ("causal str", {"causal": "yes"}, TypeError, r"causal: expected a bool, got str"),
    ("causal array", {"causal": np.array([True, False])}, TypeError, r"causal: expected a bool"),
]


@pytest.mark.parametrize("entry", ALL)
@pytest.mark.parametrize("kw, exc, match", [pytest.param(*c[1:], id=c[0]) for c in BAD_OPTIONS])
def test_bad_options(entry, kw, exc, match):
    with pytest.raises(exc, match=match):
        _call(entry, _good(), **kw)


BAD_BACKWARD = [
    ("o wrong T", 3, lambda x: x[:, :, :4], ValueError, r"o_BHTE: expected shape \(1, 4, 5, 2\)"),
    ("lse 4-D", 4, lambda x: x[..., None], ValueError, r"lse_BHT: expected 3 dimensions"),
    ("do float64", 5, lambda x: x.astype(np.float64), TypeError, r"do_BHTE: expected dtype float32"),
]


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name) for e in BACKWARD])
@pytest.mark.parametrize("i, make, exc, match", [pytest.param(*c[1:], id=c[0]) for c in BAD_BACKWARD])
def test_bad_backward_inputs(entry, i, make, exc, match):
    args = _backward_args()
    args[i] = make(args[i])
    with pytest.raises(exc, match=match):
        entry.load()(*args)


@pytest.mark.parametrize("entry", ALL)
def test_unsupported_dtype_is_a_type_error(entry):
    """Each backend rejects the dtypes the registry does not list for it."""
    unsupported = [d for d in (np.float16, np.float32, np.float64) if np.dtype(d) not in entry.dtypes]
    for dtype in unsupported:
        args = _good(dtype) if entry.op == "attention.flash_forward" else _backward_args(dtype)
        with pytest.raises(TypeError, match=str(np.dtype(dtype))):
            entry.load()(*args)


# ---------------------------------------------------------------- positional options

WITH_POSITIONS = [pytest.param(e, id=e.name) for e in FORWARD + BACKWARD if e.positions]

BAD_POSITIONS = [
    ("rope a string", {"rope": "rotate_half"}, TypeError, r"rope: expected a spec.position.rope.RoPE"),
    ("rope odd D", {"rope": RoPE()}, ValueError, r"rope: RoPE rotates pairs .* got D=3"),
    ("slopes wrong H", {"alibi_slopes": np.ones(3)}, ValueError, r"alibi_slopes: expected shape \(H,\)=\(4,\)"),
    ("slopes NaN", {"alibi_slopes": np.array([1, np.nan, 1, 1])}, ValueError, r"alibi_slopes: expected finite"),
    ("slopes negative", {"alibi_slopes": -np.ones(4)}, ValueError, r"alibi_slopes: expected finite slopes >= 0"),
    ("slopes list", {"alibi_slopes": [1.0] * 4}, TypeError, r"alibi_slopes: expected a numpy.ndarray"),
    ("slopes int", {"alibi_slopes": np.ones(4, np.int64)}, TypeError, r"alibi_slopes: expected a float dtype"),
    ("form unknown", {"alibi_slopes": np.ones(4), "alibi_form": "cubic"}, ValueError, r"alibi_form: expected one of"),
]


@pytest.mark.parametrize("entry", WITH_POSITIONS)
@pytest.mark.parametrize("kw, exc, match", [pytest.param(*c[1:], id=c[0]) for c in BAD_POSITIONS])
def test_bad_positional_options(entry, kw, exc, match):
    with pytest.raises(exc, match=match):
        _call(entry, _good(), **kw)


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name) for e in FORWARD if not e.positions])
def test_entries_without_positions_refuse_them(entry):
    q, k, v = _good(np.float16, D=64, E=64)
    for kw in ({"rope": RoPE()}, {"alibi_slopes": np.ones(4)}):
        with pytest.raises(ValueError, match="positional options"):
            entry.load()(q, k, v, **kw)


VARLEN = [pytest.param(e, id=e.name) for e in registry.entries("attention.flash_varlen_forward")]


def _packed(T=7, S=9, H=4, G=2, D=4, E=3):
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal(s).astype(F32) for s in ((T, H, D), (S, G, D), (S, G, E)))
    return q, k, v, np.array([0, 3, 7], np.int32), np.array([0, 5, 9], np.int32)


BAD_VARLEN = [
    ("q 4-D", lambda a: _swap(a, 0, a[0][None]), ValueError, r"q_THD: expected 3 dimensions"),
    ("cu_q float", lambda a: _swap(a, 3, a[3].astype(F32)), TypeError, r"cu_seqlens_q: expected an integer dtype"),
    ("cu_q list", lambda a: _swap(a, 3, [0, 3, 7]), TypeError, r"cu_seqlens_q: expected a numpy.ndarray"),
    ("cu_q wrong end", lambda a: _swap(a, 3, np.array([0, 3, 6])), ValueError, r"cu_seqlens_q: .* end at the packed length 7"),
    ("cu_k decreasing", lambda a: _swap(a, 4, np.array([0, 6, 5, 9])), ValueError, r"cu_seqlens_k: offsets must be non-decreasing"),
    ("counts differ", lambda a: _swap(a, 4, np.array([0, 9])), ValueError, r"the same number of sequences"),
    ("cu_k 2-D", lambda a: _swap(a, 4, a[4][None]), ValueError, r"cu_seqlens_k: expected shape \(N\+1,\)"),
    ("G does not divide H", lambda a: _swap(_swap(a, 1, np.zeros((9, 3, 4), F32)), 2, np.zeros((9, 3, 3), F32)),
     ValueError, r"G=3 must divide query heads H=4"),
    ("mixed dtypes", lambda a: _swap(a, 2, a[2].astype(np.float16)), TypeError, r"expected one dtype"),
]


@pytest.mark.parametrize("entry", VARLEN)
@pytest.mark.parametrize("make, exc, match", [pytest.param(*c[1:], id=c[0]) for c in BAD_VARLEN])
def test_bad_varlen_inputs(entry, make, exc, match):
    with pytest.raises(exc, match=match):
        entry.load()(*make(list(_packed())))


@pytest.mark.parametrize("entry", VARLEN)
def test_bad_varlen_options(entry):
    args = _packed()
    for kw, exc, match in (({"causal": 1}, TypeError, "causal: expected a bool"),
                           ({"rope": RoPE(), "scale": float("inf")}, ValueError, "scale"),
                           ({"alibi_slopes": np.ones(2)}, ValueError, r"alibi_slopes: expected shape")):
        with pytest.raises(exc, match=match):
            entry.load()(*args, **kw)


ROPE_QK = [pytest.param(e, id=e.name) for e in registry.entries("position.rope_qk")]


@pytest.mark.parametrize("entry", ROPE_QK)
def test_bad_rope_qk_inputs(entry):
    q, k, _ = _good(D=4)
    fn = entry.load()
    for args, kw, exc, match in (
        ((q[..., :3], k[..., :3]), {}, ValueError, r"q_BHTD: RoPE rotates pairs"),
        ((q, k[..., :2]), {}, ValueError, r"expected the same B and D"),
        ((q, k.astype(np.float64)), {}, TypeError, r"expected one dtype"),
        ((q, k), {"rope": "interleaved"}, TypeError, r"rope: expected a spec.position.rope.RoPE"),
        ((q[0], k), {}, ValueError, r"q_BHTD: expected 4 dimensions"),
    ):
        with pytest.raises(exc, match=match):
            fn(*args, **kw)
