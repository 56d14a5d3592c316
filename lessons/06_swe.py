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
# # Lesson 06 — Likelihood-optimal sub-words (SWE): segmentation as a shortest path
#
# BPE (lesson 05) glues the most *frequent* pair, again and again. It never asks how
# *probable* the training text is under the vocabulary it builds. The optimal sub-word
# encoding (SWE) paper asks exactly that: with BPE's starting point (characters and an
# end-of-word symbol) and WordPiece's objective, choose pieces that **maximise the
# likelihood of the training data** under a unigram model, and segment each word by
# a **k-step shortest path** (Bellman–Ford). The paper's exact conditions are not
# published; `shared/papers/notes.md` (section 1.3) reconstructs them, and the
# project's spec `spec/tokenize/swe.py` states its reading in its docstrings.
#
# This lesson reads that spec, **draws** a word's segmentation as a shortest path in a
# DAG, shows the k-hop constraint changing the answer, checks Viterbi against brute
# force live, trains SWE ("grow"), the unigram LM ("prune", sentencepiece's method) and
# BPE on the Python standard library and plots their likelihood against vocabulary
# size, checks agreement with sentencepiece, runs the Numba and CUDA segmenters against
# the spec, and does the napkin math. At the end you write Viterbi, and the spec
# judges it.
#
# Nothing here re-implements the spec: we import it, print it, and poke it.
#
# **Modes.** With `ATTNSPEC_LESSON_MODE=small` (what CI sets) the corpus and the
# vocabularies shrink so the notebook runs in about a minute; by default they are
# bigger and the curves smoother.

# %%
# %matplotlib inline
import io
import math
import os
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Arc


def find_repo_root(start: Path) -> Path:
    """The attnspec checkout that contains ``start``: lessons run from inside it."""
    for folder in (start, *start.parents):
        if (folder / "spec" / "tokenize").is_dir() and (folder / "tests" / "strategies.py").is_file():
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
    TRAIN_BYTES = 25_000  # standard-library text the vocabularies are learnt from
    EXTRA_PIECES = 150  # pieces added to the characters by "grow" (and BPE's merges)
    PRUNE_EXTRA = (40, 150)  # vocabulary sizes (characters + this) of the "prune" runs
    SPM_LINES, SPM_VOCAB = 3000, 400  # sentencepiece agreement: training lines, vocabulary
    HYPOTHESIS_EXAMPLES = 80  # drawn cases per exercise check
else:
    TRAIN_BYTES = 120_000
    EXTRA_PIECES = 600
    PRUNE_EXTRA = (50, 150, 300, 600)
    SPM_LINES, SPM_VOCAB = 8000, 800
    HYPOTHESIS_EXAMPLES = 300
HELDOUT_OFFSET = 20_000_000  # held-out text comes from far into the library (other modules)

from backends.corpus import stdlib_text  # noqa: E402
from spec.tokenize import swe  # noqa: E402
from spec.tokenize.bpe import learn_merges, merge_word  # noqa: E402

LESSON_START = time.perf_counter()
print(f"repository: {ROOT}\nmode: {'small' if SMALL else 'default'}")

# %% [markdown]
# ## 1. The objective
#
# A **unigram model** gives each piece $s$ of a vocabulary $V$ a probability $p(s)$;
# a word $w$ cut into pieces $s_1 \dots s_h$ has probability $\prod_t p(s_t)$. With
# word counts $n(w)$ from the training text, the **log-likelihood** of the text is
#
# $$ \mathrm{LL}(V) = \sum_w n(w) \, \log P(w \mid V), \qquad
#    \log P(w \mid V) = \max_{w = s_1 \cdots s_h,\ s_t \in V} \ \sum_t \log p(s_t). $$
#
# Two problems hide in it. **Segmentation**: for a fixed vocabulary, the best cut of
# each word (sections 3–5, exact by a shortest path). **Vocabulary**: which pieces to
# have (section 6, greedy, like BPE, but scored by likelihood).
#
# **Words** (`split_words`): the text split at whitespace; each word gets the marker
# "▁" (U+2581) appended — the paper's **end-of-word symbol**, so that "the" at the end
# of a word and "the" inside "there" are different pieces. (`boundary="start"`
# prepends it instead, sentencepiece's convention, used in section 7.)
#
# **The spec's reading of "likelihood"** (`corpus_log_likelihood`): when the pieces'
# probabilities are the maximum-likelihood estimate of the segmentation's own counts,
# $p(s) = c(s)/N$, the log-likelihood has a closed form in the counts alone,
#
# $$ \mathrm{LL} = \sum_s c(s) \log \frac{c(s)}{N} = \sum_s c(s)\log c(s) \;-\; N \log N,
#    \qquad N = \sum_s c(s), $$
#
# and that is how SWE, the unigram LM and BPE are compared below: each segments the
# corpus its own way, and each segmentation is scored by the best unigram model of it.
#
# **Vocabulary growth, the spec's reading** (`grow`, notes section 1.3): start from
# the characters (marker included), every word cut into characters. Repeat: among the
# adjacent piece pairs $(a, b)$ of the current segmentations, take the one whose merge
# gives the **largest exact gain** of LL (`merge_gain`: the closed form above before
# and after $m$ occurrences become one piece; ties to the smallest id pair); add
# $a{+}b$, merge it, re-estimate $p = c/N$ and re-segment the affected words by Viterbi
# (one hard-EM pass, which cannot lower LL).
#
# ## 2. Read the spec
#
# Every fixed detail (ties, unknown characters, the k-hop rule) is in the module
# docstring:

# %%
print(swe.__doc__[swe.__doc__.index("Fixed details"):swe.__doc__.index("The compiled segmenters")])

# %% [markdown]
# The unconstrained Viterbi sweep (`best_path`, over the edges `lattice` lists: for every
# end $j$ the pieces $w[i:j]$ in ascending $i$):

# %%
show_source(swe.best_path, start="if k is None:", stop="return pieces[::-1], best[n]")

# %% [markdown]
# The exact gain of one merge, and the step of `grow` that uses it:

# %%
show_source(swe.merge_gain, start="if same:")
show_source(swe.grow, start="# 1. merge counts", stop="best = (key, a, b, mm)")

# %% [markdown]
# ## 3. A model to look at
#
# We grow a vocabulary on the first bytes of the standard library's sources: all
# characters plus EXTRA_PIECES pieces. The spec records every step (`TrainStep`: the
# piece, how many occurrences it merged, its gain and the LL after re-estimation), so
# one run gives the whole likelihood curve of section 6.

# %%
train_text = stdlib_text(TRAIN_BYTES)
word_counts = swe.count_words(train_text)
chars = swe.initial_pieces(word_counts)
n_chars = len(chars)
t0 = time.perf_counter()
pieces, counts, steps = swe.grow(word_counts, n_chars + EXTRA_PIECES)
grow_s = time.perf_counter() - t0
total = sum(counts)
grow_model = swe.UnigramModel(pieces, [math.log((c if c > 0 else 0.5) / total) for c in counts])
print(f"{len(train_text.encode()):,} B of text: {sum(word_counts.values()):,} words, {len(word_counts):,} distinct, "
      f"{n_chars} characters; grow to {len(pieces)} pieces in {grow_s:.1f} s (spec)")
print("the first 12 pieces added:", " ".join(s.piece for s in steps[:12]))
print("  with gains:", " ".join(f"{s.gain:.0f}" for s in steps[:12]))

# %% [markdown]
# The first pieces are punctuation that ends a word (",▁" is a comma followed by
# whitespace: "▁" marks the end of a word), "__" of dunder names, and frequent inner
# strings of English and Python ("th", "in", "ator"). Notice that the gains are not
# sorted: a merge changes the counts, so a later candidate can gain more than an
# earlier one did.
#
# ## 4. One word's segmentation, drawn as a shortest path
#
# Nodes $0 \dots n$ are the positions between the $n$ characters of the word; every
# vocabulary piece $w[i:j]$ is an arc $i \to j$ of length $-\log p(w[i:j])$ (a cost:
# rare pieces are long arcs). A segmentation is a path $0 \to n$, its length the
# word's $-\log P$; the best segmentation is the **shortest path**. The graph is a DAG
# (arcs go right), so one sweep in position order is exact: Bellman–Ford with the
# vertices in topological order, i.e. Viterbi.

# %%
def arcs_of(word, log_prob, unk):
    """[(i, j, piece, -log p)] for every piece w[i:j] (and unknown single characters)."""
    out = []
    for j, edges in enumerate(swe.lattice(word, log_prob, unk, max(map(len, log_prob)))):
        out += [(i, j, s, -lp) for i, s, lp in edges]
    return out


def draw_dag(ax, word, log_prob, unk, max_pieces=None, title=""):
    """Nodes 0..n, an arc per piece (weight -log p), the spec's best path in red."""
    best, score = swe.viterbi(word, log_prob, max_pieces, unk_log_prob=unk)
    cuts = np.cumsum([0] + [len(s) for s in best])
    on_path = set(zip(cuts[:-1], cuts[1:]))
    arcs = arcs_of(word, log_prob, unk)
    for i, j, s, cost in sorted(arcs, key=lambda a: (a[0], a[1]) in on_path):  # the path drawn last
        red = (i, j) in on_path
        h = 0.45 * (j - i)
        ax.add_patch(Arc(((i + j) / 2, 0), j - i, 2 * h, theta1=0, theta2=180,
                         color="crimson" if red else "0.6", lw=2.6 if red else 0.9, zorder=3 if red else 1))
        if red or j - i > 1:
            ax.text((i + j) / 2, h, f"{s}\n{cost:.1f}", ha="center", va="bottom", fontsize=7,
                    color="crimson" if red else "0.35")
    for i, ch in enumerate(word):
        ax.text(i + 0.5, -0.18, ch, ha="center", va="top", fontsize=12, family="monospace")
    ax.plot(range(len(word) + 1), [0] * (len(word) + 1), "o", color="k", ms=5, zorder=4)
    for i in range(len(word) + 1):
        ax.text(i, -0.55, str(i), ha="center", va="top", fontsize=7, color="0.4")
    ax.set_xlim(-0.5, len(word) + 0.5)
    ax.set_ylim(-0.9, 0.45 * max(j - i for i, j, _, _ in arcs) + 0.7)
    ax.axis("off")
    ax.set_title(f"{title}best: {' | '.join(best)}   (-log P = {-score:.2f})", fontsize=10)
    return best, score


# a word of the corpus with many arcs to look at (the most arcs per character among mid-length words)
candidates = [w for w in word_counts if 7 <= len(w) <= 11 and w[:-1].isascii()]
demo_word = max(candidates, key=lambda w: (len(arcs_of(w, grow_model.log_prob, grow_model.unk_log_prob)) / len(w), w))
fig, ax = plt.subplots(figsize=(11, 4.2))
draw_dag(ax, demo_word, grow_model.log_prob, grow_model.unk_log_prob, title=f"{demo_word!r}: ")
plt.show()
print(f"{len(arcs_of(demo_word, grow_model.log_prob, grow_model.unk_log_prob))} arcs; "
      f"grey arcs are the other pieces of the vocabulary inside the word (single characters unlabelled)")

# %% [markdown]
# ### The k-hop constraint changes the answer
#
# The paper's "k-step shortest path" bounds the number of pieces per word: the best
# path with **at most k arcs**. That is a DP over (pieces used, position),
# $\text{best}_h[j] = \max_i \text{best}_{h-1}[i] + \log p(w[i:j])$, and the answer the
# best $\text{best}_h[n]$ over $h \le k$ (ties to fewer pieces). A toy vocabulary
# shows it changing the answer: four cheap letters beat every longer piece, until the
# count of pieces is capped.

# %%
toy = {"a": -1.0, "b": -1.0, "c": -1.0, "d": -1.0, "ab": -3.0, "cd": -3.0, "abc": -4.5}
fig, axes = plt.subplots(1, 3, figsize=(15, 3.4))
for ax, k in zip(axes, (None, 3, 2)):
    best, score = draw_dag(ax, "abcd", toy, -20.0, k, title=f"k = {k or '∞'}: ")
    print(f"k = {str(k):4}: {best} log P = {score}")
fig.tight_layout()
plt.show()
assert swe.viterbi("abcd", toy) == (["a", "b", "c", "d"], -4.0)
assert swe.viterbi("abcd", toy, 2) == (["abc", "d"], -5.5)
# k = 3: "a|b|cd" and "ab|c|d" both score -5; ties keep the smallest start of the last piece
assert swe.viterbi("abcd", toy, 3) == (["a", "b", "cd"], -5.0)

# %% [markdown]
# With k = 3 two paths tie at −5: "a|b|cd" and "ab|c|d". The spec's rule keeps, at
# every node, the candidate with the smallest start $i$ (the longest last piece), so
# "cd" wins. The same rule is written into the Numba and CUDA segmenters, which is why
# they agree with the spec id for id, ties included.
#
# And on the real vocabulary: how often does a cap change a word's segmentation?

# %%
for k in (1, 2, 3, 4):
    changed = sum(n for w, n in word_counts.items()
                  if swe.viterbi(w, grow_model.log_prob, k, unk_log_prob=grow_model.unk_log_prob)[0]
                  != grow_model.segment_word(w)[0])
    print(f"max_pieces = {k}: {changed / sum(word_counts.values()):6.1%} of the words segment differently")

# %% [markdown]
# ## 5. Brute force against Viterbi, live
#
# The spec's promise: Viterbi's answer is the best of **all** $2^{n-1}$ ways to cut a
# word. The brute force below enumerates them (an unknown single character costs the
# unknown penalty, as in the spec) and keeps the best score; Viterbi must reach it, on
# every word of the corpus short enough to enumerate, with and without a cap.

# %%
def brute_force(word, log_prob, unk, k=None):
    """The best score over every cut of ``word`` into pieces (at most k of them)."""
    n, best = len(word), -math.inf
    for mask in range(1 << (n - 1)):
        cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
        segs = [word[a:b] for a, b in zip(cuts, cuts[1:])]
        if (k is not None and len(segs) > k) or any(len(s) > 1 and s not in log_prob for s in segs):
            continue
        score = 0.0
        for s in segs:
            score += log_prob.get(s, unk)
        best = max(best, score)
    return best


short = [w for w in word_counts if len(w) <= 11][:300 if SMALL else 1500]
t_brute = t_vit = 0.0
for w in short:
    for k in (None, 2):
        t0 = time.perf_counter()
        want = brute_force(w, grow_model.log_prob, grow_model.unk_log_prob, k)
        t1 = time.perf_counter()
        got = swe.viterbi(w, grow_model.log_prob, k, unk_log_prob=grow_model.unk_log_prob)[1]
        t_brute, t_vit = t_brute + t1 - t0, t_vit + time.perf_counter() - t1
        assert (got == want == -math.inf) or math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12), (w, k)
print(f"{len(short)} words of at most 11 characters, k = None and 2: Viterbi's score == brute force's")
print(f"time: brute force {t_brute:.2f} s, Viterbi {t_vit:.2f} s")
long_word = max(word_counts, key=len)
print(f"the longest word has {len(long_word)} characters: {2 ** (len(long_word) - 1):.2e} segmentations to enumerate; "
      f"Viterbi looks at {len(arcs_of(long_word, grow_model.log_prob, grow_model.unk_log_prob))} arcs")

# %% [markdown]
# ## 6. Training: SWE ("grow") against the unigram LM ("prune") and BPE
#
# Three ways to build a vocabulary of the same size from the same words:
#
# * **grow** (SWE, the spec's reading of the paper): the greedy likelihood loop of
#   section 1; the trace above gives LL at every size.
# * **prune** (Kudo 2018, sentencepiece's unigram trainer): start from a large seed of
#   frequent substrings, run EM (forward-backward), drop the pieces whose removal
#   loses the least likelihood, repeat down to the size. One run per size.
# * **BPE** on the same word units: `learn_merges` over character ids, merges chosen
#   by frequency. Its segmentation is BPE's; we score it the same way (the unigram MLE
#   of its own counts), replaying the merges one at a time.
#
# All three are scored with `corpus_log_likelihood` of their segmentation's counts.

# %%
# BPE on the character ids of the same words
char_id = {c: i for i, c in enumerate(chars)}
bpe_words = {tuple(char_id[c] for c in w): n for w, n in word_counts.items()}
bpe_merges = learn_merges(bpe_words, EXTRA_PIECES, first_id=n_chars)
piece_counts = [0] * (n_chars + len(bpe_merges))
for w, n in bpe_words.items():
    for s in w:
        piece_counts[s] += n
bpe_ll = [swe.corpus_log_likelihood(piece_counts)]
for r, pair in enumerate(bpe_merges):  # replay: update the counts of the words that change
    new_id = n_chars + r
    for w in [w for w in bpe_words if pair[0] in w]:
        m = merge_word(w, pair, new_id)
        if len(m) != len(w):
            n = bpe_words.pop(w)
            for s in w:
                piece_counts[s] -= n
            for s in m:
                piece_counts[s] += n
            bpe_words[m] = bpe_words.get(m, 0) + n
    bpe_ll.append(swe.corpus_log_likelihood(piece_counts))

grow_ll = [swe.corpus_log_likelihood([sum(n * w.count(c) for w, n in word_counts.items()) for c in chars])]
grow_ll += [s.log_likelihood for s in steps]
assert grow_ll[0] == bpe_ll[0]  # both start from the characters

prune_points = []
t0 = time.perf_counter()
for extra in PRUNE_EXTRA:
    p_pieces, p_lps, _ = swe.prune(word_counts, n_chars + extra)
    p_model = swe.UnigramModel(p_pieces, p_lps)
    c_prune = {}
    for w, n in word_counts.items():
        for s in p_model.segment_word(w)[0]:
            c_prune[s] = c_prune.get(s, 0) + n
    prune_points.append((len(p_pieces), swe.corpus_log_likelihood(list(c_prune.values()))))
prune_s = time.perf_counter() - t0

n_chars_text = sum(n * len(w) for w, n in word_counts.items())  # characters, markers included
sizes = n_chars + np.arange(len(grow_ll))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.2))
ax1.plot(sizes, -np.array(grow_ll) / n_chars_text, label="SWE (grow)")
ax1.plot(n_chars + np.arange(len(bpe_ll)), -np.array(bpe_ll) / n_chars_text, label="BPE")
ax1.plot([s for s, _ in prune_points], [-ll / n_chars_text for _, ll in prune_points], "s", label="unigram LM (prune)")
ax1.set(xlabel="vocabulary size (pieces)", ylabel="-LL / characters (nats per character)",
        title="cost of the training text under each vocabulary (lower is better)")
ax1.legend()
ax1.grid(alpha=0.3)
m = min(len(grow_ll), len(bpe_ll))
gain = (np.array(grow_ll[:m]) - np.array(bpe_ll[:m])) / -np.array(bpe_ll[:m])
ax2.plot(sizes[:m], 100 * gain, color="C2")
ax2.set(xlabel="vocabulary size (pieces)", ylabel="(LL(SWE) - LL(BPE)) / |LL(BPE)|, %",
        title="how much SWE beats BPE")
ax2.grid(alpha=0.3)
fig.tight_layout()
plt.show()
print(f"prune runs: {prune_s:.1f} s")

# %% [markdown]
# How much, in numbers (bits per character: the text's cost under the unigram model
# of each segmentation, divided by its characters):

# %%
print(f"{'pieces':>7} {'SWE bits/char':>14} {'BPE bits/char':>14} {'SWE gain':>9}")
for extra in sorted({10, 40, 100, EXTRA_PIECES // 2, m - 1}):
    if extra < m:
        g, b = grow_ll[extra], bpe_ll[extra]
        print(f"{n_chars + extra:7d} {-g / n_chars_text / math.log(2):14.4f} {-b / n_chars_text / math.log(2):14.4f} "
              f"{(g - b) / -b:9.2%}")
never_below = sum(g >= b for g, b in zip(grow_ll[:m], bpe_ll[:m]))
print(f"SWE's LL >= BPE's at {never_below} of {m} sizes")
assert never_below == m  # the claim: never below BPE at the same size
for size, ll in prune_points:
    k = size - n_chars
    if k < m:
        print(f"prune at {size} pieces: {-ll / n_chars_text / math.log(2):.4f} bits/char "
              f"(grow {-grow_ll[k] / n_chars_text / math.log(2):.4f})")

# %% [markdown]
# What the curves say (on this corpus; the held-out comparison at vocabulary 8000 is
# the benchmark's, section 9):
#
# * Both greedy loops start at the same point (the characters) and fall fast at
#   first. SWE's likelihood is at or above BPE's at every size (checked above: the
#   issue's claim), by a small margin, a percent or two of the text's cost. The pieces
#   both loops find first are largely the same; they part ways where a pair is frequent
#   but its parts also occur apart: merging it costs the parts' probability, which
#   `merge_gain` sees and a count does not.
# * Pruning is in another league on this corpus: it starts from a large seed of
#   substrings and keeps the ones the EM-fitted model uses, so it is not restricted to
#   pieces built pairwise from earlier pieces, and it re-fits all probabilities (and
#   soft counts) at every round. Greedy growth, SWE's reading here, is a local search
#   from BPE's starting point; the likelihood objective alone does not make it global.
#   (That the paper's "optimal" is about the *segmentation* for a given vocabulary, not
#   the vocabulary, is the notes' reading too.)
#
# ## 7. Agreement with sentencepiece
#
# Our Viterbi loaded with a sentencepiece unigram model's pieces and scores must cut
# text as sentencepiece does. The normalisation to mirror (the test
# `tests/spec/test_swe_sentencepiece.py` says why each matters): the identity
# normaliser, words at spaces only (`sep=" "`), the marker *before* each word
# (`boundary="start"`), no byte fallback, and lines with characters the model knows.

# %%
try:
    import sentencepiece as spm
except ImportError:
    print("sentencepiece is not installed: skipped (pip install sentencepiece)")
else:
    lines = [ln for ln in stdlib_text(6_000_000).splitlines() if ln.strip()][:SPM_LINES]
    held = [ln for ln in stdlib_text(400_000, offset=HELDOUT_OFFSET).splitlines() if ln.strip()][:1000]
    f = io.BytesIO()
    t0 = time.perf_counter()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=f, vocab_size=SPM_VOCAB, model_type="unigram",
        normalization_rule_name="identity", character_coverage=1.0, byte_fallback=False,
        num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=f.getvalue())
    sp_model = swe.UnigramModel.from_sentencepiece(sp)
    known = {c for s in sp_model.pieces for c in s}
    held = [ln for ln in held if set(ln.replace(" ", "")) <= known]
    same = [ln for ln in held if sp_model.segment(ln) == sp.encode_as_pieces(ln)]
    print(f"sentencepiece unigram, {len(sp_model.pieces)} pieces ({time.perf_counter() - t0:.1f} s): "
          f"{len(same)} of {len(held)} held-out lines segmented identically")
    for ln in held:
        if ln not in same:  # every difference must be an exact tie in float64
            ours, theirs = sp_model.segment(ln), sp.encode_as_pieces(ln)
            s_ours = s_theirs = 0.0
            for s in ours:
                s_ours += sp_model.log_prob[s]
            for s in theirs:
                s_theirs += sp_model.log_prob[s]
            print(f"  differs (a tie: {s_ours} vs {s_theirs}): {ours} / {theirs}")
            assert s_ours == s_theirs
    example = next((ln for ln in held if "def " in ln), held[0]).strip()
    print(f"example: {example!r}\n  -> {sp_model.segment(example)}")

# %% [markdown]
# Where a line differs, both paths have the same score in float64: sentencepiece sums
# float32 scores over the whole sentence, so its rounding breaks such ties, where the
# spec keeps the smallest start.
#
# ## 8. The fast version
#
# `backends/cpu/tokenize/swe.py` compiles the segmenter with Numba: words as one flat array of
# code points with offsets (`flatten_words`), pieces looked up in the spec's flat
# trie (`piece_trie`: children of a node consecutive, characters ascending, binary
# search), a parallel loop over words with the spec's "push" sweep. Checked id for id
# and score for score against the spec's `viterbi_ids` on every distinct word, then
# timed:

# %%
from backends.cpu.tokenize import swe as cpu_swe  # noqa: E402

held_words = swe.count_words(stdlib_text(TRAIN_BYTES, offset=HELDOUT_OFFSET))
words = list(held_words)
cps, offsets = swe.flatten_words(words)
trie = grow_model.trie
cpu_swe.segment_batch(*swe.flatten_words(words[:10]), trie)  # compile (or load the cache)
for k in (None, 3):
    t0 = time.perf_counter()
    got = cpu_swe.segment_batch(cps, offsets, trie, k)
    numba_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    want = swe.segment_batch(cps, offsets, trie, k)  # viterbi_ids word by word
    spec_s = time.perf_counter() - t0
    assert got.per_word(offsets) == want.per_word(offsets)  # ids and scores, word by word
    print(f"k = {k}: {len(words):,} held-out words ({cps.size:,} code points) identical to the spec; "
          f"spec {spec_s * 1e3:.0f} ms, Numba {numba_s * 1e3:.1f} ms ({spec_s / numba_s:.0f}x)")

# %% [markdown]
# The Numba trainer: `grow` with incremental pair counts, a dynamic trie and a heap
# ordered by an upper bound of each candidate's gain (so most candidates are never
# scored). Same pieces, same counts:

# %%
t0 = time.perf_counter()
fast_pieces, fast_counts = cpu_swe.grow(word_counts, n_chars + EXTRA_PIECES)
fast_s = time.perf_counter() - t0
assert fast_pieces == pieces and fast_counts == counts
print(f"Numba grow: {len(fast_pieces)} pieces identical to the spec's, {fast_s:.2f} s "
      f"(first call includes compiling or loading it) against the spec's {grow_s:.1f} s")
t0 = time.perf_counter()
cpu_swe.grow(word_counts, n_chars + EXTRA_PIECES)
print(f"  again: {time.perf_counter() - t0:.3f} s ({grow_s / (time.perf_counter() - t0):.0f}x the spec)")

# %% [markdown]
# ### Batched Viterbi as a CUDA kernel
#
# On a GPU, one thread per word runs the same sweep over the same trie
# (`backends/cuda/tokenize.cu`, `segment_v1`); scores are formed by the same float64
# additions in the same order, so they equal the spec's bit for bit. Where there is no
# GPU the emulator runs the unmodified `.cu` file (slowly: a few hundred words here):

# %%
from backends.cuda import emulate_if_no_gpu  # noqa: E402
from backends.cuda import tokenize as cuda_tokenize  # noqa: E402

engine = emulate_if_no_gpu()
few = words[:200]
t0 = time.perf_counter()
for k in (None, 3):
    got = cuda_tokenize.segment_words(few, trie, k)
    want = [swe.viterbi_ids([ord(c) for c in w], trie, k) for w in few]
    assert [(list(i), s) for i, s in got] == [(list(i), s) for i, s in want]
print(f"engine: {engine}; {len(few)} words, k = None and 3: ids and scores identical to the spec "
      f"({time.perf_counter() - t0:.2f} s)")

# %% [markdown]
# ## 9. The speed table
#
# `bench/tokenize.py` times unigram/SWE training against sentencepiece at vocabulary
# 8000 on the 10 MB English corpus and compares held-out log-likelihood per byte. What
# it recorded in `bench/RESULTS.md`:

# %%
results_md = ROOT / "bench" / "RESULTS.md"
sections = results_md.read_text().split("\n## ")[1:] if results_md.is_file() else []
recorded = [sec for sec in sections if "tokeniz" in sec.splitlines()[0].lower()]
tables = [("### " + sub.strip()) for sec in recorded for sub in sec.split("\n### ")[1:]
          if any(w in sub.splitlines()[0].lower() for w in ("unigram", "swe", "likelihood", "sentencepiece"))]
print("\n\n".join(tables) if tables else
      "No unigram/SWE timings in bench/RESULTS.md yet: run `python bench/tokenize.py` to record them.")

# %% [markdown]
# ## 10. Napkin math
#
# **Segmentation.** From each start $i$ the trie walk follows the word until no piece
# continues, at most $L$ characters ($L$ = the longest piece), so a word of $n$
# characters costs at most $n \cdot \min(n, L)$ trie steps, each a binary search over
# one node's children. The k-hop DP runs the same sweep once per layer: $k$ times the
# work (the spec's `best_path` and the compiled kernels keep all layers). Counting on the
# held-out words:

# %%
L = trie.max_len
n_w = np.diff(offsets)
bound = int(np.sum(n_w * np.minimum(n_w, L)))
arcs = sum(len(arcs_of(w, grow_model.log_prob, grow_model.unk_log_prob)) for w in words)
print(f"{len(words):,} words, {cps.size:,} characters, longest piece L = {L}")
print(f"trie steps <= Σ n·min(n, L) = {bound:,}; arcs actually relaxed: {arcs:,} ({arcs / cps.size:.1f} per character)")
print(f"brute force would score Σ 2^(n-1) = {float(np.sum(2.0 ** (n_w - 1))):.2e} segmentations")

# %% [markdown]
# **Training.** Each step of the spec's `grow` recounts the merge counts of every
# word: $P$ = the corpus's distinct-word positions, times the number of steps. The
# compiled trainer re-counts only the words a merge touched (as BPE's trainer does,
# lesson 05) and evaluates the exact gain only for candidates whose upper bound can
# still win.

# %%
P = sum(len(w) for w in word_counts)
print(f"{len(word_counts):,} distinct words, P = {P:,} positions, {EXTRA_PIECES} steps: "
      f"the spec's recount visits {P * EXTRA_PIECES:,} positions ({grow_s / EXTRA_PIECES * 1e3:.0f} ms per step)")

# %% [markdown]
# ## 11. Exercises
#
# Each exercise has a stub, a `check` that compares it with the spec on pinned and
# drawn cases (vocabularies over "abc" whose log-probabilities are multiples of 0.5, so
# ties are exact and frequent, and words that may hold an unknown "d"), a typical
# mistake being caught, and a hidden solution.
#
# ### (a) Viterbi
#
# Write `my_viterbi(word, log_prob, unk_log_prob)` -> `(pieces, score)`: the
# segmentation maximising the sum of log-probabilities, a character that is not a piece
# being a piece of log-probability `unk_log_prob`; ties keep, at every end position,
# the candidate with the smallest start. `([], 0.0)` for the empty word.
#
# ### (b) k-hop Viterbi
#
# Write `my_viterbi_k(word, log_prob, unk_log_prob, max_pieces)`: the same with at most
# `max_pieces` pieces; among equal totals the fewest pieces; `([], -inf)` when no such
# segmentation exists.

# %%
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

LPS = [-0.5, -1.0, -1.5, -2.0, -3.0]


@st.composite
def vocab_and_word(draw):
    pieces = sorted(draw(st.sets(st.text("abc", min_size=1, max_size=4), max_size=10)))
    return ({s: draw(st.sampled_from(LPS)) for s in pieces}, draw(st.text("abcd", max_size=8)),
            draw(st.sampled_from([-4.0, -0.5])))


def check_viterbi(fn, *, k_hop=False, max_examples: int = HYPOTHESIS_EXAMPLES) -> bool:
    """Compare fn with spec.tokenize.swe.viterbi: same pieces, same score."""
    pinned = [({"a": -1.0, "aa": -2.0}, "aaaa", -4.0), (toy, "abcd", -20.0), ({}, "", -1.0),
              ({"ab": -1.0}, "abd", -3.0)]

    def same(lp, word, unk, k):
        got = fn(word, lp, unk, k) if k_hop else fn(word, lp, unk)
        want = swe.viterbi(word, lp, k, unk_log_prob=unk)
        assert (list(got[0]), float(got[1])) == want, f"word {word!r}, k = {k}, log p {lp}: got {got}, expected {want}"

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=SMALL,
              suppress_health_check=list(HealthCheck))
    @given(vw=vocab_and_word(), k=st.sampled_from([1, 2, 3, 5]))
    def drawn(vw, k):
        same(*vw, k if k_hop else None)

    def run():
        for lp, word, unk in pinned:
            for k in ((1, 2, 3) if k_hop else (None,)):
                same(lp, word, unk, k)
        drawn()

    return verdict(fn, run, f"pinned and {max_examples} drawn words equal the spec")


def my_viterbi(word, log_prob, unk_log_prob):
    """YOUR CODE: (pieces, score) of the best segmentation of word."""
    raise NotImplementedError


def my_viterbi_k(word, log_prob, unk_log_prob, max_pieces):
    """YOUR CODE: (pieces, score) of the best segmentation into at most max_pieces pieces."""
    raise NotImplementedError


check_viterbi(my_viterbi)
check_viterbi(my_viterbi_k, k_hop=True)

# %% [markdown]
# A typical mistake, caught: `>=` instead of `>` when a candidate is compared with the
# one held, so ties go to the *largest* start (the shortest last piece): "a|a|a|a"
# where the spec says "aa|aa".

# %%
def viterbi_ties_last(word, log_prob, unk_log_prob):
    n = len(word)
    best, back = [0.0] + [None] * n, [None] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            s = word[i:j]
            lp = log_prob.get(s, unk_log_prob if j == i + 1 else None)
            if lp is None or best[i] is None:
                continue
            if best[j] is None or best[i] + lp >= best[j]:  # BUG: ties to the largest i
                best[j], back[j] = best[i] + lp, i
    pieces, j = [], n
    while j > 0:
        pieces.append(word[back[j]:j])
        j = back[j]
    return pieces[::-1], best[n]


assert not check_viterbi(viterbi_ties_last)

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution (a) and (b). Expand to read them.
def solution_viterbi(word, log_prob, unk_log_prob):
    n = len(word)
    best, back = [0.0] + [None] * n, [None] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):  # ascending i: the first of equal candidates is kept
            s = word[i:j]
            lp = log_prob.get(s, unk_log_prob if j == i + 1 else None)
            if lp is None or best[i] is None:
                continue
            if best[j] is None or best[i] + lp > best[j]:
                best[j], back[j] = best[i] + lp, i
    pieces, j = [], n
    while j > 0:
        pieces.append(word[back[j]:j])
        j = back[j]
    return pieces[::-1], best[n]


def solution_viterbi_k(word, log_prob, unk_log_prob, max_pieces):
    n = len(word)
    if n == 0:
        return [], 0.0
    best = [[0.0] + [None] * n] + [[None] * (n + 1) for _ in range(max_pieces)]
    back = [[None] * (n + 1) for _ in range(max_pieces + 1)]
    for h in range(1, max_pieces + 1):  # best[h][j]: exactly h pieces up to j
        for j in range(1, n + 1):
            for i in range(j):
                s = word[i:j]
                lp = log_prob.get(s, unk_log_prob if j == i + 1 else None)
                if lp is None or best[h - 1][i] is None:
                    continue
                if best[h][j] is None or best[h - 1][i] + lp > best[h][j]:
                    best[h][j], back[h][j] = best[h - 1][i] + lp, i
    finished = [h for h in range(1, max_pieces + 1) if best[h][n] is not None]
    if not finished:
        return [], -math.inf
    h = max(finished, key=lambda h: (best[h][n], -h))  # largest score, then fewest pieces
    score, pieces, j = best[h][n], [], n
    while h > 0:
        pieces.append(word[back[h][j]:j])
        j, h = back[h][j], h - 1
    return pieces[::-1], score


assert check_viterbi(solution_viterbi)
assert check_viterbi(solution_viterbi_k, k_hop=True)

# %% [markdown]
# ## Summary
#
# * SWE scores a vocabulary by the likelihood of the training text under a unigram
#   model; with $p = c/N$ that likelihood is $\sum_s c\log c - N\log N$ of the
#   segmentation's counts, so a merge's gain is exact and cheap (`merge_gain`).
# * A word's best segmentation is a shortest path in the DAG of its pieces (weights
#   $-\log p$): one Viterbi sweep, equal to brute force over all $2^{n-1}$ cuts; the
#   paper's k-step constraint is a DP over (pieces, position) and can change the answer.
# * Grown by likelihood gain, the vocabulary makes the training text more probable than
#   BPE's at every size, by a percent or two here; the unigram LM's pruning, which is
#   not restricted to pairwise growth, does much better still on this corpus.
# * Loaded with sentencepiece's pieces and scores, the spec's Viterbi cuts text as
#   sentencepiece does (up to float32 ties on its side); the Numba and CUDA segmenters
#   reproduce the spec id for id and bit for bit.

# %%
print(f"lesson executed in {time.perf_counter() - LESSON_START:.1f} s ({'small' if SMALL else 'default'} mode)")
