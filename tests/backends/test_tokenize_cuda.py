"""The CUDA tokenizer kernels (backends/cuda/tokenize.cu) against the spec.

Pair counting must equal :func:`spec.tokenize.bpe.pair_counts` (the dict, insertion order
included); segmentation must equal :func:`spec.tokenize.swe.viterbi_ids` per word: the
same piece ids and the same score bit for bit (the kernel adds the same float64 numbers
in the same order). Batches are drawn by hypothesis over small alphabets, so that pairs
repeat, pieces overlap and scores tie, with empty batches, empty words, words of one
symbol, long words and characters no piece covers. Where there is no GPU,
tests/conftest.py selects the emulator, which runs the unmodified .cu.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backends.cuda import _launch
from backends.cuda import tokenize as launcher
from backends.cuda.tokenize import pair_counts, pair_counts_arrays, segment_batch, segment_words
from spec.tokenize.bpe import flatten_word_counts
from spec.tokenize.bpe import pair_counts as spec_pair_counts
from spec.tokenize.swe import flatten_words, piece_trie, viterbi_ids

NEG_INF = -math.inf

# ------------------------------------------------------------------ pair counting

# repetitive alphabets: a few symbols (many repeats, overlapping runs) or ids far apart
_symbols = st.one_of(st.integers(0, 2), st.integers(0, 300),
                     st.sampled_from([0, 255, 256, 65535, 2**31 - 1]))
_word = st.one_of(st.lists(_symbols, max_size=8), st.lists(st.integers(0, 1), min_size=30, max_size=200))
_word_counts = st.dictionaries(_word.map(tuple), st.integers(1, 10**12), max_size=25)


def _assert_same_dict(got: dict, want: dict) -> None:
    assert got == want
    assert list(got) == list(want)  # the spec's order: first occurrence


@settings(max_examples=40)
@given(_word_counts)
@example({})
@example({(): 3})
@example({(5,): 1, (7,): 2})  # words of length 1: no pairs
@example({(1, 1, 1): 2})  # overlapping: (1, 1) twice per word
@example({tuple([3] * 2000): 1, (3, 3): 5})  # a long word of one symbol
@example({(2**31 - 1, 0, 2**31 - 1): 2**40})  # the packed key's extremes, big counts
def test_pair_counts_equal_the_spec(word_counts):
    _assert_same_dict(pair_counts(word_counts), spec_pair_counts(word_counts))


def test_pair_counts_arrays_form_and_the_grid_stride_loop(monkeypatch):
    """The array form agrees with the dict form; one block striding over every position
    (PAIR_MAX_BLOCKS = 1) counts the same."""
    rng = np.random.default_rng(3)
    word_counts = {tuple(rng.integers(0, 4, int(n)).tolist()): int(c)
                   for n, c in zip(rng.integers(0, 40, 200), rng.integers(1, 50, 200))}
    want = spec_pair_counts(word_counts)
    out = pair_counts_arrays(*flatten_word_counts(word_counts))
    assert out.pairs_K2.dtype == np.int32 and out.counts_K.dtype == np.int64
    _assert_same_dict(launcher.as_dict(out), want)
    monkeypatch.setattr(launcher, "PAIR_MAX_BLOCKS", 1)
    _assert_same_dict(pair_counts(word_counts), want)


def test_pair_counts_do_not_depend_on_the_schedule(monkeypatch):
    """Atomic sums and minimum: any order of threads and blocks gives the same result."""
    if _launch.engine() != "emulator":
        pytest.skip("schedules are shuffled by the emulator only")
    rng = np.random.default_rng(4)
    word_counts = {tuple(rng.integers(0, 3, int(n)).tolist()): 1 for n in rng.integers(2, 12, 300)}
    want = spec_pair_counts(word_counts)
    for seed in (1, 2):
        monkeypatch.setenv("ATTNSPEC_EMULATOR_SEED", str(seed))
        _assert_same_dict(pair_counts(word_counts), want)


@pytest.mark.parametrize("word_counts, error, name", [
    ([((1, 2), 1)], TypeError, "word_counts"),
    ({(1, 2): 0}, ValueError, "word_counts"),
    ({(1, 2): 1.0}, TypeError, "word_counts"),
    ({(1, -2): 1}, ValueError, "word_counts"),
    ({(1, 2.0): 1}, TypeError, "word_counts"),
    ({"ab": 1}, TypeError, "word_counts"),
])
def test_pair_counts_reject_what_the_spec_rejects(word_counts, error, name):
    with pytest.raises(error, match=name):
        spec_pair_counts(word_counts)
    with pytest.raises(error, match=name):
        pair_counts(word_counts)


def _flat():
    return (np.array([1, 2, 3], np.int32), np.array([0, 2, 3], np.int64), np.array([1, 1], np.int64))


@pytest.mark.parametrize("index, value, error, name", [
    (0, np.array([1, 2, 3], np.int64), TypeError, "sym_P"),
    (0, [1, 2, 3], TypeError, "sym_P"),
    (0, np.array([1, -2, 3], np.int32), ValueError, "sym_P"),
    (0, np.array([[1, 2, 3]], np.int32), ValueError, "sym_P"),
    (1, np.array([0, 2, 4], np.int64), ValueError, "offsets_W1"),
    (1, np.array([0, 3, 2, 3], np.int64), ValueError, "offsets_W1"),
    (1, np.array([0, 2, 3], np.int32), TypeError, "offsets_W1"),
    (1, np.array([], np.int64), ValueError, "offsets_W1"),
    (2, np.array([1], np.int64), ValueError, "counts_W"),
    (2, np.array([1, 0], np.int64), ValueError, "counts_W"),
    (2, np.array([1.0, 1.0]), TypeError, "counts_W"),
])
def test_pair_counts_arrays_bad_inputs_name_the_argument(index, value, error, name):
    args = list(_flat())
    args[index] = value
    with pytest.raises(error, match=name):
        pair_counts_arrays(*args)


def test_pair_counts_arrays_refuse_counts_that_could_overflow():
    """The 64-bit counters hold any sum below 2^63: (1, 1) twice with count 2^62 would not."""
    sym, offsets = np.array([1, 1, 1], np.int32), np.array([0, 3], np.int64)
    with pytest.raises(ValueError, match="counts_W"):
        pair_counts_arrays(sym, offsets, np.array([2**62], np.int64))
    assert launcher.as_dict(pair_counts_arrays(sym, offsets, np.array([2**62 - 1], np.int64))) == {
        (1, 1): 2**63 - 2}


# ------------------------------------------------------------------ segmentation

# log-probabilities on a coarse grid (exact sums, hence ties), with -inf now and then
_log_prob = st.sampled_from([-0.5, -1.0, -1.5, -2.0, -3.0, NEG_INF])
_vocab = st.dictionaries(st.text(alphabet="abé", min_size=1, max_size=4), _log_prob, max_size=14)
# 'z' is in no piece: an unknown character
_words = st.lists(st.one_of(st.text(alphabet="abéz", max_size=10),
                            st.text(alphabet="ab", min_size=40, max_size=80)), max_size=12)
_max_pieces = st.one_of(st.none(), st.integers(1, 6))


def _trie(vocab: dict, unk_id=-1, unk_log_prob=None):
    return piece_trie(list(vocab), list(vocab.values()), unk_id=unk_id, unk_log_prob=unk_log_prob)


def _assert_equal_to_spec(words, trie, max_pieces):
    got = segment_words(words, trie, max_pieces)
    want = [viterbi_ids([ord(c) for c in w], trie, max_pieces) for w in words]
    assert [g[0] for g in got] == [w[0] for w in want]
    # bit for bit: float64 bytes, so that 0.0 and -0.0 or two NaNs would not pass as equal
    assert [np.float64(g[1]).tobytes() for g in got] == [np.float64(w[1]).tobytes() for w in want], (
        [g[1] for g in got], [w[1] for w in want])


@settings(max_examples=60)
@given(_vocab, _words, _max_pieces, st.sampled_from([(-1, None), (7, None), (99, -20.0), (3, NEG_INF)]))
@example({"a": -1.0, "b": -1.0, "ab": -2.0}, ["ab", "abab", "ba"], None, (-1, None))  # ties
@example({"a": -1.0, "aa": -1.0}, ["aaaa", "a" * 60], 2, (-1, None))  # k-hop: fewest pieces
@example({"a": -1.0}, ["aaaa"], 2, (-1, None))  # no segmentation into <= 2 pieces
@example({}, ["", "z", "abz"], None, (5, None))  # no pieces at all: every character unknown
@example({"ab": -1.0}, ["a", "b", "ab", "zab"], 3, (0, NEG_INF))  # unknown single characters
def test_segment_equals_the_spec(vocab, words, max_pieces, unk):
    _assert_equal_to_spec(words, _trie(vocab, *unk), max_pieces)


def test_segment_over_several_blocks_and_long_words():
    """More words than a block's threads, lengths 0 .. 300, a vocabulary of substrings."""
    rng = np.random.default_rng(5)
    cps, offsets = launcher._corpus_arrays(rng, 300, "abcdé🙂q", 300)
    words = launcher._words(cps, offsets)
    assert len(words) > launcher.SEG_THREADS and max(map(len, words)) == 300
    trie = launcher._vocabulary(rng, [w.replace("q", "") for w in words[:100]], 200)
    for max_pieces in (None, 4):
        _assert_equal_to_spec(words, trie, max_pieces)


def test_segment_outputs_in_array_form():
    trie = _trie({"a": -1.0, "ab": -1.5, "b": -2.0}, unk_id=9)
    cps, offsets = flatten_words(["ab", "", "bza"])
    out = segment_batch(cps, offsets, trie)
    np.testing.assert_array_equal(out.n_pieces_W, [1, 0, 3])
    assert out.score_W.dtype == np.float64 and out.score_W[1] == 0.0
    assert out.pieces_P.shape == cps.shape and out.pieces_P.dtype == np.int32
    np.testing.assert_array_equal(out.pieces_P[[0, 2, 3, 4]], [1, 2, 9, 0])


def test_segment_of_an_empty_batch():
    trie = _trie({"a": -1.0})
    out = segment_batch(np.zeros(0, np.int32), np.zeros(1, np.int64), trie, 3)
    assert out.score_W.shape == out.n_pieces_W.shape == out.pieces_P.shape == (0,)
    assert segment_words([], trie) == []


def _seg_args():
    cps, offsets = flatten_words(["ab", "a"])
    return [cps, offsets, _trie({"a": -1.0, "b": -1.0}), None]


@pytest.mark.parametrize("index, value, error, name", [
    (0, np.array([97, 98, 97], np.int64), TypeError, "cps_P"),
    (1, np.array([0, 2], np.int64), ValueError, "offsets_W1"),
    (1, np.array([0, 1, 3], np.float64), TypeError, "offsets_W1"),
    (2, {"a": -1.0}, TypeError, "trie"),
    (3, 0, ValueError, "max_pieces"),
    (3, 1.5, TypeError, "max_pieces"),
    (3, True, TypeError, "max_pieces"),
])
def test_segment_bad_inputs_name_the_argument(index, value, error, name):
    args = _seg_args()
    args[index] = value
    with pytest.raises(error, match=name):
        segment_batch(*args)


def test_segment_rejects_a_damaged_trie():
    trie = _trie({"a": -1.0, "b": -1.0})
    with pytest.raises(TypeError, match="trie.edge_char"):
        segment_batch(*_seg_args()[:2], trie._replace(edge_char=trie.edge_char.astype(np.int64)))
    with pytest.raises(ValueError, match="trie.log_prob_V"):
        segment_batch(*_seg_args()[:2], trie._replace(log_prob_V=np.array([np.nan, -1.0])))
    with pytest.raises(ValueError, match="trie.edge_node"):
        segment_batch(*_seg_args()[:2], trie._replace(edge_node=np.array([0, 7], np.int32)))


def test_main_validates_on_this_engine(capsys):
    assert launcher.main(["--sanitize"]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out and out.count("equal bit for bit") == 4
