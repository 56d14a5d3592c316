"""Byte-level BPE (Sennrich et al., 2016; GPT-2's byte-level form, Radford et al., 2019).

Every output-determining choice, in one place:

* **Bytes, not characters.** Text is turned into UTF-8 bytes with
  ``errors="surrogatepass"`` (so a lone surrogate such as U+D800 becomes the three bytes
  ED A0 80 instead of an error) and every one of the 256 byte values is a token from the
  start: nothing is ever unknown.
* **Ids.** 0..255 are the bytes in GPT-2's order (:data:`BYTE_OF_ID`: the order of
  ``bytes_to_unicode()``'s printable stand-ins by code point), id 256 + r is merge r,
  the special tokens follow the merges in the order given. A tokenizer imported from
  another tool may carry a different numbering (``ids``, see :class:`BPETokenizer`);
  the model is the same.
* **Pre-tokenization.** Text is cut at the special tokens, then each segment into
  pieces by :func:`spec.tokenize.pretokenize.pretokenize` (GPT-2's or GPT-4's rules);
  merges never cross a piece boundary.
* **Training** (:func:`train`, :func:`learn_merges`): pair counts count overlapping
  occurrences ((a, a, a) holds (a, a) twice); the most frequent pair wins, equal counts
  go to the smallest (left_id, right_id); a chosen pair is replaced in every word left to
  right, non-overlapping ((a, a, a) -> (aa, a)). This is HF tokenizers' BpeTrainer.
* **Encoding** (:meth:`BPETokenizer.encode`): within a piece, repeatedly merge the
  adjacent pair with the lowest merge rank (the leftmost one on ties). Special tokens are
  cut out first: leftmost match, the longest special first where several start at the
  same place.
* **Decoding** (:meth:`BPETokenizer.decode`): the tokens' bytes joined and decoded as
  UTF-8 with ``errors="surrogatepass"``, so ``decode(encode(s)) == s`` for every str;
  bytes that are not even that (possible only for id sequences ``encode`` never makes)
  become U+FFFD, one per maximal invalid subpart, as ``errors="replace"`` does.

File formats (our JSON, HF ``tokenizer.json``, tiktoken ranks) live in
:mod:`spec.tokenize.formats`.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Mapping
from itertools import pairwise

import numpy as np

from spec.tokenize.pretokenize import PATTERNS, pretokenize

# --------------------------------------------------------------- byte ids 0..255


def _gpt2_byte_order() -> tuple[int, ...]:
    """The 256 bytes in GPT-2's id order.

    GPT-2's ``bytes_to_unicode`` gives every byte a printable stand-in character: the
    printable Latin-1 bytes '!'..'~', '¡'..'¬', '®'..'ÿ' stand for themselves, and the
    other 68 bytes (controls, space, DEL, NBSP, soft hyphen), in byte order, get
    U+0100, U+0101, ... Sorting the stand-ins by code point gives the printable bytes
    first (ascending), then the others (ascending). That is the id order of GPT-2's
    vocabulary and of HF tokenizers' ``ByteLevel.alphabet()`` once its trainer sorts it.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in set(printable)]
    return tuple(printable + rest)


#: BYTE_OF_ID[i] is the byte value of token id i (0 <= i < 256).
BYTE_OF_ID: tuple[int, ...] = _gpt2_byte_order()
#: ID_OF_BYTE[b] is the token id of byte value b.
ID_OF_BYTE: tuple[int, ...] = tuple(sorted(range(256), key=BYTE_OF_ID.__getitem__))

# ----------------------------------------------------------- the pair histogram


def _check_word_counts(word_counts, first_id: int | None = None) -> None:
    if not isinstance(word_counts, Mapping):
        raise TypeError(f"word_counts: expected a Mapping[tuple[int, ...], int], "
                        f"got {type(word_counts).__name__}")
    for word, n in word_counts.items():
        if not isinstance(word, tuple):
            raise TypeError(f"word_counts: keys must be tuples of ints, got {type(word).__name__}")
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"word_counts: counts must be ints, got {type(n).__name__} for {word!r}")
        if n < 1:
            raise ValueError(f"word_counts: counts must be >= 1, got {n} for {word!r}")
        for s in word:
            if isinstance(s, bool) or not isinstance(s, int):
                raise TypeError(f"word_counts: symbols must be ints, got {type(s).__name__} in {word!r}")
            if s < 0 or (first_id is not None and s >= first_id):
                raise ValueError(f"word_counts: symbols must lie in [0, first_id={first_id}), "
                                 f"got {s} in {word!r}")


def pair_counts(word_counts: Mapping[tuple[int, ...], int]) -> dict[tuple[int, int], int]:
    """The histogram of adjacent symbol pairs, weighted by word count.

    Math
        count(x, y) = Σ_w  n(w) · #{i : w[i] = x and w[i+1] = y}
        Every adjacent position counts, overlapping ones included: the word (a, a, a)
        holds the pair (a, a) twice.

    Shapes
        word_counts: word (a tuple of int symbols) -> n(w) >= 1.
        Returns {(x, y): count} with only positive counts; insertion order is the order
        of first occurrence (words in the mapping's order, positions left to right).

    Numerics
        Exact Python integers.
    """
    _check_word_counts(word_counts)
    counts: dict[tuple[int, int], int] = {}
    for word, n in word_counts.items():
        for pair in pairwise(word):
            counts[pair] = counts.get(pair, 0) + n
    return counts


def flatten_word_counts(word_counts: Mapping[tuple[int, ...], int]) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """A word table as the flat arrays compiled code takes: (sym_P int32, offsets_W1
    int64, counts_W int64), in the mapping's order; word b is sym_P[offsets_W1[b]:
    offsets_W1[b + 1]] with count counts_W[b]. Checks as :func:`pair_counts`, plus the
    ranges the arrays hold (symbols < 2^31, counts < 2^63)."""
    _check_word_counts(word_counts)
    words = list(word_counts)
    offsets_W1 = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum([len(w) for w in words], out=offsets_W1[1:])
    flat = [s for w in words for s in w]
    if flat and max(flat) > np.iinfo(np.int32).max:
        raise ValueError(f"word_counts: symbols must be < 2^31, got {max(flat)}")
    counts = list(word_counts.values())
    if counts and max(counts) > np.iinfo(np.int64).max:
        raise ValueError(f"word_counts: counts must be < 2^63, got {max(counts)}")
    return (np.array(flat, dtype=np.int32), offsets_W1, np.array(counts, dtype=np.int64))


# --------------------------------------------------------------- merge learning


def merge_word(word: tuple[int, ...], pair: tuple[int, int], new_id: int) -> tuple[int, ...]:
    """Replace the occurrences of ``pair`` in ``word`` by ``new_id``, left to right,
    non-overlapping: (a, a, a) with pair (a, a) becomes (new, a)."""
    left, right = pair
    out: list[int] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == left and word[i + 1] == right:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def _check_progress(progress) -> None:
    if progress is not None and not callable(progress):
        raise TypeError(f"progress: expected a callable(done, total) or None, "
                        f"got {type(progress).__name__}")


def _check_vocab_size(vocab_size, specials: tuple[str, ...]) -> int:
    vocab_size = _check_count("vocab_size", vocab_size, 0)
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size: expected >= 256 + {len(specials)} special tokens = "
                         f"{256 + len(specials)}, got {vocab_size}")
    return vocab_size


def learn_merges(
    word_counts: Mapping[tuple[int, ...], int],
    num_merges: int,
    *,
    first_id: int = 256,
    min_frequency: int = 1,
    progress: Callable[[int, int], object] | None = None,
) -> list[tuple[int, int]]:
    """Learn up to ``num_merges`` BPE merges from a table of words and their counts.

    Math (Sennrich et al., 2016, Algorithm 1, with the tie-break made exact)
        Repeat for r = 0, 1, ...:
          1. count(x, y) as in :func:`pair_counts` over the current words
             (overlapping occurrences all count).
          2. Choose the pair with the largest count; among equal counts the smallest
             (x, y) tuple (compare x, then y). Stop when no pair is left, or when the
             largest count is below ``min_frequency``.
          3. merges[r] = (x, y); the new symbol's id is first_id + r.
          4. In every word replace the occurrences of (x, y) by the new id, left to
             right and non-overlapping ((a, a, a) -> (new, a)).
        With byte ids in GPT-2's order (:data:`BYTE_OF_ID`) this is exactly the choice
        sequence of HF tokenizers' BpeTrainer (its heap orders equal counts by the
        smaller pair of ids).

    Shapes
        word_counts: word (tuple of int symbols in [0, first_id)) -> count >= 1.
        Returns merges: list of (left_id, right_id), length <= num_merges.

    Numerics
        Exact integers. The counts are not recomputed from scratch per merge: only the
        words that contain the chosen pair are re-counted (their old pairs subtracted,
        their new pairs added), and the best pair is found with a heap whose stale
        entries are checked and refreshed when they reach the top. The result is the
        same as the full recount of step 1 (tests compare with a brute-force recount).
    """
    _check_count("first_id", first_id, 0)
    _check_word_counts(word_counts, first_id)
    num_merges = _check_count("num_merges", num_merges, 0)
    min_frequency = _check_count("min_frequency", min_frequency, 1)
    _check_progress(progress)

    words = [tuple(w) for w in word_counts]
    counts = list(word_counts.values())
    # count(x, y) and, for each pair, the words that (may) hold it. A word stays listed
    # after it loses the pair; merging it again is then a no-op (checked below).
    pair_count: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for w, (word, n) in enumerate(zip(words, counts)):
        for pair in pairwise(word):
            pair_count[pair] = pair_count.get(pair, 0) + n
            where.setdefault(pair, set()).add(w)
    # Max-heap by count, then smallest pair, as a min-heap on (-count, x, y). An entry
    # may be stale (its count larger than the pair's current one); every pair whose
    # count grew has been pushed with its new count, so the first entry popped whose
    # count is current is the true maximum.
    heap = [(-c, x, y) for (x, y), c in pair_count.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    while len(merges) < num_merges and heap:
        neg, x, y = heapq.heappop(heap)
        current = pair_count.get((x, y), 0)
        if -neg != current:  # stale: put it back with its current count (if any left)
            if current > 0:
                heapq.heappush(heap, (-current, x, y))
            continue
        if current < min_frequency:
            break
        new_id = first_id + len(merges)
        merges.append((x, y))
        # Re-count only the words holding (x, y): subtract their old pairs, add the new.
        delta: dict[tuple[int, int], int] = {}
        for w in sorted(where.pop((x, y))):
            old = words[w]
            new = merge_word(old, (x, y), new_id)
            if new == old:
                continue
            n = counts[w]
            for pair in pairwise(old):
                delta[pair] = delta.get(pair, 0) - n
            for pair in pairwise(new):
                delta[pair] = delta.get(pair, 0) + n
                where.setdefault(pair, set()).add(w)
            words[w] = new
        for pair, d in delta.items():
            c = pair_count.get(pair, 0) + d
            if c > 0:
                pair_count[pair] = c
            else:
                pair_count.pop(pair, None)
            if d > 0:  # grown (only pairs with the new id can): push the new count
                heapq.heappush(heap, (-c, *pair))
        if progress is not None and (len(merges) % 100 == 0 or len(merges) == num_merges):
            progress(len(merges), num_merges)
    return merges


# ------------------------------------------------------------------ the tokenizer


def _check_pattern(pattern) -> str:
    """The pre-tokenizer's name ("gpt2" or "gpt4") from its name or its expression."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern: expected a str (one of {sorted(PATTERNS)}), "
                        f"got {type(pattern).__name__}")
    for name, expr in PATTERNS.items():
        if pattern in (name, expr):
            return name
    raise ValueError(f"pattern: expected one of {sorted(PATTERNS)} or their expression "
                     f"strings, got {pattern!r}")


def _check_specials(special_tokens) -> tuple[str, ...]:
    if isinstance(special_tokens, str) or not isinstance(special_tokens, Iterable):
        raise TypeError(f"special_tokens: expected a sequence of str, "
                        f"got {type(special_tokens).__name__}")
    specials = tuple(special_tokens)
    for s in specials:
        if not isinstance(s, str):
            raise TypeError(f"special_tokens: expected str items, got {type(s).__name__}")
        if not s:
            raise ValueError("special_tokens: the empty string cannot be a special token")
    if len(set(specials)) != len(specials):
        dup = next(s for s in specials if specials.count(s) > 1)
        raise ValueError(f"special_tokens: duplicate special token {dup!r}")
    return specials


def _check_merges(merges) -> tuple[tuple[int, int], ...]:
    if isinstance(merges, (str, bytes)) or not isinstance(merges, Iterable):
        raise TypeError(f"merges: expected a sequence of (left_id, right_id) pairs, "
                        f"got {type(merges).__name__}")
    out = []
    for r, m in enumerate(merges):
        if not isinstance(m, (tuple, list)) or len(m) != 2:
            raise TypeError(f"merges[{r}]: expected a pair of ints, got {m!r}")
        for x in m:
            if isinstance(x, bool) or not isinstance(x, int):
                raise TypeError(f"merges[{r}]: expected a pair of ints, got {m!r}")
            # Only ids that exist before merge r: the bytes and merges 0..r-1.
            if not 0 <= x < 256 + r:
                raise ValueError(f"merges[{r}]: id {x} is not a byte or an earlier merge "
                                 f"(valid: 0..{256 + r - 1})")
        out.append((int(m[0]), int(m[1])))
    return tuple(out)


def split_specials(text: str, specials: Iterable[str]) -> list[tuple[str, bool]]:
    """Cut ``text`` at the special tokens: [(segment, is_special), ...] in order.

    At each position the leftmost occurrence of any special wins; where several start at
    the same position, the longest. Ordinary segments are non-empty; their concatenation
    with the specials is ``text``.

    One scan with Python's ``re``: it returns the leftmost match and, at that position,
    the first alternative that matches, so listing the specials longest first makes the
    longest win (linear in the text, however many specials it holds).
    """
    by_length = sorted(set(specials), key=lambda s: (-len(s), s))
    if not by_length:
        return [(text, False)] if text else []
    parts: list[tuple[str, bool]] = []
    start = 0  # beginning of the current ordinary segment
    for m in re.finditer("|".join(map(re.escape, by_length)), text):
        if m.start() > start:
            parts.append((text[start:m.start()], False))
        parts.append((m.group(), True))
        start = m.end()
    if start < len(text):
        parts.append((text[start:], False))
    return parts


def _decode_bytes(data: bytes) -> str:
    """UTF-8 with surrogatepass; each maximal invalid subpart becomes one U+FFFD."""
    out = []
    while True:
        try:
            out.append(data.decode("utf-8", "surrogatepass"))
            return "".join(out)
        except UnicodeDecodeError as e:
            out.append(data[:e.start].decode("utf-8", "surrogatepass"))
            out.append("\ufffd")
            data = data[e.end:]


class BPETokenizer:
    """A byte-level BPE tokenizer: an ordered merge list, special tokens, a pre-tokenizer.

    Math
        Token bytes: bytes(id) = BYTE_OF_ID[id] for id < 256;
        bytes(256 + r) = bytes(merges[r][0]) + bytes(merges[r][1]); a special token's bytes
        are its UTF-8 encoding. encode, per piece: start from the byte ids, then
        repeatedly take the adjacent pair with the lowest merge rank r and replace it by
        256 + r (the leftmost occurrence on ties). Replacing all occurrences of that pair
        at once, left to right and non-overlapping, is the same thing (a merge's parts
        are older merges, so the pairs it creates have higher ranks); that is what the
        code does.

    Shapes
        merges: sequence of (left_id, right_id), each id a byte or an earlier merge.
        special_tokens: distinct non-empty strs, ids after the merges in the order given.
        ids: optional external numbering: ids[i] is the id reported for canonical token
        i (0..255 bytes, 256 + r merges, then the specials); distinct ints >= 0. Used by
        the importers to reproduce another tool's ids (HF's trainer puts its special
        tokens first; tiktoken ranks may order the single bytes differently). Default:
        the canonical numbering. vocab_size = max(id) + 1 (an embedding table's rows).

    Numerics
        Exact. add_prefix_space=True (HF's ByteLevel option) prepends " " to each
        ordinary segment that does not start with one; decode keeps it, so the round
        trip decode(encode(s)) == s holds for add_prefix_space=False (the default).
    """

    def __init__(self, merges, *, special_tokens=(), pattern="gpt2",
                 add_prefix_space=False, ids=None):
        self.merges = _check_merges(merges)
        self.special_tokens = _check_specials(special_tokens)
        self.pattern = _check_pattern(pattern)
        if not isinstance(add_prefix_space, bool):
            raise TypeError(f"add_prefix_space: expected a bool, got {type(add_prefix_space).__name__}")
        self.add_prefix_space = add_prefix_space
        n = 256 + len(self.merges) + len(self.special_tokens)
        if ids is not None:
            ids = tuple(ids)
            if len(ids) != n:
                raise ValueError(f"ids: expected {n} ids (256 bytes + {len(self.merges)} merges"
                                 f" + {len(self.special_tokens)} specials), got {len(ids)}")
            for i in ids:
                if isinstance(i, bool) or not isinstance(i, int):
                    raise TypeError(f"ids: expected ints, got {type(i).__name__}")
                if i < 0:
                    raise ValueError(f"ids: expected ints >= 0, got {i}")
            if len(set(ids)) != n:
                raise ValueError("ids: the ids must be distinct")
            if ids == tuple(range(n)):
                ids = None
        self.ids = ids
        # Derived tables (a cache of the arguments, not state: nothing changes them).
        self._bytes = [bytes([b]) for b in BYTE_OF_ID]
        for left, right in self.merges:
            self._bytes.append(self._bytes[left] + self._bytes[right])
        self._bytes += [s.encode("utf-8") for s in self.special_tokens]
        self._rank = {pair: r for r, pair in enumerate(self.merges)}
        self._first_special = 256 + len(self.merges)
        self._canonical = None if ids is None else {e: i for i, e in enumerate(ids)}

    # -- sizes and tables

    @property
    def vocab_size(self) -> int:
        """Number of ids: 256 + len(merges) + len(special_tokens), or max(ids) + 1."""
        return len(self._bytes) if self.ids is None else max(self.ids) + 1

    @property
    def special_token_ids(self) -> dict[str, int]:
        """{special token: its id}."""
        return {s: self._external(self._first_special + k) for k, s in enumerate(self.special_tokens)}

    def _external(self, i: int) -> int:
        return i if self.ids is None else self.ids[i]

    def _internal(self, token_id) -> int:
        if isinstance(token_id, bool) or not isinstance(token_id, int):
            raise TypeError(f"ids: expected ints, got {type(token_id).__name__}")
        i = token_id if self._canonical is None else self._canonical.get(token_id, -1)
        if not 0 <= i < len(self._bytes):
            raise ValueError(f"ids: unknown token id {token_id} (vocab_size {self.vocab_size})")
        return i

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (a special token: its UTF-8 encoding)."""
        return self._bytes[self._internal(token_id)]

    # -- encode / decode

    def encode_piece(self, piece: str) -> list[int]:
        """The merged ids of one pre-token piece (no special tokens, no pre-tokenization),
        in the canonical numbering (bytes in GPT-2's order, 256 + r for merge r) whatever
        ``ids`` says: repeatedly merge the adjacent pair of the lowest merge rank."""
        word = tuple(ID_OF_BYTE[b] for b in piece.encode("utf-8", "surrogatepass"))
        while len(word) > 1:
            # the lowest-ranked merge among the adjacent pairs (none: done)
            ranks = [self._rank[p] for p in pairwise(word) if p in self._rank]
            if not ranks:
                break
            r = min(ranks)
            word = merge_word(word, self.merges[r], 256 + r)
        return list(word)

    def _allowed(self, allowed_special) -> frozenset[str]:
        if isinstance(allowed_special, str):
            if allowed_special == "all":
                return frozenset(self.special_tokens)
            if allowed_special == "none":
                return frozenset()
            raise ValueError(f"allowed_special: expected 'all', 'none' or a set of special "
                             f"tokens, got {allowed_special!r}")
        if not isinstance(allowed_special, (set, frozenset, list, tuple)):
            raise TypeError(f"allowed_special: expected 'all', 'none' or a set of str, "
                            f"got {type(allowed_special).__name__}")
        for s in allowed_special:
            if s not in self.special_tokens:
                raise ValueError(f"allowed_special: {s!r} is not a special token of this tokenizer")
        return frozenset(allowed_special)

    def encode(self, text: str, *, allowed_special="all") -> list[int]:
        """Token ids of ``text``.

        The allowed special tokens (``"all"``, ``"none"`` or a set of them) are cut out
        first (:func:`split_specials`) and become their ids; a special that is not allowed
        is encoded as ordinary text (tiktoken would raise instead). Each remaining segment
        is pre-tokenized and each piece merged independently (class docstring).
        """
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        allowed = self._allowed(allowed_special)
        special_id = {s: self._first_special + k for k, s in enumerate(self.special_tokens)}
        out: list[int] = []
        for segment, is_special in split_specials(text, allowed):
            if is_special:
                out.append(special_id[segment])
                continue
            if self.add_prefix_space and not segment.startswith(" "):
                segment = " " + segment
            for piece in pretokenize(segment, self.pattern):
                out.extend(self.encode_piece(piece))
        return [self._external(i) for i in out]

    def decode(self, ids) -> str:
        """The text of a sequence of ids (module docstring: surrogatepass, then U+FFFD)."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(f"ids: expected a sequence of int, got {type(ids).__name__}")
        return _decode_bytes(b"".join(self.token_bytes(int(i) if _is_np_int(i) else i)
                                      for i in ids))

    # -- files (spec.tokenize.formats)

    def save(self, path) -> None:
        """Write our own JSON format (:func:`spec.tokenize.formats.save`)."""
        from spec.tokenize import formats
        formats.save(self, path)

    @classmethod
    def load(cls, path) -> BPETokenizer:
        """Read our own JSON format, defensively (:func:`spec.tokenize.formats.load`)."""
        from spec.tokenize import formats
        return formats.load(path)

    def to_hf_json(self, path) -> None:
        """Write a Hugging Face ``tokenizer.json`` (ByteLevel BPE)."""
        from spec.tokenize import formats
        formats.to_hf_json(self, path)

    @classmethod
    def from_hf_json(cls, path) -> BPETokenizer:
        """Read a Hugging Face ``tokenizer.json`` (ByteLevel BPE), keeping HF's ids."""
        from spec.tokenize import formats
        return formats.from_hf_json(path)

    def to_tiktoken_ranks(self) -> dict[bytes, int]:
        """tiktoken's ``mergeable_ranks``: {token bytes: id} for bytes and merges."""
        from spec.tokenize import formats
        return formats.to_tiktoken_ranks(self)

    @classmethod
    def from_tiktoken_ranks(cls, ranks, pattern="gpt2", special_tokens=None) -> BPETokenizer:
        """From tiktoken's ``mergeable_ranks`` (:func:`spec.tokenize.formats.from_tiktoken_ranks`)."""
        from spec.tokenize import formats
        return formats.from_tiktoken_ranks(ranks, pattern, special_tokens=special_tokens)

    def __eq__(self, other) -> bool:
        if not isinstance(other, BPETokenizer):
            return NotImplemented
        return (self.merges, self.special_tokens, self.pattern, self.add_prefix_space,
                self.ids) == (other.merges, other.special_tokens, other.pattern,
                              other.add_prefix_space, other.ids)

    __hash__ = None

    def __repr__(self) -> str:
        return (f"BPETokenizer({len(self.merges)} merges, special_tokens={self.special_tokens!r},"
                f" pattern={self.pattern!r}, vocab_size={self.vocab_size})")


def _is_np_int(x) -> bool:
    # NumPy integer ids are accepted: ids often come as an array (the Numba encoder's)
    return isinstance(x, np.integer)


# ----------------------------------------------------------------------- training


def word_counts_of(texts, *, special_tokens=(), pattern="gpt2") -> dict[tuple[int, ...], int]:
    """Step 1 of :func:`train`: the table {word of byte ids: count}.

    Each text is cut at the special tokens (never counted), the rest pre-tokenized, and
    each piece's UTF-8 bytes (surrogatepass) mapped to ids with :data:`ID_OF_BYTE`.
    Keys are in order of first occurrence.
    """
    specials = _check_specials(special_tokens)
    pattern = _check_pattern(pattern)
    if isinstance(texts, str):
        texts = [texts]
    elif not isinstance(texts, Iterable):
        raise TypeError(f"texts: expected a str or an iterable of str, got {type(texts).__name__}")
    counts: dict[tuple[int, ...], int] = {}
    for t, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts: item {t} is a {type(text).__name__}, expected a str")
        for segment, is_special in split_specials(text, specials):
            if is_special:
                continue
            for piece in pretokenize(segment, pattern):
                word = tuple(ID_OF_BYTE[b] for b in piece.encode("utf-8", "surrogatepass"))
                counts[word] = counts.get(word, 0) + 1
    return counts


def train(texts, vocab_size: int, *, special_tokens=(), pattern="gpt2", min_frequency=1,
          progress=None) -> BPETokenizer:
    """Train a byte-level BPE tokenizer of ``vocab_size`` ids on ``texts``.

    Math
        word_counts = :func:`word_counts_of` (texts cut at the specials, pre-tokenized,
        bytes in GPT-2's id order); merges = :func:`learn_merges` (word_counts,
        vocab_size - 256 - len(special_tokens)). Equal to HF tokenizers' BpeTrainer with
        the ByteLevel pre-tokenizer (add_prefix_space=False, use_regex=True), its
        ByteLevel alphabet as initial alphabet, no normalizer (test_bpe_interop.py
        proves it on the standard library's sources).

    Shapes
        texts: a str or an iterable of str. Returns a :class:`BPETokenizer` with
        vocab_size ids, or fewer when the words run out of pairs (or of pairs as
        frequent as min_frequency) first.

    Numerics
        Exact; deterministic (no dependence on hashing or iteration order: ties are
        broken by id).
    """
    specials = _check_specials(special_tokens)
    vocab_size = _check_vocab_size(vocab_size, specials)
    word_counts = word_counts_of(texts, special_tokens=specials, pattern=pattern)
    merges = learn_merges(word_counts, vocab_size - 256 - len(specials),
                          min_frequency=min_frequency, progress=progress)
    return BPETokenizer(merges, special_tokens=specials, pattern=pattern)
