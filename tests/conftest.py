"""Shared test configuration: hypothesis profiles and the gpu marker.

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

if not os.environ.get("CI"):
    settings.register_profile("dev", deadline=None)
    settings.load_profile("dev")


def _gpu_count() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no CuPy, no driver or no device: all mean "no GPU here"
        return 0


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items or _gpu_count() > 0:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (CuPy found none)")
    for item in gpu_items:
        item.add_marker(skip)
