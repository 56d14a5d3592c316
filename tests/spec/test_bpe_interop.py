"""Agreement of spec.tokenize.bpe with Hugging Face tokenizers and tiktoken (no network).

Training corpus: a fixed set of the running Python's standard-library sources; held-out
text: other files of it, plus generated strings.
"""

from __future__ import annotations

import json
import os
import sysconfig

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spec.tokenize.bpe import BYTE_OF_ID, BPETokenizer, train
from spec.tokenize.formats import BYTE_OF_CHAR, CHAR_OF_BYTE
from spec.tokenize.pretokenize import GPT2_PATTERN

tokenizers = pytest.importorskip("tokenizers")
tiktoken = pytest.importorskip("tiktoken")

STDLIB = sysconfig.get_paths()["stdlib"]
TRAIN_FILES = ["argparse.py", "os.py", "typing.py", "inspect.py", "dataclasses.py"]
HELD_OUT_FILES = ["shutil.py", "textwrap.py", "enum.py"]
SPECIALS = ["<|endoftext|>", "<pad>"]
VOCAB = 1000


def _read(names):
    texts = []
    for name in names:
        with open(os.path.join(STDLIB, name), encoding="utf-8") as f:
            texts.append(f.read())
    return texts


@pytest.fixture(scope="module")
def corpus():
    return _read(TRAIN_FILES)


@pytest.fixture(scope="module")
def held_out():
    return _read(HELD_OUT_FILES)


@pytest.fixture(scope="module")
def ours(corpus):
    return train(corpus, VOCAB, special_tokens=SPECIALS)


@pytest.fixture(scope="module")
def hf(corpus):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return tok


@pytest.fixture(scope="module")
def hf_path(hf, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    hf.save(str(path))
    return path


def _hf_merges_as_bytes(hf_path):
    model = json.loads(hf_path.read_text(encoding="utf-8"))["model"]
    out = []
    for m in model["merges"]:
        left, right = m.split(" ") if isinstance(m, str) else m
        out.append((bytes(BYTE_OF_CHAR[c] for c in left), bytes(BYTE_OF_CHAR[c] for c in right)))
    return out


def test_hf_alphabet_order_is_ours():
    from tokenizers import pre_tokenizers
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    assert [BYTE_OF_CHAR[c] for c in alphabet] == list(BYTE_OF_ID)
    assert sorted(CHAR_OF_BYTE) == alphabet


def test_train_equals_hf_bpe_trainer(ours, hf_path, corpus):
    assert sum(len(t.encode()) for t in corpus) > 300_000
    ours_bytes = [(ours.token_bytes(x), ours.token_bytes(y)) for x, y in ours.merges]
    hf_bytes = _hf_merges_as_bytes(hf_path)
    assert len(ours_bytes) == VOCAB - 256 - len(SPECIALS)
    assert ours_bytes == hf_bytes


def test_from_hf_json_gives_hf_ids(hf, hf_path, held_out, ours):
    loaded = BPETokenizer.from_hf_json(hf_path)
    assert loaded.merges == ours.merges  # same model ...
    assert loaded.special_token_ids == {"<|endoftext|>": 0, "<pad>": 1}  # ... HF's numbering
    for text in held_out:
        assert loaded.encode(text) == hf.encode(text).ids
        assert loaded.decode(loaded.encode(text)) == text
    text = held_out[0][:2000] + "<|endoftext|>" + held_out[1][:2000] + "<pad>"
    assert loaded.encode(text) == hf.encode(text).ids


no_surrogates = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)
pieces = st.lists(st.sampled_from(["def ", "self", "<pad>", "<|endoftext|>", "😀", "e\u0301",
                                   "    ", "\n", "日本", "1234", "'s", "'ll", " x"]),
                  max_size=15).map("".join)


@settings(max_examples=150)
@given(st.one_of(no_surrogates, pieces))
def test_from_hf_json_gives_hf_ids_generated(hf, hf_path, s):
    loaded = _loaded(hf_path)
    assert loaded.encode(s) == hf.encode(s).ids


_cache = {}


def _loaded(path):
    if path not in _cache:
        _cache[path] = BPETokenizer.from_hf_json(path)
    return _cache[path]


def test_to_hf_json_loaded_by_hf_gives_our_ids(ours, held_out, tmp_path):
    from tokenizers import Tokenizer
    ours.to_hf_json(tmp_path / "ours.json")
    hf2 = Tokenizer.from_file(str(tmp_path / "ours.json"))
    for text in held_out:
        assert hf2.encode(text).ids == ours.encode(text)
        assert hf2.decode(ours.encode(text)) == text
    text = "x<|endoftext|>y<pad>"
    assert hf2.encode(text).ids == ours.encode(text)
    assert BPETokenizer.from_hf_json(tmp_path / "ours.json") == ours


@pytest.fixture(scope="module")
def tk(ours):
    return tiktoken.Encoding(name="attnspec-test", pat_str=GPT2_PATTERN,
                             mergeable_ranks=ours.to_tiktoken_ranks(),
                             special_tokens=ours.special_token_ids)


def test_tiktoken_gives_our_ids(ours, tk, held_out):
    for text in held_out:
        assert tk.encode(text, disallowed_special=()) == ours.encode(text)
    text = held_out[2][:3000] + "<|endoftext|>" + "<pad>"
    assert tk.encode(text, allowed_special="all") == ours.encode(text)


@settings(max_examples=150)
@given(st.one_of(no_surrogates, pieces))
def test_tiktoken_gives_our_ids_generated(ours, tk, s):
    assert tk.encode(s, allowed_special="all") == ours.encode(s)


def test_from_tiktoken_ranks_round_trip(ours):
    back = BPETokenizer.from_tiktoken_ranks(ours.to_tiktoken_ranks(), GPT2_PATTERN,
                                            special_tokens=ours.special_token_ids)
    assert back.merges == ours.merges
    assert back == ours


def test_from_tiktoken_ranks_other_numbering(ours, held_out):
    # ranks in another order of the single bytes (plain byte order, as some vocabularies
    # have): same merges, tiktoken's ids
    ranks = {bytes([b]): b for b in range(256)}
    for i in range(256, 256 + len(ours.merges)):
        ranks[ours.token_bytes(i)] = i
    enc = tiktoken.Encoding(name="attnspec-test2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                            special_tokens={})
    loaded = BPETokenizer.from_tiktoken_ranks(ranks, "gpt2")
    assert loaded.merges == ours.merges
    text = held_out[1]
    assert loaded.encode(text) == enc.encode(text, disallowed_special=())


# ------------------------------------------------- defensive HF / tiktoken parsing


def _hf_variant(hf_path, tmp_path, mutate):
    d = json.loads(hf_path.read_text(encoding="utf-8"))
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    return path


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(model={"type": "Unigram"}), "model"),
    (lambda d: d["model"].update(ignore_merges=True), "ignore_merges"),
    (lambda d: d["model"].update(dropout=0.1), "dropout"),
    (lambda d: d.update(normalizer={"type": "NFC"}), "normalizer"),
    (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), "pre_tokenizer"),
    (lambda d: d["model"]["merges"].reverse(), "merges"),  # refers to future tokens
    (lambda d: d["model"]["merges"].append(["Ġ", "<"]), "merges"),  # result not in vocab
    (lambda d: d["model"]["merges"].append([1, 2]), "merges"),
    (lambda d: d["model"]["vocab"].pop("!"), "byte"),
    (lambda d: d["model"]["vocab"].update({"☃": 5000}), "alphabet"),
    (lambda d: d["model"]["vocab"].update({"!!!!!!": 5000}), "neither"),
    (lambda d: d["model"]["vocab"].update({"!": -1}), "vocab"),
    (lambda d: d["model"]["vocab"].update({"!": "0"}), "vocab"),
    (lambda d: d["added_tokens"].append({"id": 0, "content": "<x>"}), "share an id"),
    (lambda d: d.update(added_tokens="x"), "added_tokens"),
])
def test_from_hf_json_rejects_malformed(hf_path, tmp_path, mutate, message):
    with pytest.raises(ValueError, match=message):
        BPETokenizer.from_hf_json(_hf_variant(hf_path, tmp_path, mutate))


def test_from_hf_json_rejects_truncated(hf_path, tmp_path):
    raw = hf_path.read_bytes()
    (tmp_path / "t.json").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="JSON"):
        BPETokenizer.from_hf_json(tmp_path / "t.json")


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop(b"!"), "single byte"),
    (lambda r: r.update({b"zzzzq": 10**6}), "not the merge of two"),
    (lambda r: r.update({b"": 10**6}), "non-empty bytes"),
    (lambda r: r.update({"ab": 10**6}), "bytes"),
    (lambda r: r.update({b"\x00\x01": 0}), "share a rank"),
    (lambda r: r.update({b"\x00\x01": -5}), "int >= 0"),
])
def test_from_tiktoken_ranks_rejects_malformed(ours, mutate, message):
    ranks = ours.to_tiktoken_ranks()
    mutate(ranks)
    with pytest.raises(ValueError, match=message):
        BPETokenizer.from_tiktoken_ranks(ranks, "gpt2")


def test_from_tiktoken_ranks_types(ours):
    with pytest.raises(TypeError, match="ranks"):
        BPETokenizer.from_tiktoken_ranks([(b"a", 0)], "gpt2")
    with pytest.raises(ValueError, match="special_tokens"):
        BPETokenizer.from_tiktoken_ranks(ours.to_tiktoken_ranks(), "gpt2",
                                         special_tokens={"<s>": 0})
