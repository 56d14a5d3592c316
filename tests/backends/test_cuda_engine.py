"""Which engine runs a CUDA backend is explicit: CuPy on a GPU, or the emulator when asked."""

from __future__ import annotations

import numpy as np
import pytest

from backends.cuda import _launch
from backends.cuda.softmax import softmax


def _has_gpu() -> bool:
    return _launch.gpu_unusable_reason() is None


def test_the_emulator_is_selected_by_the_environment(monkeypatch):
    monkeypatch.setenv("ATTNSPEC_CUDA", "emulator")
    assert _launch.engine() == "emulator"
    monkeypatch.setenv("ATTNSPEC_CUDA", " Emulator ")
    assert _launch.engine() == "emulator"


@pytest.mark.skipif(_has_gpu(), reason="a GPU is here, so CuPy is (rightly) chosen")
@pytest.mark.parametrize("value", [None, "cupy"])
def test_without_a_gpu_a_call_says_how_to_emulate(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("ATTNSPEC_CUDA", raising=False)
    else:
        monkeypatch.setenv("ATTNSPEC_CUDA", value)
    with pytest.raises(_launch.CudaUnavailableError, match="set ATTNSPEC_CUDA=emulator"):
        softmax(np.zeros((2, 3), np.float32))


@pytest.mark.gpu
def test_with_a_gpu_cupy_is_the_default(monkeypatch):
    monkeypatch.delenv("ATTNSPEC_CUDA", raising=False)
    assert _launch.engine() == "cupy"


def test_an_unknown_engine_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setenv("ATTNSPEC_CUDA", "gpu-please")
    with pytest.raises(ValueError, match=r"ATTNSPEC_CUDA='gpu-please': expected 'emulator', 'cupy' or unset"):
        softmax(np.zeros((2, 3), np.float32))


class _FakeCupyArray:
    """Looks like a cupy.ndarray to the launcher's check, without needing a GPU."""

    __cuda_array_interface__ = None  # only its presence is checked
    shape, dtype = (2, 3), np.dtype(np.float32)


_FakeCupyArray.__module__ = "cupy._core.core"


def test_the_emulator_refuses_device_arrays(monkeypatch):
    monkeypatch.setenv("ATTNSPEC_CUDA", "emulator")
    assert _launch.is_cupy_array(_FakeCupyArray())
    with pytest.raises(TypeError, match="the CUDA emulator runs on NumPy arrays"):
        _launch.Arrays("emulator", np.zeros(1), _FakeCupyArray())


def test_outputs_start_as_nan_and_inputs_become_contiguous():
    arrays = _launch.Arrays("emulator", np.zeros(1))
    assert np.isnan(arrays.empty((3, 2), np.float16)).all()
    x = np.arange(12.0).reshape(3, 4)[:, ::2]
    y = arrays.to_device(x)
    assert y.flags.c_contiguous and (y == x).all()


def test_shape_proxy_costs_no_memory():
    proxy = _launch.shape_proxy(_FakeCupyArray())
    assert proxy.shape == (2, 3) and proxy.dtype == np.float32 and proxy.strides == (0, 0)
