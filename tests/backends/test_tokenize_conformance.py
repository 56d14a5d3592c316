"""Every registered tokenizer backend (the ``tokenize.*`` ops of backends/registry.py) gives
the spec's discrete results exactly, and rejects what the spec rejects.

The inputs are drawn small and repetitive (few symbols, log-probabilities on a grid), so
that pair counts tie, runs overlap and segmentations tie: the cases where a backend that
is only "close" would differ. The backends' own test files go deeper (real text, HF and
sentencepiece agreement, thread counts); this file is what ``attnspec conformance
--backend NAME`` runs for the tokenizers. Where there is no GPU, tests/conftest.py
selects the CUDA emulator.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backends import registry
from spec.tokenize import swe
from tests.strategies import word_tables


def _entries(op: str):
    return [pytest.param(e, id=e.name) for e in registry.entries(op) if e.backend != "spec"]


# Text from a few characters and spaces: words repeat, pairs tie, "aaaa" runs overlap.
_texts = st.text(st.sampled_from("aab b\u00e9\n"), min_size=0, max_size=200)


@pytest.mark.parametrize("entry", _entries("tokenize.bpe_train"))
@settings(max_examples=30, deadline=None)
@given(texts=st.lists(_texts, max_size=4), extra=st.integers(0, 40),
       pattern=st.sampled_from(["gpt2", "gpt4"]))
@example(texts=["aaaa aaaa abab"], extra=10, pattern="gpt2")
def test_bpe_train_equals_the_spec(entry, texts, extra, pattern):
    specials = ("<s>",)
    texts = [t.replace("\n", "<s>", 1) for t in texts]  # a special token now and then
    size = 256 + extra + len(specials)
    got = entry.load()(texts, size, special_tokens=specials, pattern=pattern)
    want = entry.load_spec()(texts, size, special_tokens=specials, pattern=pattern)
    assert (got.merges, got.special_tokens, got.pattern) == (want.merges, want.special_tokens, want.pattern)


@pytest.mark.parametrize("entry", _entries("tokenize.pair_counts"))
@settings(max_examples=30, deadline=None)
@given(word_counts=word_tables(4, 12, 10))
@example(word_counts={})
@example(word_counts={(0, 0, 0, 0): 3, (1,): 2})
def test_pair_counts_equal_the_spec(entry, word_counts):
    # the same items in the same order (first occurrence)
    assert list(entry.load()(word_counts).items()) == list(entry.load_spec()(word_counts).items())


@pytest.mark.parametrize("entry", _entries("tokenize.swe_train"))
@settings(max_examples=15, deadline=None)
@given(text=_texts, extra=st.integers(0, 25), method=st.sampled_from(["grow", "prune"]),
       boundary=st.sampled_from(["end", "start"]))
@example(text="ab ab ba ab aaaa", extra=6, method="grow", boundary="end")
def test_swe_train_equals_the_spec(entry, text, extra, method, boundary):
    words = swe.count_words(text, boundary=boundary)
    if not words:  # nothing to train on: the same error
        for train in (entry.load(), entry.load_spec()):
            with pytest.raises(ValueError, match="texts: no words"):
                train(text, extra, method=method, boundary=boundary)
        return
    size = len(swe.initial_pieces(words)) + extra
    got = entry.load()(text, size, method=method, boundary=boundary)
    want = entry.load_spec()(text, size, method=method, boundary=boundary)
    assert (got.pieces, got.log_probs) == (want.pieces, want.log_probs)


# Log-probabilities whose sums are exact in float64, so that ties are real ties.
_LPS = [-0.5, -1.0, -1.5, -2.0, -3.0]


@st.composite
def _segment_problems(draw):
    pieces = sorted(draw(st.sets(st.text("abc", min_size=1, max_size=4), max_size=10)))
    log_probs = [draw(st.sampled_from(_LPS)) for _ in pieces]
    words = draw(st.lists(st.text("abcd", max_size=9), max_size=12))
    unk = draw(st.sampled_from([-4.0, -0.5]))
    k = draw(st.sampled_from([None, 1, 2, 3, 8]))
    return swe.piece_trie(pieces, log_probs, unk_id=len(pieces), unk_log_prob=unk), words, k


def _per_word(seg, offsets_W1):
    """(ids, score bits) per word: scores must be equal bit for bit."""
    return [(ids, np.float64(score).tobytes()) for ids, score in seg.per_word(offsets_W1)]


@pytest.mark.parametrize("entry", _entries("tokenize.segment_batch"))
@settings(max_examples=40, deadline=None)
@given(problem=_segment_problems())
@example(problem=(swe.piece_trie(["a", "b", "ab"], [-1.0, -1.0, -2.0], unk_id=3, unk_log_prob=-5.0),
                  ["ab", "", "abab", "d", "ba"], None))  # "ab" = "a"+"b": a tie
@example(problem=(swe.piece_trie(["ab"], [-1.0], unk_id=1, unk_log_prob=-5.0),
                  ["abab", "aab"], 1))  # no segmentation within one piece: -inf
def test_segment_batch_equals_the_spec(entry, problem):
    trie, words, k = problem
    cps, offsets = swe.flatten_words(words)
    got = entry.load()(cps, offsets, trie, k)
    want = entry.load_spec()(cps, offsets, trie, k)
    assert _per_word(got, offsets) == _per_word(want, offsets)
    assert [math.isinf(s) for s in np.asarray(got.score_W)] == [n == 0 and len(w) > 0
                                                                 for n, w in zip(want.n_pieces_W, words)]


def _bad_segment_args():
    trie = swe.piece_trie(["a"], [-1.0], unk_id=1, unk_log_prob=-5.0)
    cps, offsets = swe.flatten_words(["aa", "a"])
    return trie, cps, offsets


_BAD = {
    "tokenize.bpe_train": [(lambda f: f("text", 100), ValueError, "vocab_size"),
                           (lambda f: f(3, 300), TypeError, "texts")],
    "tokenize.pair_counts": [(lambda f: f([(1, 2)]), TypeError, "word_counts"),
                             (lambda f: f({(1, 2): 0}), ValueError, "word_counts")],
    "tokenize.swe_train": [(lambda f: f("a b", 10, method="shrink"), ValueError, "method")],
    "tokenize.segment_batch": [
        (lambda f: f(*_bad_segment_args()[1:2], np.array([0, 2], np.int64), _bad_segment_args()[0]),
         ValueError, "offsets"),
        (lambda f: f(_bad_segment_args()[1].astype(np.int64), _bad_segment_args()[2], _bad_segment_args()[0]),
         TypeError, "cps"),
        (lambda f: f(*_bad_segment_args()[1:], "trie"), TypeError, "trie"),
        (lambda f: f(*_bad_segment_args()[1:], _bad_segment_args()[0], 0), ValueError, "max_pieces"),
    ],
}


@pytest.mark.parametrize("entry, call, error, match", [
    pytest.param(e, call, error, match, id=f"{e.name}-{i}")
    for op, cases in _BAD.items() for e in registry.entries(op) for i, (call, error, match) in enumerate(cases)
])
def test_bad_input_is_rejected_like_the_spec(entry, call, error, match):
    with pytest.raises(error, match=match):
        call(entry.load())
