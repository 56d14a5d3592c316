"""The CUDA attention forward (attention.cu) beyond the registry-wide conformance suite.

Where there is no GPU, tests/conftest.py selects the emulator, so these run the
unmodified kernels on the CPU. The conformance suite
(test_attention_conformance.py) draws problems with D, E <= 24 and one at 64; the
checks here add the 128 bucket, the scalar-load path at that size, broadcast
layouts of bias and mask, shuffled thread schedules and the launcher's own limits.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from backends.cuda import attention as launcher
from backends.cuda.attention import VERSIONS, flash_forward
from tests.backends.conformance import check_forward
from tests.strategies import AttentionProblem

F32 = np.float32


def _qkv(B=1, H=2, G=1, T=9, S=13, D=8, E=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(F32) for s in ((B, H, T, D), (B, G, S, D), (B, G, S, E))]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("D, E", [(128, 128), (101, 128), (128, 33)])
def test_the_largest_head_dimension_bucket(version, D, E):
    """D = E = 128 fills every register array; 101 and 33 take v3's scalar-load path."""
    p = AttentionProblem(B=1, H=2, G=1, T=37, S=70, D=D, E=E, causal=True, bias="per_key",
                         mask="random", logit=30.0, seed=3)
    check_forward(functools.partial(flash_forward, version=version), p, F32)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 2, 1, 1), (2, 1, 1, 13), (1, 1, 9, 1),
                                   (2, 2, 9, 13)])
def test_a_broadcast_bias_and_mask_equal_their_expanded_copies(version, shape):
    """Broadcast dimensions are read through zero strides: the result is bit for bit the
    one of the materialised (B, H, T, S) arrays."""
    q, k, v = _qkv(B=2)
    rng = np.random.default_rng(1)
    bias = rng.standard_normal(shape).astype(F32)
    mask = rng.random(shape) < 0.7
    full = (2, 2, 9, 13)
    got = flash_forward(q, k, v, bias=bias, mask=mask, version=version)
    want = flash_forward(q, k, v, bias=np.broadcast_to(bias, full).copy(),
                         mask=np.broadcast_to(mask, full).copy(), version=version)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_shuffled_thread_schedule_gives_the_same_bits(version, monkeypatch):
    """The emulator runs threads and blocks in a seeded random order: a missing barrier
    (a thread reading a tile another has not finished writing) would change the bits."""
    from backends.cuda import _launch

    if _launch.engine() != "emulator":
        pytest.skip("schedules are shuffled by the emulator only")
    q, k, v = _qkv(B=2, H=4, G=2, T=70, S=45, D=24, E=20)
    want = flash_forward(q, k, v, causal=True, version=version)
    for seed in (1, 2, 3):
        monkeypatch.setenv("ATTNSPEC_EMULATOR_SEED", str(seed))
        got = flash_forward(q, k, v, causal=True, version=version)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("version", VERSIONS)
def test_rows_before_the_causal_diagonal_are_empty(version):
    """T > S with causal: the first T - S rows see no key (o = 0, lse = -inf)."""
    q, k, v = _qkv(T=20, S=6)
    o, lse = flash_forward(q, k, v, causal=True, version=version)
    assert (o[:, :, :14] == 0).all() and (lse[:, :, :14] == -np.inf).all()
    assert np.isfinite(o[:, :, 14:]).all() and np.isfinite(lse[:, :, 14:]).all()


def test_tile_arguments_are_validated_and_do_not_change_the_result():
    q, k, v = _qkv()
    want = flash_forward(q, k, v)
    for g, w in zip(flash_forward(q, k, v, tile_t=3, tile_s=5), want):
        np.testing.assert_array_equal(g, w)


def test_an_unknown_version_is_an_error():
    with pytest.raises(ValueError, match=r"version: expected one of \('v1', 'v2', 'v3'\), got 'v4'"):
        flash_forward(*_qkv(), version="v4")


def test_head_dimensions_above_the_largest_bucket_are_refused():
    with pytest.raises(ValueError, match=r"head dimensions D, E up to 128, got D=8, E=129"):
        flash_forward(*_qkv(E=129))


def test_float64_is_refused_naming_what_the_kernels_take():
    with pytest.raises(TypeError, match=r"takes float32, got float64"):
        flash_forward(*(x.astype(np.float64) for x in _qkv()))


def test_causal_must_be_a_bool():
    with pytest.raises(TypeError, match=r"causal: expected a bool, got str"):
        flash_forward(*_qkv(), causal="yes")


def test_non_contiguous_inputs_are_accepted_and_numpy_comes_back():
    q, k, v = _qkv(T=18, S=26, D=16)
    o, lse = flash_forward(q[:, :, ::2], k[:, :, ::2], v[:, :, ::2, ::2])
    want = flash_forward(*(np.ascontiguousarray(x) for x in (q[:, :, ::2], k[:, :, ::2],
                                                             v[:, :, ::2, ::2])))
    assert isinstance(o, np.ndarray) and o.flags.c_contiguous and o.shape == (1, 2, 9, 4)
    np.testing.assert_array_equal(o, want.o_BHTE)
    np.testing.assert_array_equal(lse, want.lse_BHT)


def test_the_flop_count_of_the_causal_mask():
    shape = launcher.AttentionShape(B=1, H=1, G=1, T=4, S=6, D=2, E=3)
    # bottom-right causal: row t sees keys 0..t+2, i.e. 3 + 4 + 5 + 6 = 18 pairs
    assert launcher.flops(shape, causal=True) == 2 * 18 * 5
    assert launcher.flops(shape, causal=False) == 2 * 24 * 5


@pytest.mark.gpu
@pytest.mark.parametrize("version", VERSIONS)
def test_cupy_arrays_stay_on_the_device(version, monkeypatch):
    import cupy

    monkeypatch.setenv("ATTNSPEC_CUDA", "cupy")
    q, k, v = _qkv(B=2, H=4, G=2, T=65, S=129, D=64, E=64)
    bias = cupy.asarray(np.random.default_rng(2).standard_normal((1, 4, 65, 129)).astype(F32))
    o, lse = flash_forward(*(cupy.asarray(x) for x in (q, k, v)), bias=bias, causal=True,
                           version=version)
    assert isinstance(o, cupy.ndarray) and isinstance(lse, cupy.ndarray)
    want = flash_forward(q, k, v, bias=bias.get(), causal=True, version=version)
    np.testing.assert_array_equal(o.get(), want.o_BHTE)


@pytest.mark.gpu
def test_a_gpu_bias_with_nan_is_refused_like_the_spec(monkeypatch):
    import cupy

    monkeypatch.setenv("ATTNSPEC_CUDA", "cupy")
    bias = cupy.full((1, 1, 9, 13), cupy.nan, dtype=F32)
    with pytest.raises(ValueError, match=r"bias: \+inf and NaN are not allowed"):
        flash_forward(*(cupy.asarray(x) for x in _qkv()), bias=bias)


def test_launcher_main_validates_every_version(capsys):
    """``python -m backends.cuda.attention``: on the emulator it validates, and skips timing."""
    assert launcher.main(["--sanitize"]) == 0
    out = capsys.readouterr().out
    for version in VERSIONS:
        lines = [line for line in out.splitlines() if line.split()[:1] == [version]]
        assert len(lines) == 2, out  # causal and not
    assert "FAILED" not in out
