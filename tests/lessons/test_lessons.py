"""Every lesson executes, in small mode, and its committed .ipynb matches its .py.

Lessons are ``lessons/NN_topic.py`` (jupytext percent format, the source of truth)
with a generated ``lessons/NN_topic.ipynb``. A new lesson is picked up by the glob.

Execution: the .py is converted to a notebook in memory and run by nbclient in a
kernel that is started with *this* interpreter (``sys.executable``, from a kernel
spec written to a temporary folder, so whatever "python3" kernel a machine has
installed does not matter), with the working directory ``lessons/`` and
``ATTNSPEC_LESSON_MODE=small`` in the kernel's environment. A failing cell fails
the test with that cell's traceback.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jupytext
import nbclient
import pytest

ROOT = Path(__file__).resolve().parents[2]
LESSONS_DIR = ROOT / "lessons"
LESSONS = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.py"))
KERNEL_NAME = "attnspec-lesson"
CELL_TIMEOUT_S = 600
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks


def _regenerate_hint(py: Path) -> str:
    return f"regenerate it with: jupytext --to ipynb {py.relative_to(ROOT)}"


@pytest.fixture(scope="module")
def kernel_spec_manager(tmp_path_factory):
    """A kernel spec that runs this interpreter in small mode, in a private folder."""
    from jupyter_client.kernelspec import KernelSpecManager

    kernels = tmp_path_factory.mktemp("kernels")
    spec_dir = kernels / KERNEL_NAME
    spec_dir.mkdir()
    spec = {
        "argv": [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher",
                 "-f", "{connection_file}"],
        "display_name": "attnspec lesson test",
        "language": "python",
        # merged over the environment of this process by jupyter_client
        "env": {"ATTNSPEC_LESSON_MODE": "small", "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(kernels)])


def test_lessons_are_found():
    assert LESSONS, f"no lessons matching NN_*.py in {LESSONS_DIR}"


@pytest.mark.slow
@pytest.mark.parametrize("py", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_executes_in_small_mode(py: Path, kernel_spec_manager):
    from jupyter_client.manager import KernelManager

    nb = jupytext.read(py)
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_spec_manager)
    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(LESSONS_DIR)}},  # the kernel's working directory
    )
    error = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        # the message holds the failing cell's source and its traceback
        error = ANSI_ESCAPE.sub("", str(exc))
    if error is not None:  # failed outside the except block: one traceback, not two
        pytest.fail(f"{py.name} failed in small mode:\n{error}", pytrace=False)


@pytest.mark.parametrize("py", LESSONS, ids=[p.stem for p in LESSONS])
def test_ipynb_is_in_sync_with_py(py: Path):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{ipynb.relative_to(ROOT)} is missing; {_regenerate_hint(py)}"
    from_py = jupytext.read(py)
    from_ipynb = jupytext.read(ipynb)
    cells_py = [(c.cell_type, c.source) for c in from_py.cells]
    cells_ipynb = [(c.cell_type, c.source) for c in from_ipynb.cells]
    if cells_py != cells_ipynb:
        first = next(
            (i for i, (a, b) in enumerate(zip(cells_py, cells_ipynb)) if a != b),
            min(len(cells_py), len(cells_ipynb)),
        )
        pytest.fail(
            f"{ipynb.relative_to(ROOT)} is stale: its cells differ from {py.name} "
            f"from cell {first} on ({len(cells_ipynb)} vs {len(cells_py)} cells); "
            f"{_regenerate_hint(py)}",
            pytrace=False,
        )
    with_outputs = [
        i for i, c in enumerate(from_ipynb.cells)
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not with_outputs, (
        f"{ipynb.relative_to(ROOT)} has outputs in cells {with_outputs}: commit it stripped; "
        f"{_regenerate_hint(py)}"
    )


def test_attention_figures_writes_pngs(tmp_path):
    from backends.figures import attention_figures

    paths = attention_figures(tmp_path, small=True)
    assert paths, "attention_figures wrote no figure"
    for path in paths:
        assert path.parent == tmp_path
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{path.name} is not a PNG"
        assert len(data) > 5000, f"{path.name} is suspiciously small ({len(data)} bytes)"
