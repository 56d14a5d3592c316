"""The GPU-only timing code of the launchers' main(), run without a GPU.

On a GPU, main() times every kernel (``scripts/gpu-check``); CI has no GPU, so that
code would otherwise first run on a machine lent for minutes. Here it runs at a tiny
size with a stand-in for CuPy (NumPy arrays; the kernels on the emulator) and stand-in
timers, so that its control flow, launch arguments and printed lines are checked. What
a real GPU adds (events, peaks, PyTorch on CUDA) is what the stand-ins replace.
"""

from __future__ import annotations

import argparse
import sys
import types

import numpy as np
import pytest

from backends.cuda import _launch, _timing, rope
from backends.cuda import attention as forward
from backends.cuda import attention_backward as backward
from backends.cuda import attention_varlen as varlen


@pytest.fixture
def fake_gpu(monkeypatch):
    """CuPy as NumPy, kernels on the emulator, every timing 1 ms (SDPA's 2 ms)."""
    if _launch.engine() != "emulator":
        pytest.skip("a GPU is here: scripts/gpu-check runs the real timing")
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(asarray=np.asarray,
                                                                   empty=np.empty))
    calls = []

    def time_ms(fn, repeats=20):
        calls.append(fn)
        fn()
        return 1.0

    monkeypatch.setattr(_timing, "time_ms", time_ms)
    monkeypatch.setattr(_timing, "peaks", lambda: (1e12, 1e13))
    monkeypatch.setattr(_timing, "torch_sdpa_ms", lambda *args, backward=False: 2.0)
    return calls


def _args(D):
    return argparse.Namespace(B=1, H=2, T=40, D=D)


@pytest.mark.parametrize("D", [32, 128])
def test_forward_timing_runs_every_version_causal_and_not(fake_gpu, capsys, D):
    forward._time_versions(_args(D), np.random.default_rng(0))
    out = capsys.readouterr().out
    # every version causal and not, then causal with RoPE + ALiBi (the positional build)
    assert len(fake_gpu) == 3 * len(forward.VERSIONS)
    for version in forward.VERSIONS:
        for causal in ("False", "True "):
            line = next(x for x in out.splitlines() if x.split()[:1] == [version]
                        and f"causal={causal}" in x)
            assert "TFLOP/s" in line and "2.00x SDPA's throughput" in line
        assert any(x.split()[:3] == ["rope+alibi", version, "causal=True"] and "TFLOP/s" in x
                   for x in out.splitlines()), out
    assert "PyTorch SDPA float32 causal=True  2.000 ms" in out


def test_backward_timing_runs_causal_and_not_and_with_positions(fake_gpu, capsys):
    backward._time(_args(64), np.random.default_rng(0))
    out = capsys.readouterr().out
    assert len(fake_gpu) == 3
    lines = [x for x in out.splitlines() if x.strip().startswith("causal=")]
    assert len(lines) == 2 and all("2.00x SDPA's throughput" in x for x in lines), out
    assert any(x.split()[:2] == ["rope+alibi", "causal=True"] and "TFLOP/s" in x
               for x in out.splitlines()), out


def test_rope_timing_runs_out_of_place_and_in_place(fake_gpu, capsys):
    rope._time(_args(32), np.random.default_rng(0))
    out = capsys.readouterr().out
    assert len(fake_gpu) == 2
    for name in ("out of place", "in place"):
        assert any(x.startswith(f"  v1 {name}") and "GB/s" in x for x in out.splitlines()), out


def test_varlen_timing_runs_every_version_against_the_padded_forward(fake_gpu, capsys):
    varlen._time(argparse.Namespace(B=3, H=2, T=40, D=32), np.random.default_rng(0))
    out = capsys.readouterr().out
    assert len(fake_gpu) == 2 * 2 * len(varlen.VERSIONS)  # packed and padded, causal and not
    for version in varlen.VERSIONS:
        lines = [x for x in out.splitlines() if x.split()[:1] == [version]]
        assert len(lines) == 2 and all("x the packed time" in x for x in lines), out
