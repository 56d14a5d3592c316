"""The tensor-core attention kernel (backends.cuda.attention_tc): what can be checked without
a GPU, and on a GPU the rest.

Without a GPU (CI):
- bad input is rejected as the spec rejects it, and this kernel's own limits (float16 only,
  D = E in HEAD_DIMS) with messages naming them; on the emulator both entry points raise
  CudaUnavailableError before compiling anything; main() says it needs a GPU and returns 0;
- the bfloat16 bit helpers against an independent computation;
- the NumPy rounding-point model behind the bfloat16 bound: without its roundings it is the
  spec in float32, and the bound it gives is a few bfloat16 ulps, tight enough to fail a
  result that drops a key;
- the kernel itself on the CPU emulator with its seven PTX wrappers (mma, ldmatrix,
  cp.async) replaced by C++ transcriptions of their PTX ISA definitions (tests/backends/
  attention_tc_ptx_emulation.h): every index, mask, softmax step and pipeline barrier of attention_tc.cu runs and
  is held to the conformance check. Copies land as late as wait_group allows, or as early
  as issued, with the warps skewed, so that a missing barrier or a wrong wait count shows
  (each was tried: a removed __syncthreads or wait_group<2> fails). main()'s validation
  runs with this emulated kernel too. What this cannot check: that the hardware behaves as the ISA text says and as read here,
  and what NVRTC makes of the inline assembly; the gpu tests do.

With a GPU (`gpu` marker): float16 conformance, bfloat16 within its bound, agreement with
the float32 SIMT kernel v3, CuPy arrays in and out.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.cuda import CudaUnavailableError, _launch
from backends.cuda import attention_tc as tc
from spec.attention.naive import AttentionOut, attention
from spec.attention.tiled import flash_forward as spec_flash_forward
from spec.tolerance import compare
from tests.backends.conformance import check_forward
from tests.strategies import AttentionProblem, attention_problems

F16, F32 = np.float16, np.float32


def _qkv(dtype=F16, B=1, H=4, G=2, T=5, S=6, D=64, E=64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in ((B, H, T, D), (B, G, S, D), (B, G, S, E))]


def _bits(arrays):
    return [tc.to_bf16_bits(x.astype(F32)) for x in arrays]


# ---------------------------------------------------------------- input validation (no GPU)

@pytest.fixture
def no_kernel(monkeypatch):
    """Fail the test if anything tries to compile or fetch a kernel."""
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was compiled or fetched")

    monkeypatch.setattr(_launch, "get_kernel", refuse)
    monkeypatch.setattr(_launch, "_module", refuse)


def test_float32_and_float64_are_rejected_naming_float16(no_kernel):
    for dtype in (F32, np.float64):
        with pytest.raises(TypeError, match=rf"takes float16 .*got {np.dtype(dtype).name}"):
            tc.flash_forward(*_qkv(dtype))


@pytest.mark.parametrize("D, E", [(32, 32), (64, 128), (256, 256), (63, 63)])
def test_unsupported_head_sizes_name_the_supported_ones(no_kernel, D, E):
    with pytest.raises(ValueError, match=rf"D = E in \(64, 128\), got D={D}, E={E}"):
        tc.flash_forward(*_qkv(D=D, E=E))
    with pytest.raises(ValueError, match=rf"D = E in \(64, 128\), got D={D}, E={E}"):
        tc.flash_forward_bf16(*_bits(_qkv(F32, D=D, E=E)))


def _swap(args, i, x):
    args = list(args)
    args[i] = x
    return args


# (name, make args from good float16 q, k, v, keyword options, exception, message)
BAD = [
    ("q 3-D", lambda a: _swap(a, 0, a[0][0]), {}, ValueError, r"q_BHTD: expected 4 dimensions"),
    ("k is a list", lambda a: _swap(a, 1, a[1].tolist()), {}, TypeError,
     r"k_BGSD: expected a numpy.ndarray"),
    ("v int", lambda a: _swap(a, 2, a[2].astype(np.int32)), {}, TypeError, r"v_BGSE: expected dtype float"),
    ("mixed dtypes", lambda a: _swap(a, 1, a[1].astype(F32)), {}, TypeError, r"expected one dtype"),
    ("G does not divide H", lambda a: [a[0][:, :3]] + a[1:], {}, ValueError,
     r"G=2 must divide query heads H=3"),
    ("S differs", lambda a: _swap(a, 2, a[2][:, :, :4]), {}, ValueError, r"v_BGSE: expected G=2 heads and S=6"),
    ("empty T", lambda a: _swap(a, 0, a[0][:, :, :0]), {}, ValueError, r"at least 1"),
    ("bias float32", None, {"bias": np.zeros((1, 1, 5, 6), F32)}, TypeError,
     r"bias: expected dtype float16"),
    ("bias +inf", None, {"bias": np.full((1, 1, 5, 6), np.inf, F16)}, ValueError, r"bias: \+inf and NaN"),
    ("bias wrong T", None, {"bias": np.zeros((1, 4, 2, 6), F16)}, ValueError,
     r"bias: expected shape broadcastable"),
    ("mask float", None, {"mask": np.ones((1, 1, 5, 6), F16)}, TypeError, r"mask: expected dtype bool"),
    ("tile_t 0", None, {"tile_t": 0}, ValueError, r"tile_t: expected a positive int"),
    ("scale NaN", None, {"scale": float("nan")}, ValueError, r"scale: expected a finite number"),
    ("causal int", None, {"causal": 1}, TypeError, r"causal: expected a bool"),
    ("version", None, {"version": "v3"}, ValueError, r"version: expected one of \('tc',\)"),
]


@pytest.mark.parametrize("make, kw, exc, match", [pytest.param(*c[1:], id=c[0]) for c in BAD])
def test_bad_input_is_rejected_as_the_spec_rejects_it(no_kernel, make, kw, exc, match):
    args = _qkv()
    with pytest.raises(exc, match=match):
        tc.flash_forward(*(make(args) if make else args), **kw)


BAD_BF16 = [
    ("float32 q", lambda b: _swap(b, 0, b[0].view(F16).astype(F32)), {}, TypeError,
     r"q_BHTD: flash_forward_bf16 takes uint16 arrays holding bfloat16 bits .*got float32"),
    ("float16 v", lambda b: _swap(b, 2, b[2].view(F16)), {}, TypeError, r"v_BGSE: .*got float16"),
    ("k is a list", lambda b: _swap(b, 1, b[1].tolist()), {}, TypeError, r"k_BGSD: expected a numpy.ndarray"),
    ("G does not divide H", lambda b: [b[0][:, :3]] + b[1:], {}, ValueError, r"G=2 must divide"),
    ("bias float32", None, {"bias": np.zeros((1, 1, 5, 6), F32)}, TypeError, r"bias: .*got float32"),
    ("bias NaN bits", None, {"bias": np.full((1, 1, 5, 6), 0x7FC0, np.uint16)}, ValueError,
     r"bias: \+inf and NaN"),
    ("bias +inf bits", None, {"bias": np.full((1, 1, 1, 6), 0x7F80, np.uint16)}, ValueError,
     r"bias: \+inf and NaN"),
    ("bias wrong S", None, {"bias": np.zeros((1, 1, 5, 5), np.uint16)}, ValueError,
     r"bias: expected shape broadcastable"),
]


@pytest.mark.parametrize("make, kw, exc, match", [pytest.param(*c[1:], id=c[0]) for c in BAD_BF16])
def test_bad_bf16_input_is_rejected(no_kernel, make, kw, exc, match):
    bits = _bits(_qkv(F32))
    with pytest.raises(exc, match=match):
        tc.flash_forward_bf16(*(make(bits) if make else bits), **kw)


# ---------------------------------------------------------------- no GPU

def _good_calls():
    q, k, v = _qkv()
    bias = np.full((1, 4, 5, 6), -np.inf, F16)  # -inf is a valid bias (a masked key)
    yield lambda: tc.flash_forward(q, k, v, causal=True, bias=bias)
    yield lambda: tc.flash_forward_bf16(*_bits([q, k, v]), bias=tc.to_bf16_bits(bias.astype(F32)))


def test_on_the_emulator_it_refuses_before_compiling(monkeypatch, no_kernel):
    monkeypatch.setenv(_launch.ENV_VAR, "emulator")
    for call in _good_calls():
        with pytest.raises(CudaUnavailableError, match=r"needs a CUDA GPU.*no tensor cores.*emulator"):
            call()


@pytest.mark.skipif(_launch.gpu_unusable_reason() is None, reason="a GPU is here")
def test_without_a_gpu_it_says_so(monkeypatch, no_kernel):
    monkeypatch.delenv(_launch.ENV_VAR, raising=False)
    for call in _good_calls():
        with pytest.raises(CudaUnavailableError, match=r"needs a CUDA GPU"):
            call()


def test_main_without_a_gpu_says_so_and_succeeds(monkeypatch, capsys, no_kernel):
    monkeypatch.setenv(_launch.ENV_VAR, "emulator")
    assert tc.main([]) == 0
    assert "needs a CUDA GPU" in capsys.readouterr().out


def test_every_configuration_is_listed_for_the_compile_gate():
    assert set(tc.KERNELS) == {(e, d) for e in tc.ELEMENT_TYPES for d in tc.HEAD_DIMS}
    for (element, head_dim), config in tc.KERNELS.items():
        defines = dict(config.defines)
        assert defines["HEAD_DIM"] == str(head_dim)
        assert defines["ELEM_BF16"] == ("1" if element == "bfloat16" else "0")
        assert config.dynamic_smem == 4 * tc.KEYS * (head_dim + 8) * 2


# ---------------------------------------------------------------- bfloat16 bits

def _reference_bf16_bits(x_f32: np.ndarray) -> np.ndarray:
    """Round to nearest bfloat16, ties to even, computed independently of to_bf16_bits: the
    two bfloat16 neighbours of x (float32 with the low 16 bits cleared, and the next one
    away from zero) compared by exact float64 distances; NaN handled by the caller."""
    u = x_f32.view(np.uint32).astype(np.int64)
    sign = u & 0x80000000
    mag = u & 0x7FFFFFFF
    lo = mag & 0x7FFF0000  # toward zero
    hi = lo + 0x10000  # away from zero (0x7F800000 is inf, the overflow neighbour)
    x = np.abs(x_f32.astype(np.float64))
    lo_val = lo.astype(np.uint32).view(np.float32).astype(np.float64)
    # the upper neighbour's value as if the exponent range were unbounded (2^128 past max)
    hi_val = np.where(hi == 0x7F800000, 2.0**128,
                      np.minimum(hi, 0x7F7FFFFF).astype(np.uint32).view(np.float32).astype(np.float64))
    with np.errstate(invalid="ignore"):  # inf - inf for ±inf, replaced below
        d_lo, d_hi = x - lo_val, hi_val - x
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (((lo >> 16) & 1) == 1))
    out = np.where(pick_hi, hi, lo) | sign
    out = np.where(mag == 0x7F800000, u, out)  # ±inf stay
    return (out >> 16).astype(np.uint16)


def test_to_bf16_bits_rounds_to_nearest_even():
    rng = np.random.default_rng(1)
    u = rng.integers(0, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32)
    # ties (low 16 bits exactly 0x8000) with odd and even kept parts, near-ties, boundaries
    tie = (rng.integers(0, 2**16, 4096, dtype=np.uint64).astype(np.uint32) << 16) | 0x8000
    special = np.array([0x00000000, 0x80000000, 0x00000001, 0x00008000, 0x00018000,
                        0x00007FFF, 0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001,
                        0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF, 0xFF7F8000, 0x7F800000,
                        0xFF800000, 0x00800000, 0x007FFFFF], np.uint32)
    u = np.concatenate([u, tie, tie ^ 0x10000, tie + 1, tie - 1, special])
    x = u.view(F32)
    finite_or_inf = ~np.isnan(x)
    got = tc.to_bf16_bits(x)
    assert got.dtype == np.uint16 and got.shape == x.shape
    np.testing.assert_array_equal(got[finite_or_inf], _reference_bf16_bits(x[finite_or_inf]))
    # spot values: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 (even: 1); 1 + 3·2^-8 rounds up
    assert tc.to_bf16_bits(np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8)], F32)).tolist() == [
        0x3F80, 0x3F82, 0xBF80]
    # the largest finite float32 rounds past bfloat16's largest: +inf, as IEEE says
    assert tc.to_bf16_bits(np.array([np.finfo(F32).max], F32))[0] == 0x7F80


def test_to_bf16_bits_keeps_nan_nan():
    # signalling NaN with only low payload bits: truncation alone would make it inf
    u = np.array([0x7F800001, 0xFF800001, 0x7FC00000, 0x7FFFFFFF, 0xFFC12345, 0x7F80FFFF], np.uint32)
    out = tc.from_bf16_bits(tc.to_bf16_bits(u.view(F32)))
    assert np.isnan(out).all()
    assert (np.signbit(out) == np.signbit(u.view(F32))).all()


def test_from_bf16_bits_is_exact_and_round_trips():
    bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    values = tc.from_bf16_bits(bits)
    assert values.dtype == F32
    np.testing.assert_array_equal(values.view(np.uint32), bits.astype(np.uint32) << 16)
    nan = np.isnan(values)
    np.testing.assert_array_equal(tc.to_bf16_bits(values)[~nan], bits[~nan])


def test_bf16_helpers_reject_wrong_dtypes():
    with pytest.raises(TypeError, match="float32"):
        tc.to_bf16_bits(np.zeros(3, np.float64))
    with pytest.raises(TypeError, match="uint16"):
        tc.from_bf16_bits(np.zeros(3, np.int16))


def test_bf16_rounding_agrees_with_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(100_000) * 10.0 ** rng.uniform(-40, 38, 100_000)).astype(F32)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(tc.to_bf16_bits(x), want)


# ---------------------------------------------------------------- the bfloat16 bound's model

MODEL_PROBLEMS = [
    AttentionProblem(B=1, H=2, G=1, T=1, S=1, D=8, E=8),
    AttentionProblem(B=2, H=4, G=2, T=70, S=131, D=16, E=24, causal=True, bias="per_head"),
    AttentionProblem(B=1, H=2, G=2, T=40, S=20, D=64, E=64, causal=True, mask="empty_rows"),
    AttentionProblem(B=1, H=3, G=1, T=33, S=65, D=32, E=32, bias="neg_inf", mask="random"),
    AttentionProblem(B=1, H=1, G=1, T=20, S=150, D=64, E=64, logit=30.0, mask="per_key"),
    AttentionProblem(B=1, H=2, G=1, T=9, S=100, D=16, E=16, logit=1e4, scale=0.5),
]


def _bf16_problem(problem: AttentionProblem):
    """The problem's inputs as bfloat16 bits, and their values in float64 for the oracle."""
    a = problem.arrays(F32)
    bits = {n: (None if a[n] is None else tc.to_bf16_bits(a[n])) for n in ("q", "k", "v", "bias")}
    wide = {n: (None if b is None else tc.from_bf16_bits(b).astype(np.float64)) for n, b in bits.items()}
    opts = {"causal": problem.causal, "scale": problem.scale, "mask": a["mask"]}
    return bits, wide, opts


@pytest.mark.parametrize("problem", MODEL_PROBLEMS, ids=str)
def test_the_model_without_its_roundings_is_the_spec_in_float32(problem):
    bits, wide, opts = _bf16_problem(problem)
    oracle = attention(wide["q"], wide["k"], wide["v"], bias=wide["bias"], **opts)
    f32 = {n: (None if x is None else x.astype(F32)) for n, x in wide.items()}
    base = spec_flash_forward(f32["q"], f32["k"], f32["v"], bias=f32["bias"], **opts)
    model = tc.bf16_model(bits["q"], bits["k"], bits["v"], bias=bits["bias"], rounding=False, **opts)
    for name, got, want, b in zip(("o", "lse"), model, oracle, base):
        report = compare(got, want, b)
        assert report.ok, report.message(name)


@pytest.mark.parametrize("problem", MODEL_PROBLEMS, ids=str)
def test_the_bf16_bound_is_a_few_ulps_and_catches_a_dropped_key(problem):
    bits, wide, opts = _bf16_problem(problem)
    oracle = attention(wide["q"], wide["k"], wide["v"], bias=wide["bias"], **opts)
    model = tc.bf16_model(bits["q"], bits["k"], bits["v"], bias=bits["bias"], **opts)
    floor = tc.bf16_floor(oracle.o_BHTE)
    # the model itself is within one floor (2 bfloat16 ulps) of the oracle: the bound,
    # 2 · (model error) + floor, is at most 3 floors
    report = compare(model.o_BHTE, oracle.o_BHTE, model.o_BHTE)
    assert report.err <= floor, report.message("model o")
    # the model judged by its own bound passes
    as_kernel = AttentionOut(tc.to_bf16_bits(model.o_BHTE), model.lse_BHT)
    assert all(r.ok for r in tc.compare_bf16(as_kernel, oracle, model))
    # a kernel that never sees the last key fails the bound (where that key matters)
    if problem.S > 1:
        mask = np.ones((1, 1, 1, problem.S), bool)
        mask[..., -1] = False
        mask = mask if opts["mask"] is None else opts["mask"] & mask
        wrong = tc.bf16_model(bits["q"], bits["k"], bits["v"], bias=bits["bias"],
                              **{**opts, "mask": mask})
        wrong = AttentionOut(tc.to_bf16_bits(wrong.o_BHTE), wrong.lse_BHT)
        matters = not np.allclose(
            oracle.o_BHTE, attention(wide["q"], wide["k"], wide["v"], bias=wide["bias"],
                                     **{**opts, "mask": mask}).o_BHTE, rtol=0, atol=3 * floor)
        if matters:
            assert not all(r.ok for r in tc.compare_bf16(wrong, oracle, model))


# ---------------------------------------------------------------- the kernel on the emulator



_EMULATION_HEADER = "attention_tc_ptx_emulation.h"
"""Beside this file: the PTX wrappers of attention_tc.cu as C++ (PTX ISA transcriptions)."""


@functools.cache
def _emulated_kernel(element: str, head_dim: int, seed: int | None):
    from backends.cuda import emulator

    config = tc.KERNELS[(element, head_dim)]
    options = config.options() + (f"-I{Path(__file__).parent}",
                                  f'-DATTENTION_TC_PTX_EMULATION="{_EMULATION_HEADER}"')
    module = emulator.RawModule(code=_launch.read_source(tc.SOURCE), options=options,
                                source_name=tc.SOURCE, schedule_seed=seed)
    kernel = module.get_function(config.kernel)
    kernel.max_dynamic_shared_size_bytes = config.dynamic_smem
    return kernel


def _emulated(element: str, seed: int | None = None):
    """flash_forward (float16) or flash_forward_bf16 with the kernel run on the emulator:
    the launcher's own checks, argument assembly and launch geometry, the emulated PTX."""
    def fn(q, k, v, *, causal=False, scale=None, bias=None, mask=None, tile_t=64, tile_s=64):
        shape = tc._check(q, k, v, causal=causal, scale=scale, bias=bias, mask=mask,
                          tile_t=tile_t, tile_s=tile_s, element=element)
        call = tc._to_engine("emulator", shape, q, k, v, causal=causal, scale=scale, bias=bias,
                             mask=mask, element=element)
        o, lse = tc._outputs(element, call)
        tc._run(element, call, o, lse, kernel=_emulated_kernel(element, shape.D, seed))
        return AttentionOut(o, lse.astype(F16) if element == "float16" else lse)

    return fn


EMULATED_PROBLEMS = [
    AttentionProblem(B=1, H=1, G=1, T=1, S=1, D=64, E=64),
    AttentionProblem(B=1, H=4, G=2, T=77, S=131, D=64, E=64, causal=True, bias="per_head", seed=1),
    AttentionProblem(B=1, H=2, G=1, T=100, S=37, D=128, E=128, causal=True, mask="empty_rows", seed=2),
    AttentionProblem(B=2, H=2, G=2, T=65, S=127, D=64, E=64, bias="neg_inf", mask="random", seed=3),
    AttentionProblem(B=1, H=3, G=1, T=64, S=129, D=128, E=128, bias="per_key", mask="per_key", seed=4),
    AttentionProblem(B=1, H=1, G=1, T=70, S=190, D=64, E=64, logit=30.0, causal=True, seed=5),
    AttentionProblem(B=1, H=1, G=1, T=40, S=130, D=128, E=128, logit=1e4, scale=0.5, seed=6),
    # causal without bias or mask: full tiles take the plain path, diagonal ones do not
    AttentionProblem(B=1, H=2, G=1, T=130, S=130, D=64, E=64, causal=True, seed=7),
    AttentionProblem(B=1, H=2, G=2, T=70, S=190, D=128, E=128, causal=True, seed=8),
]


@pytest.fixture(params=[("deferred", None), ("immediate", 7)], ids=["late-copies", "early-copies"])
def pipeline(request, monkeypatch):
    """cp.async copies landing as late as wait_group allows, or at issue, warps skewed."""
    mode, seed = request.param
    monkeypatch.setenv("ATTENTION_TC_EMU_CP_ASYNC", mode)
    monkeypatch.setenv("ATTENTION_TC_EMU_SKEW", "1")
    return seed


@pytest.mark.parametrize("problem", EMULATED_PROBLEMS, ids=str)
def test_emulated_kernel_conforms_in_float16(problem, pipeline):
    check_forward(_emulated("float16", pipeline), problem, F16)


@settings(max_examples=20)
@given(problem=attention_problems(max_len=140), head_dim=st.sampled_from(tc.HEAD_DIMS),
       early_copies=st.booleans())
def test_emulated_kernel_conforms_on_drawn_problems(problem, head_dim, early_copies):
    """The strategy's problems (shapes at the spec's tile edges, which include the kernel's
    64 and 2·64 + 1, every bias and mask kind, logits up to 1e4) at a built head size."""
    problem = dataclasses.replace(problem, D=head_dim, E=head_dim)
    mode = "immediate" if early_copies else "deferred"
    with mock.patch.dict(os.environ, {"ATTENTION_TC_EMU_CP_ASYNC": mode, "ATTENTION_TC_EMU_SKEW": "1"}):
        check_forward(_emulated("float16"), problem, F16)


@pytest.mark.parametrize("problem", EMULATED_PROBLEMS[1:4], ids=str)
def test_emulated_kernel_meets_the_bf16_bound(problem, pipeline):
    bits, wide, opts = _bf16_problem(problem)
    oracle = attention(wide["q"], wide["k"], wide["v"], bias=wide["bias"], **opts)
    model = tc.bf16_model(bits["q"], bits["k"], bits["v"], bias=bits["bias"], **opts)
    out = _emulated("bfloat16", pipeline)(bits["q"], bits["k"], bits["v"], bias=bits["bias"], **opts)
    assert out.o_BHTE.dtype == np.uint16 and out.lse_BHT.dtype == F32
    for name, report in zip(("o", "lse"), tc.compare_bf16(out, oracle, model)):
        assert report.ok, report.message(name)


def test_emulated_kernel_propagates_nan_of_a_query_to_its_row_only():
    q, k, v = _qkv(B=2, H=2, G=1, T=70, S=80)
    q[1, 0, 66, 5] = np.nan
    o, lse = _emulated("float16")(q, k, v)
    assert np.isnan(o[1, 0, 66]).all() and np.isnan(lse[1, 0, 66])
    o[1, 0, 66], lse[1, 0, 66] = 0, 0
    assert np.isfinite(o).all() and np.isfinite(lse).all()


@pytest.mark.slow
def test_main_validation_passes_with_the_emulated_kernel(monkeypatch, capsys):
    """main()'s validation (every dtype, head size and problem, against the float64 spec and
    the SIMT v3 kernel, which runs on the emulator) with the emulated kernel in place of
    the GPU one: the code a GPU run executes first, checked before one is lent."""
    monkeypatch.setenv(_launch.ENV_VAR, "emulator")
    monkeypatch.setattr(tc, "flash_forward", _emulated("float16"))
    monkeypatch.setattr(tc, "flash_forward_bf16", _emulated("bfloat16"))
    assert tc._validate(np.random.default_rng(0)) is False
    out = capsys.readouterr().out
    assert "FAILED" not in out and out.count("vs SIMT v3") == 2 * 3 * 2 * 2  # head sizes, problems, causal, dtypes


def test_timing_path_runs_with_the_emulated_kernel(monkeypatch, capsys):
    """main()'s timing code (GPU only) at a tiny size: CuPy as NumPy, the emulated kernel,
    every timing 1 ms and SDPA's 2 ms, so that its loops, launches and lines are checked
    before a GPU is lent."""
    import argparse
    import sys
    import types

    from backends.cuda import _timing

    monkeypatch.setenv(_launch.ENV_VAR, "emulator")
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(asarray=np.asarray))

    def prepare(q, k, v, *, element, **opts):
        shape = tc._check(q, k, v, element=element, **opts)
        opts = {n: opts[n] for n in ("causal", "scale", "bias", "mask")}
        return tc._to_engine("emulator", shape, q, k, v, element=element, **opts)

    run = tc._run
    monkeypatch.setattr(tc, "_prepare", prepare)
    monkeypatch.setattr(tc, "_run", lambda element, call, o, lse: run(
        element, call, o, lse, kernel=_emulated_kernel(element, call.shape.D, None)))
    monkeypatch.setattr(tc, "tensor_peak", lambda: (1e15, "a stand-in peak"))
    monkeypatch.setattr(_timing, "peaks", lambda: (1e12, None))
    monkeypatch.setattr(_timing, "time_ms", lambda fn, repeats=20: (fn(), 1.0)[1])
    monkeypatch.setattr(_timing, "torch_sdpa_ms", lambda *args, backward=False: 2.0)
    tc._time(argparse.Namespace(B=1, H=2, T=40, D=64), np.random.default_rng(0))
    lines = [x for x in capsys.readouterr().out.splitlines() if "causal=" in x]
    assert len(lines) == 4  # bfloat16 and float16, causal and not
    assert all("TFLOP/s" in x and "2.00x SDPA's throughput" in x for x in lines), lines


# ---------------------------------------------------------------- on a GPU

GPU_PROBLEMS = EMULATED_PROBLEMS + [
    AttentionProblem(B=2, H=4, G=2, T=64, S=64, D=64, E=64, causal=True, seed=10),
    AttentionProblem(B=1, H=3, G=1, T=63, S=65, D=128, E=128, causal=True, bias="per_head", seed=11),
    AttentionProblem(B=1, H=2, G=2, T=129, S=200, D=64, E=64, mask="random", seed=12),
    AttentionProblem(B=1, H=2, G=2, T=33, S=257, D=128, E=128, bias="per_key", mask="per_key",
                     causal=True, seed=13),
    AttentionProblem(B=1, H=4, G=1, T=128, S=128, D=128, E=128, scale=0.5, bias="full", seed=14),
    AttentionProblem(B=1, H=4, G=2, T=200, S=333, D=64, E=64, causal=True, bias="per_head", seed=15),
    AttentionProblem(B=1, H=2, G=1, T=300, S=90, D=128, E=128, causal=True, seed=16),
]


@pytest.mark.gpu
@pytest.mark.parametrize("problem", GPU_PROBLEMS, ids=str)
def test_float16_conforms_on_a_gpu(problem):
    check_forward(tc.flash_forward, problem, F16)


@pytest.mark.gpu
@settings(max_examples=100)
@given(problem=attention_problems(max_len=140), head_dim=st.sampled_from(tc.HEAD_DIMS))
def test_float16_conforms_on_drawn_problems_on_a_gpu(problem, head_dim):
    check_forward(tc.flash_forward, dataclasses.replace(problem, D=head_dim, E=head_dim), F16)


@pytest.mark.gpu
@pytest.mark.parametrize("problem", GPU_PROBLEMS, ids=str)
def test_bf16_meets_its_bound_on_a_gpu(problem):
    bits, wide, opts = _bf16_problem(problem)
    oracle = attention(wide["q"], wide["k"], wide["v"], bias=wide["bias"], **opts)
    model = tc.bf16_model(bits["q"], bits["k"], bits["v"], bias=bits["bias"], **opts)
    out = tc.flash_forward_bf16(bits["q"], bits["k"], bits["v"], bias=bits["bias"], **opts)
    for name, report in zip(("o", "lse"), tc.compare_bf16(out, oracle, model)):
        assert report.ok, report.message(name)


@pytest.mark.gpu
@pytest.mark.parametrize("problem", GPU_PROBLEMS[1:6], ids=str)
def test_agrees_with_the_float32_simt_kernel(problem):
    from backends.cuda import attention as simt

    a = problem.arrays(F16)
    opts = {"causal": problem.causal, "scale": problem.scale, "mask": a["mask"]}
    f32 = {n: (None if a[n] is None else a[n].astype(F32)) for n in ("q", "k", "v", "bias")}
    ref = simt.flash_forward(f32["q"], f32["k"], f32["v"], bias=f32["bias"], version="v3", **opts)
    base = spec_flash_forward(a["q"], a["k"], a["v"], bias=a["bias"], **opts)
    out = tc.flash_forward(a["q"], a["k"], a["v"], bias=a["bias"], **opts)
    for name, got, want, b in zip(("o", "lse"), out, ref, base):
        report = compare(got, want.astype(np.float64), b)
        assert report.ok, report.message(name)


@pytest.mark.gpu
def test_cupy_arrays_stay_on_the_device_and_odd_offsets_are_handled():
    import cupy

    q, k, v = _qkv(B=1, H=2, G=1, T=70, S=90)
    want = tc.flash_forward(q, k, v, causal=True)
    # a view 2 bytes into a buffer: not 16-byte aligned, as cp.async needs
    flat = cupy.empty(q.size + 1, F16)
    q_odd = flat[1:].reshape(q.shape)
    q_odd[...] = cupy.asarray(q)
    got = tc.flash_forward(q_odd, cupy.asarray(k), cupy.asarray(v), causal=True)
    assert isinstance(got.o_BHTE, cupy.ndarray) and isinstance(got.lse_BHT, cupy.ndarray)
    np.testing.assert_array_equal(got.o_BHTE.get(), want.o_BHTE)
    np.testing.assert_array_equal(got.lse_BHT.get(), want.lse_BHT)


@pytest.mark.gpu
def test_nan_in_a_query_propagates_to_its_row_only_on_a_gpu():
    q, k, v = _qkv(B=2, H=2, G=1, T=70, S=80)
    q[1, 0, 66, 5] = np.nan
    o, lse = tc.flash_forward(q, k, v)
    assert np.isnan(o[1, 0, 66]).all() and np.isnan(lse[1, 0, 66])
    o[1, 0, 66], lse[1, 0, 66] = 0, 0
    assert np.isfinite(o).all() and np.isfinite(lse).all()


@pytest.mark.gpu
def test_main_validates_at_the_sanitize_size():
    assert tc.main(["--sanitize"]) == 0
