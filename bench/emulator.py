"""Benchmark: the CUDA emulator's own costs (backends.cuda.emulator).

Run as a script (never collected by pytest: no test_* names):

    python bench/emulator.py            # about ten seconds
    python bench/emulator.py --quick

What it measures, each the best of several repeats:

* **barrier**: one 64-thread block running a loop of ``__syncthreads`` (with a shared
  memory write and read around each, as a tiled kernel has): µs per barrier, and that
  divided by 64, the cost per fiber switch (each barrier switches once per thread).
* **shuffle**: the same block running a loop of ``__shfl_xor_sync``: µs per shuffle.
* **compile**: g++ on a small kernel source with an empty cache (what a cache miss costs).
* **cached load**: a fresh Python process loading a module already in the disk cache
  (``RawModule(...).compile()``, after the imports), and within one process with the
  memo already holding it.
* **launch**: a trivial kernel, one block of 32 threads and 64 blocks of 64 threads,
  on one worker and on the default number of workers.

Times are of this machine's CPU; the emulator's speed says nothing about a GPU's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SOURCE = r"""
extern "C" __global__ void barriers(float* out, int iters) {
    __shared__ float buf[1024];
    float acc = 0.f;
    for (int i = 0; i < iters; ++i) {
        buf[threadIdx.x] = acc + i;
        __syncthreads();
        acc += buf[(threadIdx.x + 1) % blockDim.x];
    }
    out[threadIdx.x] = acc;
}

extern "C" __global__ void shuffles(float* out, int iters) {
    float acc = threadIdx.x;
    for (int i = 0; i < iters; ++i) acc += __shfl_xor_sync(0xffffffffu, acc, i & 31);
    out[threadIdx.x] = acc;
}

extern "C" __global__ void trivial(float* out) {
    out[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}
"""

_LOAD_SNIPPET = r"""
import sys, time
sys.path.insert(0, {root!r})
from backends.cuda.emulator import RawModule
source = open({source!r}).read()
t = time.perf_counter()
RawModule(code=source, source_name="bench.cu").compile()
print(time.perf_counter() - t)
"""


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations and repeats")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    from backends.cuda.emulator import RawModule

    iters, repeats = (2_000, 3) if args.quick else (20_000, 7)
    rows: list[tuple[str, str, str]] = []

    with tempfile.TemporaryDirectory() as cache:
        os.environ["ATTNSPEC_CACHE_DIR"] = cache
        t = time.perf_counter()
        module = RawModule(code=SOURCE, source_name="bench.cu")
        module.compile()
        rows.append(("compile (g++, cache miss)", f"{(time.perf_counter() - t) * 1e3:.0f} ms",
                     "3 small kernels"))

        out = np.zeros(1024, np.float32)
        barriers = module.get_function("barriers")
        shuffles = module.get_function("shuffles")
        trivial = module.get_function("trivial")
        os.environ["ATTNSPEC_EMULATOR_WORKERS"] = "1"
        for threads in (64, 256):
            barriers(1, threads, (out, np.int32(10)))
            sec = best(lambda t=threads: barriers(1, t, (out, np.int32(iters))), repeats)
            per = sec / iters
            rows.append((f"__syncthreads, {threads} threads", f"{per * 1e6:.2f} µs",
                         f"{per / threads * 1e9:.1f} ns per fiber switch"))
        sec = best(lambda: shuffles(1, 64, (out, np.int32(iters))), repeats)
        rows.append(("__shfl_xor_sync, 64 threads", f"{sec / iters * 1e6:.2f} µs",
                     f"{sec / iters / 64 * 1e9:.1f} ns per thread"))

        with tempfile.NamedTemporaryFile("w", suffix=".cu", delete=False) as f:
            f.write(SOURCE)
        snippet = _LOAD_SNIPPET.format(root=str(ROOT), source=f.name)
        loads = [float(subprocess.run([sys.executable, "-c", snippet], capture_output=True,
                                      text=True, check=True, env=os.environ).stdout)
                 for _ in range(3 if args.quick else 5)]
        os.unlink(f.name)
        rows.append(("cached load, fresh process", f"{min(loads) * 1e3:.1f} ms",
                     "hash + g++ --version + dlopen"))
        sec = best(lambda: RawModule(code=SOURCE, source_name="bench.cu").compile(), repeats)
        rows.append(("cached load, same process", f"{sec * 1e3:.2f} ms", "hash + memo"))

        workers = os.cpu_count() or 1
        for w in (1, workers):
            os.environ["ATTNSPEC_EMULATOR_WORKERS"] = str(w)
            for grid, block in ((1, 32), (64, 64)):
                dst = np.zeros(grid * block, np.float32)
                trivial(grid, block, (dst,))  # warm-up: workers and their stacks exist after it
                sec = best(lambda g=grid, b=block, d=dst: trivial(g, b, (d,)), repeats * 10)
                rows.append((f"launch trivial, {grid}x{block}, {w} worker(s)",
                             f"{sec * 1e6:.0f} µs", ""))

    print(f"CUDA emulator costs on this CPU ({os.cpu_count()} cores)\n")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>10}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
