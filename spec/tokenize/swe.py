"""Likelihood-optimal sub-word encoding (SWE) and the unigram language model over pieces.

A unigram model gives every piece s of a vocabulary V a probability p(s); a word w is
segmented into the pieces s_1 .. s_h (w = s_1 + .. + s_h) that maximise
P(w) = prod_t p(s_t). Seen as a graph, the positions 0..n of the word's n code points
are nodes, every piece w[i:j] in V is an edge i -> j of weight -log p(w[i:j]), and the
best segmentation is the shortest path 0 -> n (a DAG, so one Viterbi / Bellman-Ford
sweep in position order is exact). "k-step" segmentation (the paper's "k-step shortest
path", shared/papers/notes.md section 1.3) bounds the number of edges: the
k-hop-constrained shortest path, a DP over (hops, position).

Fixed details (every segmenter follows them: this spec, backends/cpu/tokenize/swe.py, the CUDA
kernel):

* **Unconstrained Viterbi** (``max_pieces=None``; sentencepiece's rule):
  best[0] = 0; best[j] = max over i < j with w[i:j] a piece of best[i] + lp(w[i:j]),
  summed in float64; i is scanned in ascending order and a candidate replaces the held
  one only when none is held yet or it is strictly greater, so ties keep the smallest i
  (the longest last piece). Back-pointers give the pieces.
* **k-hop Viterbi** (``max_pieces=k``): best[h][j] the same over paths of exactly h
  pieces (ties: smallest i); the answer is the h in 1..k with the largest best[h][n],
  ties to the smallest h (fewest pieces). When no segmentation into at most k pieces
  exists the result is ``([], -inf)`` (ids: an empty list).
* **Unknown characters.** A code point c at position i such that the single character
  c is not a piece gets an extra edge i -> i+1 with log-probability ``unk_log_prob``
  (default: min over the finite log-probabilities, minus 10, sentencepiece's
  ``kUnkPenalty``); it is emitted as the character itself by :func:`viterbi` and as
  ``PieceTrie.unk_id`` by :func:`viterbi_ids`. The edge exists even when longer
  pieces start at i (as in sentencepiece).
* **Scores.** log-probabilities may be -inf (a piece of count 0); such an edge is still
  taken when it is the first candidate of its end position (a held candidate is
  "unset", not "-inf"), so every word with a path gets a segmentation. NaN and +inf are
  rejected.

The compiled segmenters look pieces up in a flat trie over code points (:class:`PieceTrie`,
built by :func:`piece_trie`): node 0 is the root; the edges of node n are
``first_edge_N1[n] .. first_edge_N1[n+1]`` with their characters ascending (binary
search), ``node_piece_N[n]`` is the id of the piece spelled by the path to n or -1.
Walking the trie from position i enumerates the pieces w[i:j] in ascending j, so a
compiled "push" sweep (for i ascending, for every piece starting at i, relax j) visits
the candidates of each j in ascending i, as the rule above demands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

UNK_PENALTY = 10.0
"""sentencepiece's ``kUnkPenalty``: an unknown character costs min(log p) - 10."""

# ------------------------------------------------------------------- the piece trie


class PieceTrie(NamedTuple):
    """A vocabulary as a flat trie over code points (nodes 0..N-1, node 0 = root).

    Shapes: ``first_edge_N1`` int64[N+1]; ``edge_char``, ``edge_node`` int32[edges];
    ``node_piece_N`` int32[N]; ``log_prob_V`` float64[V].
    Nodes are numbered breadth-first, children in ascending character order, so the
    children of one node are consecutive nodes and ``edge_node`` is increasing.
    """

    first_edge_N1: np.ndarray
    edge_char: np.ndarray
    edge_node: np.ndarray
    node_piece_N: np.ndarray
    log_prob_V: np.ndarray
    max_len: int
    unk_id: int
    """The id emitted for an uncovered character (-1 when the vocabulary has no
    unknown piece; the compiled segmenters then still emit -1)."""
    unk_log_prob: float
    """The log-probability of an uncovered character's edge."""


def _check_log_prob(name: str, value) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected real log-probabilities, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or value == math.inf:
        raise ValueError(f"{name}: expected log-probabilities in [-inf, inf), got {value}")
    return value


def default_unk_log_prob(log_probs) -> float:
    """min over the finite log-probabilities - UNK_PENALTY (0 - 10 for an empty or
    all -inf vocabulary)."""
    finite = [float(x) for x in log_probs if math.isfinite(float(x))]
    return (min(finite) if finite else 0.0) - UNK_PENALTY


def piece_trie(pieces: Sequence[str], log_probs, *, unk_id: int = -1,
               unk_log_prob: float | None = None) -> PieceTrie:
    """Build the flat trie of ``pieces`` (piece id = position in ``pieces``).

    Math: node_piece[node(s)] = id(s) for every piece s; log_prob_V[id] = log p(s).
    Shapes: pieces: V distinct non-empty strings; log_probs: V reals.
    Numerics: log-probabilities are stored as float64; ``unk_log_prob`` defaults to
    :func:`default_unk_log_prob`.
    """
    if isinstance(pieces, str) or not isinstance(pieces, Sequence):
        raise TypeError(f"pieces: expected a sequence of str, got {type(pieces).__name__}")
    lp = [_check_log_prob("log_probs", x) for x in log_probs]
    if len(lp) != len(pieces):
        raise ValueError(f"log_probs: expected {len(pieces)} values (one per piece), got {len(lp)}")
    children: list[dict[int, int]] = [{}]  # insertion trie, renumbered below
    piece_at: list[int] = [-1]
    for pid, s in enumerate(pieces):
        if not isinstance(s, str):
            raise TypeError(f"pieces[{pid}]: expected str, got {type(s).__name__}")
        if not s:
            raise ValueError(f"pieces[{pid}]: the empty string is not a piece")
        node = 0
        for ch in s:
            c = ord(ch)
            nxt = children[node].get(c)
            if nxt is None:
                nxt = len(children)
                children[node][c] = nxt
                children.append({})
                piece_at.append(-1)
            node = nxt
        if piece_at[node] != -1:
            raise ValueError(f"pieces[{pid}]: {s!r} repeats pieces[{piece_at[node]}]")
        piece_at[node] = pid
    # breadth-first renumbering, children by ascending code point
    order = [0]
    first_edge = [0]
    edge_char: list[int] = []
    edge_old: list[int] = []
    for old in order:  # `order` grows while we walk it
        for c in sorted(children[old]):
            edge_char.append(c)
            edge_old.append(children[old][c])
            order.append(children[old][c])
        first_edge.append(len(edge_char))
    new_of_old = {old: new for new, old in enumerate(order)}
    max_len = max((len(s) for s in pieces), default=0)
    if unk_log_prob is None:
        unk_log_prob = default_unk_log_prob(lp)
    return PieceTrie(
        first_edge_N1=np.asarray(first_edge, dtype=np.int64),
        edge_char=np.asarray(edge_char, dtype=np.int32),
        edge_node=np.asarray([new_of_old[o] for o in edge_old], dtype=np.int32),
        node_piece_N=np.asarray([piece_at[o] for o in order], dtype=np.int32),
        log_prob_V=np.asarray(lp, dtype=np.float64),
        max_len=int(max_len),
        unk_id=int(unk_id),
        unk_log_prob=_check_log_prob("unk_log_prob", unk_log_prob),
    )


def trie_child(trie: PieceTrie, node: int, c: int) -> int:
    """The child of ``node`` along code point ``c``, or -1 (binary search)."""
    lo, hi = int(trie.first_edge_N1[node]), int(trie.first_edge_N1[node + 1])
    while lo < hi:
        mid = (lo + hi) // 2
        if trie.edge_char[mid] < c:
            lo = mid + 1
        else:
            hi = mid
    if lo < int(trie.first_edge_N1[node + 1]) and trie.edge_char[lo] == c:
        return int(trie.edge_node[lo])
    return -1


# ------------------------------------------------------------------- Viterbi


def lattice(word: str, log_prob: Mapping[str, float], unk_log_prob: float, max_len: int):
    """The word's segmentation DAG: edges[j] = [(i, piece, log p)] for every piece
    w[i:j] of at most ``max_len`` characters, plus the unknown-character edge i -> i+1
    where the single character is not a piece (module docstring), i ascending."""
    n = len(word)
    edges: list[list[tuple[int, str, float]]] = [[] for _ in range(n + 1)]
    for i in range(n):
        for j in range(i + 1, min(n, i + max_len) + 1):
            s = word[i:j]
            if s in log_prob:
                edges[j].append((i, s, float(log_prob[s])))
            elif j == i + 1:  # an uncovered character
                edges[j].append((i, s, unk_log_prob))
    return edges


def viterbi(word: str, log_prob: Mapping[str, float], max_pieces: int | None = None, *,
            unk_log_prob: float | None = None) -> tuple[list[str], float]:
    """The most probable segmentation of ``word`` into pieces, and its log-probability.

    Math: argmax over segmentations w = s_1 .. s_h (h <= max_pieces when given) of
    sum_t log p(s_t): the shortest path 0 -> n in the DAG of pieces with weights
    -log p (Viterbi; with ``max_pieces`` the k-hop-constrained DP best[h][j]).
    Shapes: word: n code points; the result's pieces concatenate to ``word``.
    Numerics: sums in float64, left to right along the path. Ties: see the module
    docstring (smallest i at every position; fewest pieces among equal totals with
    ``max_pieces``). Uncovered characters are pieces of log-probability
    ``unk_log_prob`` (default min(log p) - 10). ``([], 0.0)`` for the empty word;
    ``([], -inf)`` when no segmentation into at most ``max_pieces`` pieces exists.
    """
    if not isinstance(word, str):
        raise TypeError(f"word: expected str, got {type(word).__name__}")
    if not isinstance(log_prob, Mapping):
        raise TypeError(f"log_prob: expected a mapping piece -> log p, got {type(log_prob).__name__}")
    k = check_max_pieces(max_pieces)
    if unk_log_prob is None:
        unk_log_prob = default_unk_log_prob(log_prob.values())
    max_len = max((len(s) for s in log_prob), default=1)
    edges = lattice(word, log_prob, float(unk_log_prob), max(max_len, 1))
    return best_path(edges, len(word), k)


def viterbi_ids(word_cps: Sequence[int], trie: PieceTrie,
                max_pieces: int | None = None) -> tuple[list[int], float]:
    """:func:`viterbi` over a :class:`PieceTrie`: piece ids (``trie.unk_id`` for an
    uncovered character) and the log-probability, for a word given as code points.

    The lattice comes from walking the trie from every start i, as the compiled
    segmenters do (a "push" sweep: for i ascending, every piece w[i:j] found relaxes j),
    so each end j receives its candidates in ascending i: the same edges, in the same
    order, as :func:`lattice` builds from a dict, hence the same ties.
    """
    cps = [int(c) for c in word_cps]
    n = len(cps)
    k = check_max_pieces(max_pieces)
    edges: list[list[tuple[int, int, float]]] = [[] for _ in range(n + 1)]
    for i in range(n):
        node = 0
        covered = False
        for j in range(i + 1, min(n, i + trie.max_len) + 1):
            node = trie_child(trie, node, cps[j - 1])
            if node < 0:
                break
            pid = int(trie.node_piece_N[node])
            if pid >= 0:
                edges[j].append((i, pid, float(trie.log_prob_V[pid])))
                covered = covered or j == i + 1
        if not covered:  # an uncovered character
            edges[i + 1].append((i, trie.unk_id, trie.unk_log_prob))
    return best_path(edges, n, k)


class Segmentation(NamedTuple):
    """The best segmentations of a batch of words (:func:`segment_batch`)."""

    score_W: np.ndarray
    """float64 (W,): each word's log-probability (0.0 for the empty word, -inf where no
    segmentation into at most max_pieces pieces exists)."""
    n_pieces_W: np.ndarray
    """int32 (W,): the number of pieces h_w (0 for the empty word and for -inf above)."""
    pieces_P: np.ndarray
    """int32 (P,): word w's piece ids in order at ``pieces_P[offsets_W1[w]:][:h_w]`` (a
    word of n code points has at most n pieces); the slots after them are unspecified."""

    def per_word(self, offsets_W1: np.ndarray) -> list[tuple[list[int], float]]:
        """Per word (piece ids, score): :func:`viterbi_ids`'s result, word by word (the
        arrays must be NumPy arrays)."""
        n = self.n_pieces_W
        return [(self.pieces_P[offsets_W1[w]:offsets_W1[w] + n[w]].tolist(), float(self.score_W[w]))
                for w in range(n.size)]


def check_words(cps_P, offsets_W1) -> None:
    """Checks of a flat batch of words (:func:`flatten_words`): ``cps_P`` a 1-D int32
    NumPy array of code points (0..0x10FFFF), ``offsets_W1`` 1-D int64 from 0 to P,
    non-decreasing."""
    for name, x, dtype in (("cps_P", cps_P, np.int32), ("offsets_W1", offsets_W1, np.int64)):
        if not isinstance(x, np.ndarray) or x.dtype != dtype or x.ndim != 1:
            got = f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise TypeError(f"{name}: expected a 1-D {np.dtype(dtype)} NumPy array, got {got}")
    if offsets_W1.size < 1 or offsets_W1[0] != 0 or offsets_W1[-1] != cps_P.size or np.any(np.diff(offsets_W1) < 0):
        raise ValueError(f"offsets_W1: expected non-decreasing offsets from 0 to len(cps_P) = {cps_P.size}, "
                         f"got {offsets_W1[:3].tolist()}...{offsets_W1[-3:].tolist()}")
    if cps_P.size and (cps_P.min() < 0 or cps_P.max() > 0x10FFFF):
        raise ValueError("cps_P: expected code points in [0, 0x10FFFF]")


def segment_batch(cps_P: np.ndarray, offsets_W1: np.ndarray, trie: PieceTrie,
                  max_pieces: int | None = None) -> Segmentation:
    """:func:`viterbi_ids` of every word of a flat batch (:func:`flatten_words`): the
    form the compiled segmenters (Numba, CUDA) take and return.

    Shapes: cps_P int32 (P,), offsets_W1 int64 (W + 1,); returns :class:`Segmentation`
    (here the unused slots of ``pieces_P`` are -1).
    Numerics: as :func:`viterbi_ids`, word by word.
    """
    check_words(cps_P, offsets_W1)
    if not isinstance(trie, PieceTrie):
        raise TypeError(f"trie: expected a PieceTrie, got {type(trie).__name__}")
    W = offsets_W1.size - 1
    score_W = np.zeros(W, dtype=np.float64)
    n_pieces_W = np.zeros(W, dtype=np.int32)
    pieces_P = np.full(cps_P.size, -1, dtype=np.int32)
    for w in range(W):
        lo, hi = int(offsets_W1[w]), int(offsets_W1[w + 1])
        ids, score_W[w] = viterbi_ids(cps_P[lo:hi], trie, max_pieces)
        n_pieces_W[w] = len(ids)
        pieces_P[lo:lo + len(ids)] = ids
    return Segmentation(score_W, n_pieces_W, pieces_P)


def check_max_pieces(max_pieces) -> int | None:
    """``max_pieces`` checked: None (unconstrained Viterbi) or an int k >= 1 (k-hop)."""
    if max_pieces is None:
        return None
    if isinstance(max_pieces, (bool, np.bool_)) or not isinstance(max_pieces, (int, np.integer)):
        raise TypeError(f"max_pieces: expected None or a positive int, got {type(max_pieces).__name__}")
    if max_pieces < 1:
        raise ValueError(f"max_pieces: expected None or a positive int, got {max_pieces}")
    return int(max_pieces)


# ------------------------------------------------------------------- words

MARKER = "\u2581"
"""The word-boundary marker "▁" (U+2581): the paper's end-of-word symbol (appended,
``boundary="end"``, the default) or sentencepiece's word-start symbol (prepended,
``boundary="start"``). One code point, so compiled code sees words as code points."""

BOUNDARIES = ("end", "start")
UNK_TEXT = "\u2047"
"""What :meth:`UnigramModel.decode` writes for the unknown id (sentencepiece's " ⁇ "
without its spaces)."""


def _check_boundary(boundary) -> str:
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary: expected one of {BOUNDARIES}, got {boundary!r}")
    return boundary


def _check_sep(sep):
    if sep is not None and sep != " ":
        raise ValueError(f"sep: expected None (any whitespace) or ' ' (spaces only), got {sep!r}")
    return sep


def split_words(text: str, *, boundary: str = "end", sep: str | None = None) -> list[str]:
    """Split ``text`` into word units carrying the boundary marker.

    Math: the words are ``text.split(sep)`` without empty strings (``sep=None``: runs of
    any Unicode whitespace, Python's definition; ``sep=" "``: runs of U+0020 only, as
    sentencepiece's ``remove_extra_whitespaces`` with the identity normaliser, where
    tabs and newlines are ordinary characters). Each word gets :data:`MARKER` appended
    (``boundary="end"``) or prepended (``boundary="start"``, sentencepiece's dummy
    prefix plus escaped spaces: "▁a▁b" is the words "▁a", "▁b").
    Numerics: whitespace is normalised away: decoding gives ``" ".join(words)``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    _check_boundary(boundary)
    _check_sep(sep)
    words = [w for w in text.split(sep) if w]
    if boundary == "end":
        return [w + MARKER for w in words]
    return [MARKER + w for w in words]


def count_words(texts, *, boundary: str = "end", sep: str | None = None) -> dict[str, int]:
    """word unit -> number of occurrences over ``texts`` (a str or an iterable of str),
    in order of first occurrence."""
    if isinstance(texts, str):
        texts = [texts]
    counts: dict[str, int] = {}
    for t in texts:
        for w in split_words(t, boundary=boundary, sep=sep):
            counts[w] = counts.get(w, 0) + 1
    return counts


def flatten_words(words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Words as the flat arrays the compiled segmenters take: (cps int32[total code
    points], offsets int64[len(words) + 1]); word b is cps[offsets[b]:offsets[b+1]]."""
    if isinstance(words, str) or not isinstance(words, Sequence):
        raise TypeError(f"words: expected a sequence of str, got {type(words).__name__}")
    for w in words:
        if not isinstance(w, str):
            raise TypeError(f"words: expected str items, got {type(w).__name__}")
    offsets = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum([len(w) for w in words], out=offsets[1:])
    joined = "".join(words)
    cps = np.frombuffer(joined.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    return cps.astype(np.int32), offsets


# ------------------------------------------------------------------- the model


def _xlogx(x: float) -> float:
    return x * math.log(x) if x > 0 else 0.0


def corpus_log_likelihood(piece_counts: Sequence[int | float]) -> float:
    """LL of a corpus under the unigram MLE of its own segmentation counts.

    Math: LL = sum_s c(s) log(c(s) / N) = sum_s c log c - N log N, N = sum_s c(s)
    (0 log 0 = 0). This is sum_w count(w) log P(w) when every word is segmented as
    counted and p(s) = c(s)/N; it is how BPE's and SWE's likelihoods are compared.
    Numerics: float64, summed in the given order, then - N log N.
    """
    total = 0.0
    n = 0.0
    for c in piece_counts:
        total += _xlogx(float(c))
        n += float(c)
    return total - _xlogx(n)


class UnigramModel:
    """A unigram language model over pieces, and the segmenter it defines.

    ``pieces[i]`` has id i and log-probability ``log_probs[i]``; the unknown id is
    ``len(pieces)`` (:attr:`unk_id`) with log-probability ``unk_log_prob`` (default
    min(log_probs) - 10). ``boundary``/``sep`` say how text becomes words
    (:func:`split_words`); ``max_pieces`` bounds the pieces per word (k-hop Viterbi;
    a word with no such segmentation raises ValueError in :meth:`segment`).

    Round trip: ``decode(encode(s)) == " ".join(s.split(sep))`` (whitespace runs become
    one space, no leading/trailing space) whenever every character of s is a piece or
    lies inside one; an uncovered character decodes as :data:`UNK_TEXT`. The marker
    character inside the input text is not escaped (as in sentencepiece): it decodes
    as a space.
    """

    def __init__(self, pieces: Sequence[str], log_probs: Sequence[float], *,
                 boundary: str = "end", sep: str | None = None,
                 max_pieces: int | None = None, unk_log_prob: float | None = None):
        self.pieces = tuple(pieces)
        self.log_probs = tuple(_check_log_prob("log_probs", x) for x in log_probs)
        self.boundary = _check_boundary(boundary)
        self.sep = _check_sep(sep)
        self.max_pieces = check_max_pieces(max_pieces)
        self.trie = piece_trie(self.pieces, self.log_probs, unk_id=len(self.pieces),
                               unk_log_prob=unk_log_prob)
        self.unk_log_prob = self.trie.unk_log_prob
        self.unk_id = len(self.pieces)
        self.log_prob = dict(zip(self.pieces, self.log_probs))
        self.id_of = {s: i for i, s in enumerate(self.pieces)}

    @classmethod
    def from_pieces(cls, pieces_with_log_probs, **kwargs) -> UnigramModel:
        """A model from (piece, log p) pairs in id order (e.g. a sentencepiece model's
        normal pieces and scores, with ``boundary="start", sep=" "``)."""
        pairs = [(s, lp) for s, lp in pieces_with_log_probs]
        return cls([s for s, _ in pairs], [lp for _, lp in pairs], **kwargs)

    @classmethod
    def from_sentencepiece(cls, processor, **kwargs) -> UnigramModel:
        """A model from a loaded sentencepiece unigram model (a ``SentencePieceProcessor``,
        used through its methods only: this module does not import sentencepiece): its
        normal pieces and scores in id order (control and unknown pieces left out; the
        unknown character is ours, scored as sentencepiece does), words split at spaces
        with the "▁" word-start marker. This mirrors sentencepiece's segmentation for a
        model trained with ``normalization_rule_name="identity"`` and no byte fallback,
        on text without runs of spaces (sentencepiece's ``remove_extra_whitespaces``):
        tests/spec/test_swe_sentencepiece.py shows it and the tie cases."""
        normal = [i for i in range(processor.get_piece_size())
                  if not (processor.is_control(i) or processor.is_unknown(i))]
        options = {"boundary": "start", "sep": " ", **kwargs}
        return cls.from_pieces(((processor.id_to_piece(i), processor.get_score(i)) for i in normal),
                               **options)

    @property
    def vocab_size(self) -> int:
        """Number of ids: the pieces plus the unknown id."""
        return len(self.pieces) + 1

    def words(self, text: str) -> list[str]:
        return split_words(text, boundary=self.boundary, sep=self.sep)

    def segment_word(self, word: str) -> tuple[list[str], float]:
        pieces, score = viterbi(word, self.log_prob, self.max_pieces, unk_log_prob=self.unk_log_prob)
        if word and not pieces:
            raise ValueError(f"text: the word {word!r} has no segmentation into at most "
                             f"max_pieces={self.max_pieces} pieces")
        return pieces, score

    def segment(self, text: str) -> list[str]:
        """The pieces of ``text``: words by :func:`split_words`, each by :func:`viterbi`
        (an uncovered character is its own piece)."""
        return [s for w in self.words(text) for s in self.segment_word(w)[0]]

    def log_likelihood(self, text: str) -> float:
        """sum over words of the best segmentation's log-probability (float64, in order)."""
        total = 0.0
        for w in self.words(text):
            total += self.segment_word(w)[1]
        return total

    def encode(self, text: str) -> list[int]:
        return [self.id_of.get(s, self.unk_id) for s in self.segment(text)]

    def save(self, path) -> None:
        """Write our JSON format (:func:`spec.tokenize.formats.save_unigram`)."""
        from spec.tokenize import formats
        formats.save_unigram(self, path)

    @classmethod
    def load(cls, path) -> UnigramModel:
        """Read our JSON format, defensively (:func:`spec.tokenize.formats.load_unigram`)."""
        from spec.tokenize import formats
        return formats.load_unigram(path)

    def decode(self, ids) -> str:
        parts = []
        for i in ids:
            if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
                raise TypeError(f"ids: expected ints, got {type(i).__name__}")
            if not 0 <= i <= self.unk_id:
                raise ValueError(f"ids: expected ids in [0, {self.unk_id}], got {i}")
            parts.append(self.pieces[i] if i < self.unk_id else UNK_TEXT)
        text = "".join(parts).replace(MARKER, " ")
        return text[:-1] if self.boundary == "end" and text.endswith(" ") else (
            text[1:] if self.boundary == "start" and text.startswith(" ") else text)


# ------------------------------------------------------------------- training

METHODS = ("grow", "prune")


class TrainStep(NamedTuple):
    """One step of "grow": the piece added (its id is its index), the pair it merges,
    how many occurrences were merged, the exact gain and the LL after re-estimation."""

    piece: str
    left: int
    right: int
    merged: int
    gain: float
    log_likelihood: float


def merge_gain(c_left: int, c_right: int, merged: int, total: int, same: bool) -> float:
    """The exact change of LL = sum_s c log c - N log N when ``merged`` occurrences of
    the adjacent pair (left, right) become one new piece.

    Math: c_l -= m, c_r -= m (c_l -= 2m when left == right), c_new = m, N -= m:
      gain = [f(c_l - m) - f(c_l)] + [f(c_r - m) - f(c_r)] + f(m) + [f(N) - f(N - m)]
    (same pieces: [f(c_l - 2m) - f(c_l)] + f(m) + [f(N) - f(N - m)]), f(x) = x log x.
    Numerics: float64, evaluated left to right as written (the compiled trainer uses
    the same expression, so equal gains compare equal).
    """
    if same:
        g = _xlogx(c_left - 2 * merged) - _xlogx(c_left)
    else:
        g = _xlogx(c_left - merged) - _xlogx(c_left)
        g = g + (_xlogx(c_right - merged) - _xlogx(c_right))
    g = g + _xlogx(merged)
    return g + (_xlogx(total) - _xlogx(total - merged))


def _merge_counts(seg: list[int], n: int, m: dict[tuple[int, int], int]) -> None:
    """Add n x (left-to-right non-overlapping occurrences of each adjacent pair) to m."""
    prev_counted = False
    for t in range(len(seg) - 1):
        a, b = seg[t], seg[t + 1]
        if a == b and prev_counted and seg[t - 1] == a:
            prev_counted = False  # "aaa": the second (a, a) overlaps the first
            continue
        m[(a, b)] = m.get((a, b), 0) + n
        prev_counted = True


def _merge_seg(seg: list[int], a: int, b: int, new: int) -> list[int]:
    out = []
    t = 0
    while t < len(seg):
        if t + 1 < len(seg) and seg[t] == a and seg[t + 1] == b:
            out.append(new)
            t += 2
        else:
            out.append(seg[t])
            t += 1
    return out


def _log_probs_from_counts(counts: Sequence[int]) -> list[float]:
    """log(c / N) per piece, -inf for a count of 0 (float64, c / N rounded once)."""
    n = sum(counts)
    return [math.log(c / n) if c > 0 else -math.inf for c in counts]


def best_path(edges, n: int, k: int | None) -> tuple[list[str], float]:
    """The Viterbi sweeps of :func:`viterbi` (both rules, module docstring) over a
    :func:`lattice` of a word of n characters: (the pieces of the best path, as the
    edges name them (strings, or ids in :func:`viterbi_ids`), its score)."""
    if n == 0:
        return [], 0.0
    if k is None:
        best: list[float | None] = [None] * (n + 1)
        back: list = [None] * (n + 1)
        best[0] = 0.0
        for j in range(1, n + 1):
            for i, s, lp in edges[j]:
                if best[i] is None:
                    continue
                cand = best[i] + lp
                if best[j] is None or cand > best[j]:
                    best[j], back[j] = cand, (i, s)
        pieces: list[str] = []
        j = n
        while j > 0:
            i, s = back[j]
            pieces.append(s)
            j = i
        return pieces[::-1], best[n]
    bestk = [[None] * (n + 1) for _ in range(k + 1)]
    backk: list = [[None] * (n + 1) for _ in range(k + 1)]
    bestk[0][0] = 0.0
    for h in range(1, k + 1):
        prev, cur = bestk[h - 1], bestk[h]
        for j in range(1, n + 1):
            for i, s, lp in edges[j]:
                if prev[i] is None:
                    continue
                cand = prev[i] + lp
                if cur[j] is None or cand > cur[j]:
                    cur[j], backk[h][j] = cand, (i, s)
    h_best = None
    for h in range(1, k + 1):
        if bestk[h][n] is not None and (h_best is None or bestk[h][n] > bestk[h_best][n]):
            h_best = h
    if h_best is None:
        return [], -math.inf
    pieces = []
    j, h = n, h_best
    while h > 0:
        i, s = backk[h][j]
        pieces.append(s)
        j, h = i, h - 1
    return pieces[::-1], bestk[h_best][n]


def _check_train_args(vocab_size, method, progress):
    if isinstance(vocab_size, (bool, np.bool_)) or not isinstance(vocab_size, (int, np.integer)):
        raise TypeError(f"vocab_size: expected an int, got {type(vocab_size).__name__}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress: expected a callable(done, total) or None, got {type(progress).__name__}")


def check_corpus(word_counts: Mapping[str, int], name: str = "word_counts") -> None:
    """ValueError naming ``name`` for a corpus without words (an empty or whitespace-only
    text): there is nothing to estimate a unigram model from."""
    if not word_counts:
        raise ValueError(f"{name}: no words to train on (empty, or only whitespace)")


def grown_log_probs(counts: Sequence[int]) -> list[float]:
    """The final log-probabilities of a "grow" vocabulary: log(c/N) of the final
    segmentation counts, and log(0.5/N), half a count, for a piece whose count is 0 (a
    character or piece merged away everywhere), so held-out text can still use it."""
    n = sum(counts)
    return [math.log((c if c > 0 else 0.5) / n) for c in counts]


def initial_pieces(word_counts: Mapping[str, int]) -> list[str]:
    """The BPE-like initial vocabulary: every character of the words (the marker
    included), in ascending code point order (ids 0..)."""
    return sorted({ch for w in word_counts for ch in w})


def grow(word_counts: Mapping[str, int], vocab_size: int, *, progress=None) -> tuple[
        list[str], list[int], list[TrainStep]]:
    """SWE vocabulary growth (the paper's reading, shared/papers/notes.md section 1.3).

    Math
      Init: V = all characters (with the boundary marker); every word segmented into
      characters; c(s) = sum_w count(w) x (occurrences of s in seg(w)); N = sum_s c(s);
      LL = sum_s c(s) log(c(s)/N) = sum_w count(w) log P(seg(w)) with p = c/N.
      While |V| < vocab_size:
        1. Candidates: adjacent piece pairs (a, b) of the current segmentations whose
           string a + b is not yet a piece. m(a, b) = sum_w count(w) x occurrences
           replaced by a left-to-right non-overlapping merge (as in BPE: "aaa" -> "aa" "a").
        2. Pick the candidate with the largest exact gain :func:`merge_gain`: the change
           of LL when those m occurrences become the new piece a + b in the current
           segmentation, with p re-estimated as the MLE of the new counts (exact for
           that segmentation). Ties: the smallest (id(a), id(b)).
        3. Add a + b (next id), merge it into every word holding the pair, set
           p = c/N of the merged counts, and re-segment those words (only those) by
           :func:`viterbi` under that p (hard EM, one pass); c and N follow the new
           segmentations. LL never decreases in step 3 (each re-segmented word's
           probability under p cannot drop; the MLE of the new counts is at least p).
      Stops early when no candidate is left.
    Shapes: word_counts: word unit (with marker) -> count >= 1.
      Returns (pieces, counts c(s) of the final segmentation, steps).
    Numerics: integer counts; gains and log-probabilities in float64 (log(c / N),
      -inf for c = 0). Viterbi ties as in the module docstring.
    """
    check_corpus(word_counts)
    words = list(word_counts)
    wcount = [int(word_counts[w]) for w in words]
    pieces = initial_pieces(word_counts)
    pid = {s: i for i, s in enumerate(pieces)}
    seg = [[pid[ch] for ch in w] for w in words]
    counts = [0] * len(pieces)
    for s, n in zip(seg, wcount):
        for t in s:
            counts[t] += n
    total = sum(counts)
    max_len = 1
    steps: list[TrainStep] = []
    goal = vocab_size - len(pieces)
    while len(pieces) < vocab_size:
        # 1. merge counts of the adjacent pairs (a full recount: the spec stays simple)
        m: dict[tuple[int, int], int] = {}
        for s, n in zip(seg, wcount):
            _merge_counts(s, n, m)
        best = None
        for (a, b), mm in m.items():
            if pieces[a] + pieces[b] in pid:
                continue
            g = merge_gain(counts[a], counts[b], mm, total, a == b)
            key = (g, -a, -b)  # 2. largest gain, then smallest (a, b)
            if best is None or key > best[0]:
                best = (key, a, b, mm)
        if best is None:
            break
        (g, _, _), a, b, mm = best
        new = len(pieces)
        piece = pieces[a] + pieces[b]
        pieces.append(piece)
        pid[piece] = new
        counts.append(0)
        max_len = max(max_len, len(piece))
        # 3. merge, re-estimate, re-segment the words that held the pair
        affected = []
        for w in range(len(words)):
            merged = _merge_seg(seg[w], a, b, new)
            if len(merged) != len(seg[w]):
                for t in seg[w]:
                    counts[t] -= wcount[w]
                for t in merged:
                    counts[t] += wcount[w]
                seg[w] = merged
                affected.append(w)
        total = sum(counts)
        lp = _log_probs_from_counts(counts)
        log_prob = dict(zip(pieces, lp))
        for w in affected:
            new_pieces, _ = best_path(lattice(words[w], log_prob, 0.0, max_len), len(words[w]), None)
            new_seg = [pid[s] for s in new_pieces]
            for t in seg[w]:
                counts[t] -= wcount[w]
            for t in new_seg:
                counts[t] += wcount[w]
            seg[w] = new_seg
        total = sum(counts)
        steps.append(TrainStep(piece, a, b, mm, g, corpus_log_likelihood(counts)))
        if progress is not None:
            progress(len(steps), goal)
    return pieces, counts, steps


def _logaddexp(x: float, y: float) -> float:
    if x == -math.inf:
        return y
    if y == -math.inf:
        return x
    if x < y:
        x, y = y, x
    return x + math.log1p(math.exp(y - x))


def expected_counts(word_counts: Mapping[str, int], log_prob: Mapping[str, float],
                    max_len: int, em: str = "forward-backward") -> tuple[dict[str, float], float]:
    """The E-step of unigram-LM EM (Kudo, 2018, section 3.2).

    Math: forward-backward over each word's lattice: alpha[j] = logsumexp_i alpha[i] +
      lp(w[i:j]), beta likewise from the end; E[c(s)] += count(w) exp(alpha[i] + lp(s)
      + beta[j] - alpha[n]) for every edge (i, j) spelling s; LL = sum_w count(w)
      alpha_w[n] (the marginal likelihood). ``em="viterbi"``: the counts and LL of the
      best segmentations instead (hard EM).
    Numerics: float64, words in the mapping's order, edges by (j, i) ascending.
    """
    counts: dict[str, float] = {s: 0.0 for s in log_prob}
    ll = 0.0
    for w, n in word_counts.items():
        edges = lattice(w, log_prob, -math.inf, max_len)
        L = len(w)
        if em == "viterbi":
            pieces, score = best_path(edges, L, None)
            for s in pieces:
                counts[s] += n
            ll += n * score
            continue
        alpha = [-math.inf] * (L + 1)
        alpha[0] = 0.0
        for j in range(1, L + 1):
            for i, _, lp in edges[j]:
                alpha[j] = _logaddexp(alpha[j], alpha[i] + lp)
        beta = [-math.inf] * (L + 1)
        beta[L] = 0.0
        for j in range(L, 0, -1):
            for i, _, lp in edges[j]:
                beta[i] = _logaddexp(beta[i], beta[j] + lp)
        z = alpha[L]
        for j in range(1, L + 1):
            for i, s, lp in edges[j]:
                if s in counts:
                    counts[s] += n * math.exp(alpha[i] + lp + beta[j] - z)
        ll += n * z
    return counts, ll


def prune(word_counts: Mapping[str, int], vocab_size: int, *, seed_size: int | None = None,
          max_piece_len: int = 16, em: str = "forward-backward", em_iters: int = 2,
          shrink: float = 0.75, progress=None) -> tuple[list[str], list[float], list[float]]:
    """Unigram-LM training by pruning (Kudo, 2018, "Subword Regularization", section 3.2;
    sentencepiece's unigram trainer), the ``method="prune"`` option.

    Math
      Seed: every character, plus the substrings of 2..max_piece_len characters with
      frequency >= 2 (frequency = sum_w count(w) x occurrences), the ``seed_size``
      (default 10 x vocab_size) with the largest frequency x length (ties: the string).
      log p(s) = log(freq(s) / sum freq).
      Repeat: ``em_iters`` EM steps (:func:`expected_counts`; M-step p = E[c] / sum E[c],
      pieces other than characters with E[c] < 0.5 dropped, as sentencepiece does, and
      a character's E[c] raised to 0.5 when below, the half count of ``train``'s "grow"
      (else a rare character whose expected count underflows to 0 would leave the words
      that need it without a segmentation: LL = -inf, then NaN counts)); if
      |V| <= vocab_size stop; else the loss of every non-character piece s:
      F(s) = its count in the Viterbi segmentations, alt(s) = the Viterbi segmentation
      of the string s without s, and (sentencepiece's formula, with F the piece's own
      count) loss = F(s) [log(F(s)/Z) - sum_{t in alt} log((F(t) + F(s)) / (Z + F(s)
      (|alt| - 1)))], Z = sum F; pieces with F = 0 go first, then the smallest losses,
      keeping max(vocab_size, floor(shrink |V|)) pieces. Characters are always kept.
    Shapes: returns (pieces, log_probs, LL after each EM step); pieces ordered by
      descending log p, ties by string.
    Numerics: float64; the plain MLE in the M-step (sentencepiece uses a digamma
      variational Bayes update there; ours is Kudo's EM). Sums run left to right in
      the vocabulary's order (words in order for the E-step), so a compiled trainer
      that adds in the same order gets the same bits.
    """
    if em not in ("forward-backward", "viterbi"):
        raise ValueError(f"em: expected 'forward-backward' or 'viterbi', got {em!r}")
    check_corpus(word_counts)
    chars = initial_pieces(word_counts)
    if vocab_size < len(chars):
        raise ValueError(f"vocab_size: expected at least the {len(chars)} characters of the corpus, "
                         f"got {vocab_size}")
    seed_size = 10 * vocab_size if seed_size is None else int(seed_size)
    freq: dict[str, int] = {}
    for w, n in word_counts.items():
        for i in range(len(w)):
            for j in range(i + 1, min(len(w), i + max_piece_len) + 1):
                freq[w[i:j]] = freq.get(w[i:j], 0) + n
    subs = sorted((s for s, f in freq.items() if len(s) > 1 and f >= 2),
                  key=lambda s: (-freq[s] * len(s), s))[:seed_size]
    pieces = chars + subs
    z = float(sum(freq[s] for s in pieces))
    log_prob = {s: math.log(freq[s] / z) for s in pieces}
    char_set = set(chars)
    history: list[float] = []
    max_len = max(len(s) for s in pieces)
    while True:
        for _ in range(em_iters):
            counts, ll = expected_counts(word_counts, log_prob, max_len, em)
            history.append(ll)
            kept = [s for s in log_prob if s in char_set or counts[s] >= 0.5]
            for s in chars:  # half a count at least: no word loses its only path
                counts[s] = max(counts[s], 0.5)
            z = 0.0
            for s in kept:  # left to right (sum() of floats is compensated from Python 3.12)
                z += counts[s]
            log_prob = {s: math.log(counts[s] / z) for s in kept}
        if len(log_prob) <= vocab_size:
            break
        # losses from the Viterbi segmentations
        vit, _ = expected_counts(word_counts, log_prob, max_len, "viterbi")
        zf = sum(vit.values())
        loss: dict[str, float] = {}
        for s in log_prob:
            if s in char_set:
                continue
            f = vit[s]
            if f == 0:
                loss[s] = -math.inf
                continue
            without = {t: v for t, v in log_prob.items() if t != s}
            alt, _ = best_path(lattice(s, without, -math.inf, max_len), len(s), None)
            z_alt = zf + f * (len(alt) - 1)
            lp_alt = 0.0
            for t in alt:
                lp_alt += math.log((vit[t] + f) / z_alt)
            loss[s] = f * (math.log(f / zf) - lp_alt)
        keep = max(vocab_size, int(shrink * len(log_prob))) - len(chars)
        order = sorted(loss, key=lambda s: (-loss[s], s))[:keep]
        kept = set(chars) | set(order)
        log_prob = {s: v for s, v in log_prob.items() if s in kept}
        if progress is not None:
            progress(max(0, len(pieces) - len(log_prob)), max(1, len(pieces) - vocab_size))
    final = sorted(log_prob, key=lambda s: (-log_prob[s], s))
    return final, [log_prob[s] for s in final], history


def train(texts, vocab_size: int, *, method: str = "grow", boundary: str = "end",
          sep: str | None = None, max_pieces: int | None = None, progress=None,
          **options) -> UnigramModel:
    """Train a unigram model on ``texts`` (a str or an iterable of str).

    Math: words by :func:`split_words` (ValueError when there are none);
    ``method="grow"``: :func:`grow` (SWE, the paper's reading) with
    :func:`grown_log_probs`; ``method="prune"``:
    :func:`prune` (unigram LM, sentencepiece's method; ``options`` go to it).
    ``max_pieces`` is stored in the model and bounds the segmentation at encode time;
    training segments without it (the alternative, constraining training too, is not
    implemented).
    Shapes: vocab_size counts pieces, characters and marker included (the unknown id
    is extra).
    """
    _check_train_args(vocab_size, method, progress)
    word_counts = count_words(texts, boundary=boundary, sep=sep)
    check_corpus(word_counts, "texts")
    if method == "grow":
        if options:
            raise TypeError(f"options: method='grow' takes none, got {sorted(options)}")
        pieces, counts, _ = grow(word_counts, int(vocab_size), progress=progress)
        log_probs = grown_log_probs(counts)
    else:
        pieces, log_probs, _ = prune(word_counts, int(vocab_size), progress=progress, **options)
    return UnigramModel(pieces, log_probs, boundary=boundary, sep=sep, max_pieces=max_pieces)
