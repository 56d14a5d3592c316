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
# # Lesson 03 — Positions: RoPE, ALiBi, their harmonic combination, and what each does at long range
#
# Softmax attention on its own does not know where a token is. This lesson reads the
# project's specification of the two position schemes most language models use,
# **rotary embeddings** (RoPE, `spec/position/rope.py`) and **linear biases** (ALiBi,
# `spec/position/alibi.py`), and of a proposed combination of the two "with a harmonic
# series" (`spec/position/rope_alibi.py`). We look at what each does to a score as a
# function of distance, check their defining properties live, push them past the length
# they were set up for, see ALiBi as a rank-2 product, pack sequences of different
# lengths into one batch, and time the compiled kernel that computes all of it without
# a T×S bias. At the end you write ALiBi's slopes and a rotate-half RoPE, and the spec
# judges them.
#
# Nothing here re-implements the spec: we import it, print it, and poke it.
#
# **Modes.** With `ATTNSPEC_LESSON_MODE=small` (what CI sets) every size shrinks so
# the whole notebook runs in about a minute; by default the sizes are bigger and the
# pictures more telling.

# %%
# %matplotlib inline
import functools
import math
import os
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
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
# this notebook may run where the package is not installed: put the checkout first
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backends.lesson_kit import show_source, verdict  # noqa: E402

SMALL = os.environ.get("ATTNSPEC_LESSON_MODE", "").lower() == "small"
if SMALL:
    REF_LENGTH = 128  # the "training" length of the extrapolation experiment
    LENGTHS = [128, 256, 512]  # lengths it is evaluated at
    LOWRANK_S = [256, 1024, 4096, 16384]  # key counts of the low-rank precision sweep
    SPEED_T = 512  # T = S of the timing section
    REPEAT = 2  # bandwidth: best of this many copies (at least 0.2 s of them)
    ROUNDS = 5  # speed: best of this many rounds of calls
else:
    REF_LENGTH = 128
    LENGTHS = [128, 512, 2048]
    LOWRANK_S = [256, 1024, 4096, 16384, 65536]
    SPEED_T = 2048
    REPEAT = 3
    ROUNDS = 7

from spec.attention import naive, positional, varlen  # noqa: E402
from spec.position import alibi, rope, rope_alibi  # noqa: E402
from spec.position.rope import RoPE  # noqa: E402
from spec.tolerance import compare, oracle_dtype  # noqa: E402

LESSON_START = time.perf_counter()
print(f"repository: {ROOT}\nmode: {'small' if SMALL else 'default'}")

# %% [markdown]
# ## 1. The question
#
# The score of query $t$ and key $s$ is $q_t\cdot k_s$: nothing in it says *where* the
# two tokens are. Permute the keys and values together and every query gets exactly the
# same output — attention treats its context as a **set**. Checked live on the oracle:

# %%
rng = np.random.default_rng(0)
q = rng.standard_normal((1, 2, 6, 8))
k = rng.standard_normal((1, 2, 10, 8))
v = rng.standard_normal((1, 2, 10, 4))
perm = rng.permutation(10)
o_plain = naive.attention(q, k, v).o_BHTE
o_shuffled = naive.attention(q, k[:, :, perm], v[:, :, perm]).o_BHTE
print(f"no positions, keys shuffled:   max |Δo| = {np.abs(o_plain - o_shuffled).max():.1e}")
assert np.abs(o_plain - o_shuffled).max() < 1e-14
o_rope = naive.attention(q, k, v, rope=RoPE()).o_BHTE
o_rope_shuffled = naive.attention(q, k[:, :, perm], v[:, :, perm], rope=RoPE()).o_BHTE
print(f"with RoPE, keys shuffled:      max |Δo| = {np.abs(o_rope - o_rope_shuffled).max():.1e}")
assert np.abs(o_rope - o_rope_shuffled).max() > 1e-3

# %% [markdown]
# (A causal mask does carry some order — a token sees only its past — and models
# trained without any position encoding, "NoPE", do learn to use it. The schemes of
# this lesson give order to the scores themselves.)
#
# Two families dominate:
#
# * **RoPE** (Su et al., 2021, *RoFormer*) rotates q and k by an angle proportional to
#   their position before the dot product. Used by Llama, Mistral, Qwen, GPT-NeoX.
# * **ALiBi** (Press, Smith and Lewis, 2022, *Train Short, Test Long*) adds no position
#   to q or k at all; it subtracts a per-head penalty proportional to the distance.
#   Used by BLOOM, MPT, and (symmetric) by MosaicBERT.
#
# And one proposal: Fulu Li (2024, arXiv 2410.18441) mentions "a factored combination
# of RoPE and ALiBi with a harmonic series"; no source we could read gives its formula,
# so the spec implements three readings of it (section 6).
#
# ## 2. The math
#
# **Positions.** Throughout the project key $s$ sits at position $j = s$ and query
# $t$ at $i = t + S - T$: bottom-right aligned, like the causal mask, so T new queries
# after S − T cached keys sit at their true positions.
#
# **RoPE** (Su et al., eqs. 13–15). Split the D features into D/2 pairs, give pair
# $k$ the frequency $\theta_k = \text{base}^{-2k/D}$ (base = 10000 in the paper), and
# rotate the pair of a row at position $p$ by the angle $p\,\theta_k$:
#
# $$
# \begin{pmatrix} x_1 \\ x_2 \end{pmatrix} \mapsto
# \begin{pmatrix} x_1\cos p\theta_k - x_2 \sin p\theta_k \\ x_2\cos p\theta_k + x_1 \sin p\theta_k \end{pmatrix}
# = R_{p\theta_k} \begin{pmatrix} x_1 \\ x_2 \end{pmatrix}.
# $$
#
# Rotations compose and are orthogonal, so $\langle R_i q, R_j k\rangle = \langle q, R_{j-i} k\rangle$:
# the score depends on the positions **only through their difference**. Which features form
# a pair is a convention: `"rotate_half"` pairs $k$ with $k + D/2$ (GPT-NeoX, Hugging
# Face Llama), `"interleaved"` pairs $2k$ with $2k+1$ (the paper's eq. 15, Meta's Llama).
#
# **ALiBi** (Press et al., section 3). Head $h$ adds a fixed linear penalty:
#
# $$ \mathrm{score}_{hij} = \mathrm{scale}\; q_i\cdot k_j - m_h\,(i - j), $$
#
# with slopes $m_h = 2^{-8h/H}$ for H a power of two ($\tfrac12, \tfrac14, \dots, \tfrac1{256}$
# for 8 heads) — each head looks at a different range.
#
# **The harmonic combination** (`spec.position.rope_alibi`). All three readings rotate q
# and k by RoPE *and* subtract a penalty with harmonic slopes $m_h = \lambda / h$
# ($\lambda$ weighs the two); they differ in the shape $f(d)$ of the penalty of the
# distance $d = |i - j|$:
#
# | reading | penalty $-m_h f(d)$ | as a weight on the attention |
# |---|---|---|
# | additive (default) | $f(d) = d$ (ALiBi's line, harmonic slopes) | $e^{-m_h d}$ |
# | harmonic number | $f(d) = H_d = 1 + \tfrac12 + \dots + \tfrac1d$ | $e^{-m_h H_d} \approx (e^{\gamma} d)^{-m_h}$ |
# | multiplicative | $f(d) = \ln(1 + d)$ | $(1 + d)^{-m_h}$: the harmonic series' terms for $m_h = 1$ |
#
# ## 3. Read the spec
#
# The rotation every backend reproduces — two products and one sum per output, with the
# cos/sin tables computed once in float64 (`rope.tables`):

# %%
show_source(rope.rotate, start="x_BHTD.shape[-1] // 2", stop="return y_BHTD")

# %% [markdown]
# The attention functions do not take a T×S ALiBi bias: they take the slopes
# (`alibi_slopes=`, shape (H,)) and the penalty's shape (`alibi_form=`), and form the
# bias of one tile at a time from a table of f(0) … f(n−1). This is the spec's tile of it
# (`spec/attention/positional.py`), shared by the oracle and the tiled FlashAttention:

# %%
show_source(positional.alibi_tile)

# %% [markdown]
# And the harmonic combination is nothing but a choice of those keywords:

# %%
show_source(rope_alibi.options, start="if variant not in", stop='"alibi_form"')
for variant in rope_alibi.VARIANTS:
    opts = rope_alibi.options(4, variant=variant)
    print(f"options(4, variant={variant!r:18}) -> rope={opts['rope']}, "
          f"alibi_slopes={np.round(opts['alibi_slopes'], 3)}, alibi_form={opts['alibi_form']!r}")

# %% [markdown]
# ## 4. What each scheme does to the score as a function of distance
#
# ### RoPE: a decay that is a bound, not a rule
#
# Su et al. (section 3.4.3) argue that RoPE scores decay with distance: writing the
# score as $\mathrm{Re}\sum_k h_k e^{i\,n\theta_k}$ (n the distance, $h_k$ the complex
# product of a q pair and a k pair), Abel summation bounds its magnitude by
# $\max_k |h_{k+1} - h_k| \cdot \sum_j |S_j|$ with $S_j = \sum_{k<j} e^{i\,n\theta_k}$, and
# the relative bound $\frac{1}{D/2}\sum_j |S_j|$ (their fig. 2) falls as n grows.
# `rope.long_term_decay` computes it. Next to it, an actual profile: one fixed random
# vector $x$ used as both query (at position d) and key (at position 0), so the score is
# $\langle R_d x, x\rangle$ — rotated by the spec — and the same averaged over 64 random
# vectors.

# %%
D_fig, base_fig = 128, 10000.0
d_N = np.arange(0, 1025)
bound_N = rope.long_term_decay(d_N, D_fig, base_fig)

x_KD = rng.standard_normal((64, D_fig))
x_K1ND = np.broadcast_to(x_KD[:, None, None, :], (64, 1, d_N.size, D_fig)).copy()
rotated_K1ND = rope.rope(x_K1ND, positions=d_N)  # R_d x at every distance d (the key x sits at 0)
profile_KN = np.einsum("KND,KD->KN", rotated_K1ND[:, 0], x_KD) / np.sum(x_KD**2, axis=1)[:, None]

for d in (0, 10, 100, 1000):
    print(f"d = {d:4}: relative bound {bound_N[d]:6.2f}   ⟨R_d x, x⟩/|x|² one vector {profile_KN[0, d]:+.3f}"
          f"   mean of 64 {profile_KN[:, d].mean():+.3f}")
assert bound_N[1000] < bound_N[0] / 4  # the bound decays
assert np.allclose(profile_KN[:, 0], 1.0)  # no rotation at distance 0

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
ax1.plot(d_N, bound_N)
ax1.set(xlabel="relative distance d", ylabel="relative upper bound",
        title=f"Su et al.'s long-term decay bound (D={D_fig}, base={base_fig:g})")
ax2.plot(d_N, profile_KN[0], lw=0.8, label="one random x")
ax2.plot(d_N, profile_KN.mean(axis=0), lw=1.5, label="mean over 64 random x")
ax2.axhline(0, color="0.6", lw=0.5)
ax2.set(xlabel="relative distance d", ylabel="⟨R_d x, x⟩ / |x|²", title="an actual RoPE score, q = k = x")
ax2.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The bound decays, but one actual score does not follow it smoothly: it oscillates and
# settles on a floor. The floor comes from the slowest pairs, whose angle $d\,\theta_k$
# is still small at d = 1000 ($\theta_{63} = 10000^{-126/128} \approx 1.2\cdot10^{-4}$), so
# they keep their full contribution. RoPE's locality is real only where q and k share
# a direction; for unrelated q and k the rotation just scrambles an already random score
# (section 7 shows both cases).
#
# ### ALiBi: one straight line per head
#
# The spec's slopes, for 8 heads and for 12 (not a power of two: Press et al. take the 8
# slopes of 8 heads and every other slope of 16 heads, which fall between them):

# %%
print("slopes(8) :", alibi.slopes(8))
print("slopes(12):", np.round(alibi.slopes(12), 5))
assert np.array_equal(alibi.slopes(12), np.concatenate([alibi.slopes(8), alibi.slopes(16)[0::2][:4]]))

H_fig = 8
m_H = alibi.slopes(H_fig)
d_fig = np.arange(0, 1025)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
for h, m in enumerate(m_H):
    ax1.plot(d_fig[:65], -m * alibi.penalty(d_fig[:65]), label=f"head {h + 1}: m = 1/{1 / m:g}")
    ax2.plot(d_fig, np.exp(-m * alibi.penalty(d_fig)))
ax1.set(xlabel="distance i − j", ylabel="bias −m·(i − j)", title="ALiBi bias, 8 heads (Press et al.)")
ax1.legend(fontsize=7, ncol=2)
ax2.set_yscale("log")
ax2.set_ylim(1e-6, 1.5)
ax2.set(xlabel="distance i − j", ylabel="weight factor exp(−m·d)",
        title="what the bias does to a weight: a window of about 1/m")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### The harmonic combination's three readings side by side
#
# Same heads, harmonic slopes $m_h = 1/h$ (λ = 1), the three penalty shapes of
# `alibi.penalty` (`"linear"`, `"harmonic_number"`, `"harmonic_prior"`):

# %%
H_show = 8
m_harm_H = rope_alibi.harmonic_slopes(H_show)
d_fig = np.arange(0, 513)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for ax, (variant, form) in zip(axes, rope_alibi.VARIANTS.items()):
    for h in (0, 1, 3, 7):
        ax.plot(d_fig, -m_harm_H[h] * alibi.penalty(d_fig, form), label=f"head {h + 1}: m = 1/{h + 1}")
    ax.set(xlabel="distance d", ylabel="bias", title=f"{variant}: −m·{form}(d)")
    ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

# the multiplicative reading's prior (1 + d)^(-m): for m = 1 the terms of the harmonic series
prior_N = rope_alibi.distance_prior(np.arange(6), 1.0)
print("distance_prior(d, 1) for d = 0..5:", np.round(prior_N, 4))
assert np.allclose(prior_N, 1 / (1 + np.arange(6)), rtol=1e-15, atol=0)
# and it is exp of the symmetric bias of the "harmonic_prior" form
b_TS = alibi.bias(np.array([0.5]), 6, 6, symmetric=True, form="harmonic_prior")[0]
assert np.allclose(np.exp(b_TS[-1, ::-1]), rope_alibi.distance_prior(np.arange(6), 0.5), rtol=1e-15)

# %% [markdown]
# The additive reading penalises linearly (its head 1, with m = 1, is almost a
# "look at the last few tokens" head; ALiBi's steepest head has m = 1/2). The two
# logarithmic readings are gentle: at distance 500 head 1 has lost about 6.8 nats
# (H_500 ≈ 6.8, ln 501 ≈ 6.2), and head 8 less than one. H_d and ln(1 + d) differ by
# about Euler's γ ≈ 0.58 at large d — a constant, which softmax ignores — so those two
# readings differ only at the first few distances.
#
# ## 5. The relative-position identity, live
#
# RoPE's defining claim: shift every position by the same offset and no score changes.
# We rotate q and k at positions $p + \text{offset}$ with the spec and compare the scores
# with those at offset 0:

# %%
q = rng.standard_normal((1, 4, 32, 64))
k = rng.standard_normal((1, 4, 32, 64))


def rope_scores(q_BHTD, k_BHSD, offset):
    """q·k after rotating both at positions offset, offset + 1, ... (the spec's rope)."""
    return np.einsum("BHTD,BHSD->BHTS", rope.rope(q_BHTD, offset=offset), rope.rope(k_BHSD, offset=offset))


reference_BHTS = rope_scores(q, k, 0)
print(f"scores of size up to {np.abs(reference_BHTS).max():.1f}")
for offset in (1, 100, 10_000, 1_000_000):
    diff64 = np.abs(rope_scores(q, k, offset) - reference_BHTS).max()
    diff32 = np.abs(rope_scores(q.astype(np.float32), k.astype(np.float32), offset) - reference_BHTS).max()
    print(f"offset {offset:>9,}: max |Δscore| float64 {diff64:.1e}, float32 {diff32:.1e}")
    assert diff64 < 1e-8 and diff32 < 1e-4

# %% [markdown]
# In float64 the difference is rounding, and it grows with the offset: the angle
# $p\,\theta_k$ is formed in float64 and loses about ulp(p) of its value, 1e-10 at a
# million. In float32 the rows themselves are rounded to ~1e-7 relative, so the
# offset does not matter until positions are far larger. (This is why `rope.tables`
# never forms angles in float32: at position 4096 a float32 angle is already off by
# about 2e-4 rad — exercise (b) below trips over exactly this.)
#
# The same identity is what makes decoding with a KV cache work. One new query after
# S − 1 cached keys sits at position S − 1 (bottom-right alignment), so its output must
# equal the last row of the full causal attention:

# %%
q = rng.standard_normal((1, 4, 48, 32))
k = rng.standard_normal((1, 4, 48, 32))
v = rng.standard_normal((1, 4, 48, 16))
for name, opts in (("RoPE", {"rope": RoPE()}),
                   ("ALiBi", {"alibi_slopes": alibi.slopes(4)}),
                   ("harmonic", rope_alibi.options(4))):
    full = naive.attention(q, k, v, causal=True, **opts)
    last = naive.attention(q[:, :, -1:], k, v, causal=True, **opts)
    diff = np.abs(full.o_BHTE[:, :, -1:] - last.o_BHTE).max()
    print(f"{name:9}: last row of the prefill vs one decoding step: max |Δo| = {diff:.1e}")
    assert diff < 1e-13

# %% [markdown]
# ## 6. The harmonic combination, its alternatives, and its limits
#
# Three checks of what `spec/position/rope_alibi.py` promises, on one causal problem:
#
# 1. **λ = 0 is plain RoPE**, in every reading (the penalty is multiplied by 0).
# 2. **`rope=None` is ALiBi-style**: the additive reading is then ALiBi with harmonic
#    slopes, the same as adding the *materialised* bias `alibi.bias(harmonic_slopes, T, S)`;
#    the harmonic-number reading is the symmetric bias of that form.
# 3. **The multiplicative reading factorises**: its attention weights are the RoPE
#    weights times the prior $(1 + d)^{-m_h}$, renormalised.
#
# For (3) we need the attention weights P themselves. A trick from lesson 01: with the
# values set to the S×S identity, the output *is* P ($o = P\,I$).

# %%
H, T = 8, 40
q = rng.standard_normal((1, H, T, 16))
k = rng.standard_normal((1, H, T, 16))
v = rng.standard_normal((1, H, T, 8))
eye_1HTT = np.broadcast_to(np.eye(T), (1, H, T, T)).copy()

o_rope = naive.attention(q, k, v, causal=True, rope=RoPE()).o_BHTE
for variant in rope_alibi.VARIANTS:
    o_lam0 = naive.attention(q, k, v, causal=True, **rope_alibi.options(H, variant=variant, lam=0.0)).o_BHTE
    print(f"(1) {variant:16} λ = 0 vs RoPE alone:           max |Δo| = {np.abs(o_lam0 - o_rope).max():.1e}")
    assert np.abs(o_lam0 - o_rope).max() == 0.0

m_harm_H = rope_alibi.harmonic_slopes(H)
for variant, bias_1HTT in (
    ("additive", alibi.bias(m_harm_H, T, T)[None]),
    ("harmonic_number", alibi.bias(m_harm_H, T, T, symmetric=True, form="harmonic_number")[None]),
):
    fused = naive.attention(q, k, v, causal=True, **rope_alibi.options(H, variant=variant, rope=None)).o_BHTE
    materialised = naive.attention(q, k, v, causal=True, bias=bias_1HTT).o_BHTE
    print(f"(2) {variant:16} rope=None vs materialised bias: max |Δo| = {np.abs(fused - materialised).max():.1e}")
    assert np.abs(fused - materialised).max() < 1e-14

P_rope = naive.attention(q, k, eye_1HTT, causal=True, rope=RoPE()).o_BHTE
P_mult = naive.attention(q, k, eye_1HTT, causal=True, **rope_alibi.options(H, variant="multiplicative")).o_BHTE
d_TT = np.abs(np.arange(T)[:, None] - np.arange(T)[None, :])
prior_1HTT = np.stack([rope_alibi.distance_prior(d_TT, m) for m in m_harm_H])[None]
factorised = P_rope * prior_1HTT
factorised /= factorised.sum(axis=-1, keepdims=True)
print(f"(3) multiplicative: P = normalise(P_RoPE · (1+d)^(−m)):  max |ΔP| = {np.abs(P_mult - factorised).max():.1e}")
assert np.abs(P_mult - factorised).max() < 1e-14

# %% [markdown]
# Side by side, the weights of query 39 (the last) over its 40 keys, head 2 (harmonic
# slope 1/2, ALiBi slope 1/4), for every scheme on the same q and k:

# %%
schemes_small = {
    "NoPE": {},
    "RoPE": {"rope": RoPE()},
    "ALiBi": {"alibi_slopes": alibi.slopes(H)},
    "harmonic additive": rope_alibi.options(H, variant="additive"),
    "harmonic H_d": rope_alibi.options(H, variant="harmonic_number"),
    "harmonic prior": rope_alibi.options(H, variant="multiplicative"),
}
fig, ax = plt.subplots(figsize=(9, 3.4))
for name, opts in schemes_small.items():
    P = naive.attention(q, k, eye_1HTT, causal=True, **opts).o_BHTE[0, 1, -1]
    ax.plot(np.arange(T)[::-1], P, "o-", ms=3, label=name)
ax.set(xlabel="distance from the query", ylabel="attention weight", title="one row of P, head 2, T = 40")
ax.legend(fontsize=8, ncol=2)
plt.show()

# %% [markdown]
# ALiBi and the additive reading put most of the weight on the last few keys; the two
# logarithmic readings tilt the row towards them without silencing the rest; RoPE and
# NoPE, on these unrelated random q and k, follow the noise of the scores.
#
# ## 7. Extrapolation: beyond the reference length
#
# ALiBi's title promise is "train short, test long". Without a trained model we can
# still ask the mechanical half of the question: **given the same kind of q and k, how
# does each scheme spread attention as the context grows past a reference length?**
# Two measurements per scheme, for the last 8 queries of a causal sequence of length n,
# averaged over queries and 8 heads:
#
# * the **entropy** of the attention row, $-\sum_s p_s \ln p_s$ (uniform over n keys gives
#   $\ln n$; $e^{\text{entropy}}$ is the "effective number of keys");
# * the **attention mass beyond the reference length**, at distances ≥ `REF_LENGTH`.
#
# **Data.** Seeded Gaussian, D = 64, H = 8, scale $1/\sqrt D$. Two kinds:
# *aligned*: $q_t = c_h + z_t$, $k_s = c_h + z'_s$ with one shared direction
# $c_h \sim \mathcal N(0, I)$ per head and independent noise $z, z' \sim \mathcal N(0, I)$ —
# queries look for something every key has, the situation of Su et al.'s decay; and
# *independent*: $c_h = 0$. P comes from the oracle with identity values, head by head.

# %%
H_ex, D_ex, NQ = 8, 64, 8
SCHEMES = {
    "NoPE": {},
    "RoPE": {"rope": RoPE()},
    "ALiBi": {"alibi_slopes": alibi.slopes(H_ex)},
    "harmonic additive": rope_alibi.options(H_ex, variant="additive"),
    "harmonic H_d": rope_alibi.options(H_ex, variant="harmonic_number"),
    "harmonic prior": rope_alibi.options(H_ex, variant="multiplicative"),
}


def attention_probabilities(q_HTD, k_HSD, opts):
    """P of the last NQ queries over all keys, shape (H, NQ, S), via identity values."""
    Hq, S = q_HTD.shape[0], k_HSD.shape[1]
    eye_11SS = np.eye(S)[None, None]
    P_HQS = np.empty((Hq, NQ, S))
    for h in range(Hq):  # one head at a time: S×S identity values, not H of them
        opts_h = {key: (val[h : h + 1] if key == "alibi_slopes" else val) for key, val in opts.items()}
        P_HQS[h] = naive.attention(q_HTD[None, h : h + 1, S - NQ : S], k_HSD[None, h : h + 1, :S],
                                   eye_11SS, causal=True, **opts_h).o_BHTE[0, 0]
    return P_HQS


def extrapolation(shared: float, seed: int = 0):
    """Entropy, mass beyond REF_LENGTH and mean weight by distance, per scheme and length."""
    g = np.random.default_rng(seed)
    L = max(LENGTHS)
    c_H1D = shared * g.standard_normal((H_ex, 1, D_ex))
    q_HTD = c_H1D + g.standard_normal((H_ex, L, D_ex))
    k_HSD = c_H1D + g.standard_normal((H_ex, L, D_ex))
    result = {}
    for name, opts in SCHEMES.items():
        rows = []
        for n in LENGTHS:
            P = attention_probabilities(q_HTD[:, :n], k_HSD[:, :n], opts)
            entropy = -np.sum(P * np.log(np.where(P > 0, P, 1.0)), axis=-1).mean()
            # distance of key s from query row r (at position n - NQ + r)
            d_QS = (n - NQ + np.arange(NQ))[:, None] - np.arange(n)[None, :]
            beyond = np.sum(P * (d_QS >= REF_LENGTH), axis=-1).mean()
            # mean weight per key at each distance 0 .. n - NQ (seen by every row)
            by_distance = np.array([P[:, r, n - NQ + r - np.arange(n - NQ + 1)] for r in range(NQ)]).mean(axis=(0, 1))
            rows.append((n, entropy, beyond, by_distance))
        result[name] = rows
    return result


t0 = time.perf_counter()
aligned = extrapolation(shared=1.0)
independent = extrapolation(shared=0.0)
print(f"({time.perf_counter() - t0:.1f} s)  reference length {REF_LENGTH}; ln n = "
      + ", ".join(f"{math.log(n):.2f}" for n in LENGTHS) + " (uniform attention)\n")
for label, result in (("aligned q, k", aligned), ("independent q, k", independent)):
    print(f"{label}: entropy in nats (mass at distance ≥ {REF_LENGTH}) at n = {LENGTHS}")
    for name, rows in result.items():
        print(f"  {name:18} " + "   ".join(f"{e:5.2f} ({b:4.2f})" for _, e, b, _ in rows))

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
for name, rows in aligned.items():
    ax1.plot(LENGTHS, [e for _, e, _, _ in rows], "o-", label=name)
    by_distance = rows[-1][3]
    d = np.arange(by_distance.size)
    ax2.plot(d[1:], by_distance[1:], lw=1, label=name)
ax1.plot(LENGTHS, np.log(LENGTHS), ":", color="0.5", label="ln n (uniform)")
ax1.set_xscale("log", base=2)
ax1.set_xticks(LENGTHS, [str(n) for n in LENGTHS])
ax1.axvline(REF_LENGTH, color="0.7", lw=0.8)
ax1.set(xlabel="context length n", ylabel="attention entropy (nats)", title="entropy as the context grows (aligned q, k)")
ax1.legend(fontsize=7)
ax2.set(xscale="log", yscale="log", xlabel="distance from the query", ylabel="mean attention weight per key",
        title=f"where the mass goes at n = {LENGTHS[-1]}")
ax2.axvline(REF_LENGTH, color="0.7", lw=0.8)
ax2.set_ylim(1e-7, 1)
ax2.legend(fontsize=7)
fig.tight_layout()
plt.show()

growth = {name: rows[-1][1] - rows[0][1] for name, rows in aligned.items()}
print("entropy growth from n =", LENGTHS[0], "to", LENGTHS[-1], "(aligned):",
      {name: round(float(g), 2) for name, g in growth.items()})
assert growth["NoPE"] > 0.8 * math.log(LENGTHS[-1] / LENGTHS[0])  # attention dilutes like ln n
assert growth["ALiBi"] < 0.5 * growth["NoPE"] and growth["harmonic additive"] < 0.5 * growth["NoPE"]
for name, rows in independent.items():  # with nothing shared, RoPE is as position-blind as NoPE
    if name == "RoPE":
        assert all(abs(r[1] - n[1]) < 0.1 for r, n in zip(rows, independent["NoPE"]))

# %% [markdown]
# What the numbers say (random, untrained q and k — a statement about the mechanisms,
# not about trained models):
#
# * **NoPE** dilutes: its entropy follows ln n, and most of the mass sits beyond the
#   reference length, simply because most keys do.
# * **RoPE** is as blind as NoPE when q and k share nothing (the independent table),
#   and local only in proportion to what they share (aligned): then its entropy sits
#   below NoPE's but still grows with n — the floor of section 4 keeps far keys in
#   play. This is the behaviour that made RoPE models fail beyond their training length
#   until position interpolation and base rescaling (NTK, YaRN) were invented.
# * **ALiBi** and the **additive harmonic** reading stop diluting: a linear penalty gives
#   each head a finite window of about 1/m keys, so new far keys get exponentially small
#   weight. ALiBi's entropy rises only until n passes the window of its gentlest head
#   (1/m = 256 keys for head 8 of 8) and then levels off — compare n = 512 and n = 2048
#   in default mode; the mass it still puts beyond the reference length comes from those
#   gentle heads. The harmonic slopes (1, 1/2, … 1/8) are steeper than ALiBi's
#   (1/2 … 1/256), hence its lower, flat entropy and no mass beyond the reference length.
# * The **logarithmic** readings (H_d and the (1+d)^(−m) prior) give power-law weights
#   $d^{-m}$. With $m \le 1$ the sum $\sum_d d^{-m}$ diverges, so their entropy keeps
#   growing with n, more slowly than NoPE's: they do **not** bound the context the way
#   ALiBi does unless λ makes some $\lambda/h > 1$.
#
# ## 8. ALiBi is a rank-2 bias
#
# $-m_h(i - j) = \langle m_h\,[1, -i],\ [j, 1]\rangle$, so appending two columns to q and
# k turns causal ALiBi into plain attention (FlashBias, Wu et al., 2025). Any kernel
# without bias support, or with fast paths for D + 2, can then run it.
# `alibi.low_rank_qk` builds the augmented q' and k' (q' carries the scale):

# %%
show_source(alibi.low_rank_qk, start="# q' = [scale·q", stop="return q_aug, k_aug")

H_lr, T_lr, D_lr = 4, 64, 32
m_lr = alibi.slopes(H_lr)
q = rng.standard_normal((1, H_lr, T_lr, D_lr))
k = rng.standard_normal((1, H_lr, T_lr, D_lr))
v = rng.standard_normal((1, H_lr, T_lr, D_lr))
q_aug, k_aug = alibi.low_rank_qk(q, k, m_lr)
print(f"q {q.shape} -> q' {q_aug.shape};  k {k.shape} -> k' {k_aug.shape}")
low_rank = naive.attention(q_aug, k_aug, v, causal=True, scale=1.0).o_BHTE
direct = naive.attention(q, k, v, causal=True, alibi_slopes=m_lr).o_BHTE
print(f"plain attention on (q', k') vs ALiBi attention, float64: max |Δo| = {np.abs(low_rank - direct).max():.1e}")
assert np.abs(low_rank - direct).max() < 1e-12

# %% [markdown]
# **The precision caveat** (from the docstring). The low-rank form produces the bias as
# $m\,j - m\,i$: two numbers of size $m\cdot T$ whose difference is taken after rounding,
# so each score carries an error of about ulp(m·T) instead of ulp(m·(i − j)). At the
# keys that matter — the near ones, where i − j is small — the direct bias is nearly
# exact and the low-rank one is not. Measured in float32 against the float64 oracle,
# for the last 16 queries of sequences of growing length (H = 4, slopes up to 1/4):

# %%
NQ_lr = 16
print(f"{'S':>6}  {'score error, near keys':>24}  {'output error':>26}")
print(f"{'':>6}  {'low-rank':>12}{'direct':>12}  {'low-rank':>13}{'direct':>13}")
lowrank_err = {}
for S in LOWRANK_S:
    q = rng.standard_normal((1, H_lr, NQ_lr, D_lr))
    k = rng.standard_normal((1, H_lr, S, D_lr))
    v = rng.standard_normal((1, H_lr, S, D_lr))
    oracle = naive.attention(q, k, v, causal=True, alibi_slopes=m_lr).o_BHTE
    q32, k32, v32 = (x.astype(np.float32) for x in (q, k, v))
    qa32, ka32 = alibi.low_rank_qk(q32, k32, m_lr)
    out_low_rank = naive.attention(qa32, ka32, v32, causal=True, scale=1.0).o_BHTE
    out_direct = naive.attention(q32, k32, v32, causal=True, alibi_slopes=m_lr.astype(np.float32)).o_BHTE
    # the scores themselves at the 64 nearest keys of every query
    qa64, ka64 = alibi.low_rank_qk(q, k, m_lr)
    exact = np.einsum("BHTD,BHSD->BHTS", qa64, ka64)
    s_low_rank = np.einsum("BHTD,BHSD->BHTS", qa32, ka32)
    s_direct = (np.float32(1 / math.sqrt(D_lr)) * np.einsum("BHTD,BHSD->BHTS", q32, k32)
                + alibi.bias(m_lr.astype(np.float32), NQ_lr, S)[None])
    d_QS = (S - NQ_lr + np.arange(NQ_lr))[:, None] - np.arange(S)[None, :]
    near = (d_QS >= 0) & (d_QS < 64)
    e = [np.abs(s_low_rank - exact)[..., near].max(), np.abs(s_direct - exact)[..., near].max(),
         np.abs(out_low_rank - oracle).max(), np.abs(out_direct - oracle).max()]
    lowrank_err[S] = e
    print(f"{S:>6}  {e[0]:>12.1e}{e[1]:>12.1e}  {e[2]:>13.1e}{e[3]:>13.1e}")
S_lo, S_hi = LOWRANK_S[0], LOWRANK_S[-1]
assert lowrank_err[S_hi][2] > 10 * lowrank_err[S_hi][3]  # the low-rank output error is far worse at length
assert lowrank_err[S_hi][0] > 10 * lowrank_err[S_lo][0]  # and it grows with S; the direct one does not
assert lowrank_err[S_hi][1] < 4 * lowrank_err[S_lo][1]

# %% [markdown]
# The direct bias keeps float32 output error at the level of the dtype at every length;
# the low-rank form's error grows about linearly with S. In float32 at long context the
# rank-2 trick is a precision trade, not a free lunch. By the same arithmetic, in
# bfloat16 (8 significant bits) m·i = 512 at slope 1/2 and position 1024 is rounded to a
# multiple of 4, so the scores of near keys would be off by whole units: unusable
# without keeping the two extra columns in a wider type. Note also that only the
# *causal, linear* bias is rank 2: the symmetric |i − j| and the harmonic shapes have
# full rank.
#
# ## 9. Packed variable-length batches
#
# A batch of sequences of different lengths is usually padded to the longest. The
# packed ("varlen") layout concatenates them instead, rows `cu_seqlens[b] :
# cu_seqlens[b+1]` belonging to sequence b (`spec/attention/varlen.py`, FlashAttention's
# `flash_attn_varlen_func`). Positions restart at 0 in every sequence and no token
# attends across sequences. Three sequences, GQA (4 query heads on 2 key/value heads),
# RoPE and ALiBi, packed, against the oracle run on each sequence alone:

# %%
lengths = (5, 17, 40)
H_v, G_v, D_v = 4, 2, 16
seqs_q = [rng.standard_normal((n, H_v, D_v)) for n in lengths]
seqs_k = [rng.standard_normal((n, G_v, D_v)) for n in lengths]
seqs_v = [rng.standard_normal((n, G_v, D_v)) for n in lengths]
q_THD, cu_seqlens = varlen.pack(seqs_q)
k_SGD, _ = varlen.pack(seqs_k)
v_SGE, _ = varlen.pack(seqs_v)
pos_opts = {"rope": RoPE(), "alibi_slopes": alibi.slopes(H_v)}
print(f"packed q {q_THD.shape}, cu_seqlens {cu_seqlens.tolist()}: {q_THD.shape[0]} rows "
      f"instead of {len(lengths)} × {max(lengths)} = {len(lengths) * max(lengths)} padded")

packed = varlen.flash_varlen_forward(q_THD, k_SGD, v_SGE, cu_seqlens, cu_seqlens, causal=True, **pos_opts)
worst = 0.0
per_sequence = []
for b, (qb, kb, vb) in enumerate(zip(seqs_q, seqs_k, seqs_v)):
    alone = naive.attention(qb.transpose(1, 0, 2)[None], kb.transpose(1, 0, 2)[None],
                            vb.transpose(1, 0, 2)[None], causal=True, **pos_opts)
    per_sequence.append(alone)
    rows = slice(cu_seqlens[b], cu_seqlens[b + 1])
    worst = max(worst, np.abs(packed.o_THE[rows] - alone.o_BHTE[0].transpose(1, 0, 2)).max(),
                np.abs(packed.lse_HT[:, rows] - alone.lse_BHT[0]).max())
print(f"spec flash_varlen_forward vs the oracle per sequence: max difference {worst:.1e}")
assert worst < 1e-12

# %% [markdown]
# The compiled packed kernel (`backends/cpu/varlen.py`), in float32, judged against
# the spec by the tolerance policy (oracle: the spec in float64; baseline: the spec in
# float32):

# %%
from backends import registry  # noqa: E402

cpu_varlen = registry.get_default("attention.flash_varlen_forward", "cpu")
a32 = [x.astype(np.float32) for x in (q_THD, k_SGD, v_SGE)]
opts32 = {"rope": RoPE(), "alibi_slopes": alibi.slopes(H_v).astype(np.float32)}
got = cpu_varlen(*a32, cu_seqlens, cu_seqlens, causal=True, **opts32)
want = varlen.flash_varlen_forward(*[x.astype(oracle_dtype(np.float32)) for x in a32], cu_seqlens, cu_seqlens,
                                   causal=True, **pos_opts)
base32 = varlen.flash_varlen_forward(*a32, cu_seqlens, cu_seqlens, causal=True, **opts32)
for name, g_, w_, b_ in zip(("o", "lse"), got, want, base32):
    report = compare(g_, w_, b_)
    print(f"cpu packed {name:>3}: max err {report.err:.1e} (bound {report.bound:.1e})")
    assert report.ok, report.message(name)

# %% [markdown]
# ## 10. The fast version: positions fused into the Numba kernel
#
# The tiled spec (`spec.attention.tiled.flash_forward`) never holds a T×S bias either —
# it calls `alibi_tile` one tile at a time — but it is NumPy. The cpu backend (`backends/cpu/attention.py`) takes the same keywords
# and does the same inside its compiled loop: it reads the per-head slopes and a
# table of f(0) … f(n−1) for ALiBi, and rotates each q and k tile with the cos/sin
# tables as it loads it for RoPE. The alternative every framework without fused ALiBi
# uses is to build the bias, shape (1, H, T, S), and pass it as `bias=`.
#
# First the agreement with the spec (tolerance policy, float32, a causal GQA problem
# with S ≠ T), for each way of passing positions:

# %%
cpu_flash_forward = registry.get_default("attention.flash_forward", "cpu")

H_sp, D_sp = 8, 64
slopes32_H = alibi.slopes(H_sp).astype(np.float32)
WAYS = {
    "plain (no positions)": {},
    "fused ALiBi": {"alibi_slopes": slopes32_H},
    "fused RoPE": {"rope": RoPE()},
    "fused RoPE + harmonic": rope_alibi.options(H_sp, variant="additive"),
    "fused RoPE + harmonic prior": rope_alibi.options(H_sp, variant="multiplicative"),
}
t0 = time.perf_counter()
q = rng.standard_normal((1, H_sp, 100, D_sp)).astype(np.float32)
k = rng.standard_normal((1, 2, 160, D_sp)).astype(np.float32)
v = rng.standard_normal((1, 2, 160, D_sp)).astype(np.float32)
wide = [x.astype(np.float64) for x in (q, k, v)]
for name, opts in WAYS.items():
    opts = {key: (val.astype(np.float32) if key == "alibi_slopes" else val) for key, val in opts.items()}
    got = cpu_flash_forward(q, k, v, causal=True, **opts)
    oracle = naive.attention(*wide, causal=True, **opts)
    baseline = naive.attention(q, k, v, causal=True, **opts)
    reports = [compare(g_, w_, b_) for g_, w_, b_ in zip(got, oracle, baseline)]
    print(f"{name:28} o: err {reports[0].err:.1e} (bound {reports[0].bound:.1e});"
          f"  lse: err {reports[1].err:.1e} (bound {reports[1].bound:.1e})")
    assert all(r.ok for r in reports)
print(f"({time.perf_counter() - t0:.1f} s, Numba compilation or cache loading included)")

# %% [markdown]
# Now the stopwatch at T = S = `SPEED_T` (2048 in default mode), causal, H = 8,
# D = E = 64, float32: plain attention; fused ALiBi; fused RoPE; RoPE with the
# additive harmonic bias; ALiBi as a materialised (1, H, T, S) bias; and ALiBi as the
# rank-2 augmentation (D + 2 = 66 columns, plain attention). Each is the best of a few
# rounds in which every variant is called once, in turn. The kernel runs on every core,
# so another busy process disturbs it badly (a parallel loop waits for its slowest
# thread): on a shared machine, re-run the cell and trust the ratios that repeat.

# %%
from backends.figures import best_time  # noqa: E402


def round_robin_best(calls: dict, rounds: int) -> dict:
    """Fastest of ``rounds`` calls of each function, called in turn, one per round.

    Taking turns (after one warm-up call each) means a slow drift of the machine's load
    hits every variant alike, so their ratios stay meaningful on a busy machine.
    """
    for fn in calls.values():
        fn()
    seconds = {name: float("inf") for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            seconds[name] = min(seconds[name], time.perf_counter() - t0)
    return seconds


T = S = SPEED_T
q, k, v = (rng.standard_normal((1, H_sp, T, D_sp)).astype(np.float32) for _ in range(3))
t0 = time.perf_counter()
bias_1HTS = alibi.bias(slopes32_H, T, S)[None]
build_bias_s = time.perf_counter() - t0
q_aug, k_aug = alibi.low_rank_qk(q, k, slopes32_H)
harmonic = rope_alibi.options(H_sp)
timings = round_robin_best({
    "plain": lambda: cpu_flash_forward(q, k, v, causal=True),
    "fused ALiBi": lambda: cpu_flash_forward(q, k, v, causal=True, alibi_slopes=slopes32_H),
    "fused RoPE": lambda: cpu_flash_forward(q, k, v, causal=True, rope=RoPE()),
    "fused RoPE + harmonic": lambda: cpu_flash_forward(q, k, v, causal=True, **harmonic),
    "materialised ALiBi bias": lambda: cpu_flash_forward(q, k, v, causal=True, bias=bias_1HTS),
    "low-rank ALiBi (D+2)": lambda: cpu_flash_forward(q_aug, k_aug, v, causal=True, scale=1.0),
}, rounds=ROUNDS)
for name, s in timings.items():
    print(f"  {name:26} {s * 1e3:8.2f} ms   {s / timings['plain']:5.2f}× plain")
print(f"  (building the (1, {H_sp}, {T}, {S}) bias with the spec took another {build_bias_s * 1e3:.0f} ms)")

fig, ax = plt.subplots(figsize=(8, 3.4))
names = list(timings)
bars = ax.barh(names[::-1], [timings[n] * 1e3 for n in names[::-1]])
ax.bar_label(bars, fmt="%.3g ms", fontsize=8, padding=2)
ax.set(xlabel="milliseconds (best of rounds)",
       title=f"cpu flash_forward, T = S = {T}, H = {H_sp}, D = {D_sp}, float32, causal, {os.cpu_count()} cores")
ax.margins(x=0.2)
plt.show()

# %% [markdown]
# ## 11. Napkin math: what the materialised bias costs
#
# The fused kernel reads O(T + S) numbers of position data: H slopes, a penalty table of
# max(T, S) entries, and for RoPE cos/sin tables of (T + S)·D/2 entries each. The
# materialised bias is H·T·S numbers, read once by the kernel (after being written once
# by whoever built it). At the speed of memory that is a predictable extra time:

# %%
b = 4  # bytes per float32
bias_bytes = H_sp * T * S * b
table_bytes = b * (H_sp + max(T, S) + 2 * (T + S) * D_sp // 2)
n_copy = 2**24 if SMALL else 2**26  # 64 MiB or 256 MiB: far beyond any cache
src = np.ones(n_copy, np.float32)
dst = np.empty_like(src)
bandwidth = 2 * src.nbytes / best_time(np.copyto, dst, src, repeat=REPEAT)
del src, dst
flops = 4 * H_sp * D_sp * (T * (T + 1) // 2)  # causal: visible pairs only
print(f"T = S = {T}, H = {H_sp}: bias {bias_bytes / 2**20:8.1f} MiB   vs   fused tables {table_bytes / 2**10:6.1f} KiB"
      f"   ({bias_bytes / table_bytes:,.0f}× fewer bytes)")
print(f"attention itself: {flops / 1e9:.2f} GFLOP; plain kernel {flops / timings['plain'] / 1e9:.0f} GFLOP/s")
print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s -> reading the bias once costs at least {bias_bytes / bandwidth * 1e3:.2f} ms")
print(f"measured: materialised bias {(timings['materialised ALiBi bias'] - timings['plain']) * 1e3:+.2f} ms over plain, "
      f"fused ALiBi {(timings['fused ALiBi'] - timings['plain']) * 1e3:+.2f} ms, "
      f"fused RoPE {(timings['fused RoPE'] - timings['plain']) * 1e3:+.2f} ms")

# %% [markdown]
# How to read it. The bytes are a **lower bound** on what the materialised bias costs,
# and the stopwatch shows a larger cost than the bandwidth alone predicts. The reason is
# in `backends/cpu/attention.py` (`_visible_scores`): the kernel keeps its score tiles
# transposed (keys in rows, the queries of a tile in vector lanes) so that the online
# softmax's statistics vectorise, and so a bias row `bias[h, t, :]` is read across the
# lanes with a stride of S floats — one scalar, strided load per score, in a separate
# loop. The fused penalty instead reads f(|i − j|) from a table of max(T, S) entries: for
# consecutive queries and a fixed key the distances are consecutive, so it is a plain
# vector load, one multiply and one add per score, inside the loop that already scales
# the scores. The fused rotation costs O((T + S)·D) work while the tiles are copied,
# nothing next to the O(T·S·D) of attention. And at scale the bias does not fit at all:
# at T = S = 32768 with 32 heads it is 128 GiB in float32. The low-rank form needs no
# bias, but pays in precision (section 8) and in two extra columns, which a kernel
# built around panels of 64 handles as a partial panel.
#
# **On a GPU.** The same arithmetic applies with more force: an H100's HBM moves about
# 3.35 TB/s but its tensor cores do ~1000 TFLOP/s, so every byte of bias is worth
# ~300 FLOPs of attention. The project's CUDA kernels and any recorded figures:

# %%
from backends.cuda import attention as cuda_attention  # noqa: E402

print("CUDA attention kernels registered:", [e.name for e in registry.entries("attention.flash_forward", "cuda")])
# run them where a GPU is, else on the project's CPU emulator, at a small size
from backends.cuda import emulate_if_no_gpu  # noqa: E402

print("engine:", emulate_if_no_gpu())
qc = rng.standard_normal((1, 2, 40, 32)).astype(np.float32)
kc = rng.standard_normal((1, 2, 56, 32)).astype(np.float32)
vc = rng.standard_normal((1, 2, 56, 32)).astype(np.float32)
for label, opts in (("ALiBi", {"alibi_slopes": alibi.slopes(2).astype(np.float32)}),
                    ("RoPE + harmonic", rope_alibi.options(2, variant="additive"))):
    oracle = naive.attention(*[x.astype(np.float64) for x in (qc, kc, vc)], causal=True, **opts)
    baseline = naive.attention(qc, kc, vc, causal=True, **opts)
    for version in cuda_attention.VERSIONS:
        out = cuda_attention.flash_forward(qc, kc, vc, causal=True, version=version, **opts)
        report = compare(out.o_BHTE, oracle.o_BHTE, baseline.o_BHTE)
        print(f"  CUDA {version} with {label:16} o: err {report.err:.1e} (bound {report.bound:.1e})")
        assert report.ok, report.message(f"{version} {label}")

results = ROOT / "bench" / "RESULTS.md"
sections = results.read_text().split("\n## ")[1:] if results.is_file() else []
position_words = ("position", "RoPE", "ALiBi", "rope", "alibi")
position_sections = [sec for sec in sections if any(w in sec.splitlines()[0] for w in position_words)]
gpu_sections = [sec for sec in position_sections if any(w in sec.splitlines()[0] for w in ("CUDA", "GPU"))]
for sec in position_sections:
    print("\n## " + sec.strip())
if not gpu_sections:
    print("\nNo GPU figures for positional attention are recorded in bench/RESULTS.md: no GPU has been "
          "available to this project's benchmarks yet, so there are none to show (and none are invented).")

# %% [markdown]
# ## 12. Exercises
#
# Each exercise has a stub to fill in, a `check` that judges it against the spec, a
# typical mistake being caught, and a hidden solution (expand the collapsed cell in
# Jupyter). The notebook runs as shipped; edit the stubs and re-run the check cells.
#
# ### (a) ALiBi's slopes
#
# Write `my_alibi_slopes(n)` returning the n head slopes of Press et al. as a float64
# array: for n a power of two, $2^{-8/n}, 2^{-16/n}, \dots, 2^{-8}$; for other n, the
# slopes of the largest power of two p < n followed by every other slope of 2p
# (the 1st, 3rd, 5th, …) until there are n.

# %%
def check_slopes(fn) -> bool:
    """Compare fn(n) with spec.position.alibi.slopes(n) for n = 1 .. 64 (relative 1e-12)."""

    def run():
        for n in range(1, 65):
            got, want = np.asarray(fn(n)), alibi.slopes(n)
            assert got.shape == want.shape, f"n={n}: shape {got.shape}, expected {want.shape}"
            assert got.dtype == np.float64, f"n={n}: dtype {got.dtype}, expected float64"
            bad = ~np.isclose(got, want, rtol=1e-12, atol=0)
            assert not bad.any(), (f"n={n}: slope {np.argmax(bad) + 1} is {float(got[bad][0])!r}, "
                                   f"expected {float(want[bad][0])!r}")

    return verdict(fn, run, "equals the spec's slopes for n = 1 .. 64")


def my_alibi_slopes(n):
    """YOUR CODE: the n ALiBi slopes (float64 array of shape (n,))."""
    raise NotImplementedError


check_slopes(my_alibi_slopes)

# %% [markdown]
# A typical mistake, caught: the power-of-two formula used for every n. It is right
# for 1, 2, 4, 8, … and wrong at n = 3.

# %%
def slopes_without_recipe(n):
    return 2.0 ** (-8.0 * np.arange(1, n + 1) / n)  # BUG: no interleaving for n not a power of two


assert not check_slopes(slopes_without_recipe)

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution (a). Expand to read it.
def solution_alibi_slopes(n):
    def geometric(p):
        return [2.0 ** (-8.0 * h / p) for h in range(1, p + 1)]

    p = 2 ** math.floor(math.log2(n))  # largest power of two <= n
    return np.array(geometric(p) + geometric(2 * p)[0::2][: n - p], dtype=np.float64)


assert check_slopes(solution_alibi_slopes)

# %% [markdown]
# ### (b) A rotate-half RoPE
#
# Write `my_rope(x_BHTD, positions_T, base=10000.0)`: rotate the rows of x (D even) at
# the given integer positions with the `"rotate_half"` layout (feature k pairs with
# feature k + D/2), computing in x's dtype. `check` compares it with
# `spec.position.rope.rope(x, positions=..., base=..., layout="rotate_half")` under the
# project's tolerance policy, in float64 and float32, with widths from 2 to 128,
# negative and large positions and two bases, and checks that the result keeps x's
# dtype.

# %%
def check_rope(fn) -> bool:
    """Run fn on several problems and compare with the spec's rope (tolerance policy)."""
    g = np.random.default_rng(1)
    cases = [(1, 1, 1, 2, np.array([0])), (1, 2, 5, 8, np.arange(5)), (2, 3, 7, 64, np.arange(-3, 4)),
             (1, 2, 9, 128, g.integers(0, 5000, 9)), (1, 1, 4, 32, np.array([100_000, 7, 65_535, -20_000]))]

    def run():
        for B, H, T, D, positions_T in cases:
            x = g.standard_normal((B, H, T, D))
            for base in (10000.0, 500000.0):
                for dtype in (np.float64, np.float32):
                    xd = x.astype(dtype)
                    got = fn(xd, positions_T, base=base)
                    case = f"B={B} H={H} T={T} D={D} base={base:g} {np.dtype(dtype).name} positions {positions_T.tolist()}"
                    assert isinstance(got, np.ndarray) and got.shape == x.shape, f"shape {np.shape(got)} ({case})"
                    assert got.dtype == dtype, f"dtype {got.dtype}, expected {np.dtype(dtype)} ({case})"
                    spec = functools.partial(rope.rope, positions=positions_T, base=base, layout="rotate_half")
                    report = compare(got, spec(xd.astype(oracle_dtype(dtype))), spec(xd))
                    assert report.ok, report.message(case)

    return verdict(fn, run, f"agrees with the spec on {len(cases)} problems × 2 bases × 2 dtypes")


def my_rope(x_BHTD, positions_T, base=10000.0):
    """YOUR CODE: rotate-half RoPE of x at positions_T (int array of shape (T,))."""
    raise NotImplementedError


check_rope(my_rope)

# %% [markdown]
# Two typical mistakes, caught. The interleaved layout (pairs 2k, 2k+1) is a RoPE too,
# just not this one; and forming the angles in float32 for float32 input loses the
# angle at large positions (the float32 spacing at 65 535 is 0.004 rad).

# %%
def rope_interleaved(x_BHTD, positions_T, base=10000.0):
    return rope.rope(x_BHTD, positions=positions_T, base=base, layout="interleaved")  # BUG: wrong pairs


def rope_float32_angles(x_BHTD, positions_T, base=10000.0):
    D = x_BHTD.shape[-1]
    theta_P = (base ** (-2.0 * np.arange(D // 2) / D)).astype(x_BHTD.dtype)
    angle_TP = positions_T.astype(x_BHTD.dtype)[:, None] * theta_P  # BUG: angles rounded to x's dtype
    cos_TP, sin_TP = np.cos(angle_TP), np.sin(angle_TP)
    x1, x2 = x_BHTD[..., : D // 2], x_BHTD[..., D // 2 :]
    return np.concatenate([x1 * cos_TP - x2 * sin_TP, x2 * cos_TP + x1 * sin_TP], axis=-1)


assert not check_rope(rope_interleaved)
assert not check_rope(rope_float32_angles)

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution (b). Expand to read it.
def solution_rope(x_BHTD, positions_T, base=10000.0):
    D = x_BHTD.shape[-1]
    # θ_k = base^(-2k/D); angles p·θ_k in float64, cos/sin rounded once to x's dtype
    theta_P = float(base) ** (-2.0 * np.arange(D // 2) / D)
    angle_TP = positions_T.astype(np.float64)[:, None] * theta_P[None, :]
    cos_TP, sin_TP = np.cos(angle_TP).astype(x_BHTD.dtype), np.sin(angle_TP).astype(x_BHTD.dtype)
    # rotate_half: feature k pairs with feature k + D/2
    x1, x2 = x_BHTD[..., : D // 2], x_BHTD[..., D // 2 :]
    return np.concatenate([x1 * cos_TP - x2 * sin_TP, x2 * cos_TP + x1 * sin_TP], axis=-1)


assert check_rope(solution_rope)

# %% [markdown]
# The compiled backends are held to a stricter rule than your function: a rotation has
# no reduction and the spec fixes its arithmetic (float64 angles, tables rounded once,
# two products and a sum), so the conformance suite demands **equal**, not close. Here
# is that check, `tests.backends.conformance.check_rope_qk`, on the cpu backend's
# `rope_qk` (both layouts, queries bottom-right aligned, T > S included):

# %%
from tests.backends.conformance import check_rope_qk  # noqa: E402
from tests.strategies import POSITION_EDGE_PROBLEMS  # noqa: E402

cpu_rope_qk = registry.get_default("position.rope_qk", "cpu")
rope_problems = [p for p in POSITION_EDGE_PROBLEMS if p.rope != "none"]
for p in rope_problems:
    for dtype in (np.float32, np.float64):
        check_rope_qk(cpu_rope_qk, p, dtype)
print(f"cpu rope_qk equals the spec bit for bit on {len(rope_problems)} edge problems × 2 dtypes "
      f"({', '.join(sorted({p.rope for p in rope_problems}))})")

# %% [markdown]
# ## Summary
#
# * Attention without positions is a function of a set. RoPE rotates q and k so that
#   scores depend on i − j only (checked to 1e-10 at an offset of a million); ALiBi
#   subtracts $m_h(i - j)$ with a geometric ladder of head slopes.
# * RoPE's long-term decay is a bound: an actual score oscillates onto a floor, and for
#   unrelated q and k RoPE is as position-blind as no encoding at all.
# * The harmonic combination (three readings: linear penalty with slopes 1/h, the
#   harmonic number H_d, the prior (1+d)^(−m)) reduces to RoPE at λ = 0 and to
#   ALiBi-style attention without RoPE — checked. Past the reference length, linear
#   penalties keep the attention entropy bounded; logarithmic ones, like RoPE and NoPE,
#   let it grow.
# * ALiBi is a rank-2 bias (q, k → D + 2), exact in exact arithmetic and worse in
#   float32 by a factor that grows with the length.
# * The compiled kernel fuses RoPE and every penalty shape at O(T + S) bytes of tables;
#   a materialised bias costs H·T·S numbers and a full pass over them.

# %%
print(f"lesson executed in {time.perf_counter() - LESSON_START:.1f} s ({'small' if SMALL else 'default'} mode)")
