"""spec.tokenize.bpe and spec.tokenize.formats (our JSON): exactness, round trips, errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spec.tokenize import formats
from spec.tokenize.bpe import (
    BYTE_OF_ID,
    ID_OF_BYTE,
    BPETokenizer,
    flatten_word_counts,
    learn_merges,
    merge_word,
    pair_counts,
    split_specials,
    train,
    word_counts_of,
)
from tests.strategies import word_tables

CORPUS = ("the cat sat on the mat. the rat ate the hat! 2024 was 1999+25, ok? "
          "naïve café — 日本語 テキスト 😀😀 emoji\n\tindent    spaces\n") * 20


@pytest.fixture(scope="module")
def tok():
    return train(CORPUS, 320, special_tokens=["<|endoftext|>", "<|end|>"])


# ------------------------------------------------------------------ oracles


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table, written out independently of the module under test."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def brute_force_merges(word_counts, num_merges, first_id=256, min_frequency=1):
    """Obviously correct: recount every pair from scratch before every merge."""
    words = dict(word_counts)
    merges = []
    for r in range(num_merges):
        counts = {}
        for word, n in words.items():
            for i in range(len(word) - 1):
                counts[word[i], word[i + 1]] = counts.get((word[i], word[i + 1]), 0) + n
        if not counts:
            break
        best = max(counts.values())
        if best < min_frequency:
            break
        pair = min(p for p, c in counts.items() if c == best)
        merges.append(pair)
        new_words = {}
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                    out.append(first_id + r)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + n
        words = new_words
    return merges


# --------------------------------------------------------------- byte order


def test_byte_order_is_gpt2s():
    table = bytes_to_unicode()
    assert list(BYTE_OF_ID) == sorted(range(256), key=lambda b: table[b])
    assert sorted(BYTE_OF_ID) == list(range(256))
    assert all(BYTE_OF_ID[ID_OF_BYTE[b]] == b for b in range(256))
    assert BYTE_OF_ID[0] == ord("!") and BYTE_OF_ID[188] == 0 and ID_OF_BYTE[ord(" ")] == 220
    assert formats.CHAR_OF_BYTE == tuple(table[b] for b in range(256))


# ------------------------------------------------------------ pair counts


def test_pair_counts_overlapping_and_weighted():
    assert pair_counts({(1, 1, 1): 3, (1, 2): 2, (5,): 7, (): 1}) == {(1, 1): 6, (1, 2): 2}


def test_merge_word_left_to_right_non_overlapping():
    assert merge_word((1, 1, 1), (1, 1), 9) == (9, 1)
    assert merge_word((1, 1, 1, 1), (1, 1), 9) == (9, 9)
    assert merge_word((1, 2, 1, 2, 1), (2, 1), 9) == (1, 9, 9)


# ------------------------------------------------------------ learn_merges

@settings(max_examples=300)
@given(word_tables(5, 9, 8), st.integers(0, 30), st.integers(1, 4))
@example({(0, 0, 0): 1}, 5, 1)
@example({(0, 0, 0, 0): 1, (0, 0, 0): 2}, 5, 1)
def test_learn_merges_equals_brute_force_recount(word_counts, num_merges, min_frequency):
    assert learn_merges(word_counts, num_merges, first_id=5, min_frequency=min_frequency) == \
        brute_force_merges(word_counts, num_merges, first_id=5, min_frequency=min_frequency)


def test_learn_merges_on_random_larger_tables():
    rng = random.Random(7)
    for _ in range(5):
        wc = {tuple(rng.choice([0, 1, 2]) for _ in range(rng.randint(2, 20))): rng.randint(1, 9)
              for _ in range(40)}
        assert learn_merges(wc, 60, first_id=3) == brute_force_merges(wc, 60, first_id=3)


def test_tie_break_smallest_pair():
    # (1, 2) and (3, 4) both twice: the smaller tuple first; then (0, 9) vs (0, 5): (0, 5)
    assert learn_merges({(3, 4): 2, (1, 2): 2}, 2, first_id=10) == [(1, 2), (3, 4)]
    assert learn_merges({(0, 9): 1, (0, 5): 1}, 1, first_id=10) == [(0, 5)]
    # equal counts: compare the left id first, then the right one
    assert learn_merges({(2, 0): 1, (1, 9): 1}, 1, first_id=10) == [(1, 9)]


def test_overlapping_counts_decide():
    # "aaa" holds (a, a) twice: it beats (b, c) seen once ... and (a, a) merges to (aa, a)
    assert learn_merges({(0, 0, 0): 1, (1, 2): 1}, 3, first_id=3) == [(0, 0), (1, 2), (3, 0)]


def test_merges_trace_by_hand():
    # words: "low" x5, "lower" x2, "newest" x6, "widest" x3 (Sennrich et al.'s example,
    # letters as ids a=0 ... z=25, first_id=26)
    def ids(w):
        return tuple(ord(c) - 97 for c in w)
    wc = {ids("low"): 5, ids("lower"): 2, ids("newest"): 6, ids("widest"): 3}
    merges = learn_merges(wc, 4, first_id=26)
    # counts: es 9, st 9, we 8, lo 7, ow 7, ne 6, ew 6, ... -> (e, s) [smaller than (s, t)];
    # then (es, t) 9; then (l, o) 7 vs (o, w) 7 -> (l, o); then (lo, w) 7 (beats (w, e) 8-6=2... )
    e, s, t, l, o, w = ids("estlow")
    assert merges == [(e, s), (26, t), (l, o), (28, w)]


def test_min_frequency_stops_early():
    assert learn_merges({(0, 1): 2, (2, 3): 1}, 5, first_id=4, min_frequency=2) == [(0, 1)]


def test_learn_merges_progress():
    calls = []
    learn_merges({tuple(range(300)): 1}, 250, first_id=300, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (100, 250) and calls[-1] == (250, 250)


def test_learn_merges_errors():
    with pytest.raises(TypeError, match="word_counts"):
        learn_merges([(1, 2)], 1)
    with pytest.raises(ValueError, match="word_counts"):
        learn_merges({(1, 300): 1}, 1)
    with pytest.raises(ValueError, match="word_counts"):
        learn_merges({(1, 2): 0}, 1)
    with pytest.raises(TypeError, match="num_merges"):
        learn_merges({(1, 2): 1}, 1.5)
    with pytest.raises(ValueError, match="min_frequency"):
        learn_merges({(1, 2): 1}, 1, min_frequency=0)


# ------------------------------------------------------------------ training


def test_train_counts_words_of_pieces():
    wc = word_counts_of(["ab ab<s>ab"], special_tokens=["<s>"])
    a, b, sp = ID_OF_BYTE[ord("a")], ID_OF_BYTE[ord("b")], ID_OF_BYTE[ord(" ")]
    assert wc == {(a, b): 2, (sp, a, b): 1}


def test_train_equals_learn_merges_and_sizes(tok):
    wc = word_counts_of(CORPUS, special_tokens=["<|endoftext|>", "<|end|>"])
    assert list(tok.merges) == learn_merges(wc, 320 - 256 - 2)
    assert tok.vocab_size == 320
    assert tok.special_token_ids == {"<|endoftext|>": 318, "<|end|>": 319}


def test_train_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        train("abc", 257, special_tokens=["<a>", "<b>"])
    with pytest.raises(ValueError, match="special_tokens"):
        train("abc", 300, special_tokens=["<a>", "<a>"])
    with pytest.raises(TypeError, match="texts"):
        train([b"abc"], 300)
    with pytest.raises(ValueError, match="pattern"):
        train("abc", 300, pattern="gpt3")


def test_train_stops_when_pairs_run_out():
    t = train("ab", 1000)
    assert t.merges == ((ID_OF_BYTE[97], ID_OF_BYTE[98]),) and t.vocab_size == 257


# ------------------------------------------------------------------ encoding

texts = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=60)
mixed = st.lists(st.sampled_from(["the ", "cat", "<|end|>", "<|endoftext|>", "😀", "e\u0301",
                                  "\ud800", "\udfff", "  ", "\n", "日本", "99"]), max_size=12
                 ).map("".join)


@settings(max_examples=200)
@given(st.one_of(texts, mixed))
@example("")
@example("\ud800\udc00 lone \udfff")
@example("👩‍👩‍👧 e\u0301 \u0000")
def test_round_trip(tok, s):
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(tok.encode(s, allowed_special="none")) == s


def encode_piece_by_hand(tok, piece):
    """Oracle: one occurrence at a time, lowest rank, leftmost."""
    rank = {m: r for r, m in enumerate(tok.merges)}
    word = [ID_OF_BYTE[b] for b in piece.encode("utf-8", "surrogatepass")]
    while True:
        cands = [(rank[(word[i], word[i + 1])], i) for i in range(len(word) - 1)
                 if (word[i], word[i + 1]) in rank]
        if not cands:
            return word
        r, i = min(cands)
        word[i:i + 2] = [256 + r]


@settings(max_examples=100)
@given(texts)
@example("    aaaa  the   ")
def test_encode_equals_one_merge_at_a_time(tok, s):
    from spec.tokenize.pretokenize import pretokenize
    expected = [i for p in pretokenize(s) for i in encode_piece_by_hand(tok, p)]
    assert tok.encode(s, allowed_special="none") == expected


def test_encode_trace_by_hand():
    # merges: (a, a) -> 256, (256, a) -> 257; "aaaa" -> (aa, aa), "aaa" -> (aaa,)
    a = ID_OF_BYTE[ord("a")]
    t = BPETokenizer([(a, a), (256, a)])
    assert t.encode("aaaa") == [256, 256]
    assert t.encode("aaa") == [257]
    assert t.encode("aaaaa") == [256, 257]  # (a,a) everywhere first: aa aa a, then (aa, a)
    assert t.token_bytes(257) == b"aaa"


def test_special_tokens():
    t = BPETokenizer([], special_tokens=["<a>", "<a><b>", "<b>"])
    a, b = 256, 258
    assert t.encode("x<a><b>y") == [ID_OF_BYTE[120], 257, ID_OF_BYTE[121]]  # longest at same start
    assert t.encode("<b><a>") == [b, a]
    assert t.encode("<a><b>", allowed_special={"<a>", "<b>"}) == [a, b]
    assert t.encode("<a>", allowed_special="none") == [ID_OF_BYTE[c] for c in b"<a>"]
    assert split_specials("aXbXXc", ["X", "XX"]) == [("a", False), ("X", True), ("b", False),
                                                     ("XX", True), ("c", False)]
    with pytest.raises(ValueError, match="allowed_special"):
        t.encode("x", allowed_special={"<c>"})
    with pytest.raises(ValueError, match="allowed_special"):
        t.encode("x", allowed_special="some")


def _split_by_search(text, specials):
    """The rule written out: from each point, the leftmost start of any special, the
    longest one where several start there; the text between is ordinary."""
    parts, start = [], 0
    while True:
        found = [(text.find(s, start), -len(s), s) for s in specials if text.find(s, start) >= 0]
        if not found:
            break
        at, _, special = min(found)
        if at > start:
            parts.append((text[start:at], False))
        parts.append((special, True))
        start = at + len(special)
    if start < len(text):
        parts.append((text[start:], False))
    return parts


@settings(max_examples=300, deadline=None)
@given(st.text("ab<>", max_size=20),
       st.lists(st.text("ab<>", min_size=1, max_size=3), max_size=4, unique=True))
@example("x<<a>>b<a>bb<", ["<a>", "<a>b", "b<", "<"])
def test_split_specials_follows_the_rule(text, specials):
    assert split_specials(text, specials) == _split_by_search(text, specials)


def test_add_prefix_space():
    t = BPETokenizer([], special_tokens=["<s>"], add_prefix_space=True)
    assert t.decode(t.encode("a<s>b")) == " a<s> b"
    assert t.decode(t.encode(" a")) == " a"


def test_decode_fallback_and_errors(tok):
    # ids encode never makes: a lone continuation byte, a truncated sequence
    cont, lead = ID_OF_BYTE[0x80], ID_OF_BYTE[0xE2]
    assert tok.decode([ID_OF_BYTE[ord("a")], cont, lead, ID_OF_BYTE[ord("b")]]) == "a\ufffd\ufffdb"
    assert tok.decode(tok.encode("\ud800") + [cont]) == "\ud800\ufffd"
    with pytest.raises(ValueError, match="320"):
        tok.decode([1, 320])
    with pytest.raises(ValueError, match="-1"):
        tok.decode([-1])
    with pytest.raises(TypeError, match="ids"):
        tok.decode("abc")
    with pytest.raises(TypeError, match="ids"):
        tok.decode([1.0])
    with pytest.raises(TypeError, match="text"):
        tok.encode(b"abc")


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"merges\[0\]"):
        BPETokenizer([(0, 256)])  # refers to itself
    with pytest.raises(ValueError, match=r"merges\[1\]"):
        BPETokenizer([(0, 1), (0, 258)])  # refers to a future merge
    with pytest.raises(TypeError, match="merges"):
        BPETokenizer([(0, "a")])
    with pytest.raises(ValueError, match="special_tokens"):
        BPETokenizer([], special_tokens=[""])
    with pytest.raises(TypeError, match="special_tokens"):
        BPETokenizer([], special_tokens="<s>")
    with pytest.raises(ValueError, match="ids"):
        BPETokenizer([], ids=[0] * 256)
    with pytest.raises(TypeError, match="add_prefix_space"):
        BPETokenizer([], add_prefix_space=1)


def test_external_ids():
    ids = list(range(10, 266)) + [3]  # bytes shifted by 10, one special at 3
    t = BPETokenizer([], special_tokens=["<s>"], ids=ids)
    assert t.encode("!<s>") == [10, 3] and t.vocab_size == 266
    assert t.decode([10, 3]) == "!<s>"
    with pytest.raises(ValueError, match="0"):
        t.decode([0])


# ------------------------------------------------------------- our JSON format


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path / "t.json")
    back = BPETokenizer.load(tmp_path / "t.json")
    assert back == tok
    assert back.encode(CORPUS[:500]) == tok.encode(CORPUS[:500])
    t2 = BPETokenizer(tok.merges, special_tokens=["<s>"], pattern="gpt4", add_prefix_space=True,
                      ids=[*range(1, 256 + len(tok.merges) + 1), 0])
    t2.save(tmp_path / "t2.json")
    assert BPETokenizer.load(tmp_path / "t2.json") == t2


def _good(tok):
    return {"format": "attnspec-bpe", "version": 1, "pattern": "gpt2", "add_prefix_space": False,
            "merges": [list(m) for m in tok.merges], "special_tokens": list(tok.special_tokens),
            "ids": None}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("merges"), "keys"),
    (lambda d: d.update(format="other"), "format"),
    (lambda d: d.update(version=2), "version"),
    (lambda d: d.update(version=True), "version"),
    (lambda d: d.update(pattern="(?s).*"), "pattern"),
    (lambda d: d.update(add_prefix_space="no"), "add_prefix_space"),
    (lambda d: d.update(merges={"a": 1}), "merges"),
    (lambda d: d["merges"].append([1]), r"merges\[\d+\]"),
    (lambda d: d["merges"].append(["a", "b"]), r"merges\[\d+\]"),
    (lambda d: d["merges"].append([1.0, 2]), r"merges\[\d+\]"),
    (lambda d: d["merges"].append([-1, 2]), r"merges\[\d+\]"),
    (lambda d: d["merges"].insert(0, [0, 300]), r"merges\[0\]"),  # a future id
    (lambda d: d.update(special_tokens=[1]), "special_tokens"),
    (lambda d: d.update(special_tokens=["x", "x"]), "special_tokens"),
    (lambda d: d.update(ids=[0, 1]), "ids"),
])
def test_load_rejects_malformed(tok, tmp_path, mutate, message):
    d = _good(tok)
    mutate(d)
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=message):
        BPETokenizer.load(tmp_path / "bad.json")


@pytest.mark.parametrize("raw", [b"", b"{", b'{"format": "attnspec-bpe", "merges": [[1, 2',
                                 b"[1, 2, 3]", b"\xff\xfe", b"null", b"[" * 100000])
def test_load_rejects_non_json(tmp_path, raw):
    (tmp_path / "bad.json").write_bytes(raw)
    with pytest.raises(ValueError):
        BPETokenizer.load(tmp_path / "bad.json")


def test_load_path_type():
    with pytest.raises(TypeError, match="path"):
        BPETokenizer.load(3)


def test_flatten_word_counts_layout_and_errors():
    sym, offsets, counts = flatten_word_counts({(3, 1): 2, (): 1, (7,): 5})
    assert (sym.dtype, offsets.dtype, counts.dtype) == (np.int32, np.int64, np.int64)
    assert sym.tolist() == [3, 1, 7] and offsets.tolist() == [0, 2, 2, 3] and counts.tolist() == [2, 1, 5]
    with pytest.raises(ValueError, match="2\\^31"):
        flatten_word_counts({(2**31,): 1})
    with pytest.raises(TypeError, match="word_counts"):
        flatten_word_counts({(1.5,): 1})
