"""Every registered row-softmax backend agrees with the spec, and rejects what it rejects.

Where there is no GPU, tests/conftest.py selects the CUDA emulator, so the CUDA
kernels (softmax.cu) run here on the CPU from their unmodified source.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from backends import registry
from tests.backends.conformance import check_softmax
from tests.strategies import (
    SoftmaxProblem,
    softmax_problems,
    with_softmax_edge_examples,
)

OP = "attention.softmax"


def _cases():
    return [
        pytest.param(e, dt, id=f"{e.name}-{dt}")
        for e in registry.entries(OP)
        if e.backend != "spec"
        for dt in e.dtypes
    ]


@pytest.mark.parametrize("entry, dtype", _cases())
@settings(max_examples=25)
@with_softmax_edge_examples
@given(problem=softmax_problems())
def test_softmax_conforms(entry, dtype, problem: SoftmaxProblem):
    check_softmax(entry.load(), problem, dtype, spec_fn=entry.load_spec())


@pytest.mark.parametrize("entry, dtype", _cases())
def test_softmax_at_a_realistic_size(entry, dtype):
    """Rows longer than a v2 block many times over, many v1 blocks, masked scores."""
    check_softmax(entry.load(), SoftmaxProblem(T=70, S=1500, regime="masked", seed=5), dtype,
                  spec_fn=entry.load_spec())


_BAD = [
    ([[1.0, 2.0]], TypeError, r"x_TS: expected a numpy\.ndarray, got list"),
    (np.zeros(3, np.float32), ValueError, r"x_TS: expected 2 dimensions \(TS\)"),
    (np.zeros((2, 2), np.int32), TypeError, r"x_TS: expected dtype .*got int32"),
    (np.zeros((2, 0), np.float32), ValueError, r"x_TS: every dimension must be at least 1"),
    (np.array([[0.0, np.inf]], np.float32), ValueError, r"x_TS: \+inf is not allowed"),
]


@pytest.mark.parametrize("x, error, match", _BAD)
@pytest.mark.parametrize("entry", registry.entries(OP), ids=lambda e: e.name)
def test_bad_input_is_rejected_like_the_spec(entry, x, error, match):
    with pytest.raises(error, match=match):
        entry.load()(x)


@pytest.mark.parametrize("entry", registry.entries(OP, "cuda"), ids=lambda e: e.name)
def test_cuda_rejects_longdouble_which_the_spec_takes(entry):
    with pytest.raises(TypeError, match=r"x_TS: the CUDA softmax takes float16, float32 or float64"):
        entry.load()(np.zeros((2, 2), np.longdouble))


def test_cuda_rejects_an_unknown_version():
    from backends.cuda.softmax import softmax

    with pytest.raises(ValueError, match=r"version: expected one of \('v1', 'v2'\), got 'v3'"):
        softmax(np.zeros((2, 2), np.float32), version="v3")


@pytest.mark.parametrize("entry", registry.entries(OP, "cuda"), ids=lambda e: e.name)
def test_cuda_accepts_non_contiguous_input_and_returns_numpy(entry):
    x = np.random.default_rng(0).standard_normal((6, 40)).astype(np.float32)
    p, lse = entry.load()(x[::2, ::3])
    assert isinstance(p, np.ndarray) and p.flags.c_contiguous
    want_p, want_lse = entry.load_spec()(np.ascontiguousarray(x[::2, ::3]))
    np.testing.assert_allclose(p, want_p, rtol=1e-5)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("entry", registry.entries(OP, "cuda"), ids=lambda e: e.name)
def test_cupy_arrays_stay_on_the_device(entry, monkeypatch):
    import cupy

    monkeypatch.setenv("ATTNSPEC_CUDA", "cupy")
    x = cupy.asarray(np.random.default_rng(0).standard_normal((5, 77)).astype(np.float32))
    p, lse = entry.load()(x)
    assert isinstance(p, cupy.ndarray) and isinstance(lse, cupy.ndarray)
    want_p, want_lse = entry.load_spec()(x.get())
    np.testing.assert_allclose(p.get(), want_p, rtol=1e-5)
    np.testing.assert_allclose(lse.get(), want_lse, rtol=1e-5)


def test_launcher_main_validates_every_version_and_dtype(capsys):
    """``python -m backends.cuda.softmax``: on the emulator it validates, and skips timing."""
    from backends.cuda import softmax as launcher

    assert launcher.main([]) == 0
    out = capsys.readouterr().out
    for version, dtype in launcher.KERNELS:
        assert any(line.split()[:2] == [version, dtype.name] for line in out.splitlines()), out
    assert "FAILED" not in out


def test_launcher_main_sanitize_validates_at_a_small_size_without_timing(capsys):
    """``--sanitize`` (what scripts/gpu-check runs under compute-sanitizer): every version
    is validated at T=64, S=300 whatever --T/--S say, and nothing is timed."""
    from backends.cuda import softmax as launcher

    assert launcher.main(["--sanitize", "--T", "4096", "--S", "4096"]) == 0
    out = capsys.readouterr().out
    assert "T=64 S=300" in out.splitlines()[0], out
    for version, dtype in launcher.KERNELS:
        assert any(line.split()[:2] == [version, dtype.name] for line in out.splitlines()), out
    assert "FAILED" not in out
    assert " ms " not in out and "GB/s" not in out and "timing" not in out, out
