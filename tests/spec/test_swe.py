"""spec.tokenize.swe: Viterbi against brute force, the piece trie, SWE growth against BPE,
unigram-LM EM, the model's round trip and argument checks."""

from __future__ import annotations

import itertools
import math
import random
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spec.tokenize import swe
from spec.tokenize.bpe import learn_merges

# Log-probabilities whose sums are exact in float64, so ties are real ties.
LPS = [-0.5, -1.0, -1.5, -2.0, -3.0, -math.inf]


@st.composite
def vocab_and_word(draw):
    alphabet = "abc"
    pieces = draw(st.sets(st.text(alphabet, min_size=1, max_size=4), max_size=10))
    pieces = sorted(pieces)
    lps = [draw(st.sampled_from(LPS)) for _ in pieces]
    word = draw(st.text(alphabet + "d", max_size=7))
    unk = draw(st.sampled_from([-4.0, -0.5, -math.inf]))
    return dict(zip(pieces, lps)), word, unk


def _brute(word, lp, unk, k):
    """Every segmentation; the best by (score, fewer pieces when k is given, then the
    smallest last boundary, the smallest one before it, ...)."""
    n = len(word)
    if n == 0:
        return [], 0.0
    best = None
    for mask in range(1 << (n - 1)):
        cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
        segs = [word[a:b] for a, b in itertools.pairwise(cuts)]
        if k is not None and len(segs) > k:
            continue
        if any(s not in lp and len(s) > 1 for s in segs):
            continue
        score = 0.0
        for s in segs:
            score = score + (lp.get(s, unk))
        # larger score; fewer pieces; then boundaries from the end, each as small as possible
        key = (score, -len(segs) if k is not None else 0, [-c for c in reversed(cuts[:-1])])
        if best is None or key > best[0]:
            best = (key, segs, score)
    if best is None:
        return [], -math.inf
    return best[1], best[2]


@settings(max_examples=150)
@given(vw=vocab_and_word(), k=st.sampled_from([None, 1, 2, 3, 5]))
@example(vw=({"a": -1.0, "aa": -2.0}, "aaaa", -4.0), k=None)  # all segmentations tie
@example(vw=({"ab": -math.inf}, "ab", -1.0), k=1)  # -inf piece is still a path
def test_viterbi_equals_brute_force(vw, k):
    lp, word, unk = vw
    pieces, score = swe.viterbi(word, lp, k, unk_log_prob=unk)
    bp, bs = _brute(word, lp, unk, k)
    assert score == bs
    if score > -math.inf:
        assert pieces == bp
    # (a -inf total: every path ties and the Viterbi's first-reached rule is not the
    # brute force's lexicographic one; only the score is compared)
    if pieces:
        assert "".join(pieces) == word
    if k is not None:
        assert len(pieces) <= k


@settings(max_examples=200)
@given(vw=vocab_and_word(), k=st.sampled_from([None, 1, 2, 4]))
def test_viterbi_ids_over_the_trie_equals_viterbi(vw, k):
    lp, word, unk = vw
    pieces = list(lp)
    trie = swe.piece_trie(pieces, [lp[s] for s in pieces], unk_id=len(pieces), unk_log_prob=unk)
    ids, score = swe.viterbi_ids([ord(c) for c in word], trie, k)
    ref, ref_score = swe.viterbi(word, lp, k, unk_log_prob=unk)
    assert score == ref_score
    assert [pieces[i] if i < len(pieces) else None for i in ids] == [s if s in lp else None for s in ref]


def test_piece_trie_layout():
    pieces = ["ab", "a", "b▁", "abc", "x"]
    trie = swe.piece_trie(pieces, [-1.0, -2.0, -3.0, -4.0, -5.0])
    assert trie.first_edge_N1[0] == 0 and trie.first_edge_N1[-1] == trie.edge_char.size
    for n in range(trie.node_piece_N.size):
        chars = trie.edge_char[trie.first_edge_N1[n]:trie.first_edge_N1[n + 1]]
        assert np.all(np.diff(chars) > 0)
    for pid, s in enumerate(pieces):
        node = 0
        for ch in s:
            node = swe.trie_child(trie, node, ord(ch))
        assert trie.node_piece_N[node] == pid
    assert trie.max_len == 3 and trie.unk_log_prob == -15.0
    assert np.all(np.diff(trie.edge_node) > 0)  # breadth-first numbering
    with pytest.raises(ValueError, match="repeats"):
        swe.piece_trie(["a", "a"], [0.0, 0.0])
    with pytest.raises(ValueError, match="log_probs"):
        swe.piece_trie(["a"], [float("nan")])


def test_unknown_characters_follow_sentencepiece():
    lp = {"ab": -3.0, "b": -2.0}
    # "a" is not a piece: it gets the unknown edge even though "ab" starts there
    assert swe.viterbi("ab", lp, unk_log_prob=-0.5) == (["a", "b"], -2.5)
    assert swe.viterbi("ab", lp) == (["ab"], -3.0)  # default unk: -3 - 10
    assert swe.default_unk_log_prob([-1.0, -2.0, -math.inf]) == -12.0


# ------------------------------------------------------------------- corpora


def _stdlib_text(name: str, limit: int) -> str:
    return Path(sysconfig.get_paths()["stdlib"], name).read_text(encoding="utf-8")[:limit]


def _zipf_text(seed: int, n_words: int) -> str:
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 7))) for _ in range(60)]
    weights = [1.0 / (r + 1) for r in range(len(vocab))]
    return " ".join(rng.choices(vocab, weights, k=n_words))


CORPORA = {
    "textwrap": lambda: _stdlib_text("textwrap.py", 6000),
    "zipf": lambda: _zipf_text(1, 1500),
    "toy": lambda: "the cat sat on the mat aaaa aaa aa a the hat that cat ate",
}


def _bpe_log_likelihood(word_counts, vocab_size):
    """BPE on the same word units (characters with the marker, ids by code point):
    learn_merges, then LL = the unigram MLE of its own segmentation counts."""
    chars = swe.initial_pieces(word_counts)
    cid = {c: i for i, c in enumerate(chars)}
    wc = {}
    for w, n in word_counts.items():
        key = tuple(cid[c] for c in w)
        wc[key] = wc.get(key, 0) + n
    merges = learn_merges(wc, vocab_size - len(chars), first_id=len(chars))
    counts = [0] * (len(chars) + len(merges))
    for word, n in wc.items():
        seq = list(word)
        for r, (a, b) in enumerate(merges):
            out, t = [], 0
            while t < len(seq):
                if t + 1 < len(seq) and seq[t] == a and seq[t + 1] == b:
                    out.append(len(chars) + r)
                    t += 2
                else:
                    out.append(seq[t])
                    t += 1
            seq = out
        for s in seq:
            counts[s] += n
    return swe.corpus_log_likelihood(counts), len(chars) + len(merges)


@pytest.mark.parametrize("corpus", ["textwrap", "zipf", "toy"])
def test_grow_likelihood_against_bpe(corpus):
    """SWE's greedy growth reaches a higher training LL than BPE at the same size on
    these corpora and sizes; the greedy (one-step exact gain) choice is not a proof:
    two pinned counterexamples (a tiny toy corpus at +5 pieces, the Zipf corpus at +60)
    show BPE ahead, and the test asserts they still are, so the claim stays honest."""
    wc = swe.count_words(CORPORA[corpus]())
    n_chars = len(swe.initial_pieces(wc))
    for extra in (5, 20, 60):
        pieces, counts, _steps = swe.grow(wc, n_chars + extra)
        ll_bpe, size_bpe = _bpe_log_likelihood(wc, n_chars + extra)
        if size_bpe < len(pieces):  # BPE ran out of pairs first: compare at its size
            continue
        ll = swe.corpus_log_likelihood(counts)
        if (corpus, extra) in {("toy", 5), ("zipf", 60)}:
            assert ll < ll_bpe, (corpus, extra, ll, ll_bpe)
        else:
            assert ll >= ll_bpe, (corpus, extra, ll, ll_bpe)


def test_grow_steps_are_exact_and_monotone():
    wc = swe.count_words(CORPORA["zipf"]())
    pieces, counts, steps = swe.grow(wc, len(swe.initial_pieces(wc)) + 40)
    ll = swe.corpus_log_likelihood(
        [sum(n for w, n in wc.items() for ch in w if ch == c) for c in swe.initial_pieces(wc)])
    for s in steps:
        # re-estimation never loses what the merge gained
        assert s.log_likelihood >= ll + s.gain - 1e-9 * abs(ll)
        assert pieces[s.left] + pieces[s.right] == s.piece
        ll = s.log_likelihood
    assert ll == swe.corpus_log_likelihood(counts)
    # the counts are the counts of the words' Viterbi segmentations under p = c / N
    lp = dict(zip(pieces, [math.log(c / sum(counts)) if c else -math.inf for c in counts]))
    assert len(pieces) == len(set(pieces))
    total = 0.0
    for w, n in wc.items():
        total += n * swe.viterbi(w, lp)[1]
    assert total >= ll - 1e-9 * abs(ll)


def test_merge_gain_is_the_change_of_the_closed_form():
    # "ab ab ab a b": counts a=4, b=4, N=8; merging 3 (a, b) gives a=1, b=1, ab=3, N=5
    before = swe.corpus_log_likelihood([4, 4])
    after = swe.corpus_log_likelihood([1, 1, 3])
    assert swe.merge_gain(4, 4, 3, 8, False) == pytest.approx(after - before, rel=1e-14)
    assert swe.merge_gain(5, 5, 2, 5, True) == pytest.approx(
        swe.corpus_log_likelihood([1, 2]) - swe.corpus_log_likelihood([5]), rel=1e-14)


def test_em_never_decreases_the_likelihood():
    wc = swe.count_words(CORPORA["zipf"]())
    pieces, log_probs, _ = swe.prune(wc, 40, em_iters=1)
    lp = dict(zip(pieces, log_probs))
    max_len = max(map(len, pieces))
    history = []
    for _ in range(5):
        counts, ll = swe.expected_counts(wc, lp, max_len)
        history.append(ll)
        z = sum(counts.values())
        lp = {s: math.log(c / z) if c > 0 else -math.inf for s, c in counts.items()}
    assert all(b >= a - 1e-9 * abs(a) for a, b in itertools.pairwise(history)), history


@pytest.mark.parametrize("em", ["forward-backward", "viterbi"])
def test_prune_reaches_the_size_and_keeps_characters(em):
    text = CORPORA["textwrap"]()
    model = swe.train(text, 120, method="prune", em=em)
    assert len(model.pieces) <= 120
    assert set(swe.initial_pieces(swe.count_words(text))) <= set(model.pieces)
    assert model.decode(model.encode(text)) == " ".join(text.split())


@pytest.mark.parametrize("boundary,sep", [("end", None), ("start", " "), ("start", None)])
def test_round_trip(boundary, sep):
    text = CORPORA["textwrap"]()
    model = swe.train(text, 150, boundary=boundary, sep=sep)
    for s in [text[:500], "", "   ", "new   words  here ", "def f(x):"]:
        assert model.decode(model.encode(s)) == " ".join(w for w in s.split(sep) if w)
    assert model.decode(model.encode("€")) == swe.UNK_TEXT  # an uncovered character
    assert "€" in model.segment("€")


def test_max_pieces_bounds_the_segmentation():
    model = swe.train(CORPORA["toy"](), 20, max_pieces=3)
    for w in ["the", "cat", "at"]:
        assert 0 < len(model.segment(w)) <= 3
    with pytest.raises(ValueError, match="max_pieces"):
        model.segment("abcdefghabcdefgh")


def test_bad_arguments():
    with pytest.raises(TypeError, match="word"):
        swe.viterbi(3, {})
    with pytest.raises(TypeError, match="log_prob"):
        swe.viterbi("a", [("a", 0.0)])
    with pytest.raises(ValueError, match="max_pieces"):
        swe.viterbi("a", {"a": 0.0}, 0)
    with pytest.raises(ValueError, match="method"):
        swe.train("a b", 10, method="bpe")
    with pytest.raises(TypeError, match="vocab_size"):
        swe.train("a b", 10.0)
    with pytest.raises(ValueError, match="boundary"):
        swe.split_words("a", boundary="middle")
    with pytest.raises(ValueError, match="ids"):
        swe.train("a b", 5).decode([99])


def test_save_load_round_trip(tmp_path):
    model = swe.UnigramModel(["a", "b", "ab", "c"], [-1.0, -2.0, -0.5, -math.inf],
                             boundary="start", sep=" ", max_pieces=4, unk_log_prob=-30.0)
    path = tmp_path / "m.json"
    model.save(path)
    back = swe.UnigramModel.load(path)
    assert back.pieces == model.pieces and back.log_probs == model.log_probs  # -inf kept
    assert (back.boundary, back.sep, back.max_pieces, back.unk_log_prob) == ("start", " ", 4, -30.0)
    assert back.encode("ab cab") == model.encode("ab cab")


def _unigram_file(**changes) -> str:
    import json
    fields = {"format": "attnspec-unigram", "version": 1, "pieces": [["a", -1]], "boundary": "end",
              "sep": None, "max_pieces": None, "unk_log_prob": -10}
    return json.dumps({**fields, **changes})


@pytest.mark.parametrize("content, what", [
    ("[1, 2]", "JSON object"),
    ('{"format": "attnspec-unigram"}', "keys"),
    (_unigram_file(format="attnspec-bpe"), "format"),
    (_unigram_file(pieces=[["a", "x"]]), "pieces\\[0\\]"),
    (_unigram_file(pieces=[["a", -1], ["a", -2]]), "duplicates"),
    (_unigram_file(boundary="middle"), "boundary"),
    (_unigram_file(max_pieces=0), "max_pieces"),
])
def test_load_rejects_malformed_files(tmp_path, content, what):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=what):
        swe.UnigramModel.load(path)


def test_flatten_words_layout_and_errors():
    cps, offsets = swe.flatten_words(["ab", "", "\U0001F600\ud800"])
    assert cps.dtype == np.int32 and offsets.dtype == np.int64
    assert offsets.tolist() == [0, 2, 2, 4] and cps.tolist() == [97, 98, 0x1F600, 0xD800]
    with pytest.raises(TypeError, match="words"):
        swe.flatten_words("ab")
    with pytest.raises(TypeError, match="words"):
        swe.flatten_words(["a", 3])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text("abcé", min_size=1, max_size=8), min_size=1, max_size=12),
       st.integers(0, 2**32 - 1), st.sampled_from(["forward-backward", "viterbi"]))
def test_prune_likelihood_stays_finite_on_tiny_corpora(vocab, seed, em):
    """A rare character keeps half a count in the M-step, so every word keeps a
    segmentation: the EM log-likelihoods are finite and every log p is finite."""
    rng = random.Random(seed)
    wc = swe.count_words(" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 80))))
    size = len(swe.initial_pieces(wc)) + rng.randint(0, 30)
    _, log_probs, history = swe.prune(wc, size, em=em, seed_size=rng.choice([None, 3, 20]),
                                           em_iters=rng.choice([1, 3]), shrink=rng.choice([0.5, 0.9]))
    assert all(math.isfinite(x) for x in history)
    assert all(math.isfinite(x) for x in log_probs)


@pytest.mark.parametrize("call", [
    lambda: swe.train("   \n ", 10), lambda: swe.train("", 10, method="prune"),
    lambda: swe.grow({}, 10), lambda: swe.prune({}, 10)])
def test_a_corpus_without_words_is_a_value_error(call):
    with pytest.raises(ValueError, match="no words"):
        call()
