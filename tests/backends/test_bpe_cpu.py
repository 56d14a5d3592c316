"""backends.cpu.tokenize.bpe equals spec.tokenize.bpe: the same merges, the same ids."""

from __future__ import annotations

import pathlib
import sysconfig

import numba
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backends.cpu.tokenize import bpe as cpu
from spec.tokenize import bpe as spec
from tests.strategies import word_tables

SPECIALS = ["<|endoftext|>", "<|end|>"]


def stdlib_text(names, limit=None) -> str:
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    text = "".join((root / n).read_text(encoding="utf-8") for n in names if (root / n).is_file())
    assert len(text) > 50_000, "standard-library sources not found"
    return text[:limit]


@pytest.fixture(scope="module")
def corpus() -> tuple[str, str]:
    """(training text, held-out text): a few hundred KB of standard-library sources."""
    train = stdlib_text(["argparse.py", "typing.py", "textwrap.py", "string.py",
                         "email/_header_value_parser.py"])
    held = stdlib_text(["shlex.py", "re/_casefix.py", "difflib.py"])
    return train, held


@pytest.fixture(scope="module")
def trained(corpus):
    """(cpu tokenizer, spec tokenizer) trained on the corpus with two specials."""
    train = corpus[0] + SPECIALS[0] + "x" + SPECIALS[1]
    return (cpu.train(train, 1500, special_tokens=SPECIALS),
            spec.train(train, 1500, special_tokens=SPECIALS))


# ------------------------------------------------------------------------ training

@settings(max_examples=300)
@given(word_tables(4, 24, 12), st.integers(0, 60), st.integers(1, 4))
@example({(0, 0, 0): 1}, 5, 1)
@example({(0, 0, 0, 0): 1, (0, 0, 0): 2}, 5, 1)
@example({(0, 1, 0, 1, 0): 3, (1, 0, 1): 2}, 10, 1)
@example({}, 3, 1)
def test_learn_merges_equals_spec(word_counts, num_merges, min_frequency):
    """Incremental counts, lazy heap, ties: the spec's merges on overlap-heavy tables."""
    assert cpu.learn_merges(word_counts, num_merges, first_id=4, min_frequency=min_frequency) \
        == spec.learn_merges(word_counts, num_merges, first_id=4, min_frequency=min_frequency)


repetitive = st.lists(st.sampled_from(["a", "b", "aa", "ab", "abab", "aaaa", " ", "  a",
                                       "\n", "ba", "é", "😀", "1", "<|end|>"]),
                      max_size=40).map("".join)


@settings(max_examples=60)
@given(st.lists(repetitive, min_size=1, max_size=4), st.integers(256, 330),
       st.integers(1, 3), st.booleans())
def test_train_equals_spec_on_repetitive_texts(texts, vocab_size, min_frequency, specials):
    kw = {"special_tokens": ["<|end|>"] if specials else (), "min_frequency": min_frequency}
    if vocab_size < 256 + len(kw["special_tokens"]):
        vocab_size += 1
    got = cpu.train(texts, vocab_size, **kw)
    want = spec.train(texts, vocab_size, **kw)
    assert got == want  # merges, specials, pattern
    assert isinstance(got, spec.BPETokenizer)


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_count_words_equals_spec(corpus, pattern):
    """Many texts pre-tokenized end to end in one call, each on its own: the spec's
    table (empty texts, texts that are only a special, a text cut by specials)."""
    text = corpus[0][:60_000] + "<|end|>tail \ud800 😀"
    texts = [text, "", "<|end|>", "abc  ", "  \n", "def", text[:999], "x<|end|>y", "12345"]
    sym, offsets, count_W = cpu.count_words(texts, special_tokens=["<|end|>"], pattern=pattern)
    got = {tuple(sym[a:b].tolist()): int(c)
           for a, b, c in zip(offsets[:-1], offsets[1:], count_W)}
    assert got == spec.word_counts_of(texts, special_tokens=["<|end|>"], pattern=pattern)


def test_count_words_batches_merge(corpus, monkeypatch):
    """A stream of texts counted in several batches gives the one-batch counts."""
    texts = [corpus[0][i:i + 3000] for i in range(0, 90_000, 3000)]
    monkeypatch.setattr(cpu, "_BATCH_BYTES", 10_000)
    sym, offsets, count_W = cpu.count_words(iter(texts))
    got = {tuple(sym[a:b].tolist()): int(c)
           for a, b, c in zip(offsets[:-1], offsets[1:], count_W)}
    assert got == spec.word_counts_of(texts)


def test_train_equals_spec_on_stdlib(trained):
    got, want = trained
    assert got.merges == want.merges and len(got.merges) == 1500 - 256 - 2
    assert got == want


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_changes_nothing(corpus, trained, threads):
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        tok = cpu.train(corpus[0] + SPECIALS[0] + "x" + SPECIALS[1], 1500,
                        special_tokens=SPECIALS)
        ids = cpu.encode(trained[0], corpus[1])
    finally:
        numba.set_num_threads(before)
    assert tok.merges == trained[1].merges
    assert ids.tolist() == trained[1].encode(corpus[1])


def test_train_progress_and_min_frequency(corpus):
    calls = []
    cpu.train(corpus[0][:20_000], 600, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (344, 344) and all(t == 344 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) >= 50
    rare = cpu.train(corpus[0][:20_000], 2000, min_frequency=5)
    assert rare.merges == spec.train(corpus[0][:20_000], 2000, min_frequency=5).merges
    assert len(rare.merges) < 2000 - 256
    assert cpu.train("", 300).merges == () and cpu.train([], 300).merges == ()


# ------------------------------------------------------------------------ encoding

any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=80)
mixed = st.lists(st.sampled_from(["def ", "self", "<|end|>", "<|endoftext|>", "😀", "e\u0301",
                                  "\ud800", "\udfff", "    ", "\n", "日本", "99", "return",
                                  " " * 60, "a" * 50, "7" * 70]), max_size=12).map("".join)


@settings(max_examples=150)
@given(st.one_of(any_text, mixed))
@example("")
@example("\ud800\udc00 lone \udfff")
@example("👩‍👩‍👧 e\u0301 \u0000")
@example("<|endoftext|><|end|><|end|>x<|endoftext|")
def test_encode_equals_spec_on_drawn_text(trained, s):
    tok, ref = trained
    for allowed in ("all", "none", {"<|end|>"}):
        ids = cpu.encode(tok, s, allowed_special=allowed)
        assert ids.dtype == np.int64
        assert ids.tolist() == ref.encode(s, allowed_special=allowed)
    assert tok.decode(tok.encode(s)) == s


@settings(max_examples=40)
@given(st.lists(st.one_of(any_text, mixed), max_size=8))
@example([])
@example(["", ""])
@example(["", "a", "", "<|end|>", " b"])
def test_encode_batch_equals_spec(trained, texts):
    tok, ref = trained
    for allowed in ("all", "none"):
        got = cpu.encode_batch(tok, texts, allowed_special=allowed)
        assert [g.tolist() for g in got] == [ref.encode(t, allowed_special=allowed) for t in texts]


@pytest.mark.parametrize("threads", [1, 2])
def test_encode_batch_of_lines(trained, corpus, threads):
    """Many lines, shares of lines in parallel; prefix space and external ids too."""
    tok, ref = trained
    lines = corpus[1].splitlines(keepends=True)[:3000] + ["", "x<|end|>y", ""]
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        got = cpu.encode_batch(tok, lines)
        n = 256 + len(ref.merges) + len(ref.special_tokens)
        kw = {"add_prefix_space": True, "ids": list(range(n))[::-1]}
        other = spec.BPETokenizer(ref.merges, special_tokens=SPECIALS, **kw)
        got_other = cpu.encode_batch(other, lines[:300])
    finally:
        numba.set_num_threads(before)
    assert [g.tolist() for g in got] == [ref.encode(t) for t in lines]
    assert [g.tolist() for g in got_other] == [other.encode(t) for t in lines[:300]]


def test_encode_equals_spec_on_held_out_text(trained, corpus):
    """Held-out sources plus pieces long enough for the heap path (runs of one byte)."""
    tok, ref = trained
    text = (corpus[1] + " " * 3000 + "x" + "ab" * 700 + " " + "9" * 1000 + "\n" * 77
            + "😀" * 40 + SPECIALS[0])
    assert tok.encode(text) == ref.encode(text)


def test_long_piece_paths_agree():
    """The min-scan and the heap BPE give the same ids on every piece length."""
    tok = cpu.CPUBPETokenizer(spec.train(["aaab" * 50 + " abab" * 30 + " " + "ab" * 60], 300).merges)
    ref = spec.BPETokenizer(tok.merges)
    for n in range(1, 3 * cpu._SHORT_PIECE):
        for s in ("a" * n, "ab" * (n // 2) + "a", "aab" * (n // 3)):
            assert tok.encode(s) == ref.encode(s), s


def test_special_splitting_equals_spec():
    specials = ["<a>", "<a>b", "b<", "<", "aa"]
    tok = cpu.CPUBPETokenizer([], special_tokens=specials)
    ref = spec.BPETokenizer([], special_tokens=specials)
    for text in ["<a>b<a>", "x<<a>>b<a>bb<", "aaa<a"]:
        for allowed in ("all", "none", {"<"}, {"aa", "<a>b"}):
            assert tok.encode(text, allowed_special=allowed) == \
                ref.encode(text, allowed_special=allowed)


def test_add_prefix_space_and_external_ids(trained):
    ref = trained[1]
    n = 256 + len(ref.merges) + len(ref.special_tokens)
    ids = list(range(n))[::-1]  # any external numbering
    for kw in ({"add_prefix_space": True}, {"ids": ids}):
        a = cpu.CPUBPETokenizer(ref.merges, special_tokens=SPECIALS, **kw)
        b = spec.BPETokenizer(ref.merges, special_tokens=SPECIALS, **kw)
        for text in ("hello<|end|>world", " x<|endoftext|>", "", "def f():\n    return 1"):
            assert a.encode(text) == b.encode(text)
    # a plain spec tokenizer goes through the module function too
    assert cpu.encode(ref, "import os").tolist() == ref.encode("import os")
    assert cpu.CPUBPETokenizer.from_tokenizer(ref) == ref


def test_equals_hf_trainer_and_encoder(corpus, tmp_path):
    """HF tokenizers' BpeTrainer learns our merges; HF's encoder gives our ids."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    text = corpus[0][:150_000]
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=0, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    hf.train_from_iterator([text], trainer=trainer)
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    imported = spec.BPETokenizer.from_hf_json(path)
    ours = cpu.train(text, 1000)
    assert imported.merges == ours.merges
    held = corpus[1][:50_000]
    assert cpu.encode(imported, held).tolist() == hf.encode(held, add_special_tokens=False).ids


# -------------------------------------------------------------------------- errors


def test_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        cpu.train("abc", 257, special_tokens=["<a>", "<b>"])
    with pytest.raises(TypeError, match="vocab_size"):
        cpu.train("abc", 300.0)
    with pytest.raises(ValueError, match="special_tokens"):
        cpu.train("abc", 300, special_tokens=["<a>", "<a>"])
    with pytest.raises(TypeError, match="texts"):
        cpu.train(["abc", b"abc"], 300)
    with pytest.raises(TypeError, match="texts"):
        cpu.train(3, 300)
    with pytest.raises(ValueError, match="min_frequency"):
        cpu.train("abc", 300, min_frequency=0)
    with pytest.raises(TypeError, match="progress"):
        cpu.train("abc", 300, progress=1)
    with pytest.raises(ValueError, match="pattern"):
        cpu.train("abc", 300, pattern="gpt3")
    with pytest.raises(ValueError, match="word_counts"):
        cpu.learn_merges({(0, 300): 1}, 3)
    tok = cpu.CPUBPETokenizer([], special_tokens=["<a>"])
    with pytest.raises(TypeError, match="text"):
        tok.encode(b"abc")
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode("abc", allowed_special={"<b>"})
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode("abc", allowed_special="some")
    with pytest.raises(TypeError, match="tokenizer"):
        cpu.encode("not a tokenizer", "abc")
    with pytest.raises(TypeError, match="texts"):
        cpu.encode_batch(tok, "abc")
    with pytest.raises(TypeError, match="texts"):
        cpu.encode_batch(tok, ["abc", 3])
