"""The positional options on the CUDA kernels (attention.cu, attention_backward, rope.cu, the
packed forward), beyond the registry-wide conformance suite.

Where there is no GPU, tests/conftest.py selects the emulator, which runs the unmodified
.cu sources. Every forward version meets each positional option alone and together, with
a bias and a mask, causal with T > S (negative query positions) and T < S, and GQA; the
backward the same options; rope_qk is the spec's bit for bit, in place and not; the
packed forward agrees with the spec with empty sequences and never reads across
sequences; bad input fails as the spec fails. The judging is spec.tolerance's with spec
baselines (tests/backends/conformance.py). Sizes stay small (T, S <= 70, D <= 32, one
problem in the 128 bucket): the emulator runs every thread as a fiber.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from backends.cuda import _launch
from backends.cuda import attention as launcher
from backends.cuda.attention import VERSIONS, flash_forward
from backends.cuda.attention_backward import flash_backward
from backends.cuda.attention_varlen import flash_varlen_forward
from backends.cuda.rope import rope_qk
from spec.attention.tiled import flash_backward as spec_backward
from spec.attention.tiled import flash_forward as spec_forward
from spec.attention.varlen import flash_varlen_forward as spec_varlen
from spec.position.alibi import slopes
from spec.position.rope import RoPE
from spec.position.rope import rope_qk as spec_rope_qk
from tests.backends.conformance import (
    check_backward,
    check_forward,
    check_rope_qk,
    check_varlen,
)
from tests.strategies import AttentionProblem, VarlenProblem

F32 = np.float32

FORWARD_PROBLEMS = {
    # RoPE alone, each layout; T < S with causal, T > S (negative query positions) without
    "rope rotate_half, causal, T < S, GQA": AttentionProblem(
        B=1, H=4, G=2, T=9, S=40, D=16, E=12, causal=True, rope="rotate_half", seed=1),
    "rope interleaved base 50, T > S": AttentionProblem(
        B=2, H=2, G=1, T=45, S=13, D=32, E=20, logit=30.0, rope="interleaved", rope_base=50.0,
        seed=2),
    # each ALiBi form alone (odd D: no rotation needed), with biases and masks
    "alibi linear, causal, T > S, bias and mask": AttentionProblem(
        B=1, H=3, G=3, T=40, S=17, D=8, E=8, causal=True, bias="per_head", mask="random",
        alibi="linear", seed=3),
    "alibi harmonic_number, GQA": AttentionProblem(
        B=1, H=6, G=2, T=33, S=33, D=17, E=5, alibi="harmonic_number", seed=4),
    "alibi harmonic_prior, causal, T < S, -inf bias, empty rows": AttentionProblem(
        B=2, H=2, G=1, T=20, S=51, D=9, E=9, causal=True, bias="neg_inf", mask="empty_rows",
        alibi="harmonic_prior", seed=5),
    # both together, over several key tiles of every version
    "rope + alibi, causal, T = S = 70": AttentionProblem(
        B=1, H=2, G=1, T=70, S=70, D=24, E=24, causal=True, logit=30.0, rope="interleaved",
        alibi="linear", seed=6),
    "rope + alibi, causal, T > S, bias and mask, GQA": AttentionProblem(
        B=1, H=4, G=2, T=66, S=35, D=10, E=7, causal=True, bias="per_key", mask="per_key",
        rope="rotate_half", alibi="harmonic_prior", seed=7),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("problem", FORWARD_PROBLEMS.values(), ids=FORWARD_PROBLEMS.keys())
def test_forward_with_positions(version, problem):
    check_forward(functools.partial(flash_forward, version=version), problem, F32)


@pytest.mark.parametrize("version", VERSIONS)
def test_forward_with_positions_in_the_largest_bucket(version):
    """D = E = 128: the rotated loads fill the widest rows (v3's padded float4 rows too)."""
    p = AttentionProblem(B=1, H=2, G=1, T=20, S=45, D=128, E=128, causal=True, rope="rotate_half",
                         alibi="harmonic_number", logit=30.0, seed=8)
    check_forward(functools.partial(flash_forward, version=version), p, F32)


def test_calls_without_positions_run_the_build_without_positional_code(monkeypatch):
    """A plain call launches the POSITIONS=0 build (the kernel as it was before positions),
    a call with any positional option the POSITIONS=1 build."""
    launched = []
    get_kernel = _launch.get_kernel

    def recording(config):
        launched.append(dict(config.defines)["POSITIONS"])
        return get_kernel(config)

    monkeypatch.setattr(_launch, "get_kernel", recording)
    q, k, v = (np.ones((1, 2, 3, 4), F32) for _ in range(3))
    flash_forward(q, k, v)
    flash_forward(q, k, v, alibi_slopes=slopes(2))
    flash_forward(q, k, v, rope=RoPE())
    assert launched == ["0", "1", "1"]


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_a_shuffled_thread_schedule_gives_the_same_bits_with_positions(version, monkeypatch):
    """The rotated tiles are written and read across the same barriers as plain ones."""
    if _launch.engine() != "emulator":
        pytest.skip("schedules are shuffled by the emulator only")
    p = FORWARD_PROBLEMS["rope + alibi, causal, T > S, bias and mask, GQA"]
    a = p.arrays(F32)
    opts = {"causal": True, "bias": a["bias"], "mask": a["mask"], **p.positions()}
    want = flash_forward(a["q"], a["k"], a["v"], version=version, **opts)
    monkeypatch.setenv("ATTNSPEC_EMULATOR_SEED", "3")
    got = flash_forward(a["q"], a["k"], a["v"], version=version, **opts)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


# ------------------------------------------------------------------ backward

BACKWARD_PROBLEMS = {
    "rope rotate_half + alibi linear, causal, T > S, GQA": AttentionProblem(
        B=1, H=4, G=2, T=30, S=21, D=16, E=8, causal=True, rope="rotate_half", alibi="linear",
        seed=11),
    "rope interleaved base 50 + harmonic_number, bias and mask": AttentionProblem(
        B=2, H=2, G=1, T=17, S=40, D=12, E=12, bias="per_head", mask="random",
        rope="interleaved", rope_base=50.0, alibi="harmonic_number", tile_t=8, tile_s=16,
        seed=12),
    "alibi harmonic_prior, causal, T < S": AttentionProblem(
        B=1, H=3, G=1, T=9, S=70, D=7, E=5, causal=True, alibi="harmonic_prior", logit=30.0,
        seed=13),
    "rope only, in the 64 bucket": AttentionProblem(
        B=1, H=2, G=2, T=25, S=19, D=64, E=40, causal=True, rope="rotate_half", seed=14),
}


@pytest.mark.parametrize("problem", BACKWARD_PROBLEMS.values(), ids=BACKWARD_PROBLEMS.keys())
def test_backward_with_positions(problem):
    check_backward(flash_backward, problem, F32, forward_fn=flash_forward)


def test_backward_leaves_its_inputs_unrotated():
    """The backward rotates q and k into scratch arrays, not in place."""
    p = BACKWARD_PROBLEMS["rope rotate_half + alibi linear, causal, T > S, GQA"]
    a = p.arrays(F32)
    q, k = a["q"].copy(), a["k"].copy()
    opts = {"causal": True, **p.positions()}
    o, lse = flash_forward(q, k, a["v"], **opts)
    flash_backward(q, k, a["v"], o, lse, a["do"], **opts)
    np.testing.assert_array_equal(q, a["q"])
    np.testing.assert_array_equal(k, a["k"])


# ------------------------------------------------------------------ rope_qk

ROPE_PROBLEMS = [
    AttentionProblem(B=2, H=4, G=2, T=9, S=40, D=16, E=1, rope="rotate_half", seed=21),
    AttentionProblem(B=1, H=3, G=1, T=45, S=13, D=6, E=1, rope="interleaved", rope_base=50.0,
                     seed=22),
    AttentionProblem(B=1, H=1, G=1, T=1, S=1, D=2, E=1, rope="interleaved", seed=23),
]


@pytest.mark.parametrize("problem", ROPE_PROBLEMS, ids=lambda p: f"{p.rope} T={p.T} S={p.S}")
def test_rope_qk_is_the_spec_bit_for_bit(problem):
    check_rope_qk(rope_qk, problem, F32)


@pytest.mark.parametrize("problem", ROPE_PROBLEMS, ids=lambda p: f"{p.rope} T={p.T} S={p.S}")
def test_rope_qk_in_place_rotates_the_given_arrays(problem):
    a = problem.arrays(F32)
    config = problem.positions()["rope"]
    want = spec_rope_qk(a["q"], a["k"], rope=config)
    q, k = a["q"].copy(), a["k"].copy()
    got = rope_qk(q, k, rope=config, inplace=True)
    assert got.q_BHTD is q and got.k_BGSD is k
    np.testing.assert_array_equal(q, want.q_BHTD)
    np.testing.assert_array_equal(k, want.k_BGSD)


def test_rope_qk_in_place_writes_back_into_a_view():
    """A non-contiguous array is rotated in a contiguous copy and written back."""
    rng = np.random.default_rng(0)
    q_big = rng.standard_normal((1, 2, 10, 8)).astype(F32)
    k = rng.standard_normal((1, 2, 7, 8)).astype(F32)
    q = q_big[:, :, ::2]
    want = spec_rope_qk(np.ascontiguousarray(q), k, rope=RoPE())
    rope_qk(q, k, rope=RoPE(), inplace=True)
    np.testing.assert_array_equal(q_big[:, :, ::2], want.q_BHTD)
    np.testing.assert_array_equal(k, want.k_BGSD)


def test_rope_qk_leaves_its_inputs_alone_unless_in_place():
    a = ROPE_PROBLEMS[0].arrays(F32)
    q, k = a["q"].copy(), a["k"].copy()
    rope_qk(q, k)
    np.testing.assert_array_equal(q, a["q"])
    np.testing.assert_array_equal(k, a["k"])


# ------------------------------------------------------------------ packed sequences

VARLEN_PROBLEMS = {
    # empty sequences on both sides, a decoding step, T_b > S_b under causal
    "empty sequences, causal, rope + alibi": VarlenProblem(
        lengths_q=(0, 3, 1, 40, 9), lengths_k=(4, 0, 33, 12, 9), H=2, G=1, D=8, E=3, causal=True,
        rope="rotate_half", alibi="linear", seed=31),
    "GQA, interleaved base 50 + harmonic_prior": VarlenProblem(
        lengths_q=(17, 70, 5), lengths_k=(17, 45, 60), H=4, G=2, D=16, E=16, logit=30.0,
        rope="interleaved", rope_base=50.0, alibi="harmonic_prior", seed=32),
    "no positions, harmonic-free, odd widths": VarlenProblem(
        lengths_q=(33, 1, 64), lengths_k=(65, 2, 31), H=3, G=1, D=9, E=17, causal=True, seed=33),
    "every sequence without keys": VarlenProblem(
        lengths_q=(2, 5), lengths_k=(0, 0), H=1, G=1, D=4, E=2, alibi="harmonic_number",
        seed=34),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("problem", VARLEN_PROBLEMS.values(), ids=VARLEN_PROBLEMS.keys())
def test_varlen_forward(version, problem):
    check_varlen(functools.partial(flash_varlen_forward, version=version), problem, F32)


@pytest.mark.parametrize("version", VERSIONS)
def test_varlen_reads_no_row_of_another_sequence(version):
    """NaN in every key and value of one sequence reaches that sequence's rows only."""
    p = VARLEN_PROBLEMS["GQA, interleaved base 50 + harmonic_prior"]
    a = p.arrays(F32)
    cu_q, cu_k = p.cu_seqlens()
    k, v = a["k"].copy(), a["v"].copy()
    k[cu_k[1]:cu_k[2]] = np.nan
    v[cu_k[1]:cu_k[2]] = np.nan
    o, lse = flash_varlen_forward(a["q"], k, v, cu_q, cu_k, version=version, **p.options())
    poisoned = np.zeros(o.shape[0], bool)
    poisoned[cu_q[1]:cu_q[2]] = True
    assert np.isnan(o[poisoned]).all() and np.isnan(lse[:, poisoned]).all()
    assert np.isfinite(o[~poisoned]).all() and np.isfinite(lse[:, ~poisoned]).all()


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_varlen_with_a_shuffled_thread_schedule_gives_the_same_bits(version, monkeypatch):
    """Blocks past a short sequence's end leave before any barrier; the rest are unchanged."""
    if _launch.engine() != "emulator":
        pytest.skip("schedules are shuffled by the emulator only")
    p = VARLEN_PROBLEMS["empty sequences, causal, rope + alibi"]
    a = p.arrays(F32)
    args = (a["q"], a["k"], a["v"], *p.cu_seqlens())
    want = flash_varlen_forward(*args, version=version, **p.options())
    monkeypatch.setenv("ATTNSPEC_EMULATOR_SEED", "5")
    got = flash_varlen_forward(*args, version=version, **p.options())
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_varlen_with_no_query_at_all_returns_empty_outputs():
    k = np.ones((3, 1, 4), F32)
    o, lse = flash_varlen_forward(np.ones((0, 2, 4), F32), k, k, np.array([0, 0]),
                                  np.array([0, 3]))
    assert o.shape == (0, 2, 4) and lse.shape == (2, 0)


# ------------------------------------------------------------------ bad input


def _qkv(B=1, H=4, G=2, T=5, S=6, D=4, E=3, dtype=F32):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(dtype)
            for s in ((B, H, T, D), (B, G, S, D), (B, G, S, E))]


BAD_POSITIONS = [
    ("rope not a RoPE", {"rope": "rotate_half"}, {}),
    ("rope with odd D", {"rope": RoPE()}, {"D": 5}),
    ("slopes a list", {"alibi_slopes": [0.5] * 4}, {}),
    ("slopes int", {"alibi_slopes": np.ones(4, np.int32)}, {}),
    ("slopes of G heads", {"alibi_slopes": np.ones(2, F32)}, {}),
    ("negative slope", {"alibi_slopes": -np.ones(4, F32)}, {}),
    ("NaN slope", {"alibi_slopes": np.full(4, np.nan, F32)}, {}),
    ("unknown form", {"alibi_slopes": np.ones(4, F32), "alibi_form": "quadratic"}, {}),
    ("unknown form, no slopes", {"alibi_form": "log"}, {}),
]


def _same_error(spec_fn, fn, *args, **kwargs):
    with pytest.raises((TypeError, ValueError)) as want:
        spec_fn(*args, **kwargs)
    with pytest.raises(want.type) as got:
        fn(*args, **kwargs)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("options, sizes", [pytest.param(*c[1:], id=c[0]) for c in BAD_POSITIONS])
def test_bad_positional_options_fail_as_in_the_spec(options, sizes):
    q, k, v = _qkv(**sizes)
    _same_error(spec_forward, flash_forward, q, k, v, **options)
    o, lse = spec_forward(q, k, v)
    _same_error(spec_backward, flash_backward, q, k, v, o, lse, np.ones_like(o), **options)
    packed = [x[0].transpose(1, 0, 2).copy() for x in (q, k, v)]
    cu_q, cu_k = np.array([0, q.shape[2]]), np.array([0, k.shape[2]])
    _same_error(spec_varlen, flash_varlen_forward, *packed, cu_q, cu_k, **options)


def test_positional_options_are_checked_before_the_dtype_the_kernels_take():
    """The spec's checks come first: float64 with a bad rope fails on rope, as in the spec."""
    _same_error(spec_forward, flash_forward, *_qkv(dtype=np.float64), rope="rotate_half")


def test_float64_with_positions_is_refused_naming_float32():
    with pytest.raises(TypeError, match=r"takes float32, got float64"):
        flash_forward(*_qkv(dtype=np.float64), rope=RoPE())


BAD_VARLEN = [
    ("cu not starting at 0", lambda c: (c[0] + 1, c[1]), {}),
    ("cu of other lengths", lambda c: (c[0], np.array([0, 6])), {}),
    ("cu floats", lambda c: (c[0].astype(F32), c[1]), {}),
    ("cu decreasing", lambda c: (np.array([0, 4, 2, 5]), np.array([0, 2, 4, 6])), {}),
    ("causal a string", lambda c: c, {"causal": "yes"}),
    ("tile zero", lambda c: c, {"tile_t": 0}),
]


@pytest.mark.parametrize("make, options", [pytest.param(*c[1:], id=c[0]) for c in BAD_VARLEN])
def test_bad_packed_input_fails_as_in_the_spec(make, options):
    q, k, v = (x[0].transpose(1, 0, 2).copy() for x in _qkv())
    cu_q, cu_k = make((np.array([0, 2, 5]), np.array([0, 4, 6])))
    _same_error(spec_varlen, flash_varlen_forward, q, k, v, cu_q, cu_k, **options)


def test_varlen_float64_and_unknown_versions_are_refused():
    q, k, v = (x[0].transpose(1, 0, 2).copy() for x in _qkv(dtype=np.float64))
    cu_q, cu_k = np.array([0, 5]), np.array([0, 6])
    with pytest.raises(TypeError, match=r"varlen attention kernel takes float32, got float64"):
        flash_varlen_forward(q, k, v, cu_q, cu_k)
    with pytest.raises(ValueError, match=r"version: expected one of \('v1', 'v2', 'v3'\)"):
        flash_varlen_forward(*(x.astype(F32) for x in (q, k, v)), cu_q, cu_k, version="v4")


BAD_ROPE = [
    ("rope not a RoPE", lambda q, k: (q, k), {"rope": "interleaved"}),
    ("odd D", lambda q, k: (q[..., :3], k[..., :3]), {}),
    ("q 3-D", lambda q, k: (q[0], k), {}),
    ("k a list", lambda q, k: (q, k.tolist()), {}),
    ("mixed dtypes", lambda q, k: (q, k.astype(np.float64)), {}),
    ("B differs", lambda q, k: (q, np.concatenate([k, k])), {}),
    ("D differs", lambda q, k: (q, k[..., :2]), {}),
]


@pytest.mark.parametrize("make, options", [pytest.param(*c[1:], id=c[0]) for c in BAD_ROPE])
def test_bad_rope_qk_input_fails_as_in_the_spec(make, options):
    q, k, _ = _qkv()
    _same_error(spec_rope_qk, rope_qk, *make(q, k), **options)


def test_rope_qk_refuses_what_the_kernel_cannot_do():
    q, k, _ = _qkv()
    with pytest.raises(TypeError, match=r"CUDA rope kernel takes float32, got float64"):
        rope_qk(q.astype(np.float64), k.astype(np.float64))
    with pytest.raises(TypeError, match=r"inplace: expected a bool, got str"):
        rope_qk(q, k, inplace="yes")
    with pytest.raises(ValueError, match=r"inplace=True needs q and k in separate memory"):
        rope_qk(q, q[:, :2], inplace=True)
    frozen = q.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"q_BHTD: inplace=True needs a writable array"):
        rope_qk(frozen, k, inplace=True)


@pytest.mark.parametrize("options", [{"rope": RoPE()}, {"alibi_slopes": slopes(2)},
                                     {"alibi_form": "harmonic_prior"}])
def test_the_tensor_core_kernel_refuses_positional_options(options):
    from backends.cuda import attention_tc

    q, k, v = (np.ones((1, 2, 4, 64), np.float16) for _ in range(3))
    name = next(iter(options))
    with pytest.raises(ValueError, match=rf"{name}: the tensor-core kernel does not implement "
                                         r"positional options; use version v1-v3"):
        attention_tc.flash_forward(q, k, v, **options)
    bits = attention_tc.to_bf16_bits(q.astype(F32))
    with pytest.raises(ValueError, match=r"does not implement positional options"):
        attention_tc.flash_forward_bf16(bits, bits, bits, **options)


# ------------------------------------------------------------------ main()


@pytest.mark.parametrize("module", ["rope", "attention_varlen"])
def test_launcher_main_validates(module, capsys):
    """``python -m backends.cuda.<module> --sanitize``: validation only, every line passing."""
    import importlib

    main = importlib.import_module(f"backends.cuda.{module}").main
    assert main(["--sanitize", "--D", "32"]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out and "DIFFERS" not in out, out


def test_attention_main_validates_with_positions(capsys):
    assert launcher.main(["--sanitize", "--D", "32"]) == 0
    out = capsys.readouterr().out
    for version in VERSIONS:
        lines = [x for x in out.splitlines() if x.split()[:2] == ["rope+alibi", version]]
        assert len(lines) == 2, out
    assert "FAILED" not in out
