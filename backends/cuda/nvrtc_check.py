"""Compile gate: every CUDA kernel configuration through NVRTC, no GPU needed.

Each family's ``KERNELS`` configurations are compiled to SASS for every target
architecture with ``--ptxas-options=-v``; ptxas's report gives each kernel's
registers, static shared memory, stack frame and spills. A configuration passes when

- it compiles;
- it spills no register (a spill turns register traffic into local-memory traffic);
- registers x threads per block fit one SM's register file (else the launch fails);
- static shared memory is at most 48 KiB (the static limit) and static + the dynamic
  shared memory it is launched with fit the architecture's per-block maximum.

NVRTC comes from the ``nvidia-cuda-nvrtc`` wheel through CuPy's bindings
(``cupy_backends.cuda.libs.nvrtc``), which need no driver; ``cupy.RawKernel.compile``
would need a device. The version is pinned (:data:`NVRTC_VERSION`) because register
counts differ between NVRTC versions.

    python -m backends.cuda.nvrtc_check        # prints the table; exit 1 on a failure
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from dataclasses import dataclass
from typing import NamedTuple

from backends.cuda import FAMILIES
from backends.cuda._launch import KernelConfig, nvrtc_options, read_source

NVRTC_VERSION = (13, 0)
"""The NVRTC release pinned in pyproject.toml (nvidia-cuda-nvrtc==13.0.*)."""

ARCHS = ("sm_80", "sm_90")

REGISTER_FILE = 64 * 1024  # 32-bit registers per SM on sm_80 and sm_90
MAX_REGISTERS = 255  # per thread
STATIC_SMEM_LIMIT = 48 * 1024
SMEM_PER_BLOCK = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}
"""Shared memory one block may use with the opt-in attribute (A100: 163 KiB, H100/H200: 227 KiB)."""


class NvrtcUnavailableError(RuntimeError):
    """NVRTC or its pinned version is missing."""


@dataclass(frozen=True)
class KernelResources:
    """ptxas's report of one kernel for one architecture."""

    kernel: str
    arch: str
    registers: int
    smem_static: int
    stack_frame: int
    spill_stores: int
    spill_loads: int


class CompiledModule(NamedTuple):
    """One source compiled with one option set for one architecture."""

    source: str
    options: tuple[str, ...]
    arch: str
    resources: dict[str, KernelResources]
    log: str


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc
    except ImportError as exc:
        raise NvrtcUnavailableError(
            f"NVRTC bindings not found ({exc}); pip install -e '.[dev]' installs CuPy and "
            "the pinned nvidia-cuda-nvrtc"
        ) from exc
    try:
        version = tuple(nvrtc.getVersion())
    except Exception as exc:  # the shared library itself is missing
        raise NvrtcUnavailableError(f"NVRTC could not be loaded: {exc}") from exc
    if version != NVRTC_VERSION:
        raise NvrtcUnavailableError(
            f"NVRTC {version} found, the gate is pinned to {NVRTC_VERSION}: register counts "
            "differ between versions; install the version pyproject.toml pins"
        )
    return nvrtc


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log: str) -> dict[str, KernelResources]:
    """Per-kernel resources from ptxas's ``-v`` report (entry functions only)."""
    found: dict[str, KernelResources] = {}
    kernel = arch = None
    frame = (0, 0, 0)
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            kernel, arch, frame = m.group(1), m.group(2), (0, 0, 0)
        elif kernel and (m := _FRAME.search(line)):
            frame = tuple(int(g) for g in m.groups())
        elif kernel and (m := _USED.search(line)):
            smem = _SMEM.search(line)
            found[kernel] = KernelResources(
                kernel, arch, int(m.group(1)), int(smem.group(1)) if smem else 0, *frame
            )
            kernel = None
    return found


@functools.cache
def compile_source(code: str, name: str, options: tuple[str, ...], arch: str) -> CompiledModule:
    """Compile CUDA C ``code`` (file name ``name``) to SASS for ``arch``.

    Raises RuntimeError with NVRTC's log on a compile error. Cached: the gate test
    and its table share one compilation.
    """
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(code, name, [], [])
    try:
        try:
            nvrtc.compileProgram(program, [*options, f"-arch={arch}", "--ptxas-options=-v"])
        except nvrtc.NVRTCError as exc:
            raise RuntimeError(
                f"NVRTC failed on {name} for {arch} with {' '.join(options)}:\n"
                f"{nvrtc.getProgramLog(program)}"
            ) from exc
        log = nvrtc.getProgramLog(program)
    finally:
        nvrtc.destroyProgram(program)
    return CompiledModule(name, options, arch, parse_ptxas_log(log), log)


def compile_module(source: str, options: tuple[str, ...], arch: str) -> CompiledModule:
    """Compile ``backends/cuda/<source>``, as :func:`compile_source`."""
    return compile_source(read_source(source), source, options, arch)


def configurations() -> list[KernelConfig]:
    """Every configuration of every family in :data:`backends.cuda.FAMILIES`, once (a
    family may launch another's kernels: attention_varlen launches attention.cu's)."""
    configs = []
    for family in FAMILIES:
        configs.extend(importlib.import_module(f"backends.cuda.{family}").KERNELS.values())
    return list(dict.fromkeys(configs))


def modules() -> dict[tuple[str, tuple[str, ...]], list[KernelConfig]]:
    """Configurations grouped by what NVRTC compiles: (source, options)."""
    grouped: dict[tuple[str, tuple[str, ...]], list[KernelConfig]] = {}
    for config in configurations():
        grouped.setdefault((config.source, nvrtc_options(config)), []).append(config)
    return grouped


def problems(config: KernelConfig, res: KernelResources | None) -> list[str]:
    """What is wrong with one configuration's resources (empty when it passes)."""
    if res is None:
        return [f"{config.kernel}: no ptxas report (is it an extern \"C\" __global__ kernel?)"]
    out = []
    if res.spill_stores or res.spill_loads:
        out.append(f"spills {res.spill_stores} B stored, {res.spill_loads} B loaded")
    if res.registers > MAX_REGISTERS or res.registers * config.threads > REGISTER_FILE:
        out.append(f"{res.registers} registers x {config.threads} threads exceed the register file")
    if res.smem_static > STATIC_SMEM_LIMIT:
        out.append(f"{res.smem_static} B static shared memory exceed {STATIC_SMEM_LIMIT} B")
    total = res.smem_static + config.dynamic_smem
    if total > SMEM_PER_BLOCK[res.arch]:
        out.append(f"{total} B shared memory exceed {res.arch}'s {SMEM_PER_BLOCK[res.arch]} B")
    return out


def table(rows: list[tuple[KernelConfig, KernelResources | None]]) -> str:
    """The register / shared-memory table, one row per configuration and architecture."""
    head = f"{'kernel configuration':66s} {'arch':6s} {'regs':>5s} {'threads':>7s} " \
           f"{'smem':>7s} {'dyn':>7s} {'stack':>6s} {'spill':>6s}  status"
    lines = [head, "-" * len(head)]
    for config, res in rows:
        bad = problems(config, res)
        if res is None:
            lines.append(f"{config.label:66s} {'?':6s}  " + "; ".join(bad))
            continue
        lines.append(
            f"{config.label:66s} {res.arch:6s} {res.registers:5d} {config.threads:7d} "
            f"{res.smem_static:7d} {config.dynamic_smem:7d} {res.stack_frame:6d} "
            f"{res.spill_stores + res.spill_loads:6d}  {'; '.join(bad) or 'ok'}"
        )
    return "\n".join(lines)


def check_all() -> tuple[list[tuple[KernelConfig, KernelResources | None]], list[str]]:
    """Compile everything; return the table rows and the failures."""
    rows, failures = [], []
    for (source, options), configs in modules().items():
        for arch in ARCHS:
            try:
                compiled = compile_module(source, options, arch)
            except RuntimeError as exc:
                failures.append(str(exc))
                continue
            for config in configs:
                res = compiled.resources.get(config.kernel)
                rows.append((config, res))
                failures.extend(f"{config.label} {arch}: {p}" for p in problems(config, res))
    return rows, failures


def main() -> int:
    rows, failures = check_all()
    print(table(rows))
    for failure in failures:
        print("FAILED", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
