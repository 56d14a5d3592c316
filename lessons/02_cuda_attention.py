# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 02 — FlashAttention as a CUDA kernel
#
# Lesson 01 derived FlashAttention's forward pass, the online softmax over key tiles,
# and read it in the spec (`spec.attention.tiled.flash_forward`). This lesson reads the
# **same algorithm written as CUDA C**, `backends/cuda/attention.cu`, in three versions
# that differ only in *who computes what, and where the data sits while they do*. We
# run all three (on a GPU if there is one, otherwise on the project's CPU emulator,
# which executes the unmodified `.cu` file), step through one query row as the kernel
# computes it, let the emulator catch a classic synchronisation bug, read the
# compiler's register report, and do the napkin math of a realistic problem. At the
# end you write a warp's share of the work twice, in NumPy and in CUDA C, and the
# project's conformance test judges both.
#
# Nothing here re-implements the spec or the kernels: we import them, print them from
# their files, and run them.
#
# **Modes.** With `ATTNSPEC_LESSON_MODE=small` (what CI sets) every size shrinks so the
# whole notebook runs in well under a minute on two CPU cores without a GPU; by default
# the sizes are bigger and the compiler report covers every configuration (a few
# minutes).

# %%
# %matplotlib inline
import contextlib
import math
import os
import re
import string
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def find_repo_root(start: Path) -> Path:
    """The attnspec checkout that contains ``start``: lessons run from inside it."""
    for folder in (start, *start.parents):
        if (folder / "spec" / "attention").is_dir() and (folder / "tests" / "strategies.py").is_file():
            return folder
    raise RuntimeError(
        f"{start} is not inside an attnspec checkout; open this lesson from the "
        "repository's lessons/ folder"
    )


ROOT = find_repo_root(Path.cwd().resolve())
# `tests` (the strategies and conformance checks the exercises use) is not installed,
# and this notebook may run where the package is not either: put the checkout first on
# the path.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backends.lesson_kit import check_name, check_on_problems, show_source  # noqa: E402

SMALL = os.environ.get("ATTNSPEC_LESSON_MODE", "").lower() == "small"
if SMALL:
    # the problem every version runs on (section 5)
    RUN_SHAPE = {"B": 1, "H": 4, "G": 2, "T": 45, "S": 77, "D": 24, "E": 16}
    GATE_HEAD_DIMS, GATE_ARCHS = (32,), ("sm_90",)  # compiler report: one configuration
    HYPOTHESIS_EXAMPLES = 10  # drawn problems per exercise check
else:
    RUN_SHAPE = {"B": 2, "H": 4, "G": 2, "T": 200, "S": 333, "D": 64, "E": 64}
    GATE_HEAD_DIMS, GATE_ARCHS = None, None  # every configuration the launcher uses
    HYPOTHESIS_EXAMPLES = 60

from backends.cuda import attention as cuda_attention  # noqa: E402  (the launcher)
from spec.attention import naive, tiled  # noqa: E402

CUDA_DIR = ROOT / "backends" / "cuda"
ATTENTION_CU = CUDA_DIR / "attention.cu"
LESSON_START = time.perf_counter()
print(f"repository: {ROOT}\nmode: {'small' if SMALL else 'default'}")

# %% [markdown]
# ## 1. The question
#
# Open `backends/cuda/attention.cu` and the algorithm of lesson 01 is hard to see:
# `threadIdx`, `blockIdx`, `__shared__`, `__syncthreads()`, `__shfl_xor_sync`, padded
# strides, `float4`. Why does a GPU kernel look like this, and what do threads, warps
# and shared memory have to do with the tiles of FlashAttention?
#
# The short answer: a GPU runs a **grid** of **blocks**; each block is a group of
# threads that run on one streaming multiprocessor (SM), share a small, fast
# **shared memory** and can wait for each other at a barrier (`__syncthreads()`). The
# threads of a block are executed in **warps** of 32 that issue one instruction
# together, and the 32 **lanes** of a warp can read each other's registers directly
# (`__shfl_*_sync`). Each thread has its own **registers**, the fastest storage there
# is, and all of them share the large, slow **global memory** (HBM). A tile in
# FlashAttention is exactly "what fits in the fast memory of one group of threads";
# the three versions of the kernel are three answers to "which group?".
#
# The budgets that shape every decision below, as the project's compile gate
# (`backends/cuda/nvrtc_check.py`) and NVIDIA's programming guide state them for the
# two architectures the gate targets (A100 = sm_80, H100/H200 = sm_90):

# %%
from backends.cuda import nvrtc_check  # noqa: E402

# Per SM, from the CUDA C++ Programming Guide, "Technical Specifications per Compute
# Capability" (8.0 and 9.0): resident threads, resident blocks, shared memory per SM.
SM_LIMITS = {
    "sm_80": {"threads": 2048, "blocks": 32, "smem": 164 * 1024},
    "sm_90": {"threads": 2048, "blocks": 32, "smem": 228 * 1024},
}
WARP = 32
print(f"lanes per warp                   {WARP}")
print(f"32-bit registers per SM          {nvrtc_check.REGISTER_FILE}")
print(f"registers per thread, at most    {nvrtc_check.MAX_REGISTERS}")
print(f"static shared memory per block   {nvrtc_check.STATIC_SMEM_LIMIT // 1024} KiB")
for arch, limits in SM_LIMITS.items():
    print(f"{arch}: shared memory per block {nvrtc_check.SMEM_PER_BLOCK[arch] // 1024} KiB "
          f"(opt-in), per SM {limits['smem'] // 1024} KiB; {limits['threads']} resident "
          f"threads = {limits['threads'] // WARP} warps per SM")
threads_sm = SM_LIMITS["sm_90"]["threads"]
print(f"registers per thread with all {threads_sm} threads of an SM resident: "
      f"{nvrtc_check.REGISTER_FILE // threads_sm}")

# %% [markdown]
# Registers are plentiful in total but scarce per thread: if an SM is to hold as many
# threads as it can, each gets only the register file divided by the thread count (the
# last line). Keep that quotient in mind for section 7.
#
# ## 2. The math, once more
#
# For one query row with scores $x_s = \mathrm{scale}\, q\cdot k_s + \mathrm{bias}_s$
# over the visible keys, FlashAttention-2 (Dao, 2023, Algorithm 1) walks over key
# tiles $j$ and keeps a running maximum $m$, denominator $\ell$ and unnormalised
# output $\tilde o$:
#
# $$
# m' = \max\big(m, \max_{s\in j} x_s\big),\quad
# \alpha = e^{m - m'},\quad
# p_s = e^{x_s - m'},\quad
# \ell' = \alpha\,\ell + \sum_{s \in j} p_s,\quad
# \tilde o' = \alpha\,\tilde o + \sum_{s\in j} p_s\, v_s ,
# $$
#
# and finishes with $o = \tilde o/\ell$, $\mathrm{lse} = m + \log \ell$ (a row that saw
# no visible key: $o = 0$, $\mathrm{lse} = -\infty$). Rows never interact, and the
# result does not depend on how the keys are cut into tiles (lesson 01 checked both).
# Those two facts are the kernel's freedom: any assignment of rows to threads, and
# any tile width, computes the same thing.
#
# ## 3. Read the spec
#
# The spec's loop over key tiles, printed from its source; every line of the kernels
# below maps to one of these.

# %%
show_source(tiled.flash_forward, start="for s0 in range", stop="m_BHC = m_new_BHC")

# %% [markdown]
# The spec works on a whole `(B, H, tile_t)` block of rows at once with NumPy
# operations. A kernel has to say which thread does each of those operations, and
# where each operand lives while it does.
#
# ## 4. Read the kernel
#
# `attention.cu` starts with a header comment that names the spec function it mirrors
# and what each version changes. The part about the versions:

# %%
def show_cu(path: Path, start: str, stop: str | None = None) -> None:
    """Print lines of a CUDA source, numbered, from the first line containing ``start``
    through the first later line containing ``stop`` (default: the function's closing
    brace, a line that is exactly ``}``). Reads the file as it is now, so the lesson
    never shows a stale copy; a marker that is gone is reported, not guessed."""
    lines = path.read_text().splitlines()
    i = next((n for n, line in enumerate(lines) if start in line), None)
    if i is None:
        print(f"({start!r} is no longer in {path.name}: the file changed since this lesson "
              "was written; read it in full)")
        return
    if stop is None:
        j = next((n for n in range(i + 1, len(lines)) if lines[n] == "}"), len(lines) - 1)
    else:
        j = next((n for n in range(i + 1, len(lines)) if stop in lines[n]), len(lines) - 1)
    print(f"// {path.relative_to(ROOT)}, lines {i + 1}-{j + 1}")
    for n in range(i, j + 1):
        print(f"{n + 1:4d}  {lines[n]}")


show_cu(ATTENTION_CU, "// Versions", "// Every version moves")

# %% [markdown]
# All three share the semantics (bottom-right causal mask, GQA, bias, mask, empty
# rows) through `attention_common.cuh`: a `ScoreRule` that turns a dot product into a
# score and says whether the key is visible, and the running statistics of one row.
# Here are the statistics and the two guards against `-inf − (-inf) = NaN` that the
# spec's `m_safe` and `l_safe` are:

# %%
show_cu(CUDA_DIR / "attention_common.cuh", "// The running statistics")
show_cu(CUDA_DIR / "attention_common.cuh", "// o = Õ / l; an empty row")

# %% [markdown]
# ### v1: one thread per query row
#
# The most direct translation: the grid is `(row blocks, H, B)`, each thread owns one
# query row `t` and runs the spec's loop for that row alone, in registers: `acc` is
# $\tilde o$ (a `HEAD_DIM`-long array, which is why the head dimension is a
# compile-time macro: only arrays with a fixed size and fully unrolled indices can live
# in registers), `r` holds $m$ and $\ell$, and `x` the scores of `KEYS_V1` keys at a
# time. `online_step` is the body of the spec's loop:

# %%
show_cu(ATTENTION_CU, "// One online-softmax step")
show_cu(ATTENTION_CU, "attention_forward_v1(KERNEL_PARAMS)")

# %% [markdown]
# Read it against the spec: `s_end = rule.key_end(t + 1)` is the causal skip
# (`_tile_is_future`), the `x[j]` loop is `_score_tile` for one row, `online_step` is
# $m', \alpha, p, \ell'$, and the `acc[e]` loop is $\tilde o' = \alpha\tilde o + PV$.
#
# The flaw is in the memory traffic: every thread reads **every** key and value of its
# head from global memory. The 32 threads of a warp read the same `k` element at the
# same time (the hardware merges those into one request, and the caches catch much of
# the rest), but nothing makes the reuse explicit.
#
# ### v2: a block of rows shares K/V tiles in shared memory
#
# v2 keeps v1's thread-per-row arithmetic and changes *where k and v come from*: the
# block's `ROWS_V2` threads first copy a tile of `KEYS_V2` keys and values into
# shared memory together (`load_rows`, each thread a strided share), wait at a
# barrier, and then all compute from the shared copy. A K/V element now leaves global
# memory once per **block** instead of once per **row**. The price is the barriers,
# and with them a rule: every thread of the block must reach every `__syncthreads()`,
# including threads whose row lies past the end of the sequence (`has_row` is false),
# which is why they `continue` *after* the barriers instead of returning early as v1's
# do.
#
# v2 also moves each thread's own rows — q, the running $\tilde o$ and the tile's P —
# into shared memory (each padded by one float so that the 32 rows a warp touches fall
# in 32 different banks), and keeps only the tile's $PV$ in registers. Its loops over
# keys are then ordinary loops: nothing forces the compiler to unroll `KEYS_V2 ×
# HEAD_DIM` multiply-adds (a first version that held P in registers did, and was by far
# the slowest kernel of the family to compile).

# %%
show_cu(ATTENTION_CU, "extern \"C\" __global__ void __launch_bounds__(ROWS_V2)", "if (!has_row) continue;")

# %% [markdown]
# ### v3: a warp computes a tile together, lane j owns key j
#
# In v1 and v2 a thread computes a whole row of scores by itself, one key after
# another. v3 turns the tile around: a **warp** takes `ROWS_PER_WARP_V3` rows, and
# in each tile of 32 keys **lane j computes the scores of key j** for all of them.
# The row statistics then need values from all 32 lanes, and the warp exchanges them
# in registers with butterfly shuffles: five `__shfl_xor_sync` steps (offsets 16, 8,
# 4, 2, 1) leave the maximum, or the sum, in *every* lane.

# %%
show_cu(ATTENTION_CU, "__device__ __forceinline__ float warp_max")
show_cu(ATTENTION_CU, "__device__ __forceinline__ float warp_sum")
show_cu(ATTENTION_CU, "// lane j: q·k_j for each", "acc[i][c] = alpha[i] * acc[i][c] + pv[i][c];")

# %% [markdown]
# For $P V$ the roles flip again: the output row has E columns, and **lane `l` owns
# the columns `e = l + 32c`** (`E_CHUNKS = HEAD_DIM / 32` of them). To add
# $p_j v_j[e]$ it needs $p_j$, which lives in lane j's register: `__shfl_sync(FULL_MASK,
# p[i], j)` broadcasts it to the whole warp, one key at a time, while each lane reads
# its own columns of $v_j$ from shared memory. No thread ever holds a whole output
# row, and no shared memory is needed for P.
#
# Who computes what, for v3, in one picture: left, one head's score matrix, cut into
# the row blocks of the grid (`blockIdx.x`) and the key tiles a block walks through;
# middle, one (block, key tile) pair: rows belong to warps, columns (keys) to lanes;
# right, the block's output tile: rows to warps, columns to lanes.

# %%
def v3_mapping_figure(T: int, S: int, E: int, block: int, tile: int):
    """Who computes what in attention_forward_v3, for one head of T queries and S keys.

    Every size comes from the launcher's constants (WARPS_V3, ROWS_PER_WARP_V3,
    KEYS_V3); ``block`` and ``tile`` pick the (row block, key tile) pair to zoom in on.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    warps, rows_per_warp, keys = (cuda_attention.WARPS_V3, cuda_attention.ROWS_PER_WARP_V3,
                                  cuda_attention.KEYS_V3)
    rows = warps * rows_per_warp
    n_blocks = -(-T // rows)
    fig = Figure(figsize=(13, 4.4), dpi=100, layout="constrained")
    ax_grid, ax_tile, ax_out = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.5]})

    # the score matrix of one head: row blocks (blockIdx.x) × key tiles (the loop)
    block_TS = np.repeat(np.arange(n_blocks), rows)[:T, None] * np.ones((1, S))
    ax_grid.imshow(block_TS, cmap="Pastel1", aspect="auto", interpolation="nearest")
    for s0 in range(keys, S, keys):
        ax_grid.axvline(s0 - 0.5, color="grey", lw=0.5)
    for t0 in range(rows, T, rows):
        ax_grid.axhline(t0 - 0.5, color="black", lw=1)
    ax_grid.add_patch(Rectangle((tile * keys - 0.5, block * rows - 0.5), keys, rows,
                                fill=False, ec="red", lw=2))
    ax_grid.set_yticks([i * rows + rows / 2 - 0.5 for i in range(n_blocks)],
                       [f"block {i}" for i in range(n_blocks)])
    ax_grid.set(title=f"one head: a block per {rows} query rows\n(grid = ({n_blocks}, H, B)), "
                f"each walks the key tiles", xlabel=f"key s (tiles of {keys})")

    # one (block, key tile): row i of the block belongs to warp i // rows_per_warp,
    # key j of the tile to lane j
    warp_RC = np.repeat(np.arange(warps), rows_per_warp)[:, None] * np.ones((1, keys))
    ax_tile.imshow(warp_RC, cmap=ListedColormap(["#8dd3c7", "#ffffb3", "#bebada", "#fb8072",
                                                 "#80b1d3", "#fdb462", "#b3de69", "#fccde5"][:warps]),
                   aspect="auto", interpolation="nearest")
    for j in range(1, keys):
        ax_tile.axvline(j - 0.5, color="white", lw=0.4)
    for w in range(warps):
        ax_tile.text(keys / 2 - 0.5, w * rows_per_warp + rows_per_warp / 2 - 0.5,
                     f"warp {w}: rows {w * rows_per_warp}–{(w + 1) * rows_per_warp - 1}",
                     ha="center", va="center", fontsize=8,
                     bbox={"facecolor": "white", "alpha": 0.7, "lw": 0})
    ax_tile.set_xticks([0, 8, 16, 24, keys - 1])
    ax_tile.set(title=f"block {block}, key tile {tile} (red): score(row, key)\n"
                f"is computed by warp (row // {rows_per_warp}) and lane (= key)",
                xlabel="key in the tile = lane", ylabel="row in the block")

    # the block's output tile: column e owned by lane e % 32 (chunk c = e // 32)
    lane_RE = (np.arange(E) % WARP)[None, :] * np.ones((rows, 1))
    image = ax_out.imshow(lane_RE, cmap="viridis", aspect="auto", interpolation="nearest")
    for c in range(WARP, E, WARP):
        ax_out.axvline(c - 0.5, color="white", lw=2)
    for w in range(1, warps):
        ax_out.axhline(w * rows_per_warp - 0.5, color="white", lw=2)
    ax_out.set_xticks([c * WARP + WARP / 2 - 0.5 for c in range(-(-E // WARP))],
                      [f"chunk {c}\ne = lane + {32 * c}" for c in range(-(-E // WARP))])
    ax_out.set_yticks([w * rows_per_warp + rows_per_warp / 2 - 0.5 for w in range(warps)],
                      [f"warp {w}" for w in range(warps)])
    ax_out.set(title=f"output Õ of block {block} (E = {E}): each warp its rows,\n"
               "in each row, lane l the columns l + 32c")
    fig.colorbar(image, ax=ax_out, label="lane", ticks=[0, 8, 16, 24, 31])
    return fig


v3_mapping_figure(T=4 * cuda_attention.WARPS_V3 * cuda_attention.ROWS_PER_WARP_V3,
                  S=4 * cuda_attention.KEYS_V3, E=128, block=1, tile=2)

# %% [markdown]
# The launcher (`backends/cuda/attention.py`) holds the constants this picture was
# drawn from, and launches each version with them. For a head of T = 4096 queries and
# D = E = 128 the launch configurations are:

# %%
T_example, head_dim_example = 4096, 128
print(f"{'version':8} {'threads/block':>13} {'rows/block':>10} {'blocks per head':>15} "
      f"{'keys/tile':>9} {'dynamic smem':>13}   a score is computed by")
for version, rows, keys, who in (
    ("v1", cuda_attention.ROWS_V1, cuda_attention.KEYS_V1, "one thread, for its own row"),
    ("v2", cuda_attention.ROWS_V2, cuda_attention.KEYS_V2, "one thread, for its own row"),
    ("v3", cuda_attention.WARPS_V3 * cuda_attention.ROWS_PER_WARP_V3, cuda_attention.KEYS_V3,
     "lane j of the row's warp, for key j"),
):
    config = cuda_attention.KERNELS[(version, head_dim_example)]
    print(f"{version:8} {config.threads:>13} {rows:>10} {-(-T_example // rows):>15} {keys:>9} "
          f"{config.dynamic_smem:>10} B   {who}")

# %% [markdown]
# The same folder has two more attention kernel families, written separately: the
# backward pass (`attention_backward.cu`, FlashAttention-2 Algorithm 2, launched by
# `attention_backward.py`) and a tensor-core forward for float16/bfloat16
# (`attention_tc`, which needs a GPU: the emulator has no tensor cores). This lesson
# does not depend on them; what exists in this checkout right now:

# %%
from backends.cuda import FAMILIES  # noqa: E402

for family in FAMILIES:
    have = [f"{family}{ext}" for ext in (".cu", ".py") if (CUDA_DIR / f"{family}{ext}").is_file()]
    print(f"  {family:20} {', '.join(have) or '(not written yet)'}")

# %% [markdown]
# ## 5. Run it
#
# Which engine runs a CUDA backend is always explicit, set by the environment variable
# `ATTNSPEC_CUDA`:
#
# * unset or `cupy`: a GPU through CuPy (NVRTC compiles the `.cu` file at the first
#   call); with no usable GPU that is an error, never a silent fallback;
# * `emulator`: the CPU emulator (`backends/cuda/emulator`), which compiles the same
#   `.cu` file with g++ against a header that implements CUDA's threads as fibers,
#   barriers and shuffles as scheduler operations, and shared memory per block.
#
# `backends.cuda.emulate_if_no_gpu()` sets `ATTNSPEC_CUDA=emulator` where no engine was
# chosen and no GPU is usable, and returns the engine; a choice made outside is kept.

# %%
from backends.cuda import emulate_if_no_gpu  # noqa: E402
from spec.tolerance import compare, oracle_dtype  # noqa: E402

engine = emulate_if_no_gpu()
print(f"ATTNSPEC_CUDA={os.environ.get('ATTNSPEC_CUDA', '(unset)')} -> engine: {engine}")
if engine == "emulator":
    print("no GPU here: the kernels run on the CPU emulator (correct results, meaningless times)")

# %% [markdown]
# Every version on one problem with everything switched on: grouped-query attention,
# a causal mask with S ≠ T, a per-head bias and a per-key mask. Each output is judged
# against the float64 oracle by the project's tolerance policy (`spec.tolerance`):
# error at most twice that of the spec run in float32, plus one rounding step.

# %%
rng = np.random.default_rng(0)
B, H, G, T, S, D, E = (RUN_SHAPE[n] for n in "BHGTSDE")
q = rng.standard_normal((B, H, T, D)).astype(np.float32)
k = rng.standard_normal((B, G, S, D)).astype(np.float32)
v = rng.standard_normal((B, G, S, E)).astype(np.float32)
bias = rng.standard_normal((1, H, T, S)).astype(np.float32)
mask = rng.random((B, 1, 1, S)) < 0.9
options = {"causal": True, "bias": bias, "mask": mask}

wide = oracle_dtype(np.float32)
oracle = naive.attention(q.astype(wide), k.astype(wide), v.astype(wide), causal=True,
                         bias=bias.astype(wide), mask=mask)
baseline = tiled.flash_forward(q, k, v, **options)  # the spec, in float32
print(f"B={B} H={H} G={G} T={T} S={S} D={D} E={E}, causal, bias, mask; oracle in {wide}")
outputs = {}
for version in cuda_attention.VERSIONS:
    t0 = time.perf_counter()
    outputs[version] = out = cuda_attention.flash_forward(q, k, v, version=version, **options)
    seconds = time.perf_counter() - t0
    line = []
    for name, got, want, base in zip(("o", "lse"), out, oracle, baseline):
        report = compare(got, want, base)
        assert report.ok, report.message(f"{version} {name}")
        line.append(f"{name}: err {report.err:.1e} (bound {report.bound:.1e})")
    print(f"  {version}  " + "   ".join(line) + f"   [{seconds * 1e3:.0f} ms on {engine}]")
print(f"largest difference between versions: "
      f"{max(np.abs(outputs[a].o_BHTE - outputs[b].o_BHTE).max() for a in outputs for b in outputs):.1e}")

# %% [markdown]
# All three pass, and they need not be bit-identical (the last line printed says by
# how much they differ): v1 steps through `KEYS_V1` keys at a time, v2 through
# `KEYS_V2`, v3 through 32, so the rescalings group the sums differently, and v3 adds
# a tile's $p$ by a butterfly across lanes instead of in the order of the keys. The
# tolerance policy is what makes "correct" precise despite that. (On the emulator the
# milliseconds say nothing about a GPU; section 9 shows what a GPU measured, where one
# did.)
#
# ## 6. Step through the kernel
#
# A GPU gives you no debugger in a notebook, but a kernel can `printf`, and on the
# emulator its output comes back to the host after the launch. Below is a small
# **teaching kernel**, not part of the project: v3's per-warp statistics alone, one warp
# per row, one key per lane, using the same helpers from `attention_common.cuh`. Lane
# 0 of each warp prints the running $(m, \ell)$ after every tile, and a few lanes say
# which key they hold in the first tile. Teaching kernels are built with the emulator's
# `RawKernel` (CuPy's API), so they run on the CPU even where a GPU exists: the
# captured `printf` and the strict checks of this section are the emulator's.

# %%
from backends.cuda.emulator import KernelError, RawKernel  # noqa: E402

INCLUDE = (f"-I{CUDA_DIR}", "--fmad=false")  # where attention_common.cuh lives; round as the GPU does

TRACE_CU = r"""
#include "attention_common.cuh"

__device__ float warp_max(float x) {
    for (int offset = 16; offset > 0; offset >>= 1)
        x = nan_max(x, __shfl_xor_sync(FULL_MASK, x, offset));
    return x;
}

__device__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x = x + __shfl_xor_sync(FULL_MASK, x, offset);
    return x;
}

// One warp per row of the given scores x_TS, one key per lane; lane 0 prints the
// running (m, l) after every tile of 32 keys.
extern "C" __global__ void trace_row_stats(const float* x_TS, float* m_T, float* l_T, int T, int S) {
    const int lane = threadIdx.x, warp = threadIdx.y;
    const int t = blockIdx.x * blockDim.y + warp;
    if (t >= T) return;  // the whole warp leaves together: no barrier or shuffle is skipped
    RowState r{neg_inf(), 0.0f};
    for (int s0 = 0, tile = 0; s0 < S; s0 += 32, ++tile) {
        const int s = s0 + lane;
        const float x = s < S ? x_TS[(long long)t * S + s] : neg_inf();
        if (blockIdx.x == 0 && warp == 0 && tile == 0 && (lane < 2 || lane == 31))
            printf("block %d warp %d lane %2d tile %d: holds key %d, score %.4f\n",
                   blockIdx.x, warp, lane, tile, s, x);
        // m' = max(m, rowmax),  l' = exp(m - m') l + rowsum(exp(x - m'))
        const float m_new = nan_max(r.m, warp_max(x));
        const float shift = safe_shift(m_new);
        r.l = expf(r.m - shift) * r.l + warp_sum(expf(x - shift));
        r.m = m_new;
        if (lane == 0)
            printf("block %d warp %d lane %2d tile %d: m = %.6f  l = %.6f\n",
                   blockIdx.x, warp, lane, tile, r.m, r.l);
    }
    if (lane == 0) {
        m_T[t] = r.m;
        l_T[t] = r.l;
    }
}
"""


@contextlib.contextmanager
def c_stdout():
    """Collect what C code writes to file descriptor 1 (the kernels' printf) as lines.

    A notebook shows what Python prints, not what a shared library writes to the
    process's stdout, so the descriptor is pointed at a temporary file meanwhile.
    """
    lines: list[str] = []
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        try:
            yield lines
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            capture.seek(0)
            lines.extend(capture.read().decode().splitlines())


TRACE_WARPS = 2  # warps (= rows) per block
T_trace, S_trace = 3, 100  # 3 rows: block 0 has warps 0 and 1, block 1 warp 0 (its warp 1 has no row)
score_TS = (1.5 * rng.standard_normal((T_trace, S_trace))
            + np.linspace(0.0, 4.0, S_trace)).astype(np.float32)  # an upward drift moves m
trace_grid = (-(-T_trace // TRACE_WARPS),)


def run_trace(schedule_seed=None) -> tuple[list[str], np.ndarray, np.ndarray]:
    kernel = RawKernel(TRACE_CU, "trace_row_stats", options=INCLUDE, source_name="trace_row_stats.cu",
                       schedule_seed=schedule_seed)
    m_T = np.full(T_trace, np.nan, np.float32)
    l_T = np.full(T_trace, np.nan, np.float32)
    with c_stdout() as printed:
        kernel(trace_grid, (WARP, TRACE_WARPS), (score_TS, m_T, l_T, np.int32(T_trace), np.int32(S_trace)))
    return printed, m_T, l_T


printed, m_T, l_T = run_trace()
print(f"grid {trace_grid}, block ({WARP}, {TRACE_WARPS}): the kernel printed")
print("\n".join("  " + line for line in printed))

# %% [markdown]
# Blocks run on different worker threads of the emulator (as on different SMs of a
# GPU), so lines of different blocks may interleave in any order; within a block,
# warp 0 and warp 1 alternate, because every shuffle is a point where a warp waits
# for its 32 lanes and the emulator runs the next fiber meanwhile.
#
# Now check the printed state against the definition: after tile j, $m$ is the
# maximum of the first 32(j + 1) scores of the row and $\ell = \sum e^{x_s - m}$
# over them.

# %%
STATE = re.compile(r"block (\d+) warp (\d+) lane\s+(\d+) tile (\d+): m = (\S+)\s+l = (\S+)")
state = {}  # (row, tile) -> (m, l) as printed
for line in printed:
    if match := STATE.search(line):
        blk, warp, _, tile = (int(g) for g in match.groups()[:4])
        state[(blk * TRACE_WARPS + warp, tile)] = (float(match[5]), float(match[6]))

n_tiles = -(-S_trace // WARP)
assert sorted(state) == [(t, j) for t in range(T_trace) for j in range(n_tiles)], sorted(state)
print(f"{'row':>3} {'tile':>4} {'keys seen':>9} {'m printed':>10} {'m defined':>10} "
      f"{'l printed':>10} {'l defined':>10}")
worst = 0.0
for t in range(T_trace):
    for j in range(n_tiles):
        seen = score_TS[t, : min(WARP * (j + 1), S_trace)].astype(np.float64)
        m_def = seen.max()
        l_def = np.exp(seen - m_def).sum()
        m_print, l_print = state[(t, j)]
        worst = max(worst, abs(m_print - m_def), abs(l_print - l_def) / l_def)
        print(f"{t:>3} {j:>4} {seen.size:>9} {m_print:>10.6f} {m_def:>10.6f} {l_print:>10.6f} {l_def:>10.6f}")
print(f"largest difference (absolute for m, relative for l): {worst:.1e}")
assert worst < 1e-5  # float32 arithmetic, printed with 6 decimals

# %% [markdown]
# The teaching kernel is ours; does the project's real kernel hold the same state? We
# cannot print from inside `attention.cu`, but we do not need to: running the real v3
# on the **first j tiles of keys** leaves exactly the state after j tiles, and its
# `lse` output is $m + \log \ell$ of that state. To hand the kernel our scores we use
# lesson 01's trick: a query of zeros scores 0 against every key, so with `bias` set
# to the row, the kernel's scores *are* the row.

# %%
t_row = 0
print(f"row {t_row}:  {'tile':>4} {'m + log l (printf)':>19} {'lse of v3 on the first tiles':>29}")
for j in range(n_tiles):
    end = min(WARP * (j + 1), S_trace)
    zeros = np.zeros((1, 1, end, 1), np.float32)
    lse_kernel = cuda_attention.flash_forward(
        np.zeros((1, 1, 1, 1), np.float32), zeros, zeros,
        bias=score_TS[None, None, t_row : t_row + 1, :end], version="v3",
    ).lse_BHT[0, 0, 0]
    m_print, l_print = state[(t_row, j)]
    print(f"        {j:>4} {m_print + math.log(l_print):>19.6f} {lse_kernel:>29.6f}")
    assert abs(lse_kernel - (m_print + math.log(l_print))) < 1e-5 * max(1.0, abs(lse_kernel))

# %% [markdown]
# **Order does not matter — and the emulator can prove it.** CUDA promises nothing
# about the order in which threads and blocks run. The emulator runs them in thread
# order unless given a `schedule_seed` (or `ATTNSPEC_EMULATOR_SEED`), which shuffles
# that order reproducibly; code that depends on an order CUDA does not promise (a
# missing barrier, say) then gives different results. The teaching kernel, shuffled:

# %%
printed_seeded, m_seeded, l_seeded = run_trace(schedule_seed=7)


def warp_tile_order(lines: list[str], block: int = 0) -> list[tuple[int, int]]:
    """(warp, tile) of each state line block ``block`` printed, in the order printed."""
    return [(int(m[2]), int(m[4])) for m in map(STATE.search, lines) if m and int(m[1]) == block]


print("block 0, (warp, tile) in the order printed, thread order: ", warp_tile_order(printed))
print("block 0, (warp, tile) in the order printed, schedule_seed=7:", warp_tile_order(printed_seeded))
print("same m and l:", np.array_equal(m_T, m_seeded) and np.array_equal(l_T, l_seeded))
assert np.array_equal(m_T, m_seeded) and np.array_equal(l_T, l_seeded)

# %% [markdown]
# **A classic bug, caught.** Remember v2's rule: every thread of a block must reach
# every `__syncthreads()`. Here is the bug it prevents, in a tiny kernel of its own:
# each thread puts one value into shared memory, waits, and reads its neighbour's. The
# barrier sits inside `if (t < T)`, so in the last block the threads past the end skip
# it. On a GPU this is undefined behaviour: it may hang, or seem to work and read
# garbage on another GPU or driver. The emulator refuses it and names the line:

# %%
NEIGHBOUR_CU = r"""
extern "C" __global__ void neighbour_sum(const float* x, float* y, int T) {
    __shared__ float tile[64];
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < T) {
        tile[threadIdx.x] = x[t];
        __syncthreads();  // BUG: threads with t >= T never get here
        y[t] = tile[threadIdx.x] + tile[(threadIdx.x + 1) % 64];
    }
}
"""
x_T = np.arange(100, dtype=np.float32)
y_T = np.zeros_like(x_T)
buggy = RawKernel(NEIGHBOUR_CU, "neighbour_sum", source_name="neighbour_sum.cu")
try:
    buggy((2,), (64,), (x_T, y_T, np.int32(x_T.size)))
    raise AssertionError("the emulator should have refused this kernel")
except KernelError as exc:
    print(f"KernelError: {exc}\n")
    print(f"{exc.file}:{exc.line}:  {NEIGHBOUR_CU.splitlines()[exc.line - 1].strip()}")
    assert exc.kind == "barrier divergence" and "__syncthreads" in NEIGHBOUR_CU.splitlines()[exc.line - 1]

# %% [markdown]
# The fix is v2's pattern: every thread takes part in the load (a thread without an
# element writes a neutral value) and meets the barrier; only the work on a row is
# guarded.

# %%
fixed = RawKernel(NEIGHBOUR_CU.replace(
    """    if (t < T) {
        tile[threadIdx.x] = x[t];
        __syncthreads();  // BUG: threads with t >= T never get here
        y[t] = tile[threadIdx.x] + tile[(threadIdx.x + 1) % 64];
    }""",
    """    tile[threadIdx.x] = t < T ? x[t] : 0.0f;
    __syncthreads();  // every thread of the block gets here
    if (t < T) y[t] = tile[threadIdx.x] + tile[(threadIdx.x + 1) % 64];"""),
    "neighbour_sum", source_name="neighbour_sum_fixed.cu")
fixed((2,), (64,), (x_T, y_T, np.int32(x_T.size)))
# what it computes, in NumPy: within each block of 64, x[t] plus the next one (0 past the end)
x_blocks = np.concatenate([x_T, np.zeros(28, np.float32)]).reshape(2, 64)
want = (x_blocks + np.roll(x_blocks, -1, axis=1)).reshape(-1)[: x_T.size]
print("fixed kernel agrees with NumPy:", np.array_equal(y_T, want))
assert np.array_equal(y_T, want)

# %% [markdown]
# The emulator's other strict checks work the same way: threads waiting at *different*
# barriers, a shuffle that reads a lane that has exited or is not in the mask, a
# deadlock between a warp collective and a barrier, a Python float passed where the
# kernel takes a `float` (CuPy would pass a `double`, which a GPU misreads silently).
# What it cannot see (see its README): out-of-bounds accesses, the GPU's weaker memory
# ordering, and anything about speed. Those need a GPU: `scripts/gpu-check` runs the
# kernels under `compute-sanitizer` and times them.
#
# ## 7. What the compiler says: registers, shared memory, occupancy
#
# Correct is not enough for a kernel to run: its resources must fit the SM. The
# project's **compile gate** compiles every configuration the launcher uses with NVRTC
# for sm_80 and sm_90 and reads ptxas's report: registers per thread, static shared
# memory, stack frame, spills. No GPU is needed. Here is its table for the attention
# forward kernels only (in small mode, one head dimension and one architecture: NVRTC
# takes seconds per configuration; the default mode compiles them all, as
# `python -m backends.cuda.nvrtc_check` does for every family):

# %%
from backends.cuda._launch import nvrtc_options  # noqa: E402

gate_head_dims = GATE_HEAD_DIMS or cuda_attention.HEAD_DIMS
gate_archs = GATE_ARCHS or nvrtc_check.ARCHS
gate_rows = []
t0 = time.perf_counter()
try:
    for head_dim in gate_head_dims:
        configs = [cuda_attention.KERNELS[(version, head_dim)] for version in cuda_attention.VERSIONS]
        for arch in gate_archs:
            compiled = nvrtc_check.compile_module(cuda_attention.SOURCE, nvrtc_options(configs[0]), arch)
            gate_rows += [(config, compiled.resources.get(config.kernel)) for config in configs]
    print(nvrtc_check.table(gate_rows))
    print(f"({time.perf_counter() - t0:.1f} s of NVRTC)")
except nvrtc_check.NvrtcUnavailableError as exc:
    print(f"no compiler report here: {exc}")

# %% [markdown]
# How to read it:
#
# * **regs × threads** must fit the register file of an SM, or the launch fails;
#   `__launch_bounds__(threads)` in the source tells the compiler how many threads a
#   block will have, so it never plans more registers per thread than fit.
# * **spill**: when a thread needs more registers than it may have, the compiler
#   parks values in "local memory", which is really global memory behind the caches.
#   The gate fails on any spill. v1 holds a whole output row (`acc[HEAD_DIM]`) per
#   thread, so its register count grows with `HEAD_DIM`; v2 keeps its output row in
#   shared memory and only up to 64 columns of the tile's $PV$ in registers; v3 holds
#   `ROWS_PER_WARP_V3 × HEAD_DIM / 32` accumulators per lane.
# * **occupancy**: registers and shared memory per block decide how many blocks an SM
#   can hold at once, hence how many warps it can switch between while some wait for
#   memory. The estimate below applies the per-SM limits of section 1 the way NVIDIA's
#   occupancy calculator does (registers are allocated per warp in units of 256;
#   every block also reserves 1 KiB of shared memory).

# %%
def occupancy(config, res) -> tuple[int, float, str]:
    """(resident blocks per SM, resident warps / maximum, the limiting resource): an estimate."""
    limits = SM_LIMITS[res.arch]
    warps_per_block = -(-config.threads // WARP)
    regs_per_warp = -(-res.registers * WARP // 256) * 256
    smem_per_block = res.smem_static + config.dynamic_smem + 1024
    by = {
        "registers": (nvrtc_check.REGISTER_FILE // regs_per_warp) // warps_per_block,
        "shared memory": limits["smem"] // smem_per_block,
        "threads": limits["threads"] // config.threads,
        "blocks": limits["blocks"],
    }
    limiter = min(by, key=by.get)
    blocks = by[limiter]
    return blocks, blocks * warps_per_block / (limits["threads"] // WARP), limiter


print(f"{'kernel':22} {'HEAD_DIM':>8} {'arch':>5} {'regs':>5} {'regs×threads':>12} "
      f"{'smem/block':>10} {'blocks/SM':>9} {'occupancy':>9}  limited by")
for config, res in gate_rows:
    if res is None:
        continue
    blocks, occ, limiter = occupancy(config, res)
    head_dim = dict(config.defines)["HEAD_DIM"]
    print(f"{config.kernel:22} {head_dim:>8} {res.arch:>5} {res.registers:>5} "
          f"{res.registers * config.threads:>12} {res.smem_static + config.dynamic_smem:>10} "
          f"{blocks:>9} {occ:>9.0%}  {limiter}")
if not gate_rows:
    print("(no compiler report, so no estimate)")

# %% [markdown]
# High occupancy is not a goal in itself (a kernel with few warps but much work per
# warp in registers can be fast), but low occupancy leaves an SM little to switch to
# while a warp waits hundreds of cycles for global memory. Note also that the
# register count is per *thread*, so v3's 128-thread blocks and v1/v2's 64-thread
# blocks are not compared by the `regs` column alone.
#
# ## 8. Napkin math at a realistic size
#
# The launcher's `main()` times the kernels at B = 4, H = 16, T = S = 4096,
# D = E = 128 in float32. What should we expect there? The FLOPs are those of the two
# products, `cuda_attention.flops` ($2\,B H\,(\text{visible pairs})\,(D + E)$, the
# exponentials not counted). The bytes depend on the version, and that is the
# point of v2:
#
# * every version must read q, k, v and write o and lse **once**: the minimum;
# * v1: every *row* reads all S keys and values of its head, so K and V are requested
#   $T$ times per head (the caches absorb much of this; the count is what the kernel
#   asks for);
# * v2 and v3: every *block* reads them once, so $\lceil T/\text{rows per block}\rceil$
#   times per head; the rows of a block share the copy in shared memory.

# %%
from spec.attention.checks import AttentionShape  # noqa: E402

napkin = AttentionShape(B=4, H=16, G=16, T=4096, S=4096, D=128, E=128)
Bn, Hn, Gn, Tn, Sn, Dn, En = napkin
b = 4  # bytes per float32
rows_per_block = {"v1": 1, "v2": cuda_attention.ROWS_V2,
                  "v3": cuda_attention.WARPS_V3 * cuda_attention.ROWS_PER_WARP_V3}
q_o_bytes = b * (Bn * Hn * Tn * (Dn + En) + Bn * Hn * Tn)  # read q, write o and lse
minimum_bytes = q_o_bytes + b * Bn * Gn * Sn * (Dn + En)  # ... and k, v once

# Published figures (NVIDIA data sheets, SXM parts): FP32 without tensor cores, HBM
# bandwidth, L2 cache size
GPUS = {"H100 SXM": {"fp32": 67e12, "hbm": 3.35e12, "l2": 50e6},
        "H200 SXM": {"fp32": 67e12, "hbm": 4.8e12, "l2": 50e6}}


def kv_bytes(version: str, causal: bool) -> int:
    """K and V bytes a version requests: once per row (v1) or per block (v2, v3) of rows,
    only up to the causal diagonal when causal."""
    rows = rows_per_block[version]
    keys = 0
    for t0 in range(0, Tn, rows):
        t_end = min(t0 + rows, Tn)
        keys += min(Sn, t_end + Sn - Tn) if causal else Sn  # rule.key_end(t_end)
    return b * Bn * Hn * keys * (Dn + En)


print(f"B={Bn} H={Hn} T=S={Tn} D=E={Dn}, float32; rows per block: "
      + ", ".join(f"{version} {rows}" for version, rows in rows_per_block.items()))
print("lower bounds in ms if every request went to HBM: compute = FLOPs / FP32 peak, "
      "memory = bytes / bandwidth")
for causal in (False, True):
    flops = cuda_attention.flops(napkin, causal)
    print(f"\ncausal={causal}: {flops / 1e9:,.0f} GFLOP; minimum traffic {minimum_bytes / 1e6:,.0f} MB "
          f"-> {flops / minimum_bytes:,.0f} FLOP/byte")
    print(f"  {'version':7} {'requested':>12} {'FLOP/byte':>9}"
          + "".join(f"  {gpu + ': compute, memory':>32}" for gpu in GPUS))
    for version in cuda_attention.VERSIONS:
        nbytes = q_o_bytes + kv_bytes(version, causal)
        cells = []
        for gpu in GPUS.values():
            t_compute, t_memory = flops / gpu["fp32"] * 1e3, nbytes / gpu["hbm"] * 1e3
            bound = "memory" if t_memory > t_compute else "compute"
            cells.append(f"{t_compute:>9.1f}, {t_memory:>7.1f} ({bound:>7}-bound)")
        print(f"  {version:7} {nbytes / 1e9:>9.1f} GB {flops / nbytes:>9.1f}  " + "  ".join(cells))
print(f"\nv3 requests {kv_bytes('v3', False) / kv_bytes('v2', False):.1f}x the K/V bytes of v2, "
      f"v1 {kv_bytes('v1', False) / kv_bytes('v2', False):.0f}x")
kv_head = b * Sn * (Dn + En)
for gpu, figures_ in GPUS.items():
    print(f"{gpu}: balance {figures_['fp32'] / figures_['hbm']:.0f} FLOP/byte; one head's K and V "
          f"({kv_head / 2**20:.0f} MiB) are {100 * kv_head / figures_['l2']:.0f}% of its "
          f"{figures_['l2'] / 1e6:.0f} MB L2")

# %% [markdown]
# How to read it. A kernel takes at least $\max(\text{FLOPs}/\text{peak},\
# \text{bytes}/\text{bandwidth})$ (the roofline of lesson 01).
#
# * With the *minimum* traffic, attention at this size has far more FLOPs per byte
#   than either GPU's balance: it is compute-bound, and the FP32 column is the time to
#   beat.
# * v1 requests K and V once per row, and if those requests all went to HBM, memory
#   would bound it many times over. This is the whole case for v2: sharing a K/V tile
#   among a block's rows divides the requests by the rows per block.
# * The "every request goes to HBM" assumption is pessimistic. The blocks of one head
#   are numbered consecutively (`blockIdx.x` varies fastest), so they run at about the
#   same time and re-read the same K and V, which is a small share of the L2 cache
#   (last lines above); most re-reads of v2 and v3 are L2 hits. v1's re-reads are mostly
#   hits too, but it still pays for every request in load instructions and L1/L2
#   bandwidth, per row.
# * v3 does not win by requesting fewer bytes than v2 (the ratio is printed above): its
#   blocks are organised for the arithmetic. Scores are computed 32 keys at a time
#   across lanes, so no thread waits on one long chain of a row's keys; shared memory
#   is read as conflict-free float4; and each lane holds few accumulators (section 7).
#
# Even the best SIMT kernel is bounded by the FP32 column. The tensor-core version
# (`attention_tc`, float16/bfloat16 inputs) raises that bound by an order of
# magnitude, which is why production FlashAttention kernels are written with `mma`
# instructions; the emulator cannot run those, so this lesson stays with SIMT.
#
# ## 9. What a GPU measured
#
# `scripts/gpu-check` runs every launcher's `main()` on a GPU (when a session is lent
# one) and records the output in `bench/RESULTS.md`, section "CUDA kernels on a GPU",
# one subsection per run. The lesson reads whatever is recorded there now:

# %%
RESULTS = ROOT / "bench" / "RESULTS.md"
HEADING = "## CUDA kernels on a GPU"


def recorded_gpu_runs(text: str) -> list[dict]:
    """The recorded GPU runs: heading, result line, and the attention forward figures.

    Defensive about the format (it is written by scripts/gpu-check and may change): the
    figures are the lines ``python -m backends.cuda.attention`` prints, from a line
    starting "attention forward" through the indented lines after it, inside the fenced
    block that follows a "Figures printed by" line; ``failed`` says whether that line
    marks the figures as coming from a failing run.
    """
    if HEADING not in text:
        return []
    body = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    runs = []
    for chunk in body.split("\n### ")[1:]:
        heading, _, rest = chunk.partition("\n")
        run = {"heading": heading.strip(), "result": "", "lines": [], "failed": False}
        figures_note, in_fence, in_attention = None, False, False
        for line in rest.splitlines():
            if line.startswith("- Result:"):
                run["result"] = line[len("- Result:"):].strip()
            if line.startswith("```"):
                in_fence, in_attention = not in_fence, False
                if not in_fence:
                    figures_note = None  # a fenced block ends: the next needs its own note
                continue
            if not in_fence:
                if line.startswith("Figures printed by"):
                    figures_note = line
                continue
            if figures_note is None:
                continue  # the output of a step that is not a figures step
            if line.startswith("attention forward"):
                in_attention = True
                run["failed"] |= "FAILED" in figures_note
                run["lines"].append(line)
            elif in_attention and line.startswith("  "):
                run["lines"].append(line)
            else:
                in_attention = False
        runs.append(run)
    return runs


text = RESULTS.read_text() if RESULTS.is_file() else ""
runs = recorded_gpu_runs(text)
if not runs:
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0].strip() if HEADING in text else ""
    first = section.split("\n\n")[0] if section else f"no section {HEADING!r} in {RESULTS.name}"
    print("No GPU figures are recorded yet. bench/RESULTS.md says:\n")
    print("  " + first.replace("\n", "\n  "))
for run in runs:
    print(f"### {run['heading']}\n  result: {run['result'] or '(not stated)'}")
    if run["failed"]:
        print("  (these figures come from a failing run: not results)")
    print("\n".join(run["lines"]) if run["lines"] else "  (this run recorded no attention forward figures)")
    print()

# %% [markdown]
# Where figures are recorded, each line reads: version, causal, milliseconds, GB/s of
# the minimum traffic (and its share of the device's bandwidth), TFLOP/s (and its
# share of the FP32 peak), then the byte and FLOP counts used, so that you can redo
# the division. Compare the milliseconds with the napkin bounds of section 8 for the
# same device: the ratio is how far each version is from its roofline.
#
# Where this notebook itself has a GPU, it can measure instead of reading; in the
# default mode it runs the launcher's `main()` at the napkin size (in small mode at a
# smaller one), which validates every version against the spec before timing it.

# %%
if engine == "cupy":
    args = ["--B", "1", "--H", "4", "--T", "1024"] if SMALL else []  # default: B=4 H=16 T=4096 D=128
    status = cuda_attention.main(args)
    assert status == 0, "the launcher's validation failed on this GPU"
else:
    print(f"engine is {engine}: no timing here (the emulator's times say nothing about a GPU)")

# %% [markdown]
# ## 10. Exercises
#
# Each exercise has something for you to fill in, a `check` that runs the project's
# forward conformance test (`tests/backends/conformance.py`, `check_forward`, the
# function the test suite runs on every backend) on the result, a typical mistake
# being caught, and a hidden solution (expand the collapsed cell in Jupyter). The
# notebook runs as shipped: the checks print `TODO` until you fill in your part.
#
# `check` runs the pinned edge problems of the test suite (T = 1, S ≠ T with causal,
# empty rows, −∞ biases, logits of 1e4), two problems of this lesson with several key
# tiles of 32 and an output wider than 32 columns, and problems drawn by hypothesis.

# %%
from spec.attention.checks import check_attention_inputs, check_scale, check_tile  # noqa: E402
from tests.backends.conformance import check_forward  # noqa: E402
from tests.strategies import EDGE_PROBLEMS, AttentionProblem, attention_problems  # noqa: E402

LESSON_PROBLEMS = (
    # three key tiles of 32 (the last one short), causal, two output columns per lane
    AttentionProblem(B=1, H=2, G=1, T=9, S=70, D=8, E=40, causal=True, bias="per_key", seed=1),
    # GQA, a random mask, logits of order 30 (exp amplifies every rounding)
    AttentionProblem(B=1, H=4, G=2, T=17, S=33, D=5, E=3, mask="random", logit=30.0, seed=2),
)


def check(fn, *, dtypes=(np.float64, np.float32), max_examples: int = HYPOTHESIS_EXAMPLES) -> bool:
    """Run the project's forward conformance check on ``fn``; print PASS / FAIL / TODO."""
    return check_on_problems(fn, check_forward, EDGE_PROBLEMS + LESSON_PROBLEMS,
                             attention_problems(max_len=40), max_examples=max_examples,
                             derandomize=SMALL, dtypes=dtypes)


print("the CUDA kernels themselves, as a reminder of what PASS looks like:")
for version in cuda_attention.VERSIONS:
    def cuda_version(*args, version=version, **kwargs):
        return cuda_attention.flash_forward(*args, version=version, **kwargs)

    cuda_version.__qualname__ = f"cuda flash_forward {version}"
    assert check(cuda_version, dtypes=(np.float32,), max_examples=min(HYPOTHESIS_EXAMPLES, 10))

# %% [markdown]
# ### (a) One tile of v3, in NumPy, lane by lane
#
# Write `warp_tile_step(m_R, l_R, acc_RE, score_RL, v_LE)`: what one warp of v3 does
# with one tile of 32 keys, for its R rows. Lane j holds the scores of key j,
# `score_RL[..., :, j]` (−∞ where the key is masked or past the end of the sequence),
# and `v_LE[..., j, :]` is key j's value row (zeros past the end). Return the new
# `(m_R, l_R, acc_RE)`. Leading dimensions (batch, heads) may be present.
#
# Do it the kernel's way, with the two lane operations below instead of reductions
# over the lane axis:
#
# * `shfl_xor(x_RL, offset)`: `__shfl_xor_sync`, lane i receives lane `i ^ offset`'s value;
# * `shfl(x_RL, j)`: `__shfl_sync`, every lane receives lane j's value.
#
# So: the tile's row maximum by a butterfly of `shfl_xor` steps (afterwards every lane
# holds it), then $\alpha$ and $p$, the row sum of $p$ by the same butterfly, and
# $P V$ by broadcasting $p_j$ from lane j for each key j. In NumPy the output columns
# are one axis; in the kernel lane l would add only its columns e = l + 32c. As in
# lesson 01, a row whose scores so far are all −∞ must not produce `exp(−∞ − (−∞))`.
# Keep the input dtype.
#
# The cell below turns any such step into a whole forward, v3's grid in NumPy:
# blocks of `ROWS_PER_WARP_V3` rows, tiles of 32 keys, GQA, causal, bias and mask.

# %%
LANE_L = np.arange(WARP)


def shfl_xor(x_RL: np.ndarray, offset: int) -> np.ndarray:
    """__shfl_xor_sync(FULL_MASK, x, offset) in every lane: lane i gets lane i ^ offset's x."""
    return x_RL[..., LANE_L ^ offset]


def shfl(x_RL: np.ndarray, src_lane: int) -> np.ndarray:
    """__shfl_sync(FULL_MASK, x, src_lane) in every lane: every lane gets lane src_lane's x."""
    return np.broadcast_to(x_RL[..., src_lane : src_lane + 1], x_RL.shape)


def forward_from_warp_step(step):
    """A flash_forward (the spec's signature) that runs ``step`` on every (warp, key tile)."""

    def forward(q_BHTD, k_BGSD, v_BGSE, *, causal=False, scale=None, bias=None, mask=None,
                tile_t=64, tile_s=64):
        B, H, G, T, S, D, E = check_attention_inputs(q_BHTD, k_BGSD, v_BGSE, bias=bias, mask=mask)
        check_tile("tile_t", tile_t)  # accepted for the spec's signature; v3's tiles are fixed
        check_tile("tile_s", tile_s)
        dtype = q_BHTD.dtype
        scale = dtype.type(check_scale(scale, D))
        minus_inf = dtype.type(-np.inf)
        # query head h reads key/value head h // (H/G)
        k_BHSD, v_BHSE = naive.expand_kv_heads(k_BGSD, H), naive.expand_kv_heads(v_BGSE, H)
        visible = np.ones((1, 1, T, S), bool)
        if causal:
            visible = visible & naive.causal_visible_TS(T, S)
        if mask is not None:
            visible = visible & mask
        visible_BHTS = np.broadcast_to(visible, (B, H, T, S))
        bias_BHTS = None if bias is None else np.broadcast_to(bias, (B, H, T, S))
        o_BHTE = np.empty((B, H, T, E), dtype)
        lse_BHT = np.empty((B, H, T), dtype)
        for t0 in range(0, T, cuda_attention.ROWS_PER_WARP_V3):  # one warp's rows
            t1 = min(t0 + cuda_attention.ROWS_PER_WARP_V3, T)
            m_BHR = np.full((B, H, t1 - t0), minus_inf, dtype)
            l_BHR = np.zeros((B, H, t1 - t0), dtype)
            acc_BHRE = np.zeros((B, H, t1 - t0, E), dtype)
            for s0 in range(0, S, WARP):  # one key per lane
                s1 = min(s0 + WARP, S)
                # score = scale · q kᵀ + bias, −∞ where not visible and in lanes past the end
                x_BHRC = scale * np.einsum("BHTD,BHSD->BHTS", q_BHTD[:, :, t0:t1], k_BHSD[:, :, s0:s1])
                if bias_BHTS is not None:
                    x_BHRC = x_BHRC + bias_BHTS[:, :, t0:t1, s0:s1]
                seen_BHRC = (x_BHRC != minus_inf) & visible_BHTS[:, :, t0:t1, s0:s1]
                score_BHRL = np.full((B, H, t1 - t0, WARP), minus_inf, dtype)
                score_BHRL[..., : s1 - s0] = np.where(seen_BHRC, x_BHRC, minus_inf)
                v_BHLE = np.zeros((B, H, WARP, E), dtype)
                v_BHLE[:, :, : s1 - s0] = v_BHSE[:, :, s0:s1]
                m_BHR, l_BHR, acc_BHRE = step(m_BHR, l_BHR, acc_BHRE, score_BHRL, v_BHLE)
            # o = Õ / l,  lse = m + log l;  a row that saw no visible key: o = 0, lse = −∞
            empty_BHR = m_BHR == minus_inf
            l_safe_BHR = np.where(empty_BHR, dtype.type(1), l_BHR)
            o_BHTE[:, :, t0:t1] = acc_BHRE / l_safe_BHR[..., None]
            lse_BHT[:, :, t0:t1] = np.where(empty_BHR, minus_inf, m_BHR + np.log(l_safe_BHR))
        return naive.AttentionOut(o_BHTE, lse_BHT)

    forward.__qualname__ = f"forward_from_warp_step({check_name(step)})"
    return forward


# %%
def warp_tile_step(m_R, l_R, acc_RE, score_RL, v_LE):
    """YOUR CODE: return (m_R, l_R, acc_RE) after one tile of 32 keys, one key per lane."""
    raise NotImplementedError


check(forward_from_warp_step(warp_tile_step))

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution (a). Expand to read it.
WARP_OFFSETS = (16, 8, 4, 2, 1)  # a butterfly over 32 lanes


def solution_warp_tile_step(m_R, l_R, acc_RE, score_RL, v_LE, offsets=WARP_OFFSETS):
    dtype = score_RL.dtype
    # the tile's row maximum, in every lane (warp_max)
    tile_max_RL = score_RL
    for offset in offsets:
        tile_max_RL = np.maximum(tile_max_RL, shfl_xor(tile_max_RL, offset))
    # m' = max(m, rowmax(S)); a row that saw only −∞ shifts by 0 instead (safe_shift)
    m_new_R = np.maximum(m_R, tile_max_RL[..., 0])
    shift_R = np.where(m_new_R == -np.inf, dtype.type(0), m_new_R)
    # α = exp(m − m'),  P = exp(S − m') (0 for masked keys), lane j's p_j
    alpha_R = np.exp(m_R - shift_R)
    p_RL = np.exp(score_RL - shift_R[..., None])
    # rowsum(P), in every lane (warp_sum);  l' = α l + rowsum(P)
    sum_RL = p_RL
    for offset in offsets:
        sum_RL = sum_RL + shfl_xor(sum_RL, offset)
    l_new_R = alpha_R * l_R + sum_RL[..., 0]
    # P V: p_j broadcast from lane j, times key j's value row, key by key
    pv_RE = np.zeros_like(acc_RE)
    for j in range(score_RL.shape[-1]):
        pv_RE = pv_RE + shfl(p_RL, j)[..., :1] * v_LE[..., j : j + 1, :]
    # Õ' = α Õ + P V
    return m_new_R, l_new_R, alpha_R[..., None] * acc_RE + pv_RE


assert check(forward_from_warp_step(solution_warp_tile_step))

# %% [markdown]
# A typical mistake, caught: a butterfly over 16 lanes (offsets 8, 4, 2, 1), as if the
# warp were half as wide. Lanes 0–15 then never see lanes 16–31, so a tile with more
# than 16 keys loses part of its sum. Problems with fewer than 17 keys per tile pass,
# which is why `check` pins problems with full tiles of 32.


# %%
def warp_step_16_lanes(m_R, l_R, acc_RE, score_RL, v_LE):
    return solution_warp_tile_step(m_R, l_R, acc_RE, score_RL, v_LE, offsets=(8, 4, 2, 1))  # BUG


assert not check(forward_from_warp_step(warp_step_16_lanes))

# %% [markdown]
# ### (b) The same warp in CUDA C, on the emulator
#
# Below is a complete CUDA kernel except for three pieces: v3's structure with one
# row per warp (no shared memory: every lane reads its key's k row and its columns of
# v from global memory). The score rule, the online-softmax state and the final
# division are written; you write, in CUDA C,
#
# * `$warp_max`: the body of `warp_max(float x)`, the maximum over the 32 lanes, in
#   every lane (use `nan_max` from `attention_common.cuh`, which keeps NaN as NumPy does);
# * `$warp_sum`: the body of `warp_sum(float x)`, the same for the sum;
# * `$pv`: the loop that adds $p_j v_j[e]$ to `pv[c]` for the keys `j < n` of the tile
#   and this lane's columns `e = lane + 32 * c < E`.
#
# `kernel_forward` fills in the pieces, compiles the kernel with the emulator (g++
# errors name lines of `exercise.cu`; `show_kernel` prints the source with line
# numbers), launches it with the launcher's own input handling
# (`cuda_attention.prepare`: validation, bias/mask strides, the score-rule arguments),
# and returns a function with the spec's signature for `check`. The kernel computes
# in float32 only, so `check` runs float32 problems.

# %%
WARP_KERNEL = string.Template(r"""
#include "attention_common.cuh"

#define WARPS 4                   // warps per block = query rows per block
#define E_CHUNKS (HEAD_DIM / 32)  // output columns per lane

// The maximum of x over the 32 lanes of the warp, returned in every lane.
__device__ float warp_max(float x) {
$warp_max
}

// The sum of x over the 32 lanes of the warp, returned in every lane.
__device__ float warp_sum(float x) {
$warp_sum
}

// One warp per query row, lane j scores key s0 + j, lane l owns output columns l + 32c.
extern "C" __global__ void attention_forward_warp(
        const float* q_BHTD, const float* k_BGSD, const float* v_BGSE, float* o_BHTE,
        float* lse_BHT, int H, int G, int T, int S, int D, int E, SCORE_RULE_PARAMS) {
    const ScoreRule rule = SCORE_RULE(T, S);
    const int lane = threadIdx.x, b = blockIdx.z, h = blockIdx.y;
    const int t = blockIdx.x * WARPS + threadIdx.y;  // this warp's query row
    if (t >= T) return;  // the whole warp leaves together: no shuffle is left waiting
    const float* q_D = q_BHTD + ((long long)(b * H + h) * T + t) * D;
    const long long kv0 = (long long)(b * G + h / (H / G)) * S;  // GQA: kv head h / (H/G)
    const float* k_SD = k_BGSD + kv0 * D;
    const float* v_SE = v_BGSE + kv0 * E;

    RowState r{neg_inf(), 0.0f};
    float acc[E_CHUNKS];  // Õ[lane + 32c]
    for (int c = 0; c < E_CHUNKS; ++c) acc[c] = 0.0f;
    const int s_end = rule.key_end(t + 1);
    for (int s0 = 0; s0 < s_end; s0 += 32) {
        const int n = min(32, s_end - s0);  // keys in this tile: the same in every lane
        // lane j: score = scale · q·k_j + bias, -inf if not visible or past the end
        float score = neg_inf();
        if (lane < n) {
            float dot = 0.0f;
            for (int d = 0; d < D; ++d) dot = dot + q_D[d] * k_SD[(long long)(s0 + lane) * D + d];
            bool visible;
            const float x = rule.score(dot, b, h, t, s0 + lane, visible);
            score = visible ? x : neg_inf();
        }
        // m' = max(m, rowmax(S)),  α = exp(m - m'),  p = exp(S - m'),  l' = α l + rowsum(P)
        const float m_new = nan_max(r.m, warp_max(score));
        const float shift = safe_shift(m_new);
        const float alpha = expf(r.m - shift);
        const float p = expf(score - shift);
        r.l = alpha * r.l + warp_sum(p);
        r.m = m_new;
        // Õ' = α Õ + P V for this lane's columns
        float pv[E_CHUNKS];
        for (int c = 0; c < E_CHUNKS; ++c) pv[c] = 0.0f;
$pv
        for (int c = 0; c < E_CHUNKS; ++c) acc[c] = alpha * acc[c] + pv[c];
    }
    // o = Õ / l,  lse = m + log l
    const float divisor = row_divisor(r);
    float* o_E = o_BHTE + ((long long)(b * H + h) * T + t) * E;
    for (int c = 0; c < E_CHUNKS; ++c)
        if (lane + 32 * c < E) o_E[lane + 32 * c] = acc[c] / divisor;
    if (lane == 0) lse_BHT[(long long)(b * H + h) * T + t] = row_lse(r);
}
""")
EXERCISE_HEAD_DIM = 64  # D, E <= 64: two output columns per lane
KERNEL_WARPS = 4  # = WARPS in the source


@contextlib.contextmanager
def cuda_engine(name: str):
    """Select the engine for the launcher's helpers meanwhile (``prepare`` places arrays)."""
    old = os.environ.get("ATTNSPEC_CUDA")
    os.environ["ATTNSPEC_CUDA"] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ["ATTNSPEC_CUDA"]
        else:
            os.environ["ATTNSPEC_CUDA"] = old


def kernel_source(warp_max: str, warp_sum: str, pv: str) -> str:
    return WARP_KERNEL.substitute(warp_max=warp_max.strip("\n"), warp_sum=warp_sum.strip("\n"),
                                  pv=pv.strip("\n"))


def show_kernel(code: str, first: int = 1, last: int | None = None) -> None:
    """Print a kernel source with line numbers, as compiler messages count them."""
    lines = code.splitlines()
    for n in range(first, (last or len(lines)) + 1):
        print(f"{n:4d}  {lines[n - 1]}")


def kernel_forward(warp_max: str, warp_sum: str, pv: str, label: str = "your kernel"):
    """A flash_forward (the spec's signature, float32) running the completed kernel on the
    emulator, whatever the engine of the rest of the lesson: its strict checks are the point."""

    todo = any("YOUR CODE" in piece for piece in (warp_max, warp_sum, pv))
    kernel = None if todo else RawKernel(  # compiled at its first launch
        kernel_source(warp_max, warp_sum, pv), "attention_forward_warp",
        options=(*INCLUDE, f"-DHEAD_DIM={EXERCISE_HEAD_DIM}"), source_name="exercise.cu")

    def forward(q_BHTD, k_BGSD, v_BGSE, *, causal=False, scale=None, bias=None, mask=None,
                tile_t=64, tile_s=64):
        if kernel is None:
            raise NotImplementedError
        with cuda_engine("emulator"):
            call = cuda_attention.prepare(q_BHTD, k_BGSD, v_BGSE, causal=causal, scale=scale,
                                          bias=bias, mask=mask, tile_t=tile_t, tile_s=tile_s)
        B, H, G, T, S, D, E = call.shape
        if max(D, E) > EXERCISE_HEAD_DIM:
            raise ValueError(f"this kernel takes D, E <= {EXERCISE_HEAD_DIM}, got D={D}, E={E}")
        o = call.arrays.empty((B, H, T, E), np.float32)  # NaN: an element never written shows
        lse = call.arrays.empty((B, H, T), np.float32)
        dims = tuple(np.int32(n) for n in (H, G, T, S, D, E))
        kernel((-(-T // KERNEL_WARPS), H, B), (WARP, KERNEL_WARPS),
               (call.q, call.k, call.v, o, lse, *dims, *call.rule))
        return naive.AttentionOut(o, lse)

    forward.__qualname__ = label
    return forward


# %%
MY_WARP_MAX = r"""
    /* YOUR CODE: the maximum of x over the warp, returned in every lane */
"""
MY_WARP_SUM = r"""
    /* YOUR CODE: the sum of x over the warp, returned in every lane */
"""
MY_PV = r"""
        /* YOUR CODE: pv[c] += p_j · v[s0 + j][lane + 32c] for j < n, lane + 32c < E */
"""

check(kernel_forward(MY_WARP_MAX, MY_WARP_SUM, MY_PV), dtypes=(np.float32,))

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution (b). Expand to read it.
SOLUTION_WARP_MAX = r"""
    for (int offset = 16; offset > 0; offset >>= 1)
        x = nan_max(x, __shfl_xor_sync(FULL_MASK, x, offset));
    return x;
"""
SOLUTION_WARP_SUM = r"""
    for (int offset = 16; offset > 0; offset >>= 1) x = x + __shfl_xor_sync(FULL_MASK, x, offset);
    return x;
"""
SOLUTION_PV = r"""
        for (int j = 0; j < n; ++j) {
            const float p_j = __shfl_sync(FULL_MASK, p, j);  // every lane: lane j's p
            for (int c = 0; c < E_CHUNKS; ++c) {
                const int e = lane + 32 * c;
                if (e < E) pv[c] = fmaf(p_j, v_SE[(long long)(s0 + j) * E + e], pv[c]);
            }
        }
"""

assert check(kernel_forward(SOLUTION_WARP_MAX, SOLUTION_WARP_SUM, SOLUTION_PV, "solution kernel"),
             dtypes=(np.float32,))

# %% [markdown]
# A typical mistake, caught: `__shfl_down_sync` instead of `__shfl_xor_sync` in
# `warp_max`. A "down" tree reduction is the textbook way to reduce a warp, and it is
# correct *in lane 0 only*: the other lanes end up with partial maxima, shift their
# exponentials by different amounts, and the sum over lanes mixes them. The kernel
# needs the maximum in every lane, which is what the butterfly gives.

# %%
down_max = SOLUTION_WARP_MAX.replace("__shfl_xor_sync", "__shfl_down_sync")
assert down_max != SOLUTION_WARP_MAX
assert not check(kernel_forward(down_max, SOLUTION_WARP_SUM, SOLUTION_PV, "kernel with a shfl_down max"),
                 dtypes=(np.float32,))

# %% [markdown]
# One more experiment for you, no check needed: in your `warp_sum`, replace `FULL_MASK`
# by `0xffffu` (the lower 16 lanes only) and run the check again. On a GPU that is
# undefined behaviour; on the emulator it is an error that names the line, as in
# section 6.
#
# ## Summary
#
# * A CUDA kernel is the spec's loop with two decisions added: which thread computes
#   which part of the tile, and where the operands live (registers, shared memory,
#   global memory). The online softmax gives the freedom: rows are independent, and
#   the tiling does not change the result.
# * v1 (a thread per row) is the spec transcribed; v2 shares K/V tiles among a block's
#   rows through shared memory, at the cost of barriers every thread must reach; v3
#   spreads a tile's keys over a warp's lanes, with butterfly shuffles for the row
#   statistics and lanes owning output columns.
# * On the emulator the unmodified `.cu` runs, `printf` works, a seeded schedule tests
#   order independence, and synchronisation bugs are errors that name the line; the
#   real kernel on the first tiles of keys exposes its running state through `lse`.
# * The compile gate's register and shared-memory report, plus the per-SM limits, says
#   whether a configuration fits and how many warps an SM can keep in flight; the
#   napkin math says which resource bounds each version.
#
# Next: `backends/cuda/attention.cu` in full (v3's shared-memory padding and float4
# loads), the backward kernel (`attention_backward.cu`), and the tensor-core version.

# %%
print(f"lesson executed in {time.perf_counter() - LESSON_START:.1f} s ({'small' if SMALL else 'default'} mode)")
