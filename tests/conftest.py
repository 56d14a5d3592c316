"""Shared test configuration: hypothesis profiles, the gpu marker, the CUDA engine.

Under CI (CI=true) Hypothesis loads its built-in ``ci`` profile by itself
(derandomized, no deadline); we do not redefine that name. Elsewhere the ``dev``
profile drops the deadline, because the first call of a Numba function compiles it.
Example counts are set per test with ``@settings(max_examples=...)`` so that the
whole suite stays within CI's time budget.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from backends.cuda._launch import ENV_VAR, gpu_unusable_reason

if not os.environ.get("CI"):
    settings.register_profile("dev", deadline=None)
    settings.load_profile("dev")


def pytest_configure(config):
    """Where there is no GPU, CUDA backends run on the CPU emulator (an explicit choice:
    backends.cuda never falls back by itself). A setting made outside is kept."""
    if ENV_VAR not in os.environ and gpu_unusable_reason() is not None:
        os.environ[ENV_VAR] = "emulator"


def pytest_addoption(parser):
    parser.addoption(
        "--backend",
        default=None,
        help="run only tests of registry entries of this backend (e.g. cpu, spec)",
    )


def _keep_backend(items, backend: str, config):
    """Deselect tests parametrised with a registry entry of another backend, and
    tests with no registry entry at all (they do not test a backend)."""
    keep, drop = [], []
    for item in items:
        entry = getattr(getattr(item, "callspec", None), "params", {}).get("entry")
        (keep if entry is not None and entry.backend == backend else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_collection_modifyitems(config, items):
    backend = config.getoption("--backend")
    if backend is not None:
        _keep_backend(items, backend, config)
    gpu_items = [item for item in items if "gpu" in item.keywords]
    reason = gpu_unusable_reason()
    if not gpu_items or reason is None:
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA device ({reason})")
    for item in gpu_items:
        item.add_marker(skip)
