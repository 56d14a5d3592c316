"""The CUDA read-out (backends/cuda/readout.cu) against spec.attention.readout.

Every output of :func:`backends.cuda.readout.readout_forward` and
:func:`backends.cuda.readout.readout_mse` is held to the tolerance policy
(spec.tolerance.compare: oracle = the spec on oracle_dtype, so float64 for float32 work
and longdouble for float64 work; baselines = the spec in the working dtype on the problem
and on copies with B, S, D and H permuted, backends.cuda.readout.compare_with_spec).
Problems are drawn by hypothesis from tests/strategies.py's readout_problems (both
activations, the scale and norm options, peaked softmax rows, S up to 140 with edges
around a warp), float32 and float64, with pinned prompts around the 128-thread block
(S = 128, 200) and one to eight heads (four, two or one warps per head). Bad inputs
raise the spec's own errors. Where there is no GPU, tests/conftest.py selects the
emulator, which runs the unmodified .cu; the CuPy test is marked ``gpu``.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backends import registry
from backends.cuda import _launch, _timing, nvrtc_check
from backends.cuda import readout as launcher
from backends.cuda.readout import readout_forward, readout_mse
from spec.attention import readout as spec
from tests.strategies import ReadoutProblem, readout_problems

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
NAMES_FORWARD = ("yhat_B", "a_BHS", "v_BHS")
NAMES_MSE = ("loss", "dkq_HDD", "dov_HD", "yhat_B")


# The shared strategy (tests/strategies.py) at small batches, plus prompts around the
# block (THREADS = 128: S = 128, 200) and head counts that put one, two or four warps on
# a head.
EDGE_PROBLEMS = (
    (ReadoutProblem(B=1, S=1, D=1, H=1), F32),  # one example, one feature: a = 1
    (ReadoutProblem(B=3, S=1, D=6, H=8, activation="linear"), F64),
    (ReadoutProblem(B=2, S=128, D=6, H=1, seed=1), F32),  # four warps on one head, a lane each
    (ReadoutProblem(B=2, S=200, D=5, H=3, activation="linear", norm=40.0, seed=2), F64),
    (ReadoutProblem(B=4, S=40, D=6, H=2, kq_std=3.0, scale=2.0, seed=3), F32),  # sharp rows
    (ReadoutProblem(B=3, S=40, D=6, H=8, seed=4), F64),  # the paper's prompts
)


def _with_edge_examples(test):
    for problem, dtype in EDGE_PROBLEMS:
        test = example(problem=problem, dtype=dtype)(test)
    return test


_dtypes = st.sampled_from([F32, F64])


def _assert_within_tolerance(reports, names) -> None:
    bad = [r.message(n) for n, r in zip(names, reports) if not r.ok]
    assert not bad, "\n".join(bad)


@settings(max_examples=25)
@_with_edge_examples
@given(problem=readout_problems(max_b=4), dtype=_dtypes)
def test_mse_within_tolerance_of_the_spec(problem: ReadoutProblem, dtype):
    args = problem.arrays(dtype)
    z, zq, y, kq, ov = args
    got = readout_mse(z, zq, y, kq, ov, **problem.options)
    rng = np.random.default_rng(problem.seed)
    _assert_within_tolerance(launcher.compare_with_spec(got, args, problem.options, rng), NAMES_MSE)


@settings(max_examples=15)
@_with_edge_examples
@given(problem=readout_problems(max_b=4), dtype=_dtypes)
def test_forward_within_tolerance_of_the_spec(problem: ReadoutProblem, dtype):
    z, zq, _, kq, ov = problem.arrays(dtype)
    got = readout_forward(z, zq, kq, ov, **problem.options)
    rng = np.random.default_rng(problem.seed)
    reports = launcher.compare_with_spec(got, (z, zq, None, kq, ov), problem.options, rng)
    _assert_within_tolerance(reports, NAMES_FORWARD)


@pytest.mark.parametrize("H, D", [(8, 16), (8, 17), (5, 13), (2, 64)])
def test_backward_with_a_thread_per_output_or_more_outputs_than_threads(H, D):
    """H·D ≥ THREADS: each thread sums its outputs over all of s (the K = 1 path), some two
    of them; the reduction kernel then runs many blocks."""
    args = ReadoutProblem(B=2, S=33, D=D, H=H, seed=H * D).arrays(F64)
    z, zq, y, kq, ov = args
    got = readout_mse(z, zq, y, kq, ov)
    rng = np.random.default_rng(0)
    _assert_within_tolerance(launcher.compare_with_spec(got, args, {}, rng), NAMES_MSE)


def test_results_are_numpy_arrays_of_the_input_dtype():
    for dtype in (F32, F64):
        z, zq, y, kq, ov = ReadoutProblem(B=3, S=5, D=4, H=2).arrays(dtype)
        loss, dkq, dov, yhat = readout_mse(z, zq, y, kq, ov)
        assert type(loss) is float
        for x, shape in ((dkq, (2, 4, 4)), (dov, (2, 4)), (yhat, (3,))):
            assert isinstance(x, np.ndarray) and x.dtype == dtype and x.shape == shape
        fwd = readout_forward(z, zq, kq, ov)
        for x, shape in zip(fwd, ((3,), (3, 2, 5), (3, 2, 5))):
            assert isinstance(x, np.ndarray) and x.dtype == dtype and x.shape == shape
        assert np.array_equal(fwd.yhat_B, yhat)  # the same forward in both kernels


def test_the_same_bits_whatever_the_schedule(monkeypatch):
    """No atomics and fixed reduction orders: shuffled thread and block orders give the
    same bits (a missing barrier would show as a difference)."""
    if _launch.engine() != "emulator":
        pytest.skip("schedules are shuffled by the emulator only")
    z, zq, y, kq, ov = ReadoutProblem(B=5, S=45, D=5, H=3, seed=9).arrays(F32)
    want = readout_mse(z, zq, y, kq, ov)
    want_fwd = readout_forward(z, zq, kq, ov)
    for seed in (1, 2):
        monkeypatch.setenv("ATTNSPEC_EMULATOR_SEED", str(seed))
        got = readout_mse(z, zq, y, kq, ov)
        assert got.loss == want.loss
        assert all(np.array_equal(g, w) for g, w in zip(got[1:], want[1:]))
        assert all(np.array_equal(g, w) for g, w in zip(readout_forward(z, zq, kq, ov), want_fwd))


def test_non_contiguous_inputs_give_the_contiguous_result():
    z, zq, y, kq, ov = ReadoutProblem(B=4, S=10, D=3, H=2, seed=4).arrays(F32)
    want = readout_mse(z, zq, y, kq, ov)
    wide = [np.repeat(x, 2, axis=-1) for x in (z, zq, kq, ov)]
    z2, zq2, kq2, ov2 = (x[..., ::2] for x in wide)
    assert not z2.flags.c_contiguous
    got = readout_mse(z2, zq2, np.repeat(y, 2)[::2], kq2, ov2)
    assert got.loss == want.loss
    assert all(np.array_equal(g, w) for g, w in zip(got[1:], want[1:]))


@pytest.mark.parametrize("activation", spec.ACTIVATIONS)
def test_a_nan_token_gives_nan_where_the_spec_does(activation):
    """NaN propagates as in the spec: through the row maximum (softmax: the whole prompt),
    or only through its own weight (linear); the batch sums then carry it."""
    problem = ReadoutProblem(B=3, S=40, D=4, H=2, activation=activation, seed=6)
    args = list(problem.arrays(F64))
    args[0][1, 7, 2] = np.nan
    z, zq, y, kq, ov = args
    rng = np.random.default_rng(0)
    reports = launcher.compare_with_spec(readout_forward(z, zq, kq, ov, **problem.options),
                                         (z, zq, None, kq, ov), problem.options, rng)
    _assert_within_tolerance(reports, NAMES_FORWARD)
    got = readout_mse(z, zq, y, kq, ov, **problem.options)
    assert np.isnan(got.loss) and np.isnan(got.dkq_HDD).all() and np.isnan(got.yhat_B[1])
    assert np.isfinite(got.yhat_B[[0, 2]]).all()


def test_an_empty_batch_has_an_empty_forward():
    z, zq, _, kq, ov = ReadoutProblem(B=1, S=3, D=2, H=2).arrays(F32)
    got = readout_forward(z[:0], zq[:0], kq, ov)
    want = spec.readout_forward(z[:0], zq[:0], kq, ov)
    assert [x.shape for x in got] == [x.shape for x in want]


# ------------------------------------------------------------------ bad inputs


def _good(dtype=F32):
    return dict(zip(("z_BSD", "zq_BD", "y_B", "kq_HDD", "ov_HD"),
                    ReadoutProblem(B=2, S=3, D=4, H=2).arrays(dtype)))


def _bad_cases():
    """(keywords, whether only readout_mse takes them: bad targets)."""
    g = _good()
    cases = {
        "int tokens": {"z_BSD": g["z_BSD"].astype(np.int64)},
        "a list": {"ov_HD": g["ov_HD"].tolist()},
        "mixed dtypes": {"kq_HDD": g["kq_HDD"].astype(F64)},
        "z without a batch axis": {"z_BSD": g["z_BSD"][0]},
        "zq of another width": {"zq_BD": g["zq_BD"][:, :3]},
        "kq not square": {"kq_HDD": g["kq_HDD"][:, :, :3]},
        "ov of another head count": {"ov_HD": g["ov_HD"][:1]},
        "no examples": {"z_BSD": g["z_BSD"][:, :0]},
        "unknown activation": {"activation": "relu"},
        "norm with softmax": {"norm": 3.0},
        "negative norm": {"activation": "linear", "norm": -1.0},
        "infinite scale": {"scale": float("inf")},
    }
    targets = {
        "y of another length": {"y_B": g["y_B"][:1]},
        "y of another dtype": {"y_B": g["y_B"].astype(F64)},
        "y of two dimensions": {"y_B": g["y_B"][:, None]},
    }
    return ([pytest.param({**g, **kw}, False, id=name) for name, kw in cases.items()]
            + [pytest.param({**g, **kw}, True, id=name) for name, kw in targets.items()])


def _call(fn, kw, *, with_y: bool):
    kw = dict(kw)
    arrays = [kw.pop(n) for n in ("z_BSD", "zq_BD", "y_B", "kq_HDD", "ov_HD")]
    if not with_y:
        del arrays[2]
    return fn(*arrays, **kw)


@pytest.mark.parametrize("kw, targets_only", _bad_cases())
@pytest.mark.parametrize("name", ["readout_forward", "readout_mse"])
def test_bad_inputs_raise_the_specs_errors(name, kw, targets_only):
    """The same exception type and message as the spec's."""
    with_y = name == "readout_mse"
    if targets_only and not with_y:
        pytest.skip("the forward takes no targets")
    with pytest.raises((TypeError, ValueError)) as want:
        _call(getattr(spec, name), kw, with_y=with_y)
    with pytest.raises(want.type) as got:
        _call(getattr(launcher, name), kw, with_y=with_y)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("dtype", [F16, np.dtype(np.longdouble)])
def test_dtypes_the_kernel_does_not_take_are_a_type_error(dtype):
    if np.dtype(dtype) == F64:
        pytest.skip("longdouble is float64 on this platform: a dtype the kernel takes")
    kw = {n: x.astype(dtype) for n, x in _good().items()}
    message = rf"z_BSD: the CUDA read-out takes float32 or float64, got {dtype}"
    with pytest.raises(TypeError, match=message):
        _call(readout_mse, kw, with_y=True)
    with pytest.raises(TypeError, match=r"z_BSD: the CUDA read-out takes float32 or float64"):
        _call(readout_forward, kw, with_y=False)


def test_a_prompt_beyond_shared_memory_is_a_value_error():
    S = launcher.MAX_SMEM // 8  # more than fits at any D and H
    z = np.zeros((1, S, 1), np.float64)
    with pytest.raises(ValueError, match=r"z_BSD, kq_HDD: a prompt of S=\d+ .* shared memory"):
        readout_forward(z, np.zeros((1, 1)), np.zeros((1, 1, 1)), np.zeros((1, 1)))


# ------------------------------------------------------------------ wiring, main(), GPU


def test_registered_in_the_registry_and_the_compile_gate():
    for op in ("attention.readout_forward", "attention.readout_mse"):
        entry = registry.entry(op, "cuda")
        assert entry.dtypes == (F32, F64)
        assert entry.load() is getattr(launcher, op.split(".")[1])
    configs = set(nvrtc_check.configurations())
    assert set(launcher.KERNELS.values()) <= configs
    assert {c.kernel for c in launcher.KERNELS.values()} == set(launcher.KERNEL_NAMES)


def test_main_sanitize_validates_every_shape_and_dtype(capsys):
    assert launcher.main(["--sanitize"]) == 0
    out = capsys.readouterr().out
    lines = [x for x in out.splitlines() if x.startswith("  v1 ")]
    assert len(lines) == 2 * 2 * len(launcher.VALIDATION_SHAPES)
    assert "FAILED" not in out and "timing" not in out and " ms " not in out, out


def test_timing_runs_with_a_stand_in_for_cupy(monkeypatch, capsys):
    """main()'s GPU-only timing, at a tiny batch, with NumPy for CuPy and the kernels on
    the emulator: every dtype and head count prints ms, GB/s and GFLOP/s."""
    if _launch.engine() != "emulator":
        pytest.skip("a GPU is here: scripts/gpu-check runs the real timing")
    monkeypatch.setitem(sys.modules, "cupy",
                        types.SimpleNamespace(asarray=np.asarray, empty=np.empty))
    calls = []
    monkeypatch.setattr(_timing, "time_ms", lambda fn, repeats=20: calls.append(fn) or fn() or 1.0)
    monkeypatch.setattr(_timing, "peaks", lambda: (1e12, 1e13))
    launcher._time(np.random.default_rng(0), B=3, heads=(1, 8))
    out = capsys.readouterr().out
    lines = [x for x in out.splitlines() if x.startswith("  v1 ")]
    assert len(lines) == len(calls) == 4
    for line in lines:
        assert " ms " in line and "GB/s" in line and "GFLOP/s" in line, line
    B, S, D, H = 3, 40, 6, 8
    nbytes, flops = launcher.step_bytes(B, S, D, H, F64), launcher.step_flops(B, S, D, H)
    assert f"[{nbytes} B, {flops} FLOP]" in lines[-1]


@pytest.mark.gpu
def test_cupy_arrays_stay_on_the_device(monkeypatch):
    import cupy

    monkeypatch.setenv("ATTNSPEC_CUDA", "cupy")
    args = ReadoutProblem(B=6, S=40, D=6, H=4, seed=7).arrays(F32)
    z, zq, y, kq, ov = (cupy.asarray(x) for x in args)
    loss, dkq, dov, yhat = readout_mse(z, zq, y, kq, ov)
    fwd = readout_forward(z, zq, kq, ov)
    assert type(loss) is float
    assert all(isinstance(x, cupy.ndarray) for x in (dkq, dov, yhat, *fwd))
    host = (loss, dkq.get(), dov.get(), yhat.get())
    rng = np.random.default_rng(0)
    _assert_within_tolerance(launcher.compare_with_spec(host, args, {}, rng), NAMES_MSE)
    host_fwd = tuple(x.get() for x in fwd)
    reports = launcher.compare_with_spec(host_fwd, (args[0], args[1], None, *args[3:]), {}, rng)
    _assert_within_tolerance(reports, NAMES_FORWARD)
