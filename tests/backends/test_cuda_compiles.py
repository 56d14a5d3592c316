"""Compile gate: every .cu configuration compiles with NVRTC, spill-free, within budget.

Runs without a GPU (NVRTC from the pinned wheel). The last test prints the
register / shared-memory table to the terminal, captured or not.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from backends.cuda import FAMILIES, nvrtc_check
from backends.cuda._launch import KernelConfig

CUDA_DIR = Path(nvrtc_check.__file__).parent

MODULES = nvrtc_check.modules()


def test_every_cu_file_belongs_to_a_family():
    """A .cu that no launcher claims would escape the gate."""
    on_disk = {p.name for p in CUDA_DIR.glob("*.cu")}
    claimed = {importlib.import_module(f"backends.cuda.{f}").SOURCE for f in FAMILIES}
    assert on_disk == claimed


@pytest.mark.parametrize("arch", nvrtc_check.ARCHS)
@pytest.mark.parametrize("source, options", list(MODULES), ids=lambda x: " ".join(x) if isinstance(x, tuple) else x)
def test_configuration_compiles_within_budget(source, options, arch):
    compiled = nvrtc_check.compile_module(source, options, arch)
    for config in MODULES[(source, options)]:
        res = compiled.resources.get(config.kernel)
        assert nvrtc_check.problems(config, res) == [], (
            f"{config.label} {arch}\n{compiled.log}"
        )


# A kernel that needs more registers than __launch_bounds__(1024, 2) leaves it (32),
# and one with 32 KiB of static shared memory.
_GREEDY = r"""
extern "C" __global__ void __launch_bounds__(1024, 2) greedy(const float* x, float* y) {
    float acc[48];
    #pragma unroll
    for (int i = 0; i < 48; ++i) acc[i] = x[threadIdx.x * 48 + i];
    #pragma unroll
    for (int r = 0; r < 8; ++r) {
        #pragma unroll
        for (int i = 0; i < 48; ++i) acc[i] = acc[i] * acc[(i * 7 + r) % 48] + 1.0f;
    }
    float s = 0;
    #pragma unroll
    for (int i = 0; i < 48; ++i) s += acc[i];
    y[threadIdx.x] = s;
}
extern "C" __global__ void tiled(float* y) {
    __shared__ float tile[8192];
    tile[threadIdx.x] = y[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = tile[threadIdx.x ^ 1];
}
"""


def _config(kernel: str, threads: int, dynamic_smem: int = 0) -> KernelConfig:
    return KernelConfig("test.cu", kernel, (), threads=threads, dynamic_smem=dynamic_smem)


def test_gate_reports_spills():
    compiled = nvrtc_check.compile_source(_GREEDY, "test.cu", ("-std=c++17",), "sm_90")
    res = compiled.resources["greedy"]
    assert res.spill_stores > 0
    assert any("spills" in p for p in nvrtc_check.problems(_config("greedy", 1024), res))


def test_gate_counts_static_and_dynamic_shared_memory():
    compiled = nvrtc_check.compile_source(_GREEDY, "test.cu", ("-std=c++17",), "sm_80")
    res = compiled.resources["tiled"]
    assert res.smem_static == 8192 * 4
    assert nvrtc_check.problems(_config("tiled", 256, dynamic_smem=100 * 1024), res) == []
    over = nvrtc_check.problems(_config("tiled", 256, dynamic_smem=140 * 1024), res)
    assert over and "sm_80" in over[0]


def test_gate_checks_registers_per_block():
    compiled = nvrtc_check.compile_source(_GREEDY, "test.cu", ("-std=c++17",), "sm_90")
    res = compiled.resources["tiled"]
    threads_that_fit = nvrtc_check.REGISTER_FILE // res.registers
    assert nvrtc_check.problems(_config("tiled", threads_that_fit), res) == []
    assert nvrtc_check.problems(_config("tiled", threads_that_fit + 1), res) != []


def test_gate_reports_compile_errors_with_the_log():
    with pytest.raises(RuntimeError, match=r"bad\.cu.*sm_90[\s\S]*error"):
        nvrtc_check.compile_source('extern "C" __global__ void k(float* x) { x[0] = }',
                                   "bad.cu", ("-std=c++17",), "sm_90")


def test_gate_reports_a_kernel_missing_from_the_module():
    assert nvrtc_check.problems(_config("no_such_kernel", 32), None)


def test_print_register_and_shared_memory_table(capsys):
    rows, failures = nvrtc_check.check_all()
    with capsys.disabled():
        print("\n" + nvrtc_check.table(rows))
    assert failures == []
    assert len(rows) == len(nvrtc_check.configurations()) * len(nvrtc_check.ARCHS)
