"""Launcher of ``tokenize.cu``: BPE pair counting and batched unigram Viterbi on CUDA.

Mirrors

* :func:`spec.tokenize.bpe.pair_counts`: the histogram of adjacent symbol pairs over a
  batch of words, each pair weighted by its word's count, overlapping occurrences all
  counted. :func:`pair_counts` has the spec's signature and returns the spec's dict;
  :func:`pair_counts_arrays` takes the flat arrays (symbols, int64 offsets, int64 counts)
  and returns :class:`PairCounts`, the same histogram as sorted arrays.
* :func:`spec.tokenize.swe.segment_batch` (:func:`spec.tokenize.swe.viterbi_ids` per
  word) over many words at once: :func:`segment_batch` takes words
  as flat int32 code points with int64 offsets and a
  :class:`spec.tokenize.swe.PieceTrie`, and returns per word the score, the number of
  pieces and the piece ids (:class:`spec.tokenize.swe.Segmentation`); ``max_pieces=None`` is the
  unconstrained (sentencepiece) rule, ``max_pieces=k`` the k-hop rule.

Exactness: counts are integer sums (64-bit atomics), equal to the spec's whatever the
order of the atomics. Piece ids equal the spec's, ties included; scores equal the spec's
bit for bit, because each lattice node's score is formed by the same float64 additions in
the same order (``best[i] + log_prob``, left to right along the chosen path; see
tokenize.cu). Both are checked with ``==`` by the tests.

Inputs are NumPy arrays (copied to the device) or CuPy arrays (used in place); results come
back as the kind of array the words came in. Bad input raises ValueError/TypeError naming
the argument.

    >>> import os; os.environ["ATTNSPEC_CUDA"] = "emulator"   # no GPU here
    >>> from backends.cuda.tokenize import pair_counts
    >>> pair_counts({(1, 1, 1): 2, (1, 2): 1})
    {(1, 1): 4, (1, 2): 1}
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from backends.cuda import _launch, _timing
from backends.cuda._launch import KernelConfig
from spec.tokenize.bpe import flatten_word_counts
from spec.tokenize.swe import PieceTrie, Segmentation, check_max_pieces, flatten_words

SPEC = ("spec.tokenize.bpe:pair_counts", "spec.tokenize.swe:segment_batch")
"""The spec functions this family mirrors."""
SOURCE = "tokenize.cu"

PAIR_THREADS = 256  # threads per block of pair_counts_v1 (a thread per position)
PAIR_MAX_BLOCKS = 8192  # grid-stride beyond this: enough to fill any current GPU
SEG_THREADS = 128  # threads (= words) per block of segment_v1
_EMPTY_KEY = np.uint64(0xFFFFFFFFFFFFFFFF)
_MIN_TABLE = 64


def _defines() -> tuple[tuple[str, str], ...]:
    # One module for both families: every config defines every macro.
    return (("PAIR_THREADS", str(PAIR_THREADS)), ("SEG_THREADS", str(SEG_THREADS)))


KERNELS: dict[str, KernelConfig] = {
    "pair_counts_v1": KernelConfig(SOURCE, "pair_counts_v1", _defines(), threads=PAIR_THREADS),
    "segment_v1": KernelConfig(SOURCE, "segment_v1", _defines(), threads=SEG_THREADS),
}
"""Every configuration this launcher uses; the compile gate compiles exactly these."""


# ------------------------------------------------------------------ shared checks


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or _launch.is_cupy_array(x)


def _host(x) -> np.ndarray:
    return x.get() if _launch.is_cupy_array(x) else x


def _check_array(name: str, x, dtype, *, min_size: int = 0) -> None:
    if not _is_array(x):
        raise TypeError(f"{name}: expected a NumPy or CuPy array, got {type(x).__name__}")
    if x.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {tuple(x.shape)}")
    if np.dtype(x.dtype) != np.dtype(dtype):
        raise TypeError(f"{name}: expected {np.dtype(dtype)}, got {np.dtype(x.dtype)}")
    if x.size < min_size:
        raise ValueError(f"{name}: expected at least {min_size} element(s), got {x.size}")


def _check_words(sym_name: str, sym_P, offsets_W1, *, non_negative: bool = True) -> np.ndarray:
    """Checks flat words; returns the offsets on the host."""
    _check_array(sym_name, sym_P, np.int32)
    _check_array("offsets_W1", offsets_W1, np.int64, min_size=1)
    offsets = _host(offsets_W1)
    if offsets[0] != 0 or offsets[-1] != sym_P.size:
        raise ValueError(f"offsets_W1: expected to run from 0 to len({sym_name}) = {sym_P.size}, "
                         f"got {offsets[0]} .. {offsets[-1]}")
    if (np.diff(offsets) < 0).any():
        raise ValueError("offsets_W1: expected non-decreasing offsets")
    if offsets.size - 1 > np.iinfo(np.int32).max:
        raise ValueError(f"offsets_W1: at most 2^31 - 1 words per call, got {offsets.size - 1}")
    if non_negative and sym_P.size and bool((sym_P < 0).any()):
        raise ValueError(f"{sym_name}: expected non-negative symbols")
    return offsets


# ------------------------------------------------------------------ pair counting


class PairCounts(NamedTuple):
    """The pair histogram as arrays, in the spec's dict order (first occurrence: words in
    order, positions left to right)."""

    pairs_K2: np.ndarray
    """int32 (K, 2): the distinct adjacent pairs (left, right)."""
    counts_K: np.ndarray
    """int64 (K,): the weighted number of occurrences of each."""


def as_dict(result: PairCounts) -> dict[tuple[int, int], int]:
    """The spec's dict {(left, right): count} of :class:`PairCounts`, in the same order."""
    pairs, counts = _host(result.pairs_K2).tolist(), _host(result.counts_K).tolist()
    return {(a, b): c for (a, b), c in zip(pairs, counts)}


def _table_size(n_pairs: int) -> int:
    # a power of two with load factor <= 1/2: probes stay short and always end
    return max(_MIN_TABLE, 1 << (2 * n_pairs - 1).bit_length()) if n_pairs else _MIN_TABLE


def pair_counts_arrays(sym_P, offsets_W1, counts_W, *, version: str = "v1") -> PairCounts:
    """The pair histogram of flat words, as :func:`spec.tokenize.bpe.pair_counts`.

    ``sym_P`` int32 (P,) symbols ≥ 0 of all words, word w being
    ``sym_P[offsets_W1[w]:offsets_W1[w + 1]]``; ``offsets_W1`` int64 (W + 1,), from 0 to P,
    non-decreasing (empty words allowed); ``counts_W`` int64 (W,) ≥ 1 (the spec's rule).
    Every adjacent position of word w adds counts_W[w] to its pair. Returns the distinct
    pairs and their summed counts, in order of first occurrence (the spec's dict order).
    """
    if version not in ("v1",):
        raise ValueError(f"version: expected 'v1', got {version!r}")
    offsets = _check_words("sym_P", sym_P, offsets_W1)
    W = offsets.size - 1
    _check_array("counts_W", counts_W, np.int64)
    if counts_W.size != W:
        raise ValueError(f"counts_W: expected {W} counts (one per word of offsets_W1), got {counts_W.size}")
    counts = _host(counts_W)
    if W and counts.min() < 1:
        raise ValueError(f"counts_W: expected counts >= 1, got {counts.min()}")
    lengths = np.diff(offsets)
    n_pairs = int(lengths.sum()) - int((lengths > 0).sum())
    # every sum fits the table's 64-bit counters when the largest count times the number
    # of positions does (a conservative bound, in Python integers)
    if n_pairs and int(counts.max()) * n_pairs > np.iinfo(np.int64).max:
        raise ValueError("counts_W: the pair counts could exceed 2^63 - 1")
    arrays = _launch.Arrays(_launch.engine(), sym_P, offsets_W1, counts_W)
    xp = arrays.xp
    Q = _table_size(n_pairs)
    keys = xp.full((Q,), _EMPTY_KEY, dtype=np.uint64)
    values = xp.zeros((Q,), dtype=np.uint64)
    first = xp.full((Q,), _EMPTY_KEY, dtype=np.uint64)
    if n_pairs:
        _run_pairs(arrays.to_device(sym_P), arrays.to_device(offsets_W1),
                   arrays.to_device(counts_W), keys, values, first)
    used = keys != _EMPTY_KEY
    order = xp.argsort(first[used])  # first positions are distinct: a total order
    k, v = keys[used][order], values[used][order]
    pairs = xp.stack([(k >> np.uint64(32)).astype(np.int32),
                      (k & np.uint64(0xFFFFFFFF)).astype(np.int32)], axis=1)
    return PairCounts(arrays.result(pairs), arrays.result(v.astype(np.int64)))


def _run_pairs(sym, offsets, counts, keys, values, first) -> None:
    """Launch pair_counts_v1 on checked device arrays with a cleared table (main() times it)."""
    P, W, Q = sym.size, offsets.size - 1, keys.size
    blocks = max(1, min(PAIR_MAX_BLOCKS, -(-(P - 1) // PAIR_THREADS)))
    _launch.get_kernel(KERNELS["pair_counts_v1"])(
        (blocks,), (PAIR_THREADS,),
        (sym, offsets, counts, np.int32(W), np.int64(P), keys, values, first, np.int64(Q)))


def pair_counts(word_counts: Mapping[tuple[int, ...], int], *, version: str = "v1") -> dict[tuple[int, int], int]:
    """:func:`spec.tokenize.bpe.pair_counts` on CUDA: {(left, right): weighted count}.

    Same signature, checks and result as the spec, insertion order included.
    """
    return as_dict(pair_counts_arrays(*flatten_word_counts(word_counts), version=version))


# ------------------------------------------------------------------ segmentation


def _check_trie(trie) -> None:
    if not isinstance(trie, PieceTrie):
        raise TypeError(f"trie: expected a spec.tokenize.swe.PieceTrie, got {type(trie).__name__}")
    for name, dtype in (("first_edge_N1", np.int64), ("edge_char", np.int32),
                        ("edge_node", np.int32), ("node_piece_N", np.int32),
                        ("log_prob_V", np.float64)):
        x = getattr(trie, name)
        if not isinstance(x, np.ndarray) or x.ndim != 1 or x.dtype != dtype:
            raise TypeError(f"trie.{name}: expected a 1-D {np.dtype(dtype)} NumPy array, got "
                            f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    N, edges, V = trie.node_piece_N.size, trie.edge_char.size, trie.log_prob_V.size
    if N < 1 or trie.first_edge_N1.size != N + 1 or trie.edge_node.size != edges:
        raise ValueError(f"trie: inconsistent sizes (nodes {N}, first_edge_N1 "
                         f"{trie.first_edge_N1.size}, edges {edges}, edge_node {trie.edge_node.size})")
    if trie.first_edge_N1[0] != 0 or trie.first_edge_N1[-1] != edges or (np.diff(trie.first_edge_N1) < 0).any():
        raise ValueError("trie.first_edge_N1: expected non-decreasing offsets from 0 to the number of edges")
    if edges and (trie.edge_node.min() < 1 or trie.edge_node.max() >= N):
        raise ValueError(f"trie.edge_node: expected child nodes in [1, {N})")
    if N and (trie.node_piece_N.min() < -1 or trie.node_piece_N.max() >= V):
        raise ValueError(f"trie.node_piece_N: expected piece ids in [-1, {V}) or -1")
    if np.isnan(trie.log_prob_V).any() or np.isposinf(trie.log_prob_V).any():
        raise ValueError("trie.log_prob_V: expected log-probabilities in [-inf, inf)")
    if not isinstance(trie.max_len, (int, np.integer)) or not 0 <= trie.max_len <= np.iinfo(np.int32).max:
        raise ValueError(f"trie.max_len: expected an int >= 0, got {trie.max_len!r}")
    if not np.iinfo(np.int32).min <= trie.unk_id <= np.iinfo(np.int32).max:
        raise ValueError(f"trie.unk_id: expected an int32, got {trie.unk_id}")
    unk = float(trie.unk_log_prob)
    if math.isnan(unk) or unk == math.inf:
        raise ValueError(f"trie.unk_log_prob: expected a value in [-inf, inf), got {unk}")


def _kernel_k(max_pieces) -> int:
    """The kernel's k: 0 for None (unconstrained), else the spec's checked k (< 2^31)."""
    k = check_max_pieces(max_pieces)
    if k is not None and k > np.iinfo(np.int32).max:
        raise ValueError(f"max_pieces: expected at most 2^31 - 1, got {k}")
    return 0 if k is None else k


def scratch_offsets(offsets_W1: np.ndarray, max_pieces: int | None) -> np.ndarray:
    """int64 (W + 1,): where each word's lattice starts in the scratch arrays.

    A word of n code points takes n + 1 nodes unconstrained, (min(k, n) + 1)·(n + 1) with
    ``max_pieces=k`` (one layer per number of pieces, and layer 0).
    """
    n = np.diff(offsets_W1)
    layers = 1 if not max_pieces else np.minimum(max_pieces, n) + 1
    sizes = layers * (n + 1)
    out = np.zeros(n.size + 1, np.int64)
    np.cumsum(sizes, out=out[1:])
    return out


def segment_batch(cps_P, offsets_W1, trie, max_pieces: int | None = None, *,
                  version: str = "v1") -> Segmentation:
    """:func:`spec.tokenize.swe.segment_batch` on CUDA: the best segmentation of every
    word, as :func:`spec.tokenize.swe.viterbi_ids` per word.

    ``cps_P`` int32 (P,): the code points of all words, word w being
    ``cps_P[offsets_W1[w]:offsets_W1[w + 1]]``; ``offsets_W1`` int64 (W + 1,), from 0 to P,
    non-decreasing (empty words allowed); ``trie``: a :class:`spec.tokenize.swe.PieceTrie`
    (NumPy arrays, copied to the device); ``max_pieces``: None (unconstrained,
    sentencepiece's rule) or k ≥ 1 (the k-hop rule). The ties, the unknown-character
    edge and the -inf / empty-word results are the spec's (module docstring of
    spec/tokenize/swe.py). Scratch: 16 bytes per lattice node (:func:`scratch_offsets`).
    """
    if version not in ("v1",):
        raise ValueError(f"version: expected 'v1', got {version!r}")
    offsets = _check_words("cps_P", cps_P, offsets_W1, non_negative=False)
    _check_trie(trie)
    k = _kernel_k(max_pieces)
    arrays = _launch.Arrays(_launch.engine(), cps_P, offsets_W1)
    xp = arrays.xp
    W, P = offsets.size - 1, cps_P.size
    score = arrays.empty((W,), np.float64)
    n_pieces = xp.full((W,), -1, dtype=np.int32)
    pieces = xp.full((max(P, 1),), -1, dtype=np.int32)  # a kernel argument of no elements: one
    if W:
        scratch = scratch_offsets(offsets, k)
        _run_segment(arrays.to_device(cps_P), arrays.to_device(offsets_W1), _trie_arrays(arrays, trie),
                     trie, k, arrays.to_device(scratch), _scratch(xp, int(scratch[-1])),
                     score, n_pieces, pieces)
    return Segmentation(arrays.result(score), arrays.result(n_pieces), arrays.result(pieces[:P]))


def _trie_arrays(arrays: _launch.Arrays, trie) -> tuple:
    # edge arrays of a trie without edges: a one-element placeholder the kernel never reads
    def nonempty(x):
        return arrays.to_device(x if x.size else np.zeros(1, x.dtype))

    return tuple(nonempty(getattr(trie, f)) for f in
                 ("first_edge_N1", "edge_char", "edge_node", "node_piece_N", "log_prob_V"))


def _scratch(xp, nodes: int) -> tuple:
    nodes = max(nodes, 1)
    return (xp.empty((nodes,), np.float64), xp.empty((nodes,), np.int32),
            xp.empty((nodes,), np.int32))


def _run_segment(cps, offsets, trie_dev, trie, k, scratch_W1, scratch, score, n_pieces, pieces) -> None:
    """Launch segment_v1 on checked device arrays (what main() times)."""
    W = offsets.size - 1
    blocks = max(1, -(-W // SEG_THREADS))
    _launch.get_kernel(KERNELS["segment_v1"])(
        (blocks,), (SEG_THREADS,),
        (cps, offsets, np.int32(W), *trie_dev, np.int32(trie.max_len), np.int32(trie.unk_id),
         np.float64(trie.unk_log_prob), np.int32(k), scratch_W1, *scratch, score, n_pieces, pieces))


def segment_words(words: Sequence[str], trie, max_pieces: int | None = None, *,
                  version: str = "v1") -> list[tuple[list[int], float]]:
    """:func:`segment_batch` of a list of words, as ``[viterbi_ids(word, trie, max_pieces)]``:
    per word its piece ids and score."""
    cps, offsets = flatten_words(words)
    seg = segment_batch(cps, offsets, trie, max_pieces, version=version)
    return Segmentation(*(_host(x) for x in seg)).per_word(offsets)


# ------------------------------------------------------------------ main


def _corpus_arrays(rng: np.random.Generator, W: int, alphabet: str,
                   max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """W words over ``alphabet`` as (cps_P, offsets_W1): Zipf-like letter use, lengths
    geometric up to ``max_len``, 2% empty and 1% of length ``max_len``, so that pieces
    repeat and ties and unknown characters occur."""
    weights = 1.0 / np.arange(1, len(alphabet) + 1)
    lengths = np.minimum(rng.geometric(0.2, size=W), max_len)
    lengths[rng.random(W) < 0.02] = 0
    lengths[rng.random(W) < 0.01] = max_len
    offsets = np.zeros(W + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    letters = rng.choice(len(alphabet), size=int(offsets[-1]), p=weights / weights.sum())
    return np.array([ord(c) for c in alphabet], np.int32)[letters], offsets


def _words(cps_P: np.ndarray, offsets_W1: np.ndarray) -> list[str]:
    return ["".join(map(chr, cps_P[a:b])) for a, b in itertools.pairwise(offsets_W1)]


def _vocabulary(rng: np.random.Generator, words: list[str], size: int):
    """A piece trie of ``size`` substrings (length <= 6) of ``words`` with random log-probs
    on a coarse grid (so equal scores, hence ties, occur), built by the spec."""
    from spec.tokenize.swe import piece_trie

    seen: dict[str, None] = {}
    for w in words:
        for i in range(len(w)):
            for j in range(i + 1, min(len(w), i + 6) + 1):
                seen.setdefault(w[i:j])
    pieces = list(seen)
    pieces = [pieces[i] for i in sorted(rng.choice(len(pieces), min(size, len(pieces)), replace=False))]
    log_probs = -rng.integers(1, 40, len(pieces)) / 4.0
    return piece_trie(pieces, log_probs, unk_id=len(pieces))


def _validate(rng: np.random.Generator) -> bool:
    """Both kernels against the spec at a small size; True if any differs."""
    from spec.tokenize.bpe import pair_counts as spec_pair_counts
    from spec.tokenize.swe import viterbi_ids

    failed = False
    # the last letter is never in the vocabulary: unknown characters
    words = _words(*_corpus_arrays(rng, 400, "abcdeéfghij🙂kq", 40))
    word_counts: dict[tuple[int, ...], int] = {}
    for w in words:
        key = tuple(w.encode("utf-8"))
        word_counts[key] = word_counts.get(key, 0) + int(rng.integers(1, 1000))
    got, want = pair_counts(word_counts), spec_pair_counts(word_counts)
    ok = got == want and list(got) == list(want)
    failed |= not ok
    print(f"  pair_counts_v1  {len(word_counts)} distinct words, {len(want)} pairs: "
          f"{'equal to the spec (counts and order)' if ok else 'DIFFERENT from the spec  FAILED'}")
    trie = _vocabulary(rng, [w.replace("q", "") for w in words[:200]], 300)
    for k in (None, 1, 3, 8):
        got_seg = segment_words(words, trie, k)
        want_seg = [viterbi_ids([ord(c) for c in w], trie, k) for w in words]
        ids_ok = all(g[0] == s[0] for g, s in zip(got_seg, want_seg))
        bits_ok = all(np.float64(g[1]).tobytes() == np.float64(s[1]).tobytes()
                      for g, s in zip(got_seg, want_seg))
        failed |= not (ids_ok and bits_ok)
        print(f"  segment_v1 max_pieces={k!s:4s}  {len(words)} words: ids "
              f"{'equal' if ids_ok else 'DIFFERENT'}, scores {'equal bit for bit' if bits_ok else 'DIFFERENT'}"
              + ("" if ids_ok and bits_ok else "  FAILED"))
    return failed


def _time(args, rng: np.random.Generator) -> None:
    import cupy

    W = args.words
    sym, offsets = _corpus_arrays(rng, W, "abcdefghijklmnopqrstuvwxyz", 24)
    counts = rng.integers(1, 100, W).astype(np.int64)
    P = sym.size
    lengths = np.diff(offsets)
    n_pairs = int(lengths.sum()) - int((lengths > 0).sum())
    Q = _table_size(n_pairs)
    d_sym, d_off, d_cnt = cupy.asarray(sym), cupy.asarray(offsets), cupy.asarray(counts)
    keys, values, first = (cupy.empty(Q, np.uint64) for _ in range(3))

    def pairs_call():
        keys.fill(_EMPTY_KEY), values.fill(0), first.fill(_EMPTY_KEY)
        _run_pairs(d_sym, d_off, d_cnt, keys, values, first)

    bandwidth, _ = _timing.peaks()
    ms = _timing.time_ms(pairs_call, repeats=10)
    # symbols, offsets and counts read once; the table cleared (3 x 8 B per slot) and each
    # pair's slot updated (key, value and first position: 3 x 8 B read and written)
    nbytes = 4 * P + 16 * W + 24 * Q + 48 * n_pairs
    print(f"  pair_counts_v1  W={W} P={P} pairs={n_pairs} table={Q}: {ms:.3f} ms  "
          f"{W / (ms * 1e-3) / 1e6:.1f} M words/s  {nbytes / (ms * 1e-3) / 1e9:.0f} GB/s "
          f"({100 * nbytes / (ms * 1e-3) / bandwidth:.0f}% of {bandwidth / 1e9:.0f})  [{nbytes} B]")
    trie = _vocabulary(rng, _words(sym, offsets[:2001]), args.vocab)
    trie_dev = _trie_arrays(_launch.Arrays("cupy"), trie)
    trie_bytes = sum(getattr(trie, f).nbytes for f in
                     ("first_edge_N1", "edge_char", "edge_node", "node_piece_N", "log_prob_V"))
    for k in (None, 4):
        scratch_W1 = scratch_offsets(offsets, k)
        nodes = int(scratch_W1[-1])
        scratch = _scratch(cupy, nodes)
        d_scr = cupy.asarray(scratch_W1)
        score, n_pieces, pieces = (cupy.empty(W, np.float64), cupy.empty(W, np.int32),
                                   cupy.empty(P, np.int32))
        ms = _timing.time_ms(functools.partial(
            _run_segment, d_sym, d_off, trie_dev, trie, k or 0, d_scr, scratch, score, n_pieces,
            pieces), repeats=10)
        # code points, offsets, scratch offsets and the trie read once; every lattice node
        # cleared, written and read back once (16 B each way); score, count, pieces written
        nbytes = 4 * P + 16 * (W + 1) + trie_bytes + 32 * nodes + 12 * W + 4 * P
        print(f"  segment_v1 max_pieces={k!s:4s} W={W} P={P} vocab={trie.log_prob_V.size} "
              f"nodes={nodes}: {ms:.3f} ms  {W / (ms * 1e-3) / 1e6:.1f} M words/s  "
              f"{nbytes / (ms * 1e-3) / 1e9:.0f} GB/s ({100 * nbytes / (ms * 1e-3) / bandwidth:.0f}% "
              f"of {bandwidth / 1e9:.0f})  [{nbytes} B]")


def main(argv: list[str] | None = None) -> int:
    """Validate both kernels against the spec; time them on a GPU.

    Validation (every engine): 400 generated words over 14 letters (Zipf-like use, lengths
    0 .. 40, the letter q in no piece: unknown characters; 'é' and an emoji: multi-byte
    UTF-8), pair counts of their UTF-8 bytes with random counts against
    spec.tokenize.bpe.pair_counts (equal dicts, order included), and segmentation with a
    300-piece vocabulary on a grid of log-probabilities (ties) against
    spec.tokenize.swe.viterbi_ids for max_pieces None, 1, 3, 8 (equal ids, scores equal
    bit for bit). Timing (CuPy engine, not --sanitize): --words words (default 2^20) of
    lengths 1 .. 24 over 26 letters; words/s, and GB/s of the bytes written out above each
    line. ``--sanitize`` validates only (for compute-sanitizer).
    """
    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, default=1 << 20)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--sanitize", action="store_true", help="validate only, and skip timing")
    args = parser.parse_args(argv)
    engine = _launch.engine()
    rng = np.random.default_rng(0)
    print(f"tokenize  engine={engine}  {_timing.device_name()}")
    start = time.perf_counter()
    failed = _validate(rng)
    print(f"  (validation {time.perf_counter() - start:.1f} s)")
    if engine == "cupy" and not args.sanitize:
        _time(args, rng)
    elif not args.sanitize:
        print("  (timing skipped: the emulator's speed says nothing about a GPU's)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
