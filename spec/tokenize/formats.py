"""File formats of the tokenizers: byte-level BPE (ours, Hugging Face's, tiktoken's) and
the unigram model of :mod:`spec.tokenize.swe` (ours).

Every reader parses defensively: it checks the structure and every value before
building anything, and a malformed or hostile file raises ``ValueError`` naming what
is wrong (a wrong type inside the file is a ``ValueError`` too: the file is the bad
input). Only ``json`` is used: no pickle, no eval.

* **Ours** (:func:`save` / :func:`load`)::

    {"format": "attnspec-bpe", "version": 1, "pattern": "gpt2",
     "add_prefix_space": false, "merges": [[left_id, right_id], ...],
     "special_tokens": ["<|endoftext|>", ...], "ids": null | [id, ...]}

  The canonical ids of :mod:`spec.tokenize.bpe` (bytes in GPT-2's order, 256 + r for
  merge r, specials after); ``ids`` an optional external numbering.
* **Ours, unigram model** (:func:`save_unigram` / :func:`load_unigram`)::

    {"format": "attnspec-unigram", "version": 1, "pieces": [[piece, log_p], ...],
     "boundary": "end" | "start", "sep": null | " ", "max_pieces": null | k,
     "unk_log_prob": log_p}

  Pieces in id order; a log-probability of -inf (a piece of count 0) is written as
  null, since JSON has no infinities.
* **Hugging Face** ``tokenizer.json`` (:func:`to_hf_json` / :func:`from_hf_json`): a
  ``BPE`` model whose vocab keys are tokens spelled with ``bytes_to_unicode()``'s
  stand-in characters, merges as ``[left, right]`` (or the older ``"left right"``),
  the ``ByteLevel`` pre-tokenizer with ``use_regex=true`` (GPT-2's pattern) or a
  ``Sequence`` of ``Split`` (GPT-4's pattern, ``Isolated``) and ``ByteLevel`` with
  ``use_regex=false``; special tokens in ``added_tokens``. The importer keeps HF's ids.
* **tiktoken** ``mergeable_ranks`` (:func:`to_tiktoken_ranks` /
  :func:`from_tiktoken_ranks`): {token bytes: rank}; the rank is the token's id.

tiktoken merges by rank, not by merge list: in a piece it repeatedly joins the adjacent
pair whose *concatenated bytes* have the lowest rank. Merge-list BPE joins the adjacent
pair (x, y) with the lowest rank *as a merge*. The two differ only where two adjacent
tokens concatenate to a vocabulary token t whose own merge is a different split of t's
bytes (t = "abc" made by ("ab", "c") while "a", "bc" sit side by side): tiktoken joins
them, merge-list BPE does not. BPE training cannot create that situation for the
tokens it learns from (once (x, y) is merged, x never again precedes y), which is why
the two agree on trained vocabularies; :func:`from_tiktoken_ranks` recovers each
token's merge as the split tiktoken itself reaches on the token's own bytes with the
lower ranks, so a ranks file made from merges gives those merges back.
"""

from __future__ import annotations

import json
import os

from spec.tokenize.bpe import BYTE_OF_ID, BPETokenizer
from spec.tokenize.pretokenize import GPT2_PATTERN, GPT4_PATTERN

FORMAT = "attnspec-bpe"
VERSION = 1

#: GPT-2's stand-in character for each byte value (``bytes_to_unicode()``): ids 0..255
#: in code point order of these characters, which is :data:`BYTE_OF_ID`.
_PRINTABLE = BYTE_OF_ID[:188]
CHAR_OF_BYTE: tuple[str, ...] = tuple(
    chr(b) if b in set(_PRINTABLE) else chr(256 + BYTE_OF_ID[188:].index(b)) for b in range(256))
BYTE_OF_CHAR: dict[str, int] = {c: b for b, c in enumerate(CHAR_OF_BYTE)}


def _check_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def _read_json(path) -> object:
    path = _check_path(path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not valid UTF-8 JSON ({e})") from None


def _write_json(path, obj) -> None:
    with open(_check_path(path), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _expect(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ValueError(f"{where}: {what}")


# ------------------------------------------------------------------------- ours


def save(tok: BPETokenizer, path) -> None:
    """Write ``tok`` in our JSON format (module docstring)."""
    if not isinstance(tok, BPETokenizer):
        raise TypeError(f"tok: expected a BPETokenizer, got {type(tok).__name__}")
    _write_json(path, {
        "format": FORMAT, "version": VERSION, "pattern": tok.pattern,
        "add_prefix_space": tok.add_prefix_space, "merges": [list(m) for m in tok.merges],
        "special_tokens": list(tok.special_tokens),
        "ids": None if tok.ids is None else list(tok.ids)})


def load(path) -> BPETokenizer:
    """Read our JSON format; every field checked (ValueError naming the field)."""
    d = _read_json(path)
    where = _check_path(path)
    _expect(isinstance(d, dict), where, f"expected a JSON object, got {type(d).__name__}")
    keys = {"format", "version", "pattern", "add_prefix_space", "merges", "special_tokens", "ids"}
    _expect(set(d) == keys, where, f"expected the keys {sorted(keys)}, got {sorted(d)}")
    _expect(d["format"] == FORMAT, where, f"format: expected {FORMAT!r}, got {d['format']!r}")
    _expect(d["version"] == VERSION and _is_int(d["version"]), where,
            f"version: expected {VERSION}, got {d['version']!r}")
    _expect(d["pattern"] in ("gpt2", "gpt4"), where,
            f"pattern: expected 'gpt2' or 'gpt4', got {d['pattern']!r}")
    _expect(isinstance(d["add_prefix_space"], bool), where, "add_prefix_space: expected a bool")
    merges = d["merges"]
    _expect(isinstance(merges, list), where, "merges: expected a list")
    for r, m in enumerate(merges):
        _expect(isinstance(m, list) and len(m) == 2 and all(_is_int(x) for x in m), where,
                f"merges[{r}]: expected [left_id, right_id], got {m!r}")
        _expect(all(0 <= x < 256 + r for x in m), where,
                f"merges[{r}]: ids must be bytes or earlier merges (0..{255 + r}), got {m!r}")
    specials = d["special_tokens"]
    _expect(isinstance(specials, list) and all(isinstance(s, str) and s for s in specials),
            where, "special_tokens: expected a list of non-empty strings")
    _expect(len(set(specials)) == len(specials), where, "special_tokens: duplicates")
    ids = d["ids"]
    if ids is not None:
        n = 256 + len(merges) + len(specials)
        _expect(isinstance(ids, list) and len(ids) == n, where, f"ids: expected null or a list of {n} ints")
        _expect(all(_is_int(i) and i >= 0 for i in ids), where, "ids: expected ints >= 0")
        _expect(len(set(ids)) == n, where, "ids: duplicates")
    return BPETokenizer([tuple(m) for m in merges], special_tokens=specials,
                        pattern=d["pattern"], add_prefix_space=d["add_prefix_space"], ids=ids)


# ---------------------------------------------------------------- Hugging Face


def _hf_string(data: bytes) -> str:
    return "".join(CHAR_OF_BYTE[b] for b in data)


def _hf_bytes(token: str, where: str) -> bytes:
    bad = [c for c in token if c not in BYTE_OF_CHAR]
    _expect(not bad, where, f"token {token!r} has characters outside the ByteLevel alphabet: {bad[:3]!r}")
    return bytes(BYTE_OF_CHAR[c] for c in token)


def _hf_pre_tokenizer(pattern: str, add_prefix_space: bool) -> dict:
    byte_level = {"type": "ByteLevel", "add_prefix_space": add_prefix_space,
                  "trim_offsets": True, "use_regex": pattern == "gpt2"}
    if pattern == "gpt2":
        return byte_level
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": GPT4_PATTERN}, "behavior": "Isolated",
         "invert": False}, byte_level]}


def _parse_hf_pre_tokenizer(pre, where: str) -> tuple[str, bool]:
    """(pattern name, add_prefix_space) of the two layouts :func:`to_hf_json` writes."""
    def byte_level(p, use_regex):
        _expect(isinstance(p, dict) and p.get("type") == "ByteLevel", where,
                f"pre_tokenizer: expected ByteLevel, got {p!r:.200}")
        _expect(p.get("use_regex", True) is use_regex, where,
                f"pre_tokenizer: ByteLevel use_regex must be {use_regex} here")
        apf = p.get("add_prefix_space", True)
        _expect(isinstance(apf, bool), where, "pre_tokenizer: add_prefix_space must be a bool")
        return apf
    if isinstance(pre, dict) and pre.get("type") == "Sequence":
        seq = pre.get("pretokenizers")
        _expect(isinstance(seq, list) and len(seq) == 2, where,
                "pre_tokenizer: only Sequence[Split(GPT-4 pattern), ByteLevel] is supported")
        split = seq[0]
        _expect(isinstance(split, dict) and split.get("type") == "Split"
                and split.get("pattern") == {"Regex": GPT4_PATTERN}
                and split.get("behavior") == "Isolated" and split.get("invert") is False, where,
                "pre_tokenizer: the Split must be GPT-4's pattern, Isolated, not inverted")
        return "gpt4", byte_level(seq[1], False)
    return "gpt2", byte_level(pre, True)


def to_hf_json(tok: BPETokenizer, path) -> None:
    """Write ``tok`` as a Hugging Face ``tokenizer.json`` (ByteLevel BPE, ``tok``'s ids).

    The model has ``ignore_merges=false`` (HF would otherwise emit a whole piece that is
    in the vocabulary without merging, which merge-list BPE does not do) and no
    normalizer; the decoder is ByteLevel. HF decodes invalid UTF-8 lossily, so lone
    surrogates do not survive an HF round trip (ours keeps them).
    """
    if not isinstance(tok, BPETokenizer):
        raise TypeError(f"tok: expected a BPETokenizer, got {type(tok).__name__}")
    n_ordinary = 256 + len(tok.merges)
    strings = [_hf_string(tok.token_bytes(tok._external(i))) for i in range(n_ordinary)]
    if len(set(strings)) != n_ordinary:
        raise ValueError("tok: two tokens have the same bytes; HF's vocab cannot hold both")
    vocab = {s: tok._external(i) for i, s in enumerate(strings)}
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for s, i in tok.special_token_ids.items()]
    _write_json(path, {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _hf_pre_tokenizer(tok.pattern, tok.add_prefix_space),
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab,
                  "merges": [[strings[x], strings[y]] for x, y in tok.merges]}})


def from_hf_json(path) -> BPETokenizer:
    """Read a Hugging Face ``tokenizer.json`` holding a ByteLevel BPE; HF's ids kept.

    Accepted: model BPE without dropout, prefixes/suffixes or ignore_merges; no
    normalizer; the pre-tokenizers of :func:`to_hf_json`; the vocab holding all 256
    bytes, every merge's result, the special (added) tokens and nothing else; every merge
    made of bytes or results of earlier merges, and making a token no earlier merge made.
    Anything else raises ValueError naming it.
    """
    where = _check_path(path)
    d = _read_json(path)
    _expect(isinstance(d, dict), where, "expected a JSON object")
    model = d.get("model")
    _expect(isinstance(model, dict) and model.get("type") == "BPE", where,
            "model: expected a BPE model")
    for key, ok in (("dropout", None), ("continuing_subword_prefix", None),
                    ("end_of_word_suffix", None)):
        _expect(model.get(key, ok) in (ok, ""), where, f"model.{key}: unsupported value "
                                                       f"{model.get(key)!r}")
    _expect(model.get("ignore_merges", False) is False, where,
            "model.ignore_merges: must be false (merge-list BPE)")
    _expect(d.get("normalizer") is None, where, "normalizer: not supported (must be null)")
    pattern, add_prefix_space = _parse_hf_pre_tokenizer(d.get("pre_tokenizer"), where)

    added = d.get("added_tokens", [])
    _expect(isinstance(added, list), where, "added_tokens: expected a list")
    specials: list[tuple[int, str]] = []
    for k, a in enumerate(added):
        _expect(isinstance(a, dict) and _is_int(a.get("id")) and a["id"] >= 0
                and isinstance(a.get("content"), str) and a["content"], where,
                f"added_tokens[{k}]: expected {{'id': int >= 0, 'content': non-empty str}}")
        specials.append((a["id"], a["content"]))
    special_strings = {s for _, s in specials}
    _expect(len(special_strings) == len(specials), where, "added_tokens: duplicate content")

    vocab = model.get("vocab")
    _expect(isinstance(vocab, dict), where, "model.vocab: expected an object")
    id_of: dict[bytes, int] = {}
    for s, i in vocab.items():
        _expect(_is_int(i) and i >= 0, where, f"model.vocab[{s!r}]: expected an int >= 0, got {i!r}")
        if s in special_strings:  # HF's trainer also lists specials in the model vocab
            _expect(i == {c: j for j, c in specials}[s], where,
                    f"model.vocab[{s!r}]: id {i} differs from added_tokens")
            continue
        b = _hf_bytes(s, where)
        id_of[b] = i

    missing = [b for b in range(256) if bytes([b]) not in id_of]
    _expect(not missing, where, f"model.vocab: lacks the single byte(s) {missing[:8]} "
                                f"(train with initial_alphabet=ByteLevel.alphabet())")
    canonical_of = {bytes([BYTE_OF_ID[i]]): i for i in range(256)}
    ids = [id_of[bytes([BYTE_OF_ID[i]])] for i in range(256)]

    raw_merges = model.get("merges")
    _expect(isinstance(raw_merges, list), where, "model.merges: expected a list")
    merges = []
    for r, m in enumerate(raw_merges):
        if isinstance(m, str):  # older files: "left right"
            m = m.split(" ")
        _expect(isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m),
                where, f"model.merges[{r}]: expected [left, right], got {m!r:.100}")
        left, right = (_hf_bytes(x, where) for x in m)
        for part, s in ((left, m[0]), (right, m[1])):
            _expect(part in canonical_of, where,
                    f"model.merges[{r}]: {s!r} is not a byte or the result of an earlier merge")
        result = left + right
        _expect(result not in canonical_of, where,
                f"model.merges[{r}]: makes {_hf_string(result)!r}, which a byte or an earlier "
                f"merge already is (one id per token)")
        _expect(result in id_of, where, f"model.merges[{r}]: result {_hf_string(result)!r} not in vocab")
        canonical_of[result] = 256 + r
        merges.append((canonical_of[left], canonical_of[right]))
        ids.append(id_of[result])
    _expect(len(canonical_of) == len(id_of), where,
            "model.vocab: holds tokens that are neither bytes nor merge results")
    specials.sort()  # in id order
    ids += [i for i, _ in specials]
    _expect(len(set(ids)) == len(ids), where, "ids: two tokens share an id")
    return BPETokenizer(merges, special_tokens=[s for _, s in specials], pattern=pattern,
                        add_prefix_space=add_prefix_space, ids=ids)


# ---------------------------------------------------------------------- tiktoken


def to_tiktoken_ranks(tok: BPETokenizer) -> dict[bytes, int]:
    """{token bytes: id} for the 256 bytes and the merges (tiktoken's mergeable_ranks).

    Special tokens are not ranks: pass ``tok.special_token_ids`` as tiktoken's
    ``special_tokens``. Merge order is rank order (id order in the canonical numbering).
    """
    if not isinstance(tok, BPETokenizer):
        raise TypeError(f"tok: expected a BPETokenizer, got {type(tok).__name__}")
    ranks = {}
    for i in range(256 + len(tok.merges)):
        e = tok._external(i)
        b = tok.token_bytes(e)
        if b in ranks:
            raise ValueError(f"tok: tokens {ranks[b]} and {e} have the same bytes {b!r}")
        ranks[b] = e
    if tok.ids is not None:
        ordinary = [tok._external(i) for i in range(256, 256 + len(tok.merges))]
        if ordinary != sorted(ordinary):
            raise ValueError("tok: merge ids are not increasing in merge order, so they "
                             "cannot serve as tiktoken ranks")
    return ranks


def _rank_bpe(data: bytes, ranks: dict[bytes, int], below: int) -> list[bytes]:
    """tiktoken's merging of ``data`` using only the tokens of rank < ``below``."""
    parts = [data[i:i + 1] for i in range(len(data))]
    while len(parts) > 1:
        best, at = None, -1
        for k in range(len(parts) - 1):
            r = ranks.get(parts[k] + parts[k + 1])
            if r is not None and r < below and (best is None or r < best):
                best, at = r, k
        if best is None:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


def from_tiktoken_ranks(ranks, pattern=GPT2_PATTERN, special_tokens=None) -> BPETokenizer:
    """A tokenizer from tiktoken's ``mergeable_ranks``; the ranks become the ids.

    Math
        Every multi-byte token t, in rank order, becomes the merge (u, v) where [u, v] is
        what tiktoken's own merging of t's bytes ends in when only ranks below t's are
        allowed; it must end in exactly two tokens (else the ranks are not a BPE
        vocabulary: ValueError). All 256 single bytes must have ranks.

    Shapes
        ranks: {bytes: int >= 0}, distinct ranks; special_tokens: None or {str: id}
        (tiktoken's ``special_tokens``), ids distinct from the ranks.
    """
    if not isinstance(ranks, dict):
        raise TypeError(f"ranks: expected a dict[bytes, int], got {type(ranks).__name__}")
    for b, r in ranks.items():
        if not isinstance(b, bytes) or not b:
            raise ValueError(f"ranks: keys must be non-empty bytes, got {b!r:.60}")
        if not _is_int(r) or r < 0:
            raise ValueError(f"ranks[{b!r:.60}]: expected an int >= 0, got {r!r}")
    if len(set(ranks.values())) != len(ranks):
        raise ValueError("ranks: two tokens share a rank")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"ranks: the single byte(s) {missing[:8]} have no rank")
    if special_tokens is None:
        special_tokens = {}
    if not isinstance(special_tokens, dict):
        raise TypeError(f"special_tokens: expected a dict[str, int] or None, "
                        f"got {type(special_tokens).__name__}")
    for s, i in special_tokens.items():
        if not isinstance(s, str) or not s or not _is_int(i) or i < 0:
            raise ValueError(f"special_tokens: expected {{non-empty str: int >= 0}}, got {s!r}: {i!r}")

    canonical_of = {bytes([BYTE_OF_ID[i]]): i for i in range(256)}
    ids = [ranks[bytes([BYTE_OF_ID[i]])] for i in range(256)]
    merges = []
    for token, rank in sorted(((b, r) for b, r in ranks.items() if len(b) > 1), key=lambda x: x[1]):
        parts = _rank_bpe(token, ranks, rank)
        if len(parts) != 2:
            raise ValueError(f"ranks: token {token!r:.60} (rank {rank}) is not the merge of two "
                             f"lower-ranked tokens (tiktoken's merging ends in {len(parts)} parts)")
        merges.append((canonical_of[parts[0]], canonical_of[parts[1]]))
        canonical_of[token] = 255 + len(merges)
        ids.append(rank)
    specials = sorted(special_tokens.items(), key=lambda x: x[1])
    ids += [i for _, i in specials]
    if len(set(ids)) != len(ids):
        raise ValueError("special_tokens: an id collides with a rank")
    return BPETokenizer(merges, special_tokens=[s for s, _ in specials], pattern=pattern, ids=ids)



# ------------------------------------------------------------- unigram model, ours

UNIGRAM_FORMAT = "attnspec-unigram"


def _json_log_prob(x: float) -> float | None:
    return None if x == float("-inf") else float(x)


def save_unigram(model, path) -> None:
    """Write a :class:`spec.tokenize.swe.UnigramModel` in our JSON format (module docstring)."""
    from spec.tokenize.swe import UnigramModel

    if not isinstance(model, UnigramModel):
        raise TypeError(f"model: expected a UnigramModel, got {type(model).__name__}")
    _write_json(path, {
        "format": UNIGRAM_FORMAT, "version": VERSION,
        "pieces": [[s, _json_log_prob(lp)] for s, lp in zip(model.pieces, model.log_probs)],
        "boundary": model.boundary, "sep": model.sep, "max_pieces": model.max_pieces,
        "unk_log_prob": float(model.unk_log_prob)})


def load_unigram(path):
    """Read what :func:`save_unigram` wrote; every field checked (ValueError naming it)."""
    from spec.tokenize.swe import UnigramModel

    d = _read_json(path)
    where = _check_path(path)
    _expect(isinstance(d, dict), where, f"expected a JSON object, got {type(d).__name__}")
    keys = {"format", "version", "pieces", "boundary", "sep", "max_pieces", "unk_log_prob"}
    _expect(set(d) == keys, where, f"expected the keys {sorted(keys)}, got {sorted(d)}")
    _expect(d["format"] == UNIGRAM_FORMAT, where,
            f"format: expected {UNIGRAM_FORMAT!r}, got {d['format']!r}")
    _expect(d["version"] == VERSION and _is_int(d["version"]), where,
            f"version: expected {VERSION}, got {d['version']!r}")
    pieces = d["pieces"]
    _expect(isinstance(pieces, list), where, "pieces: expected a list")
    for i, p in enumerate(pieces):
        _expect(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and p[0]
                and (p[1] is None or (isinstance(p[1], (int, float)) and not isinstance(p[1], bool))),
                where, f"pieces[{i}]: expected [non-empty string, number or null], got {p!r}")
    _expect(len({p[0] for p in pieces}) == len(pieces), where, "pieces: duplicates")
    _expect(d["max_pieces"] is None or (_is_int(d["max_pieces"]) and d["max_pieces"] >= 1), where,
            f"max_pieces: expected null or an int >= 1, got {d['max_pieces']!r}")
    unk = d["unk_log_prob"]
    _expect(isinstance(unk, (int, float)) and not isinstance(unk, bool), where,
            f"unk_log_prob: expected a number, got {unk!r}")
    try:  # the model's own checks: boundary, sep, finite log-probabilities <= 0 ...
        return UnigramModel([p[0] for p in pieces],
                            [float("-inf") if p[1] is None else float(p[1]) for p in pieces],
                            boundary=d["boundary"], sep=d["sep"], max_pieces=d["max_pieces"],
                            unk_log_prob=float(unk))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
