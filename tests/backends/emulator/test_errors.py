"""Errors found while a kernel runs: each raises KernelError naming its kind, the kernel,
the .cu line (found here by its marker comment, never hard-coded), block and thread."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.cuda.emulator import KernelError, RawModule

SOURCE = r"""
#include <cassert>

extern "C" __global__ void divergence(int* out) {
    if (threadIdx.x == 3) return;
    __syncthreads();  // MARK divergence
    out[threadIdx.x] = 1;
}

extern "C" __global__ void different_barriers(int* out) {
    if (threadIdx.x < 32) {
        __syncthreads();  // MARK first-barrier
    } else {
        __syncthreads();  // MARK second-barrier
    }
}

extern "C" __global__ void mixed_votes(int* out) {
    if (threadIdx.x < 16) out[0] = __syncthreads_count(1);  // MARK count
    else __syncthreads();
}

__device__ void helper_sync() {
    __syncwarp();  // MARK helper
}

extern "C" __global__ void deadlock(int* out) {
    if (threadIdx.x == 0) __syncthreads();
    else helper_sync();
}

extern "C" __global__ void source_not_in_mask(int* out) {
    if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0x0000ffffu, (int)threadIdx.x, 20);  // MARK not-in-mask
}

extern "C" __global__ void exited_lane(int* out) {
    if (threadIdx.x == 5) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);  // MARK exited
}

extern "C" __global__ void missing_lane(int* out) {
    out[threadIdx.x] = __ballot_sync(0xffffffffu, 1);  // MARK missing-lane
}

extern "C" __global__ void own_bit(int* out) {
    out[threadIdx.x] = __shfl_down_sync(0xfffffffeu, (int)threadIdx.x, 1);  // MARK own-bit
}

extern "C" __global__ void bad_width(int* out) {
    out[threadIdx.x] = (int)__shfl_xor_sync(0xffffffffu, 1.0f, 1, 12);  // MARK width
}

extern "C" __global__ void mask_mismatch(int* out) {
    const unsigned m = threadIdx.x == 7 ? 0x0000ffffu : 0xffffffffu;
    out[threadIdx.x] = __any_sync(m, 1);  // MARK mask-mismatch
}

extern "C" __global__ void line_mismatch(int* out) {
    if (threadIdx.x < 16) out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);  // MARK line-a
    else out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 2, 1);  // MARK line-b
}

extern "C" __global__ void asserts(const int* x) {
    assert(x[blockIdx.x * blockDim.x + threadIdx.x] >= 0);  // MARK assert
}

extern "C" __global__ void traps(int* out) {
    if (blockIdx.x == 1 && threadIdx.x == 2) __trap();  // MARK trap
}

extern "C" __global__ void fine(int* out) {
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}
"""


def line(marker: str) -> int:
    """Line of SOURCE carrying ``// MARK <marker>``."""
    hits = [i for i, text in enumerate(SOURCE.split("\n"), 1) if text.endswith(f"// MARK {marker}")]
    assert len(hits) == 1, marker
    return hits[0]


@pytest.fixture(scope="module")
def module():
    return RawModule(code=SOURCE, source_name="errors.cu")


def run(module, name, grid=1, block=64, args=None):
    out = np.zeros(4096, np.int32)
    module.get_function(name)(grid, block, args if args is not None else (out,))


@pytest.mark.parametrize("kernel, kind, marker, block, thread, detail", [
    ("divergence", "barrier divergence", "divergence", 64, (0, 0, 0),
     r"63 of 64 threads wait at __syncthreads but 1 have exited \(the first: thread \(3,0,0\)\)"),
    ("different_barriers", "different barriers", "first-barrier", 64, (0, 0, 0),
     rf"thread \(32,0,0\) waits at __syncthreads at errors\.cu:{line('second-barrier')}"),
    ("mixed_votes", "different barriers", "count", 64, (0, 0, 0),
     r"__syncthreads_count waits here while thread \(16,0,0\) waits at __syncthreads"),
    ("deadlock", "deadlock", "helper", 32, (1, 0, 0),
     (r"__syncwarp with mask 0xffffffff waits for lane 0 \(thread \(0,0,0\)\), which waits at "
     r"__syncthreads")),
    ("source_not_in_mask", "inactive lane", "not-in-mask", 32, (0, 0, 0),
     r"__shfl_sync reads lane 20, which is not in the mask 0x0000ffff"),
    ("exited_lane", "inactive lane", "exited", 32, (0, 0, 0),
     r"__shfl_xor_sync with mask 0xffffffff waits for lane 5 \(thread \(5,0,0\)\), which has exited"),
    ("missing_lane", "inactive lane", "missing-lane", 40, (32, 0, 0),
     r"__ballot_sync with mask 0xffffffff names lanes that do not exist: warp 1 has only 8 threads"),
    ("own_bit", "invalid collective", "own-bit", 32, (0, 0, 0),
     r"__shfl_down_sync with mask 0xfffffffe, which does not name the calling lane 0"),
    ("bad_width", "invalid collective", "width", 32, (0, 0, 0),
     r"__shfl_xor_sync with width 12; the width must be a power of 2 from 1 to 32"),
    ("mask_mismatch", "collective mismatch", "mask-mismatch", 32, (0, 0, 0),
     (r"__any_sync with mask 0xffffffff, but lane 7 \(thread \(7,0,0\)\) named in the mask waits "
     r"at __any_sync with mask 0x0000ffff")),
    ("line_mismatch", "collective mismatch", "line-a", 32, (0, 0, 0),
     rf"lane 16 .* waits at __shfl_xor_sync with mask 0xffffffff at errors\.cu:{line('line-b')}"),
])
def test_scheduler_errors(module, kernel, kind, marker, block, thread, detail):
    with pytest.raises(KernelError) as info:
        run(module, kernel, block=block)
    err = info.value
    assert (err.kind, err.kernel, err.file, err.line) == (kind, kernel, "errors.cu", line(marker))
    assert (err.block, err.thread) == ((0, 0, 0), thread)
    assert str(err).startswith(
        f"{kind} in kernel {kernel} at errors.cu:{line(marker)}, block (0,0,0), "
        f"thread ({thread[0]},{thread[1]},{thread[2]}): "
    )
    assert pytest.raises(KernelError, run, module, kernel, block=block).match(detail)


def test_assert_names_the_condition_and_the_thread(module):
    x = np.zeros(4 * 32, np.int32)
    x[2 * 32 + 9] = -1
    with pytest.raises(KernelError) as info:
        run(module, "asserts", grid=4, block=32, args=(x,))
    err = info.value
    assert (err.kind, err.line, err.block, err.thread) == ("assertion failed", line("assert"),
                                                           (2, 0, 0), (9, 0, 0))
    assert "assert(x[blockIdx.x * blockDim.x + threadIdx.x] >= 0) failed" in str(err)


def test_trap(module):
    with pytest.raises(KernelError, match=rf"trap in kernel traps at errors.cu:{line('trap')}, "
                                          r"block \(1,0,0\), thread \(2,0,0\)"):
        run(module, "traps", grid=3, block=8)


def test_an_error_stops_a_large_launch_and_the_next_launch_runs(module, monkeypatch):
    monkeypatch.setenv("ATTNSPEC_EMULATOR_WORKERS", "3")
    with pytest.raises(KernelError, match="barrier divergence"):
        run(module, "divergence", grid=(2**31 - 1,), block=64)  # would take hours to finish
    out = np.zeros(8 * 64, np.int32)
    module.get_function("fine")(8, 64, (out,))
    np.testing.assert_array_equal(out, np.tile(np.arange(64) ^ 1, 8))


def test_errors_are_the_same_under_a_seeded_schedule():
    seeded = RawModule(code=SOURCE, source_name="errors.cu", schedule_seed=5)
    with pytest.raises(KernelError) as info:
        run(seeded, "different_barriers")
    assert info.value.kind == "different barriers"


_DEEP = r"""
extern "C" __global__ void deep(float* out, int n) {
    volatile float big[32768];  // 128 KiB of locals: more than the default 64 KiB stack
    for (int i = 0; i < n; ++i) big[(i * 7919) % 32768] = i;
    out[blockIdx.x * blockDim.x + threadIdx.x] = big[threadIdx.x];
}
extern "C" __global__ void shallow(float* out) { out[threadIdx.x] = 1.0f; }
"""

# Run in a child process: were the overflow to crash the process, it must not take the
# test session with it.
_OVERFLOW_SCRIPT = f"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from backends.cuda.emulator import KernelError, RawModule
module = RawModule(code={_DEEP!r}, source_name="deep.cu")
out = np.zeros(128, np.float32)
try:
    module.get_function("deep")((4,), (32,), (out, np.int32(40000)))
    print("ran", out[33])
except KernelError as err:
    print("error", err.kind, err.block, err.thread, "|", err)
module.get_function("shallow")((1,), (32,), (out,))  # the process and its workers go on
print("alive", out[0])
"""


@pytest.mark.parametrize("stack_kb, expect", [
    ("64", (r"error stack overflow \(0, 0, 0\) \(0, 0, 0\) \| stack overflow in kernel deep: "
            r"thread \(0,0,0\) of block \(0,0,0\) overflowed its 64 KiB stack .* set "
            r"ATTNSPEC_EMULATOR_STACK_KB higher")),
    # with room enough it runs: thread 1 of block 1 reads big[1], last written by this i
    ("256", rf"ran {max(i for i in range(40000) if i * 7919 % 32768 == 1)}\.0"),
], ids=["64KiB-overflows", "256KiB-runs"])
def test_stack_overflow_is_a_kernel_error_not_a_crash(stack_kb, expect, tmp_path):
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "ATTNSPEC_EMULATOR_STACK_KB": stack_kb,
           "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _OVERFLOW_SCRIPT],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          check=False)
    assert done.returncode == 0, done.stderr
    first, last = done.stdout.strip().splitlines()
    assert re.fullmatch(expect, first), first
    assert last == "alive 1.0"
