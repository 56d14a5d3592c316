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
# # Lesson 01 — Attention, and how FlashAttention computes it without the T×S matrix
#
# This lesson reads the project's specification of softmax attention
# (`spec/attention/naive.py`, the oracle) and of FlashAttention (`spec/attention/tiled.py`),
# checks every claim it makes by running that code, then times the compiled Numba
# version and compares the stopwatch with a napkin estimate. At the end you write the
# online-softmax update and a FlashAttention forward of your own, and the project's
# own conformance test judges them.
#
# Nothing here re-implements the spec: we import it, print it, and poke it.
#
# **Modes.** With `ATTNSPEC_LESSON_MODE=small` (what CI sets) every size shrinks so
# the whole notebook runs in about a minute; by default the sizes are bigger and the
# pictures more telling (a few minutes).

# %%
# %matplotlib inline
import functools
import inspect
import math
import os
import sys
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

from backends.lesson_kit import check_on_problems, show_source, verdict  # noqa: E402

SMALL = os.environ.get("ATTNSPEC_LESSON_MODE", "").lower() == "small"
if SMALL:
    GRID_T, GRID_S = 48, 80  # problem of the tile-size sweep
    TILE_T_LIST, TILE_S_LIST = [5, 16, 64], [1, 2, 3, 5, 8, 16, 32, 64, 128]
    TIMING_T = [128, 256, 512]  # sequence lengths timed
    NAPKIN_T = 512  # where the napkin math meets the stopwatch
    REPEAT = 2  # timing: best of this many calls
    HYPOTHESIS_EXAMPLES = 10  # drawn problems per exercise check
else:
    GRID_T, GRID_S = 200, 300
    TILE_T_LIST, TILE_S_LIST = [5, 16, 64], [1, 2, 3, 5, 8, 16, 32, 64, 128, 256, 512]
    TIMING_T = [256, 512, 1024, 2048]
    NAPKIN_T = 2048
    REPEAT = 3
    HYPOTHESIS_EXAMPLES = 60

from backends import figures  # noqa: E402  (the plots, shared with `attnspec tour`)
from spec.attention import naive, tiled  # noqa: E402

LESSON_START = time.perf_counter()
print(f"repository: {ROOT}\nmode: {'small' if SMALL else 'default'}")

# %% [markdown]
# ## 1. The question
#
# A transformer layer lets each of T query positions read from S key/value positions.
# Softmax attention does it by scoring **every** query against **every** key: a T×S
# matrix per head. The inputs and the output grow like T, the score matrix like T·S.
# Here is what that means in bytes for a 32-head layer in float32 with head width 128:

# %%
H_layer, D_layer, bytes_per_float = 32, 128, 4
print(f"{'T = S':>8} {'Q, K, V, O':>12} {'scores T×S':>12}")
for T in (2048, 8192, 32768, 131072):
    qkvo = 4 * H_layer * T * D_layer * bytes_per_float
    scores = H_layer * T * T * bytes_per_float
    print(f"{T:>8} {qkvo / 2**30:>10.2f} GiB {scores / 2**30:>10.1f} GiB")

# %% [markdown]
# The score matrix outgrows the inputs by a factor S/(4·D) and soon outgrows any
# memory. Worse, even when it fits, writing it out and reading it back costs memory
# traffic, and on modern hardware moving bytes, not multiplying numbers, is what
# limits attention.
#
# **FlashAttention** (Dao et al., 2022; Dao, 2023) computes *exactly* the same output
# without ever materialising the T×S matrix. The obstacle is the softmax: each output
# row needs the maximum and the sum over *all* S scores of its row before it can weigh
# any value vector. The trick that removes the obstacle, the **online softmax**, is the
# heart of this lesson.
#
# ## 2. The math
#
# For one head, with queries $q_t$, keys $k_s$, values $v_s$ (Vaswani et al., 2017, eq. 1):
#
# $$
# \mathrm{score}_{ts} = \mathrm{scale}\; q_t \cdot k_s + \mathrm{bias}_{ts},
# \qquad
# p_{ts} = \frac{\exp(\mathrm{score}_{ts} - m_t)}{\ell_t},
# \qquad
# o_t = \sum_s p_{ts}\, v_s ,
# $$
#
# with $m_t = \max_s \mathrm{score}_{ts}$, $\ell_t = \sum_s \exp(\mathrm{score}_{ts} - m_t)$
# and, by default, $\mathrm{scale} = 1/\sqrt{D}$. Subtracting $m_t$ changes nothing
# mathematically (it cancels between numerator and denominator) but keeps every
# exponent $\le 0$, so nothing overflows. The spec also returns
# $\mathrm{lse}_t = m_t + \log \ell_t = \log\sum_s \exp(\mathrm{score}_{ts})$, which the
# backward pass needs.
#
# **Masks.** Only *visible* keys enter the max and the sums: a key is invisible when
# the boolean `mask` is False, when the bias is $-\infty$, or, with `causal=True`, when
# it lies in the query's future. A row with no visible key at all is *defined* by the
# spec: $o_t = 0$ and $\mathrm{lse}_t = -\infty$ (not NaN).
#
# **Causal with S ≠ T is bottom-right aligned**: query $t$ sees key $s$ iff
# $s \le t + (S - T)$. The last query lines up with the last key — exactly the
# situation of decoding with a KV cache, where T new queries follow S − T cached keys.

# %%
def show_mask(visible_TS):
    """Print a boolean T×S mask: ■ = may attend."""
    for row in visible_TS:
        print(" ".join("■" if x else "·" for x in row))


print("T=3 queries, S=6 keys (3 cached + 3 new): the last query sees everything")
show_mask(naive.causal_visible_TS(3, 6))
print("\nT=5, S=3: the first T − S = 2 queries see no key at all")
show_mask(naive.causal_visible_TS(5, 3))

# %% [markdown]
# Those empty rows are not an error. Let us check, live, what the oracle returns for them:

# %%
rng = np.random.default_rng(0)
q = rng.standard_normal((1, 1, 5, 4))
k = rng.standard_normal((1, 1, 3, 4))
v = rng.standard_normal((1, 1, 3, 2))
out = naive.attention(q, k, v, causal=True)
print("lse per query:", out.lse_BHT[0, 0])
print("o of the two empty rows:\n", out.o_BHTE[0, 0, :2])
assert np.all(out.o_BHTE[0, 0, :2] == 0) and np.all(np.isneginf(out.lse_BHT[0, 0, :2]))

# %% [markdown]
# **Why subtract the maximum?** Logits of size 1e4 are rare but legal (the project's
# strategies draw them); `exp(1e4)` is `inf` even in float64, yet the oracle is fine:

# %%
with np.errstate(over="ignore"):
    print("np.exp(1e4) =", np.exp(1e4))
k_big = rng.standard_normal((1, 1, 3, 4))
q_big = k_big[:, :, :1] * (1e4 / np.sum(k_big[0, 0, 0] ** 2))  # scores of order 1e4
o_big = naive.attention(q_big, k_big, v, scale=1.0)
print("scores:", (q_big @ k_big.swapaxes(-1, -2))[0, 0, 0])
print("o:", o_big.o_BHTE[0, 0, 0], " finite:", np.isfinite(o_big.o_BHTE).all())

# %% [markdown]
# **Grouped-query attention (GQA).** Keys and values may have fewer heads G than the
# queries have (H): `k_BGSD`, `v_BGSE` with G dividing H. Query head $h$ reads
# key/value head $h \,/\!/\, (H/G)$ — consecutive query heads share one key/value head
# (G = H is ordinary multi-head attention, G = 1 is multi-query attention). We check
# that convention head by head, each head computed on its own:

# %%
B, H, G, T, S, D, E = 2, 6, 2, 5, 7, 4, 3
q = rng.standard_normal((B, H, T, D))
k = rng.standard_normal((B, G, S, D))
v = rng.standard_normal((B, G, S, E))
o_all = naive.attention(q, k, v, causal=True).o_BHTE
worst = 0.0
for h in range(H):
    g = h // (H // G)
    o_h = naive.attention(q[:, h : h + 1], k[:, g : g + 1], v[:, g : g + 1], causal=True).o_BHTE
    worst = max(worst, np.abs(o_h[:, 0] - o_all[:, h]).max())
print(f"max difference, all heads at once vs head h alone with kv head h // {H // G}: {worst:.1e}")
assert worst == 0.0

# %% [markdown]
# ## 3. Read the spec
#
# The oracle is `spec.attention.naive.attention`. Its body, below the docstring, is the
# math above line by line; note the dimension letters at the end of every name
# (`score_BHTS` is batch × heads × queries × keys) and the einsum strings that spell them.


# %%
show_source(naive.attention, start="= check_attention_inputs", stop="return AttentionOut")

# %% [markdown]
# It builds `score_BHTS` and `p_BHTS`: the T×S matrices FlashAttention avoids. The
# tiled rung, `spec.attention.tiled.flash_forward`, walks over query tiles of `tile_t`
# rows and, for each, over key tiles of `tile_s` keys. Here is its inner loop — the
# whole algorithm is in these lines; section 4 derives them.

# %%
show_source(tiled.flash_forward, start="for s0 in range", stop="m_BHC = m_new_BHC")

# %% [markdown]
# ## 4. The online softmax
#
# Walk along one query row, one key tile at a time, and keep three things:
#
# * $m$, the largest score seen so far,
# * $\ell = \sum_{s \text{ seen}} \exp(\mathrm{score}_s - m)$, the denominator *relative to* $m$,
# * $\tilde o = \sum_{s \text{ seen}} \exp(\mathrm{score}_s - m)\, v_s$, the unnormalised output.
#
# A new tile $j$ with scores $\mathrm{score}^{(j)}$ arrives. The maximum may grow:
# $m' = \max(m, \max \mathrm{score}^{(j)})$. Every term already summed was computed
# relative to the old $m$; relative to $m'$ it is
# $\exp(\mathrm{score}_s - m') = \exp(\mathrm{score}_s - m)\cdot \exp(m - m')$.
# So one factor $\alpha = \exp(m - m')$ fixes the whole past at once:
#
# $$
# \ell' = \alpha\,\ell + \sum_{s \in j} \exp(\mathrm{score}_s - m'),
# \qquad
# \tilde o' = \alpha\,\tilde o + \sum_{s \in j} \exp(\mathrm{score}_s - m')\, v_s .
# $$
#
# After the last tile, $o = \tilde o / \ell$ (the common $\exp(-m)$ cancels) and
# $\mathrm{lse} = m + \log \ell$. Nothing of size S is ever kept: each row carries one
# $m$, one $\ell$ and one $\tilde o$ of width E. And since $\alpha \le 1$, nothing
# overflows either.
#
# A live trace. Take one row of 32 scores with an upward drift (so the maximum moves),
# in tiles of 8. We compute $m$ and $\ell$ after each tile **from their definitions**
# on the prefix seen so far, and check that the update rule above reproduces them:

# %%
S_trace, tile_trace = 32, 8
score_S = 1.5 * rng.standard_normal(S_trace) + np.linspace(0.0, 4.0, S_trace)
ends = list(range(tile_trace, S_trace, tile_trace)) + [S_trace]
# by definition, on the prefix of the first j tiles
m_N = np.array([score_S[:e].max() for e in ends])
l_N = np.array([np.exp(score_S[:e] - m).sum() for e, m in zip(ends, m_N)])
alpha_N = np.exp(np.concatenate([[m_N[0]], m_N[:-1]]) - m_N)

print(f"{'tile':>4} {'m':>8} {'α=exp(m_old−m_new)':>20} {'l':>8}   update-rule error")
for j, e in enumerate(ends):
    start = e - tile_trace if j else 0
    l_prev = l_N[j - 1] if j else 0.0
    # the update rule: l' = α l + Σ_{s in tile j} exp(score_s − m')
    l_rule = alpha_N[j] * l_prev + np.exp(score_S[start:e] - m_N[j]).sum()
    print(f"{j:>4} {m_N[j]:>8.3f} {alpha_N[j]:>20.4f} {l_N[j]:>8.4f}   {abs(l_rule - l_N[j]):.1e}")
    assert abs(l_rule - l_N[j]) <= 1e-12 * l_N[j]

# %% [markdown]
# Now the spec's own view of the same row. A query of zeros scores 0 against every key,
# so with `bias` set to our row the spec's scores *are* our row: a way to hand the spec
# any scores we like. Running `flash_forward` on the first j tiles of keys must give
# $\mathrm{lse} = m + \log\ell$ of that prefix:

# %%
v_trace = rng.standard_normal((1, 1, S_trace, 2))
for j, e in enumerate(ends):
    lse_spec = tiled.flash_forward(
        np.zeros((1, 1, 1, 1)), np.zeros((1, 1, e, 1)), v_trace[:, :, :e],
        bias=score_S[None, None, None, :e], tile_s=tile_trace,
    ).lse_BHT[0, 0, 0]
    print(f"tile {j}: m + log l = {m_N[j] + np.log(l_N[j]):.12f}   spec lse = {lse_spec:.12f}")
    assert abs(lse_spec - (m_N[j] + np.log(l_N[j]))) < 1e-12 * max(1.0, abs(lse_spec))

figures.online_softmax_trace_figure(score_S, tile_trace, m_N, l_N, alpha_N)

# %% [markdown]
# Read the picture: whenever a tile holds a score above the running maximum (the black
# line jumps), the old denominator is multiplied by α < 1 before the new tile's terms
# are added, which is why $\ell$ can *fall* from one tile to the next. When the maximum
# does not move, α = 1 and the tile's terms are simply added.
#
# ### The same recurrence on a GPU
#
# The pair $(m, \ell)$ is all a row needs, and two pairs of disjoint column sets merge
# by the same rule: $m = \max(m_a, m_b)$, $\ell = \ell_a e^{m_a - m} + \ell_b e^{m_b - m}$.
# That is how a CUDA kernel spreads one row over the 32 lanes of a warp: each lane
# keeps its own pair over every 32nd column, then five shuffle steps merge the lanes.
# `backends/cuda/softmax.cu` does exactly this for the row softmax
# (`spec.attention.softmax`, which states the recurrence without q, k and v). Its
# per-score update and its merge:

# %%
SOFTMAX_CU = (ROOT / "backends" / "cuda" / "softmax.cu").read_text()
start = SOFTMAX_CU.index("// Add one score")
print(SOFTMAX_CU[start : SOFTMAX_CU.index("__device__ __forceinline__ RowStats strided_stats")])

# %% [markdown]
# Where a GPU is present the kernel runs on it through CuPy; elsewhere on the
# project's CPU emulator, which runs the unmodified `.cu` file with CUDA's semantics
# (one fiber per thread, real warp shuffles). Either way it is judged against the spec
# by the tolerance policy, on rows with masked (−inf) scores and one fully masked row:

# %%
from backends.cuda import emulate_if_no_gpu  # noqa: E402
from backends.cuda import softmax as cuda_softmax  # noqa: E402
from spec.attention import softmax as spec_softmax  # noqa: E402
from spec.tolerance import compare, oracle_dtype  # noqa: E402

engine = emulate_if_no_gpu()
x_TS = (4 * rng.standard_normal((16, 300))).astype(np.float32)
x_TS[:, ::7] = -np.inf
x_TS[3] = -np.inf  # a row with nothing visible: p = 0, lse = -inf
oracle = spec_softmax.softmax(x_TS.astype(oracle_dtype(np.float32)))
baseline = spec_softmax.softmax(x_TS)
print(f"engine: {engine}")
for version in cuda_softmax.VERSIONS:
    out = cuda_softmax.softmax(x_TS, version=version)
    for name, o, w, b in zip(("p", "lse"), out, oracle, baseline):
        report = compare(o, w, b)
        print(f"  {version} {name:>3}: max err {report.err:.1e} (bound {report.bound:.1e})")
        assert report.ok
    assert (out.lse_T[3] == -np.inf) and (out.p_TS[3] == 0).all()

# %% [markdown]
# ## 5. Tiling independence, checked live
#
# The rescaling makes the result independent of how the keys are cut into tiles, and
# the query tiles never interact at all. So every `(tile_t, tile_s)` must give the
# oracle up to rounding. "Up to rounding" has a precise meaning in this project, the
# tolerance policy of `spec/tolerance.py` (the rule of the FlashAttention test suite):
# the error against the oracle in a wider dtype may be at most twice the error of the
# oracle itself run in the working dtype, plus one rounding step. We sweep a grid of
# tile sizes on a causal GQA problem with S ≠ T (so causal alignment and ragged edge
# tiles are exercised too), in float64 and in float32:

# %%
from spec.tolerance import compare, oracle_dtype  # noqa: E402

q = rng.standard_normal((1, 2, GRID_T, 16))
k = rng.standard_normal((1, 1, GRID_S, 16))
v = rng.standard_normal((1, 1, GRID_S, 16))
errors, bounds = {}, {}
for dtype in (np.float64, np.float32):
    a = [x.astype(dtype) for x in (q, k, v)]
    oracle = naive.attention(*[x.astype(oracle_dtype(dtype)) for x in a], causal=True).o_BHTE
    baseline = naive.attention(*a, causal=True).o_BHTE  # the oracle, in the working dtype
    err = np.zeros((len(TILE_T_LIST), len(TILE_S_LIST)))
    for i, tile_t in enumerate(TILE_T_LIST):
        for j, tile_s in enumerate(TILE_S_LIST):
            out = tiled.flash_forward(*a, causal=True, tile_t=tile_t, tile_s=tile_s).o_BHTE
            report = compare(out, oracle, baseline)
            assert report.ok, report.message(f"tile_t={tile_t} tile_s={tile_s}")
            err[i, j] = report.err
    name = np.dtype(dtype).name
    errors[name], bounds[name] = err, report.bound
    print(f"{name}: oracle in {oracle_dtype(dtype)}; max error over {err.size} tilings "
          f"{err.max():.2e}, min {err.min():.2e}, tolerance bound {report.bound:.2e}; "
          f"largest spread between the tile_t rows {np.ptp(err, axis=0).max():.1e}")

figures.tile_error_figure(TILE_T_LIST, TILE_S_LIST, errors, bounds)

# %% [markdown]
# Every tiling lands within the rounding noise of its dtype — from one key per tile
# (`tile_s = 1`, a pure streaming softmax) to one tile for the whole row. Cutting the
# queries differently changes no row's arithmetic, so the lines for different `tile_t`
# should lie on top of each other: the printed spread between them says how exactly.
#
# ## 6. The backward pass (FlashAttention-2, Algorithm 2)
#
# Training needs $dQ, dK, dV$ given $dO = \partial L/\partial O$. With
# $P$ the T×S attention probabilities, $O = PV$ gives
#
# $$
# dV = P^\top dO, \qquad dP = dO\, V^\top, \qquad
# dS_{ts} = P_{ts}\Big(dP_{ts} - \sum_{s'} P_{ts'}\, dP_{ts'}\Big), \qquad
# dQ = \mathrm{scale}\; dS\, K, \qquad dK = \mathrm{scale}\; dS^\top Q,
# $$
#
# the middle one being the Jacobian of the softmax. Two observations make it
# streamable:
#
# 1. The row sum needs no P: $\sum_{s} P_{ts}\, dP_{ts} = \sum_s P_{ts}\,(dO_t\cdot v_s)
#    = dO_t \cdot o_t$. So $\Delta_t = \mathrm{rowsum}(dO \circ O)$ is computed once from the
#    saved output.
# 2. $P$ itself is recomputed tile by tile from the saved $\mathrm{lse}$:
#    $P_{ts} = \exp(\mathrm{score}_{ts} - \mathrm{lse}_t)$. The forward pass saves
#    T·E + T numbers (O and lse) instead of T·S.
#
# Check observation 1 live. To get the oracle's P without writing any attention code
# we use one more trick: with the values set to the S×S identity, $o = P\,I = P$.

# %%
B, H, G, T, S, D, E = 1, 2, 1, 5, 7, 4, 3
q = rng.standard_normal((B, H, T, D))
k = rng.standard_normal((B, G, S, D))
v = rng.standard_normal((B, G, S, E))
do = rng.standard_normal((B, H, T, E))
eye = np.broadcast_to(np.eye(S), (B, G, S, S)).copy()
P = naive.attention(q, k, eye, causal=True).o_BHTE  # (B, H, T, S): the probabilities
o = naive.attention(q, k, v, causal=True).o_BHTE
print("rows of P sum to:", P.sum(-1)[0, 0])
print("P V equals o:", np.allclose(P @ v, o))
dP = do @ v.swapaxes(-1, -2)
delta_from_P = np.sum(P * dP, axis=-1)
delta_from_O = np.sum(do * o, axis=-1)  # Δ = rowsum(dO ∘ O): what FlashAttention-2 computes
print(f"max |rowsum(P∘dP) − rowsum(dO∘O)| = {np.abs(delta_from_P - delta_from_O).max():.1e}")
assert np.allclose(delta_from_P, delta_from_O, rtol=0, atol=1e-14)

# %% [markdown]
# Now the whole backward against central differences. The loss is
# $L = \sum dO \circ O$ with O from the **oracle**; we nudge every entry of q, k and v
# by ±h and compare $(L(x+h) - L(x-h))/2h$ with `tiled.flash_backward`. The problem is
# causal, GQA (4 query heads on 2 key/value heads, so dk and dv are sums over a group),
# with a bias and odd tile sizes.

# %%
from tests.strategies import AttentionProblem  # noqa: E402

problem = AttentionProblem(B=1, H=4, G=2, T=5, S=7, D=3, E=2, causal=True, bias="full",
                           tile_t=2, tile_s=3, seed=3)
a = problem.arrays(np.float64)
fwd = naive.attention(a["q"], a["k"], a["v"], bias=a["bias"], **problem.options(tiles=False))
grads = tiled.flash_backward(a["q"], a["k"], a["v"], *fwd, a["do"], bias=a["bias"],
                             **problem.options())


def loss() -> float:
    o = naive.attention(a["q"], a["k"], a["v"], bias=a["bias"], **problem.options(tiles=False))
    return float(np.sum(a["do"] * o.o_BHTE))


from tests.numerics import central_differences  # noqa: E402

show_source(central_differences)

for name, analytic in zip("qkv", grads):
    numeric = central_differences(loss, a[name])
    err = np.abs(analytic - numeric).max()
    print(f"d{name}: shape {analytic.shape}, max |analytic − numeric| = {err:.1e} "
          f"(largest entry {np.abs(analytic).max():.2f})")
    # central differences are accurate to about h² plus eps/h, i.e. ~1e-10 here
    assert err < 1e-7

# %% [markdown]
# ## 7. The fast version: Numba
#
# The spec is written to be read: inside a tile it is vectorised NumPy, but its Python
# loops over tiles cost time. The `cpu` backend (`backends/cpu/attention.py`) compiles
# the same algorithm with Numba. The registry says which implementations exist and
# which spec function each one mirrors:

# %%
from backends import registry  # noqa: E402

for e in registry.entries():
    print(f"{e.name:38} {e.target:42} dtypes {[d.name for d in e.dtypes]}")

# importing compiles nothing yet: Numba compiles each kernel on its first call
cpu_flash_forward = registry.get("attention.flash_forward", "cpu")
cpu_flash_backward = registry.get("attention.flash_backward", "cpu")
print(f"\nthe cpu backend lives in {Path(inspect.getsourcefile(cpu_flash_forward)).relative_to(ROOT)}")

# %% [markdown]
# A backend is only useful if it agrees with the spec. The project's conformance
# checks (`tests/backends/conformance.py`, the same functions the test suite runs)
# apply the tolerance policy to every output. We run them on the edge-case problems
# every property test pins (T = 1, S ≠ T with causal, fully masked rows, −∞ biases,
# logits of 1e4), in both dtypes the backend accepts. The first calls also compile the
# kernels (or load them from Numba's on-disk cache).

# %%
from tests.backends.conformance import check_backward, check_forward  # noqa: E402
from tests.strategies import EDGE_PROBLEMS  # noqa: E402

t0 = time.perf_counter()
for p in EDGE_PROBLEMS:
    for dtype in (np.float32, np.float64):
        check_forward(cpu_flash_forward, p, dtype)
        check_backward(cpu_flash_backward, p, dtype, forward_fn=cpu_flash_forward)
print(f"cpu backend: forward and backward agree with the spec on {len(EDGE_PROBLEMS)} edge "
      f"problems × 2 dtypes ({time.perf_counter() - t0:.1f} s, compilation included)")

# %% [markdown]
# Now the stopwatch: the oracle (NumPy, materialises T×S), the tiled spec (NumPy, loops
# over tiles) and the Numba backend, in float32, B = 1, H = 2, D = E = 64, no mask,
# best of a few calls each.

# %%
best_time = functools.partial(figures.best_time, repeat=REPEAT)  # warm-up, then the fastest call

H_time, D_time = 2, 64
impls = {
    "spec naive (NumPy)": naive.attention,
    "spec flash_forward (NumPy)": tiled.flash_forward,
    "cpu flash_forward (Numba)": cpu_flash_forward,
}
seconds = {name: [] for name in impls}
for T in TIMING_T:
    q, k, v = (rng.standard_normal((1, H_time, T, D_time)).astype(np.float32) for _ in range(3))
    for name, fn in impls.items():
        seconds[name].append(best_time(fn, q, k, v))
    print(f"T = S = {T:5}: " + "  ".join(f"{n.split(' (')[0]} {s[-1] * 1e3:8.2f} ms"
                                       for n, s in seconds.items()))

figures.timing_figure(TIMING_T, seconds, note=f"B=1, H={H_time}, D=E={D_time}, float32, "
                      f"not causal, {os.cpu_count()} CPU cores")

# %% [markdown]
# All three do the T² work of exact attention, so at large T their curves approach the
# slope of the dotted T² guide; what differs is the constant in front of T². The
# spec's tiled form pays Python overhead per tile; the compiled backend does not.
#
# **Recorded figures.** `bench/RESULTS.md` records benchmark runs (the Numba backend
# against PyTorch's SDPA on the CPU, and GPU kernels where one was available). The GPU
# kernels of this project live in `backends/cuda` and register themselves in the same
# registry; on a machine without a GPU the lesson shows the figures recorded on one.

# %%
cuda = [e.name for e in registry.entries(backend="cuda")]
print("CUDA implementations registered:", cuda or "none yet")
results = ROOT / "bench" / "RESULTS.md"
# bench/RESULTS.md holds one "## " section per recorded benchmark; show the GPU ones
sections = results.read_text().split("\n## ")[1:] if results.is_file() else []
gpu_sections = [sec for sec in sections if any(w in sec.splitlines()[0] for w in ("CUDA", "GPU"))]
print("\n\n".join("## " + sec for sec in gpu_sections) or "no recorded GPU figures in bench/RESULTS.md yet")
print("\nall recorded benchmarks:", [sec.splitlines()[0] for sec in sections] or "none")

# %% [markdown]
# ## 8. Napkin math: bytes, FLOPs, expected speed-up, then the measured one
#
# Count, for one (batch, head) at T = S = 2048, D = E = 64 in float32 (b = 4 bytes per
# number), what has to happen. Causal masking and the exponentials are ignored.
#
# **FLOPs** — the same for both, since FlashAttention computes the same products:
# $2\,T S D$ for $QK^\top$ plus $2\,T S E$ for $PV$.
#
# **Bytes moved to and from main memory.** The naive form reads Q, K, V once, writes
# the scores (T·S), reads them back for the softmax, writes P (T·S), reads P again for
# $PV$, and writes O:
#
# $$\text{bytes}_\text{naive} = b\,(TD + SD + SE + TE + 4\,TS).$$
#
# FlashAttention keeps a query tile of `tile_t` rows in fast memory (GPU: shared
# memory; CPU: cache) and streams all of K and V past it, once per query tile, so
#
# $$\text{bytes}_\text{flash} = b\,\big(TD + TE + \lceil T/\text{tile\_t}\rceil\, S\,(D + E)\big).$$
#
# The scores never leave fast memory. On the napkin:

# %%
def attention_flops(T, S, D, E):
    """2·T·S·D for Q Kᵀ plus 2·T·S·E for P V."""
    return 2 * T * S * D + 2 * T * S * E


def naive_bytes(T, S, D, E, b=4):
    """Read Q, K, V; write and re-read the scores; write and re-read P; write O."""
    return b * (T * D + S * D + S * E + T * E + 4 * T * S)


def flash_bytes(T, S, D, E, tile_t, b=4):
    """Read Q and write O once; stream K and V once per query tile."""
    return b * (T * D + T * E + math.ceil(T / tile_t) * S * (D + E))


T = S = 2048
D = E = 64
F = attention_flops(T, S, D, E)
print(f"T = S = {T}, D = E = {D}, one head, float32")
print(f"  FLOPs                      {F / 1e9:7.3f} GFLOP")
print(f"  bytes naive                {naive_bytes(T, S, D, E) / 1e6:7.1f} MB"
      f"   ({F / naive_bytes(T, S, D, E):5.1f} FLOP/byte)")
for tile_t in (64, 128):
    fb = flash_bytes(T, S, D, E, tile_t)
    print(f"  bytes flash, tile_t = {tile_t:3}   {fb / 1e6:7.1f} MB   ({F / fb:5.1f} FLOP/byte),"
          f" {naive_bytes(T, S, D, E) / fb:.1f}× fewer bytes than naive")

# %% [markdown]
# Whether fewer bytes mean less time depends on the machine's balance. A kernel can go
# no faster than its FLOPs allow at the peak compute rate, nor than its bytes allow at
# the memory bandwidth: $t \ge \max(F/\text{peak},\ \text{bytes}/\text{bandwidth})$ (the
# roofline). Measure both for this machine — the peak as NumPy's float32 matrix-product
# rate (the best a CPU kernel can hope for here), the bandwidth as a large array copy
# (read + write):

# %%
n = 1024 if SMALL else 2048
x = rng.standard_normal((n, n)).astype(np.float32)
peak_flops = 2 * n**3 / best_time(np.matmul, x, x)
big = np.ones(2**24 if SMALL else 2**26, np.float32)  # 64 MiB or 256 MiB: far beyond any cache
dst = np.empty_like(big)
bandwidth = 2 * big.nbytes / best_time(np.copyto, dst, big)
del big, dst
print(f"float32 GEMM rate {peak_flops / 1e9:6.1f} GFLOP/s;  copy bandwidth {bandwidth / 1e9:5.1f} GB/s;"
      f"  balance {peak_flops / bandwidth:.1f} FLOP/byte")

# %% [markdown]
# Below the balance point (FLOP/byte of the kernel < FLOP/byte of the machine) a
# kernel is memory-bound and cutting bytes pays off one for one; above it, FLOPs
# dominate. Now predict and measure at the size this mode runs (T = S = `NAPKIN_T`, the
# 2048 of the napkin in default mode), with H = 2 heads, the backend's default tiles:

# %%
T = S = NAPKIN_T
D = E = 64
H_nap = 2
tile_t_default = inspect.signature(cpu_flash_forward).parameters["tile_t"].default
F = H_nap * attention_flops(T, S, D, E)
predicted = {
    "naive": max(F / peak_flops, H_nap * naive_bytes(T, S, D, E) / bandwidth),
    "flash": max(F / peak_flops, H_nap * flash_bytes(T, S, D, E, tile_t_default) / bandwidth),
}
q, k, v = (rng.standard_normal((1, H_nap, T, D)).astype(np.float32) for _ in range(3))
measured = {
    "naive": best_time(naive.attention, q, k, v),
    "flash": best_time(cpu_flash_forward, q, k, v),
}
print(f"T = S = {T}, H = {H_nap}, D = E = {D}, float32, tile_t = {tile_t_default}")
for key, label in (("naive", "spec naive (NumPy)"), ("flash", "cpu flash (Numba)")):
    print(f"  {label:20} predicted {predicted[key] * 1e3:8.2f} ms   measured {measured[key] * 1e3:8.2f} ms"
          f"   achieved {F / measured[key] / 1e9:6.1f} GFLOP/s"
          f" = {100 * F / measured[key] / peak_flops:5.1f}% of the GEMM rate")
print(f"  speed-up flash over naive: predicted {predicted['naive'] / predicted['flash']:.2f}×, "
      f"measured {measured['naive'] / measured['flash']:.2f}×")

figures.napkin_figure(["spec naive (NumPy)", "cpu flash (Numba)"],
                      [predicted["naive"], predicted["flash"]],
                      [measured["naive"], measured["flash"]],
                      title=f"Roofline prediction against the stopwatch, T = S = {T}")

# %% [markdown]
# On this machine the comparison is between a NumPy program and a Numba loop nest, and
# the prediction says how much of the difference the memory traffic alone can explain:
# when the machine's balance (FLOP/byte) is below the naive form's arithmetic intensity,
# both are compute-bound on the napkin and the predicted speed-up is 1×.
#
# The picture on a GPU is different, and it is why FlashAttention exists. The same
# formulas with the published figures of an NVIDIA H100 SXM (989 TFLOP/s dense BF16 on
# tensor cores, 3.35 TB/s of HBM3; 2-byte numbers; a query tile of 128 rows):

# %%
gpu_peak, gpu_bandwidth, b_bf16 = 989e12, 3.35e12, 2  # H100 SXM spec sheet
T = S = 2048
D = E = 64
F = attention_flops(T, S, D, E)
t_naive = max(F / gpu_peak, naive_bytes(T, S, D, E, b=b_bf16) / gpu_bandwidth)
t_flash = max(F / gpu_peak, flash_bytes(T, S, D, E, 128, b=b_bf16) / gpu_bandwidth)
print(f"H100 balance {gpu_peak / gpu_bandwidth:.0f} FLOP/byte; one head at T = S = {T}:")
print(f"  naive: compute {F / gpu_peak * 1e6:5.2f} µs, memory "
      f"{naive_bytes(T, S, D, E, b=b_bf16) / gpu_bandwidth * 1e6:5.2f} µs -> {t_naive * 1e6:5.2f} µs")
print(f"  flash: compute {F / gpu_peak * 1e6:5.2f} µs, memory "
      f"{flash_bytes(T, S, D, E, 128, b=b_bf16) / gpu_bandwidth * 1e6:5.2f} µs -> {t_flash * 1e6:5.2f} µs")
print(f"  predicted speed-up {t_naive / t_flash:.1f}×")

# %% [markdown]
# With a balance of hundreds of FLOP per byte, every byte saved is time saved: the
# naive form is memory-bound several times over and FlashAttention's streaming pays off
# almost in proportion to the bytes it avoids.
#
# How to read the gap between prediction and measurement on this machine:
#
# * The roofline is a **lower bound**: a measurement far above it means the kernel is
#   limited by something the napkin ignores. For the NumPy oracle that is the number of
#   passes over the T×S matrix: the napkin counted four, but the spec also scales,
#   masks, takes the max, exponentiates and divides, each a full pass, and its
#   `einsum` products do not always reach the GEMM rate.
# * For the Numba kernel the question is how close its inner products come to the GEMM
#   rate: the percentage above. A hand-written loop nest is rarely as well blocked and
#   vectorised as a tuned BLAS, which is why GPU FlashAttention kernels use tensor-core
#   matrix instructions for exactly these two products.
# * On a CPU the "fast memory" is the cache: K and V of one head at D = 64 fit in the
#   L2 or L3 cache, so flash's repeated streaming rarely reaches main memory at all,
#   while the naive form's T×S matrices (16 MiB per head at T = 2048) do. On a GPU the
#   same argument, with HBM and on-chip SRAM, is the whole reason FlashAttention wins.
#
# ## 9. Exercises
#
# Each exercise has a stub for you to fill in, a `check` that judges it, a demonstration
# of a typical mistake being caught, and a hidden solution (expand the collapsed cell
# in Jupyter). The notebook runs as shipped; edit the stubs and re-run the check cells.
#
# ### (a) The online-softmax update for one key tile
#
# Write `online_update(m_T, l_T, acc_TE, score_TC, v_CE)` returning the new
# `(m_T, l_T, acc_TE)` after one key tile, as derived in section 4:
#
# * `m_T`, `l_T`: running max and denominator per row (shape `(..., T)`; −∞ and 0 before
#   the first tile),
# * `acc_TE`: the unnormalised output $\tilde o$ (shape `(..., T, E)`),
# * `score_TC`: the tile's scores (shape `(..., T, C)`), **−∞ where a key is masked**,
# * `v_CE`: the tile's values (shape `(..., C, E)`).
#
# Leading dimensions (batch, heads) may be present, so use `...`-friendly operations
# (`np.max(x, axis=-1)`, `@`). Keep the input dtype. The trap: a row whose scores so far
# are all −∞ has `m = −∞`, and `exp(−∞ − (−∞))` is NaN. The `finish` helper below turns
# the final state into `(o, lse)`, with the spec's convention for empty rows.

# %%
from spec.tolerance import assert_close  # noqa: E402


def finish(m_T, l_T, acc_TE):
    """o = Õ / l and lse = m + log l; a row that saw no visible key gets o = 0, lse = −∞."""
    empty_T = m_T == -np.inf
    l_safe_T = np.where(empty_T, 1, l_T)
    return acc_TE / l_safe_T[..., None], np.where(empty_T, -np.inf, m_T + np.log(l_safe_T))


def check_update(update) -> bool:
    """Fold ``update`` over key tiles of many score rows and compare with the oracle.

    The oracle is `naive.attention` handed the scores through `bias` (a query of zeros
    scores 0 against every key), in a wider dtype; the comparison is the project's
    tolerance policy. Cases: masked keys, a row with no visible key, a row whose first
    tiles are empty, logits of 1e4, one key per tile and one tile for the whole row.
    Prints PASS / FAIL / TODO and returns True on PASS.
    """
    rng = np.random.default_rng(0)

    def run():
        for T, S, E, logit in ((1, 1, 1, 1.0), (6, 13, 3, 1.0), (6, 13, 3, 30.0), (4, 9, 2, 1e4)):
            score_TS = logit * rng.standard_normal((T, S))
            score_TS[rng.random((T, S)) < 0.3] = -np.inf  # masked keys
            if T > 1:
                score_TS[0] = -np.inf  # a row with no visible key
                score_TS[-1, : S // 2] = -np.inf  # a row whose first tiles are empty
            v_SE = rng.standard_normal((S, E))
            for dtype in (np.float64, np.float32):
                wide = oracle_dtype(dtype)

                def oracle(dt):
                    zq, zk = np.zeros((1, 1, T, 1), dt), np.zeros((1, 1, S, 1), dt)
                    return naive.attention(zq, zk, v_SE.astype(dt)[None, None],
                                           bias=score_TS.astype(dt)[None, None])

                want, base = oracle(wide), oracle(dtype)
                for tile_s in sorted({1, 2, 4, S}):
                    m_T = np.full(T, -np.inf, dtype)
                    l_T = np.zeros(T, dtype)
                    acc_TE = np.zeros((T, E), dtype)
                    for s0 in range(0, S, tile_s):
                        m_T, l_T, acc_TE = update(m_T, l_T, acc_TE,
                                                  score_TS[:, s0 : s0 + tile_s].astype(dtype),
                                                  v_SE[s0 : s0 + tile_s].astype(dtype))
                    o_TE, lse_T = finish(m_T, l_T, acc_TE)
                    case = f"T={T} S={S} E={E} logit={logit} tile_s={tile_s} {np.dtype(dtype).name}"
                    for label, got in (("o", o_TE), ("lse", lse_T)):
                        assert got.dtype == dtype, f"{label}: dtype {got.dtype}, expected {np.dtype(dtype)} ({case})"
                    assert_close(o_TE, want.o_BHTE[0, 0], base.o_BHTE[0, 0], name=f"o ({case})")
                    assert_close(lse_T, want.lse_BHT[0, 0], base.lse_BHT[0, 0], name=f"lse ({case})")

    return verdict(update, run, "agrees with the oracle on every case, tile size and dtype")


# %%
def online_update(m_T, l_T, acc_TE, score_TC, v_CE):
    """YOUR CODE: return (m_T, l_T, acc_TE) after the key tile (score_TC, v_CE)."""
    raise NotImplementedError


check_update(online_update)

# %% [markdown]
# A typical mistake, caught: updating the maximum but forgetting to rescale the past by
# $\alpha$. It is right whenever a row fits in one tile — so only a check with several
# tile sizes finds it.


# %%
def update_without_rescale(m_T, l_T, acc_TE, score_TC, v_CE):
    m_new_T = np.maximum(m_T, np.max(score_TC, axis=-1))
    m_safe_T = np.where(m_new_T == -np.inf, 0, m_new_T)
    p_TC = np.exp(score_TC - m_safe_T[..., None])
    return m_new_T, l_T + p_TC.sum(axis=-1), acc_TE + p_TC @ v_CE  # BUG: no α


assert not check_update(update_without_rescale)

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution (a). Expand to read it.
def solution_online_update(m_T, l_T, acc_TE, score_TC, v_CE):
    # m' = max(m, rowmax(S))
    m_new_T = np.maximum(m_T, np.max(score_TC, axis=-1))
    # a row that has seen only −∞ keeps m' = −∞; use 0 in its place so no −∞ − (−∞) = NaN
    m_safe_T = np.where(m_new_T == -np.inf, 0, m_new_T)
    # P = exp(S − m') (0 for masked keys),  α = exp(m − m')
    p_TC = np.exp(score_TC - m_safe_T[..., None])
    alpha_T = np.exp(m_T - m_safe_T)
    # l' = α l + rowsum(P),  Õ' = α Õ + P V
    return m_new_T, alpha_T * l_T + p_TC.sum(axis=-1), alpha_T[..., None] * acc_TE + p_TC @ v_CE


assert check_update(solution_online_update)

# %% [markdown]
# ### (b) A FlashAttention forward of your own
#
# Write `my_flash_forward` with the signature and the results of
# `spec.attention.tiled.flash_forward`: it must handle `causal` (bottom-right),
# `scale`, `bias`, `mask`, GQA, any `tile_t`/`tile_s`, rows with no visible key, and keep
# the input dtype. Use your `online_update` and `finish` from (a) and the spec's helpers
# (`naive.causal_visible_TS`, `naive.expand_kv_heads`, and
# `spec.attention.checks.check_attention_inputs` to validate inputs) — but not
# `tiled.flash_forward` itself.
#
# `check` runs the project's real conformance test, `check_forward`, on your function:
# first the pinned edge problems, then problems drawn by hypothesis (shapes at the
# tile edges, odd widths, masks, −∞ biases, 1e4 logits), in float64 and float32. On a
# failure hypothesis shrinks the problem to a small one and prints it.

# %%
from spec.attention.checks import check_attention_inputs, check_scale, check_tile  # noqa: E402
from tests.strategies import attention_problems  # noqa: E402


def check(fn, *, max_examples: int = HYPOTHESIS_EXAMPLES) -> bool:
    """Run the project's forward conformance check on ``fn``; print PASS / FAIL / TODO."""
    return check_on_problems(fn, check_forward, EDGE_PROBLEMS, attention_problems(max_len=24),
                             max_examples=max_examples, derandomize=SMALL)


# %%
def my_flash_forward(q_BHTD, k_BGSD, v_BGSE, *, causal=False, scale=None, bias=None, mask=None,
                     tile_t=64, tile_s=64):
    """YOUR CODE: return naive.AttentionOut(o_BHTE, lse_BHT), one key tile at a time."""
    raise NotImplementedError


check(my_flash_forward)

# %% [markdown]
# `check` on the spec itself and on the Numba backend — both pass, of course:

# %%
assert check(tiled.flash_forward)
assert check(cpu_flash_forward)

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution (b). Expand to read it. It uses the solution of (a); swap in your own
# online_update once it passes.
def solution_flash_forward(q_BHTD, k_BGSD, v_BGSE, *, causal=False, scale=None, bias=None,
                           mask=None, tile_t=64, tile_s=64, update=solution_online_update):
    B, H, G, T, S, D, E = check_attention_inputs(q_BHTD, k_BGSD, v_BGSE, bias=bias, mask=mask)
    tile_t, tile_s = check_tile("tile_t", tile_t), check_tile("tile_s", tile_s)
    dtype = q_BHTD.dtype
    scale = dtype.type(check_scale(scale, D))
    # query head h reads key/value head h // (H/G)
    k_BHSD, v_BHSE = naive.expand_kv_heads(k_BGSD, H), naive.expand_kv_heads(v_BGSE, H)
    # which keys each query may see: causal (bottom-right) ∧ mask; broadcast, not copied
    visible = np.ones((1, 1, T, S), bool)
    if causal:
        visible = visible & naive.causal_visible_TS(T, S)
    if mask is not None:
        visible = visible & mask
    visible_BHTS = np.broadcast_to(visible, (B, H, T, S))
    bias_BHTS = None if bias is None else np.broadcast_to(bias, (B, H, T, S))
    o_BHTE = np.empty((B, H, T, E), dtype)
    lse_BHT = np.empty((B, H, T), dtype)
    for t0 in range(0, T, tile_t):
        t1 = min(t0 + tile_t, T)
        m_BHC = np.full((B, H, t1 - t0), -np.inf, dtype)
        l_BHC = np.zeros((B, H, t1 - t0), dtype)
        acc_BHCE = np.zeros((B, H, t1 - t0, E), dtype)
        for s0 in range(0, S, tile_s):
            s1 = min(s0 + tile_s, S)
            # score = scale · q kᵀ + bias, −∞ where not visible
            score_BHCC = scale * (q_BHTD[:, :, t0:t1] @ k_BHSD[:, :, s0:s1].swapaxes(-1, -2))
            if bias_BHTS is not None:
                score_BHCC = score_BHCC + bias_BHTS[:, :, t0:t1, s0:s1]
            score_BHCC = np.where(visible_BHTS[:, :, t0:t1, s0:s1], score_BHCC, -np.inf)
            m_BHC, l_BHC, acc_BHCE = update(m_BHC, l_BHC, acc_BHCE, score_BHCC, v_BHSE[:, :, s0:s1])
        o_BHTE[:, :, t0:t1], lse_BHT[:, :, t0:t1] = finish(m_BHC, l_BHC, acc_BHCE)
    return naive.AttentionOut(o_BHTE, lse_BHT)


assert check(solution_flash_forward)

# %% [markdown]
# A typical mistake, caught: aligning the causal mask at the **top-left** (query t sees
# keys s ≤ t), which is right only when S = T. The wrapper below takes the solution and
# swaps the alignment; the very first edge problem (T = 1 query after S = 9 keys)
# exposes it.


# %%
def top_left_causal(q_BHTD, k_BGSD, v_BGSE, *, causal=False, mask=None, **options):
    if causal:
        T, S = q_BHTD.shape[2], k_BGSD.shape[2]
        top_left = np.tril(np.ones((T, S), bool))[None, None]  # BUG: s ≤ t instead of s ≤ t + S − T
        mask = top_left if mask is None else mask & top_left
    return solution_flash_forward(q_BHTD, k_BGSD, v_BGSE, causal=False, mask=mask, **options)


assert not check(top_left_causal)

# %% [markdown]
# ## Summary
#
# * Softmax attention needs, per row, the max and the sum over all keys; done naively
#   that means a T×S matrix per head, in memory and in memory traffic.
# * The online softmax keeps a running max $m$, denominator $\ell$ and unnormalised
#   output $\tilde o$, and rescales the past by $\exp(m_\text{old} - m_\text{new})$ when
#   the max moves. The result does not depend on the tiling — checked above for every
#   tile size, to within the rounding of the dtype.
# * The backward pass recomputes P tile by tile from the saved lse and needs only
#   $\Delta = \mathrm{rowsum}(dO \circ O)$ — checked against central differences.
# * The same algorithm compiled with Numba agrees with the spec under the project's
#   tolerance policy, and the napkin math tells what speed to expect and why.
#
# Next: `spec/attention/tiled.py` in full (the backward's loop order: key tiles outside,
# so dK and dV accumulate in fast memory), and the tests that hold every backend to
# it, `tests/backends/`.

# %%
print(f"lesson executed in {time.perf_counter() - LESSON_START:.1f} s ({'small' if SMALL else 'default'} mode)")
