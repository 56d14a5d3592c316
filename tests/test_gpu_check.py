"""scripts/gpu-check, the GPU gate, on a machine without a GPU: its plan, its refusal to
run without a GPU, its runner (statuses, timeouts, captured figures) and what it adds to
bench/RESULTS.md."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.cuda import FAMILIES
from backends.cuda._launch import gpu_unusable_reason

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-check"


def _load():
    """The script as a module (its file name has no .py, so name the loader)."""
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    sys.modules[loader.name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


gpu_check = _load()
PY = sys.executable


@pytest.fixture
def nothing_runs(monkeypatch):
    """Any subprocess the script starts is a test failure."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"the script started a process: {args[0] if args else kwargs}")

    monkeypatch.setattr(gpu_check.subprocess, "Popen", refuse)
    monkeypatch.setattr(gpu_check.subprocess, "run", refuse)


def _step(name, code, timeout=20.0, figures=False):
    return gpu_check.Step(name, [PY, "-c", code], timeout, {}, figures=figures)


# ------------------------------------------------------------------ the plan


def test_the_script_is_an_executable_python3_script():
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")
    assert os.access(SCRIPT, os.X_OK)


def test_dry_run_lists_every_family_main_and_sanitizer_run(monkeypatch, capsys, nothing_runs):
    monkeypatch.setattr(gpu_check, "find_compute_sanitizer", lambda: "/opt/cuda/bin/compute-sanitizer")
    assert gpu_check.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for family in FAMILIES:
        module = f"backends.cuda.{family}"
        main_line = lines.index(f"  main:{family} (timeout {gpu_check.TIMEOUT_MAIN[family]:g} s)"
                                + ("" if (ROOT / "backends/cuda" / f"{family}.py").is_file()
                                   else f"  (no backends/cuda/{family}.py yet: the step would fail)"))
        assert lines[main_line + 1].endswith(f"-m {module}"), lines[main_line + 1]
        for tool in ("memcheck", "racecheck"):
            if tool == "racecheck" and family in gpu_check.NOT_RACED:
                assert f"  no racecheck:{family}: {gpu_check.NOT_RACED[family]}" in lines
                continue
            (i,) = [n for n, line in enumerate(lines) if line.startswith(f"  {tool}:{family} (timeout")]
            command = lines[i + 1]
            assert command.startswith(f"    $ /opt/cuda/bin/compute-sanitizer --tool {tool} "
                                      "--error-exitcode 1"), command
            assert command.endswith(f"{module} --sanitize"), command
    assert "gpu-tests (timeout" in out and "-m pytest -m gpu -q -p no:cacheprovider" in out
    assert "ATTNSPEC_CUDA=cupy" in out
    assert "synccheck" not in out
    assert "timeouts add up to" in out


def test_dry_run_says_when_compute_sanitizer_is_missing(monkeypatch, capsys, nothing_runs):
    monkeypatch.setattr(gpu_check, "find_compute_sanitizer", lambda: None)
    assert gpu_check.main(["--dry-run", "--synccheck"]) == 0
    out = capsys.readouterr().out
    for tool in ("memcheck", "racecheck", "synccheck"):
        for family in FAMILIES:
            if tool == "racecheck" and family in gpu_check.NOT_RACED:
                continue
            assert any(line.startswith(f"  {tool}:{family} (timeout") and
                       "SKIPPED: compute-sanitizer not found" in line for line in out.splitlines()), out


def test_dry_run_of_the_executable_works_here():
    done = subprocess.run([str(SCRIPT), "--dry-run", "--no-record"], capture_output=True,
                          text=True, timeout=120, cwd="/", check=False)
    assert done.returncode == 0, done.stderr
    assert "record: none (--no-record)" in done.stdout
    assert all(f"main:{family}" in done.stdout for family in FAMILIES)


def test_default_timeouts_add_up_to_under_eight_minutes():
    steps = gpu_check.plan(FAMILIES, "/opt/cuda/bin/compute-sanitizer")
    assert all(step.timeout > 0 for step in steps)
    assert gpu_check.total_timeout(steps) <= gpu_check.BUDGET_S <= 8 * 60
    readme = (ROOT / "README.md").read_text()
    assert f"The timeouts add up to {gpu_check.total_timeout(steps):g} s" in readme
    # every family: its main() and each default sanitizer tool (racecheck where it adds
    # something: not for families in NOT_RACED, each with its reason)
    names = {step.name for step in steps}
    assert names == ({"gpu-tests", "conformance:cuda"}
                     | {f"{what}:{f}" for what in ("main", "memcheck") for f in FAMILIES}
                     | {f"racecheck:{f}" for f in FAMILIES if f not in gpu_check.NOT_RACED})
    assert set(gpu_check.NOT_RACED) <= set(FAMILIES)
    # a listed timeout for every family and tool it runs
    assert set(gpu_check.TIMEOUT_MAIN) == set(FAMILIES)
    assert set(gpu_check.TIMEOUT_SANITIZER["memcheck"]) == set(FAMILIES)
    assert set(gpu_check.TIMEOUT_SANITIZER["racecheck"]) == set(FAMILIES) - set(gpu_check.NOT_RACED)


def test_every_step_selects_the_cupy_engine():
    for step in gpu_check.plan(FAMILIES, None, gpu_check.DEFAULT_TOOLS + gpu_check.OPTIONAL_TOOLS):
        assert step.env["ATTNSPEC_CUDA"] == "cupy", step


def test_only_selects_by_name_or_either_part():
    steps = gpu_check.plan(FAMILIES, "/x/compute-sanitizer")

    def names(only):
        return [s.name for s in gpu_check.select(steps, only)]

    assert names(["softmax"]) == ["main:softmax", "memcheck:softmax", "racecheck:softmax"]
    assert names(["main"]) == [f"main:{f}" for f in FAMILIES]
    assert names(["memcheck:attention", "gpu-tests"]) == ["gpu-tests", "memcheck:attention"]
    assert names(["attn"]) == []
    assert names(None) == [s.name for s in steps]


def test_an_unknown_only_is_an_error(capsys, nothing_runs):
    assert gpu_check.main(["--only", "nonsense", "--no-record"]) == 2
    assert "--only ['nonsense'] names no step" in capsys.readouterr().err


def test_compute_sanitizer_is_found_on_path(tmp_path, monkeypatch):
    fake = tmp_path / "compute-sanitizer"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert gpu_check.find_compute_sanitizer() == str(fake)


# ------------------------------------------------------------------ without a GPU


def test_without_a_gpu_it_exits_2_and_records_nothing(tmp_path, monkeypatch, capsys, nothing_runs):
    results = tmp_path / "RESULTS.md"
    results.write_text("## CUDA kernels on a GPU\n\nNone recorded yet.\n")
    before = results.read_bytes()
    monkeypatch.setattr(gpu_check, "gpu_probe", lambda: ("CuPy found no device: test", "?"))
    assert gpu_check.main(["--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "no usable GPU here: CuPy found no device: test" in err
    assert "nothing run, nothing recorded" in err
    assert results.read_bytes() == before


@pytest.mark.skipif(gpu_unusable_reason() is None, reason="this machine has a usable GPU")
def test_without_a_gpu_the_executable_exits_2_with_the_reason(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("unchanged\n")
    done = subprocess.run([str(SCRIPT), "--results", str(results)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"no usable GPU here: {gpu_unusable_reason()}" in done.stderr
    assert done.stdout == ""  # no step started
    assert results.read_text() == "unchanged\n"


# ------------------------------------------------------------------ the runner


def test_runner_passes_fails_and_keeps_figures_apart_from_stderr(capsys):
    ok = gpu_check.run_step(_step(
        "main:fake", "import sys; print('  v1 float32  0.1 ms'); print('warn', file=sys.stderr)",
        figures=True))
    assert (ok.status, ok.output, ok.errors) == ("pass", "  v1 float32  0.1 ms\n", "warn\n")
    bad = gpu_check.run_step(_step("gpu-tests", "import sys; print('1 failed', flush=True); "
                                   "print('Traceback', file=sys.stderr); sys.exit(3)"))
    assert (bad.status, bad.note, bad.failed) == ("fail", "exit 3", True)
    assert bad.output == "1 failed\nTraceback\n"  # one stream for a step without figures
    echoed = capsys.readouterr()
    assert "  v1 float32  0.1 ms" in echoed.out and "warn" in echoed.err


def test_runner_kills_a_step_at_its_timeout_with_its_children():
    # a child that outlives its parent would keep the pipe open: the kill must reach it
    code = ("import subprocess, sys; print('started', flush=True); "
            "subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])")
    start = time.monotonic()
    outcome = gpu_check.run_step(_step("memcheck:fake", code, timeout=2))
    assert outcome.status == "timeout" and outcome.failed
    assert outcome.output == "started\n"
    assert time.monotonic() - start < 5


def test_a_skipped_step_is_not_run_and_not_a_pass(nothing_runs):
    step = gpu_check.Step("memcheck:softmax", ["compute-sanitizer"], 10, skip="compute-sanitizer not found")
    outcome = gpu_check.run_step(step)
    assert (outcome.status, outcome.failed, outcome.note) == ("skipped", False, "compute-sanitizer not found")
    assert gpu_check.summary([outcome], 1.0) == \
        "passed: 0 passed, 0 failed, 1 skipped of 1 steps; 1 s elapsed"


# ------------------------------------------------------------------ the record

FIGURES = "softmax  T=4096 S=4096  engine=cupy  NVIDIA H200\n  v1 float32  p err 1e-07  0.123 ms  1234 GB/s\n"
FAILED_FIGURES = "attention forward  validate\n  v1 causal=False o err 1.0e+00 (bound 1e-06)  FAILED\n"
MACHINE = gpu_check.Machine("NVIDIA H200", "NVIDIA H200, 570.1, 143771 MiB", "abc1234-dirty",
                            "Sun Nov 29 14:03 UTC 2026")
RESULTS_TEXT = """# Recorded benchmark figures

## Attention

| a | b |
|---|---|

## CUDA kernels on a GPU

None recorded yet: no session so far has been lent a GPU. Each launcher's `main()`
prints figures; its output goes here.

## Later section

kept as it is
"""


def _outcomes():
    main_ok = _step("main:softmax", "", figures=True)
    main_bad = _step("main:attention", "", figures=True)
    sanitizer = gpu_check.sanitizer_step("memcheck", "attention", "/x/compute-sanitizer", {})
    missing = gpu_check.sanitizer_step("racecheck", "softmax", None, {})
    return [
        gpu_check.Outcome(main_ok, "pass", 8.14, FIGURES),
        gpu_check.Outcome(main_bad, "fail", 9.0, FAILED_FIGURES, "Traceback: boom\n", "exit 1"),
        gpu_check.Outcome(sanitizer, "timeout", 25.0, "========= Invalid __global__ read\n",
                          note="killed after 25 s"),
        gpu_check.Outcome(missing, "skipped", note="compute-sanitizer not found"),
    ]


def test_a_run_section_has_device_date_commit_statuses_and_verbatim_figures():
    text = gpu_check.section(MACHINE, _outcomes(), 52.4, "scripts/gpu-check")
    lines = text.splitlines()
    assert lines[0] == "### NVIDIA H200, Sun Nov 29 14:03 UTC 2026, commit abc1234-dirty"
    assert "- Device: NVIDIA H200 (CuPy); nvidia-smi: NVIDIA H200, 570.1, 143771 MiB" in lines
    assert "- Commit: abc1234-dirty" in lines and "- Date: Sun Nov 29 14:03 UTC 2026" in lines
    assert "- Result: FAILED: 1 passed, 2 failed, 1 skipped of 4 steps; 52 s elapsed" in lines
    assert "| main:softmax | pass | 8.1 | `python -c ''` |" in lines
    assert "| main:attention | FAIL (exit 1) | 9.0 | `python -c ''` |" in lines
    assert any(line.startswith("| memcheck:attention | TIMEOUT (killed after 25 s) | 25.0 | "
                               "`compute-sanitizer --tool memcheck python -m backends.cuda.attention")
               for line in lines), text
    assert any(line.startswith("| racecheck:softmax | skipped (compute-sanitizer not found) | 0.0 |")
               for line in lines), text
    # figures verbatim, inside a fence; those of the failing run marked as such
    first = text.index("```text\n" + FIGURES + "```\n")
    bad = text.index("```text\n" + FAILED_FIGURES + "```\n")
    assert text.rindex("Figures printed by", 0, first) < first
    assert "FAILED (exit 1): from a failing run, not results:" in text[text.rindex("Figures", 0, bad):bad]
    # what the failing steps printed last, the traceback included
    assert "Traceback: boom" in text and "========= Invalid __global__ read" in text


def test_a_section_fences_output_that_contains_a_fence():
    step = _step("main:x", "", figures=True)
    text = gpu_check.section(MACHINE, [gpu_check.Outcome(step, "pass", 1.0, "a\n```\nb\n")], 1.0, "c")
    assert "````text\na\n```\nb\n````" in text


def test_first_run_replaces_the_placeholder_and_later_runs_follow_it():
    first = gpu_check.section(MACHINE, _outcomes(), 52.4, "scripts/gpu-check")
    second = gpu_check.section(gpu_check.Machine("NVIDIA A100", "-", "def5678", "Mon Nov 30 09:00 UTC 2026"),
                               _outcomes()[:1], 10.0, "scripts/gpu-check --only softmax")
    once = gpu_check.insert_run(RESULTS_TEXT, first)
    twice = gpu_check.insert_run(once, second)
    head = RESULTS_TEXT.split("## CUDA kernels on a GPU\n")[0]
    for text in (once, twice):
        assert text.startswith(head + "## CUDA kernels on a GPU\n\n" + gpu_check.INTRO + "\n\n###")
        assert "None recorded yet" not in text and "its output goes here" not in text
        assert text.endswith("\n\n## Later section\n\nkept as it is\n")
    assert once.count("### ") == 1 and twice.count("### ") == 2
    assert twice.index("### NVIDIA H200") < twice.index("### NVIDIA A100") < twice.index("## Later")
    assert first in once and first in twice and second in twice
    assert twice.count(gpu_check.INTRO) == 1


def test_a_run_goes_at_the_end_when_the_section_is_last_or_missing(tmp_path):
    run = gpu_check.section(MACHINE, _outcomes()[:1], 1.0, "scripts/gpu-check")
    last = "# R\n\n## CUDA kernels on a GPU\n\nNone recorded yet.\n"
    assert gpu_check.insert_run(last, run) == f"# R\n\n## CUDA kernels on a GPU\n\n{gpu_check.INTRO}\n\n{run}"
    assert gpu_check.insert_run("# R\n", run) == f"# R\n\n## CUDA kernels on a GPU\n\n{gpu_check.INTRO}\n\n{run}"
    missing = tmp_path / "new.md"
    gpu_check.record(missing, run)
    assert missing.read_text() == f"## CUDA kernels on a GPU\n\n{gpu_check.INTRO}\n\n{run}"


def test_the_real_results_file_keeps_everything_outside_the_gpu_section():
    text = (ROOT / "bench" / "RESULTS.md").read_text()
    run = gpu_check.section(MACHINE, _outcomes(), 1.0, "scripts/gpu-check")
    new = gpu_check.insert_run(text, run)
    head = text.split(gpu_check.HEADING)[0]
    assert new.startswith(head + gpu_check.HEADING) and run in new
    assert gpu_check.PLACEHOLDER not in new


# ------------------------------------------------------------------ the whole run, faked GPU


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(gpu_check, "gpu_probe", lambda: (None, "Fake GPU"))
    monkeypatch.setattr(gpu_check, "nvidia_smi", lambda: "Fake GPU, 1.0, 1 MiB")
    monkeypatch.setattr(gpu_check, "commit", lambda: "abc1234")
    monkeypatch.setattr(gpu_check, "utc_date", lambda: "Sun Nov 29 14:03 UTC 2026")

    def use(steps):
        monkeypatch.setattr(gpu_check, "plan", lambda families, sanitizer, tools: steps)

    return use


def test_a_failing_step_is_recorded_and_the_exit_status_is_1(tmp_path, fake_gpu, capsys):
    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS_TEXT)
    fake_gpu([_step("main:good", "print('  v1 float32  0.5 ms  900 GB/s')", figures=True),
              _step("main:bad", "import sys; print('  v1 FAILED'); sys.exit(1)", figures=True),
              gpu_check.Step("memcheck:good", ["compute-sanitizer"], 5, skip="compute-sanitizer not found")])
    assert gpu_check.main(["--results", str(results)]) == 1
    text = results.read_text()
    assert "### Fake GPU, Sun Nov 29 14:03 UTC 2026, commit abc1234" in text
    assert "```text\n  v1 float32  0.5 ms  900 GB/s\n```" in text
    assert "| main:bad | FAIL (exit 1) |" in text and "```text\n  v1 FAILED\n```" in text
    assert "| memcheck:good | skipped (compute-sanitizer not found) |" in text
    assert "- Result: FAILED: 1 passed, 1 failed, 1 skipped of 3 steps;" in text
    assert "gpu-check: FAILED: 1 passed, 1 failed, 1 skipped of 3 steps; " in capsys.readouterr().out


def test_all_passing_exits_0_and_no_record_leaves_the_file(tmp_path, fake_gpu, capsys):
    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS_TEXT)
    fake_gpu([_step("main:good", "print('fig')", figures=True)])
    assert gpu_check.main(["--results", str(results), "--no-record"]) == 0
    assert results.read_text() == RESULTS_TEXT
    out = capsys.readouterr().out
    assert "device: Fake GPU (CuPy); nvidia-smi: Fake GPU, 1.0, 1 MiB" in out
    assert "commit: abc1234" in out and "date: Sun Nov 29 14:03 UTC 2026" in out
    assert "gpu-check: passed: 1 passed, 0 failed, 0 skipped of 1 steps; " in out
    assert " s elapsed" in out
    assert gpu_check.main(["--results", str(results)]) == 0
    assert "- Result: passed: 1 passed, 0 failed, 0 skipped of 1 steps;" in results.read_text()
