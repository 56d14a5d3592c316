"""backends.cpu.tokenize.swe against spec.tokenize.swe: batched Viterbi ids and scores, SWE growth
(same pieces in the same order, same counts) and unigram-LM pruning (same pieces, same
order, log-probabilities and EM history equal bit for bit), and the same trained models."""

from __future__ import annotations

import itertools
import math
import random
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.cpu.tokenize import swe as cpu
from spec.tokenize import swe

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), k=st.sampled_from([None, 1, 2, 3, 6]))
def test_segment_batch_equals_the_spec(seed, k):
    rng = random.Random(seed)
    alphabet = "abcé"
    pieces = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(12)})
    lps = [rng.choice([-0.5, -1.0, -1.7, -2.25, -3.0, -math.inf]) for _ in pieces]
    trie = swe.piece_trie(pieces, lps, unk_id=len(pieces))
    words = ["".join(rng.choice(alphabet + "z") for _ in range(rng.randint(0, 9))) for _ in range(30)]
    cps, offsets = swe.flatten_words(words)
    seg = cpu.segment_batch(cps, offsets, trie, k)
    for b, w in enumerate(words):
        ref_ids, ref_score = swe.viterbi_ids([ord(c) for c in w], trie, k)
        assert seg.n_pieces_W[b] == len(ref_ids)  # 0 where no segmentation within k (-inf)
        assert seg.pieces_P[offsets[b]:offsets[b] + len(ref_ids)].tolist() == ref_ids
        assert seg.score_W[b] == ref_score  # bit for bit


def _texts():
    rng = random.Random(3)
    zipf_vocab = ["".join(rng.choice("abcdef") for _ in range(rng.randint(1, 6))) for _ in range(50)]
    return {
        "textwrap": (STDLIB / "textwrap.py").read_text(encoding="utf-8")[:15000],
        "zipf": " ".join(rng.choices(zipf_vocab, [1 / (r + 1) for r in range(50)], k=2000)),
        "runs": "aaaa aaa aa a abab ababab " * 7,
        # mirror-image words: many pairs have equal gains, so the tie-break decides
        "ties": "ab ba cd dc ef fe abab baba cdcd dcdc " * 5 + "xyz zyx " * 3,
    }


@pytest.mark.parametrize("name", ["textwrap", "zipf", "runs", "ties"])
def test_grow_equals_the_spec(name):
    wc = swe.count_words(_texts()[name])
    n_chars = len(swe.initial_pieces(wc))
    for size in (n_chars + 10, n_chars + 150):
        pieces, counts, _ = swe.grow(wc, size)
        assert cpu.grow(wc, size) == (pieces, counts)


@pytest.mark.parametrize(("floor_shift", "cap_shift"), [(5, 6), (0, 0), (62, 62)])
def test_grow_equals_the_spec_on_a_larger_text(floor_shift, cap_shift):
    """The gain bounds' slack never changes the result: the defaults; the loosest
    (floors 0, cap 2N: many pops); the tightest (floors = the counts, cap = N: every
    falling count refreshes its pairs' keys, every rise of N rebuilds the heap)."""
    text = (STDLIB / "json" / "decoder.py").read_text(encoding="utf-8")
    wc = swe.count_words(text, boundary="start", sep=" ")
    size = len(swe.initial_pieces(wc)) + 400
    pieces, counts, _ = swe.grow(wc, size)
    got = cpu.grow(wc, size, _floor_shift=floor_shift, _cap_shift=cap_shift)
    assert got == (pieces, counts)


def _small_corpus(seed):
    """Small alphabets and repeated words: equal gains and exhausted candidates."""
    rng = random.Random(seed)
    alphabet = rng.choice(["ab", "abc", "abcd"])
    vocab = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))) for _ in range(rng.randint(1, 12))]
    text = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 60)))
    wc = swe.count_words(text, boundary=rng.choice(["end", "start"]))
    return wc, len(swe.initial_pieces(wc)) + rng.randint(0, 60), rng


SLACKS = [(5, 6), (0, 0), (62, 62)]


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1))
def test_grow_equals_the_spec_on_small_random_corpora(seed):
    wc, size, rng = _small_corpus(seed)
    pieces, counts, _ = swe.grow(wc, size)
    slack = rng.choice(SLACKS)
    assert cpu.grow(wc, size, _floor_shift=slack[0], _cap_shift=slack[1]) == (pieces, counts)


@pytest.mark.parametrize("slack", SLACKS)
def test_grow_equals_the_spec_when_n_rises(slack):
    """Corpus 177: a re-segmentation adds more pieces than its merge removed, so N
    rises (with cap_shift=62 past the cap: the whole heap is keyed again)."""
    wc, size, _ = _small_corpus(177)
    pieces, counts, _ = swe.grow(wc, size)
    assert cpu.grow(wc, size, _floor_shift=slack[0], _cap_shift=slack[1]) == (pieces, counts)
    n_chars = len(swe.initial_pieces(wc))
    n_after = [sum(swe.grow(wc, k)[1]) for k in range(n_chars, len(pieces) + 1)]
    assert any(b > a for a, b in itertools.pairwise(n_after))  # N does rise


@pytest.mark.parametrize("em", ["forward-backward", "viterbi"])
@pytest.mark.parametrize("name", ["textwrap", "zipf", "ties"])
def test_prune_equals_the_spec(name, em):
    wc = swe.count_words(_texts()[name])
    n_chars = len(swe.initial_pieces(wc))
    for size in (n_chars + 5, n_chars + 120):
        ref = swe.prune(wc, size, em=em)
        got = cpu.prune(wc, size, em=em)
        assert got[0] == ref[0]  # pieces, in order
        assert got[1] == ref[1]  # log-probabilities, bit for bit
        assert got[2] == ref[2]  # LL after every EM step, bit for bit


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1))
def test_prune_equals_the_spec_on_small_random_corpora(seed):
    """Options drawn too: small seeds cut through runs of equal scores (the string
    decides), a short max_piece_len, one or three EM steps, strong or weak shrinking."""
    rng = random.Random(seed)
    alphabet = rng.choice(["ab", "abc", "abcdé"])
    vocab = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(1, 15))]
    text = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 80)))
    wc = swe.count_words(text, boundary=rng.choice(["end", "start"]))
    size = len(swe.initial_pieces(wc)) + rng.randint(0, 30)
    opts = {"seed_size": rng.choice([None, 3, 20]), "max_piece_len": rng.choice([2, 5, 16]),
            "em": rng.choice(["forward-backward", "viterbi"]), "em_iters": rng.choice([1, 2, 3]),
            "shrink": rng.choice([0.5, 0.75, 0.9])}
    assert cpu.prune(wc, size, **opts) == swe.prune(wc, size, **opts)


@pytest.mark.parametrize("method", ["grow", "prune"])
def test_train_gives_the_spec_model(method):
    text = _texts()["textwrap"]
    for boundary, sep in [("end", None), ("start", " ")]:
        ref = swe.train(text, 200, method=method, boundary=boundary, sep=sep)
        got = cpu.train(text, 200, method=method, boundary=boundary, sep=sep)
        assert got.pieces == ref.pieces and got.log_probs == ref.log_probs
        assert got.encode(text[:2000]) == ref.encode(text[:2000])


@pytest.mark.parametrize("method", ["grow", "prune"])
def test_progress_is_reported_while_training(method):
    calls = []
    cpu.train(_texts()["textwrap"], 300, method=method, progress=lambda d, t: calls.append((d, t)))
    assert len(calls) >= 2  # not only at the end
    assert all(d >= 0 and t >= 1 for d, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_bad_arguments():
    trie = swe.piece_trie(["a"], [0.0])
    with pytest.raises(ValueError, match="offsets"):
        cpu.segment_batch(np.zeros(3, np.int32), np.array([0, 2], np.int64), trie)
    wc = swe.count_words("abc abd")
    with pytest.raises(ValueError, match="em"):
        cpu.prune(wc, 10, em="hard")
    with pytest.raises(ValueError, match="vocab_size"):
        cpu.prune(wc, 2)
    with pytest.raises(TypeError, match="options"):
        cpu.train("abc", 10, method="grow", em="viterbi")
    with pytest.raises(ValueError, match="method"):
        cpu.train("abc", 10, method="split")
