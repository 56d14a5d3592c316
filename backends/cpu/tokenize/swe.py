"""SWE / unigram segmentation and SWE ("grow") training on the CPU, compiled with Numba.

Mirrors :mod:`spec.tokenize.swe`:

* :func:`segment_batch` — Viterbi (unconstrained or k-hop) of many words at once, over
  the spec's flat :class:`~spec.tokenize.swe.PieceTrie` (binary search per trie edge),
  words as a flat code-point array plus offsets (:func:`spec.tokenize.swe.flatten_words`),
  one word per loop iteration under ``prange``. Same "push" sweep, the same ties
  (strictly greater replaces; an unset cell takes the first candidate) and the same
  float64 sums as :func:`spec.tokenize.swe.viterbi_ids`.
* :func:`grow` — :func:`spec.tokenize.swe.grow` with the same pieces in the same order
  and the same final counts; every choice is the spec's, only the bookkeeping differs:

  - pair merge-counts m are kept incrementally: only the words that held the chosen
    pair are re-counted, found through pair -> words lists (a word is linked when a
    pair first appears in it; stale links are skipped when the list is read, and each
    list is read once, when its pair is chosen). Each word position remembers its pair
    id, and pairs, trie children and word ids live in open-addressing hash maps over
    flat arrays (:mod:`backends.cpu.tokenize._intmap`, shared with the BPE kernels; no
    typed containers).
  - the argmax does not evaluate every pair. A max-heap holds for every candidate an
    upper bound of its gain g = [f(c_a - m) - f(c_a)] + [f(c_b - m) - f(c_b)] + f(m)
    + [f(N) - f(N - m)] (f = x log x): g falls as c_a or c_b grows
    (d/dc [f(c - m) - f(c)] = log((c - m)/c) < 0) and rises with N, so g evaluated at
    c_a, c_b = per-piece floors (<= the counts) and N = n_cap (>= N) bounds it until a
    count falls below its floor (that piece gets a new floor, 1/32 below its count, and
    its pairs new bounds through per-piece pair lists), N rises above n_cap (every
    bound again; n_cap follows N down, 1/64 above it, so older bounds stay valid and
    are tightened when popped) or m changes (that pair's bound again). Pairs leave the heap
    by descending bound and are evaluated exactly, with the spec's expression in the
    spec's order, until the bound is below the best exact gain by more than a rounding
    margin; so the argmax and its ties (smallest (a, b)) are the spec's.
  - a new piece a + b makes every pair (x, y) with x + y == a + b a non-candidate at
    once (its split points), and a new pair is checked when it first appears.
  - the affected words are re-segmented by Viterbi under p = c / N of the merged
    counts, log p computed once per piece and step, before that piece's count moves.
  ``progress(done, total)`` is called about 200 times from inside the compiled loop.
* :func:`prune` — :func:`spec.tokenize.swe.prune` with the same pieces in the same
  order, log-probabilities and EM history equal bit for bit: the seed's substring
  frequencies come from the sorted suffixes (cut at ``max_piece_len``) of the words;
  every word's lattice is built once (a hash-map trie over the seed) and compacted as
  pieces die; the E-step (forward-backward or Viterbi), M-step and losses are compiled
  loops that add in the spec's order (see :func:`_e_step`); the sorts use the spec's
  keys (ties by the string).
* :func:`train` — :func:`spec.tokenize.swe.train` with either method compiled (the word
  counting and the final log-probabilities are the spec's own Python code).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, objmode, prange

from backends.cpu.tokenize._intmap import (
    map_get,
    map_insert,
    map_new,
    map_put,
    map_reserve,
)
from spec.tokenize import swe as spec

# ------------------------------------------------------------------- segmentation


@njit(cache=True, inline="always")
def _child(first_edge, edge_char, edge_node, node, c):
    lo = first_edge[node]
    hi = first_edge[node + 1]
    end = hi
    while lo < hi:
        mid = (lo + hi) // 2
        if edge_char[mid] < c:
            lo = mid + 1
        else:
            hi = mid
    if lo < end and edge_char[lo] == c:
        return edge_node[lo]
    return -1


@njit(cache=True)
def _segment_one(cps, lo, n, first_edge, edge_char, edge_node, node_piece, log_prob, max_len,
                 unk_id, unk_lp, k, best, isset, back_i, back_p, out_ids, out_lo):
    """Viterbi of cps[lo:lo+n]; writes ids to out_ids[out_lo:], returns (count, score).
    best/isset/back_* are scratch of size (layers + 1) x (n + 1). count -1: infeasible."""
    layers = 1 if k <= 0 else k
    for h in range(layers + 1):
        for j in range(n + 1):
            isset[h, j] = False
    isset[0, 0] = True
    best[0, 0] = 0.0
    if k <= 0:
        isset[1, 0] = True
        best[1, 0] = 0.0
    for h in range(1, layers + 1):
        src = 1 if k <= 0 else h - 1
        for i in range(n):
            if not isset[src, i]:
                continue
            b = best[src, i]
            node = 0
            stop = min(n, i + max_len)
            # the unknown edge (j = i + 1) first: it has the smallest j
            c0 = cps[lo + i]
            nd = _child(first_edge, edge_char, edge_node, 0, c0)
            if nd < 0 or node_piece[nd] < 0:
                cand = b + unk_lp
                if (not isset[h, i + 1]) or cand > best[h, i + 1]:
                    best[h, i + 1] = cand
                    isset[h, i + 1] = True
                    back_i[h, i + 1] = i
                    back_p[h, i + 1] = unk_id
            for j in range(i + 1, stop + 1):
                node = _child(first_edge, edge_char, edge_node, node, cps[lo + j - 1])
                if node < 0:
                    break
                pid = node_piece[node]
                if pid >= 0:
                    cand = b + log_prob[pid]
                    if (not isset[h, j]) or cand > best[h, j]:
                        best[h, j] = cand
                        isset[h, j] = True
                        back_i[h, j] = i
                        back_p[h, j] = pid
    if n == 0:
        return 0, 0.0
    hb = -1
    if k <= 0:
        hb = 1
    else:
        for h in range(1, k + 1):
            if isset[h, n] and (hb < 0 or best[h, n] > best[hb, n]):
                hb = h
    if hb < 0:
        return -1, -np.inf
    # count the pieces, then write them in order
    cnt = 0
    j = n
    h = hb
    while j > 0:
        cnt += 1
        j = back_i[h, j]
        if k > 0:
            h -= 1
    t = cnt
    j = n
    h = hb
    while j > 0:
        t -= 1
        out_ids[out_lo + t] = back_p[h, j]
        j = back_i[h, j]
        if k > 0:
            h -= 1
    return cnt, best[hb, n]


@njit(cache=True, parallel=True)
def _segment_batch(cps, offsets, first_edge, edge_char, edge_node, node_piece, log_prob, max_len,
                   unk_id, unk_lp, k, out_ids, out_count, out_score):
    nw = offsets.shape[0] - 1
    layers = 1 if k <= 0 else k
    for w in prange(nw):
        lo = offsets[w]
        n = offsets[w + 1] - lo
        best = np.empty((layers + 1, n + 1), dtype=np.float64)
        isset = np.empty((layers + 1, n + 1), dtype=np.bool_)
        back_i = np.empty((layers + 1, n + 1), dtype=np.int64)
        back_p = np.empty((layers + 1, n + 1), dtype=np.int32)
        c, s = _segment_one(cps, lo, n, first_edge, edge_char, edge_node, node_piece, log_prob,
                            max_len, unk_id, unk_lp, k, best, isset, back_i, back_p, out_ids, lo)
        out_count[w] = c
        out_score[w] = s


def segment_batch(cps_P: np.ndarray, offsets_W1: np.ndarray, trie: spec.PieceTrie,
                  max_pieces: int | None = None) -> spec.Segmentation:
    """:func:`spec.tokenize.swe.segment_batch` in compiled code, words in parallel: the
    same :class:`spec.tokenize.swe.Segmentation` (unused slots of ``pieces_P``: -2)."""
    spec.check_words(cps_P, offsets_W1)
    if not isinstance(trie, spec.PieceTrie):
        raise TypeError(f"trie: expected a PieceTrie, got {type(trie).__name__}")
    k = spec.check_max_pieces(max_pieces)
    W = offsets_W1.size - 1
    pieces_P = np.full(cps_P.size, -2, dtype=np.int32)
    count_W = np.empty(W, dtype=np.int64)
    score_W = np.empty(W, dtype=np.float64)
    _segment_batch(np.ascontiguousarray(cps_P), np.ascontiguousarray(offsets_W1), trie.first_edge_N1,
                   trie.edge_char, trie.edge_node, trie.node_piece_N, trie.log_prob_V, max(trie.max_len, 1),
                   np.int32(trie.unk_id), float(trie.unk_log_prob), 0 if k is None else k,
                   pieces_P, count_W, score_W)
    # the kernel marks "no segmentation within max_pieces" as count -1 (score -inf)
    return spec.Segmentation(score_W, np.maximum(count_W, 0).astype(np.int32), pieces_P)


# ------------------------------------------------------------------- shared machinery

_CHAR_BITS = 21  # code points < 2**21: a trie key is (node << 21) | char
# The maps (backends.cpu.tokenize._intmap) need keys and values >= 0: trie keys are
# (node << 21) | char and pair keys (a << 32) | b with node, char, piece ids a, b >= 0
# (piece ids < 2**31); values are node, pair and character ids, all >= 0.
_PROGRESS = [None]  # the callable(done, total) of the training run in progress


def _report(done, total):
    # called from compiled code through objmode, so progress shows while Numba runs
    cb = _PROGRESS[0]
    if cb is not None:
        cb(int(done), int(total))


@njit(cache=True)
def _grow_rows(a, rows, fill):
    b = np.full((rows, a.shape[1]), fill, dtype=a.dtype)
    b[:a.shape[0]] = a
    return b


@njit(cache=True)
def _grow_vec(a, n, fill):
    b = np.full(n, fill, dtype=a.dtype)
    b[:a.shape[0]] = a
    return b


# ------------------------------------------------------------------- grow training


@njit(cache=True, inline="always")
def _xlogx(x):
    if x > 0:
        return x * math.log(x)
    return 0.0


@njit(cache=True)
def _gain(ca, cb, m, total, same):
    # spec.tokenize.swe.merge_gain, same expression and order
    if same:
        g = _xlogx(float(ca - 2 * m)) - _xlogx(float(ca))
    else:
        g = _xlogx(float(ca - m)) - _xlogx(float(ca))
        g = g + (_xlogx(float(cb - m)) - _xlogx(float(cb)))
    g = g + _xlogx(float(m))
    return g + (_xlogx(float(total)) - _xlogx(float(total - m)))


# pair table columns (P[p, col])
# (the columns touched per occurrence first, to share a cache line)
_M, _TOK, _STAMP, _MK, _POS, _DEAD, _A, _B, _WL, _NL, _NR = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
_COLS = 11


@njit(cache=True)
def _sift_up(hp, P, key, i):
    p = hp[i]
    k = key[p]
    while i > 0:
        par = (i - 1) >> 1
        q = hp[par]
        if key[q] >= k:
            break
        hp[i] = q
        P[q, _POS] = i
        i = par
    hp[i] = p
    P[p, _POS] = i


@njit(cache=True)
def _sift_down(hp, size, P, key, i):
    p = hp[i]
    k = key[p]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and key[hp[c + 1]] > key[hp[c]]:
            c += 1
        if key[hp[c]] <= k:
            break
        hp[i] = hp[c]
        P[hp[i], _POS] = i
        i = c
    hp[i] = p
    P[p, _POS] = i


@njit(cache=True)
def _heap_remove(hp, size, P, key, p):
    i = P[p, _POS]
    P[p, _POS] = -1
    size -= 1
    if i < size:
        last = hp[size]
        hp[i] = last
        P[last, _POS] = i
        _sift_up(hp, P, key, i)
        _sift_down(hp, size, P, key, P[last, _POS])
    return size


@njit(cache=True)
def _heap_set(hp, size, P, key, p, k):
    """Insert pair p with key k, or move it to key k."""
    key[p] = k
    i = P[p, _POS]
    if i < 0:
        hp[size] = p
        P[p, _POS] = size
        _sift_up(hp, P, key, size)
        return size + 1
    _sift_up(hp, P, key, i)
    _sift_down(hp, size, P, key, P[p, _POS])
    return size


@njit(cache=True)
def _bound(P, p, floor, n_cap):
    """An upper bound on pair p's gain while counts stay >= floor, N <= n_cap and m is
    unchanged: the gain decreases in c_a and c_b (d/dc [f(c - m) - f(c)] =
    log((c - m)/c) < 0) and increases in N, and c_a >= m (2m when a == b), c_b >= m."""
    a = P[p, _A]
    b = P[p, _B]
    m = P[p, _M]
    P[p, _MK] = m
    if a == b:
        return _gain(max(floor[a], 2 * m), 0, m, n_cap, True)
    return _gain(max(floor[a], m), max(floor[b], m), m, n_cap, False)


@njit(cache=True)
def _trie_walk(child_k, node, piece_cps, start, length):
    """The trie node reached from ``node`` along piece_cps[start:start+length], or -1."""
    for t in range(length):
        if node < 0:
            return -1
        node = map_get(child_k, (node << _CHAR_BITS) | piece_cps[start + t])
    return node


@njit(cache=True)
def _grow(cps, offsets, wcount, char_cps, vocab_size, report, floor_shift, cap_shift):
    """spec.grow over the words cps[offsets[w]:offsets[w+1]] (counts wcount), the
    characters char_cps ascending; returns (pieces, their code points, final counts).
    ``report``: call :func:`_report` now and then (objmode). A floor is
    c - (c >> floor_shift), the cap on N is N + (N >> cap_shift): they trade heap pops
    against key updates and never change the result (the tests run the extremes)."""
    nw = offsets.shape[0] - 1
    nchar = char_cps.shape[0]
    cap = max(vocab_size, nchar) + 1
    goal = vocab_size - nchar
    # --- pieces: code points, and a trie (a hash map (node, char) -> child)
    piece_start = np.zeros(cap, dtype=np.int64)
    piece_len = np.zeros(cap, dtype=np.int64)
    piece_cps = np.empty(max(16, 4 * cap), dtype=np.int64)
    node_piece = np.full(max(16, 4 * cap), -1, dtype=np.int64)
    ck = map_new(4 * cap)
    c_used = 0
    n_nodes = 1
    used = 0
    idk = map_new(nchar)
    id_used = 0
    for i in range(nchar):
        c = char_cps[i]
        idk, id_used = map_put(idk, id_used, c, i)
        piece_start[i] = used
        piece_len[i] = 1
        piece_cps[used] = c
        used += 1
        ck, c_used = map_put(ck, c_used, c, n_nodes)  # root is node 0
        node_piece[n_nodes] = i
        n_nodes += 1
    n_pieces = nchar
    max_len = 1
    counts = np.zeros(cap, dtype=np.int64)
    seg = np.empty(cps.shape[0], dtype=np.int64)
    seg_pair = np.empty(cps.shape[0], dtype=np.int64)  # the pair id at (t, t + 1)
    seg_len = np.empty(nw, dtype=np.int64)
    maxn = 1
    for w in range(nw):
        lo = offsets[w]
        seg_len[w] = offsets[w + 1] - lo
        maxn = max(maxn, seg_len[w])
        for t in range(lo, offsets[w + 1]):
            seg[t] = map_get(idk, np.int64(cps[t]))
            counts[seg[t]] += wcount[w]
    cid = seg.copy()  # character ids of the words, for the trie's first level
    total = np.int64(0)
    for i in range(nchar):
        total += counts[i]
    floor = np.zeros(cap, dtype=np.int64)
    for i in range(nchar):
        floor[i] = counts[i] - (counts[i] >> floor_shift)
    # --- pairs: P rows (m; the token of the last word that held it; the step that last
    # changed m; m when the heap key was made; heap position; dead (a + b is a piece);
    # a, b; where-list head; next pair with the same left piece, with the same right
    # piece); pair ids through a hash map
    pcap = 1024
    P = np.full((pcap, _COLS), -1, dtype=np.int64)
    pkey = np.zeros(pcap, dtype=np.float64)
    n_pairs = 0
    pk = map_new(1024)
    head_l = np.full(cap, -1, dtype=np.int64)
    head_r = np.full(cap, -1, dtype=np.int64)
    # where-lists: WL rows (word, next entry); a word is on the list of every pair
    # its segmentation holds (and maybe of pairs it held once)
    WL = np.empty((max(1024, cps.shape[0]), 2), dtype=np.int64)
    n_wl = 0
    changed_p = np.empty(1024, dtype=np.int64)
    n_changed_p = 0
    step = 0
    # --- initial pair counts
    for w in range(nw):
        lo = offsets[w]
        ln = seg_len[w]
        prev_counted = False
        for t in range(ln - 1):
            a = seg[lo + t]
            b = seg[lo + t + 1]
            key = (a << 32) | b
            p = map_get(pk, key)
            if p < 0:
                p = n_pairs
                if p == P.shape[0]:
                    P = _grow_rows(P, 2 * p, -1)
                    pkey = _grow_vec(pkey, 2 * p, 0.0)
                n_pairs += 1
                pk, _ = map_put(pk, p, key, p)
                P[p, _A] = a
                P[p, _B] = b
                P[p, _M] = 0
                P[p, _DEAD] = 0  # two characters never spell a piece at the start
                P[p, _NL] = head_l[a]
                head_l[a] = p
                P[p, _NR] = head_r[b]
                head_r[b] = p
            seg_pair[lo + t] = p
            # where-list (a repeat of the word on the list is harmless)
            if P[p, _WL] < 0 or WL[P[p, _WL], 0] != w:
                if n_wl == WL.shape[0]:
                    WL = _grow_rows(WL, 2 * n_wl, -1)
                WL[n_wl, 0] = w
                WL[n_wl, 1] = P[p, _WL]
                P[p, _WL] = n_wl
                n_wl += 1
            # spec._merge_counts: left-to-right non-overlapping occurrences
            if a == b and prev_counted and seg[lo + t - 1] == a:
                prev_counted = False
                continue
            P[p, _M] += wcount[w]
            prev_counted = True
    n_cap = total + (total >> cap_shift)  # N may rise a little: headroom
    hp = np.empty(P.shape[0], dtype=np.int64)
    hsize = 0
    for p in range(n_pairs):
        if P[p, _M] > 0:
            hsize = _heap_set(hp, hsize, P, pkey, p, _bound(P, p, floor, n_cap))
    # --- scratch
    word_mark = np.full(nw, -1, dtype=np.int64)
    piece_mark = np.full(cap, -1, dtype=np.int64)
    changed_c = np.empty(cap, dtype=np.int64)
    lp_step = np.full(cap, -1, dtype=np.int64)
    lp_val = np.empty(cap, dtype=np.float64)
    evaluated = np.empty(64, dtype=np.int64)
    best = np.empty(maxn + 1, dtype=np.float64)
    isset = np.empty(maxn + 1, dtype=np.bool_)
    back_i = np.empty(maxn + 1, dtype=np.int64)
    back_p = np.empty(maxn + 1, dtype=np.int64)
    newseg = np.empty(maxn, dtype=np.int64)
    oldseg = np.empty(maxn, dtype=np.int64)
    affected = np.empty(nw + 1, dtype=np.int64)
    tok_base = 0
    stride = max(1, goal // 200)
    while n_pieces < vocab_size:
        # --- argmax of the exact gain: pairs leave the heap by descending bound until
        # the bound is below the best exact gain (by more than a rounding margin)
        have = False
        bg = 0.0
        ba = np.int64(-1)
        bb = np.int64(-1)
        bp = np.int64(-1)
        n_eval = 0
        margin = 1e-9 * _xlogx(float(n_cap)) + 1e-9
        # (arrays are sized before the hot loops: an array variable reassigned inside a
        # loop costs Numba two atomic reference-count updates per iteration)
        if evaluated.shape[0] < hsize + 1:
            evaluated = np.empty(2 * hsize + 1, dtype=np.int64)
        if changed_p.shape[0] < n_pairs + 1:
            changed_p = np.empty(2 * n_pairs + 1, dtype=np.int64)
        while hsize > 0:
            p = hp[0]
            if have and pkey[p] + margin < bg:
                break
            hsize = _heap_remove(hp, hsize, P, pkey, p)
            evaluated[n_eval] = p
            n_eval += 1
            a = P[p, _A]
            b = P[p, _B]
            g = _gain(counts[a], counts[b], P[p, _M], total, a == b)
            if (not have) or g > bg or (g == bg and (a < ba or (a == ba and b < bb))):
                have = True
                bg = g
                ba = a
                bb = b
                bp = p
        for e in range(n_eval):
            p = evaluated[e]
            if p != bp:  # back, with a bound as tight as N and the floors allow now
                hsize = _heap_set(hp, hsize, P, pkey, p, _bound(P, p, floor, n_cap))
        if not have:
            break
        # --- add the piece a + b (the trie and its code points)
        new = n_pieces
        la = piece_len[ba]
        lb = piece_len[bb]
        if used + la + lb > piece_cps.shape[0]:
            piece_cps = _grow_vec(piece_cps, 2 * (used + la + lb), 0)
        piece_start[new] = used
        piece_len[new] = la + lb
        for t in range(la):
            piece_cps[used + t] = piece_cps[piece_start[ba] + t]
        for t in range(lb):
            piece_cps[used + la + t] = piece_cps[piece_start[bb] + t]
        used += la + lb
        max_len = max(max_len, la + lb)
        node = 0
        for t in range(la + lb):
            c = piece_cps[piece_start[new] + t]
            nxt = map_get(ck, (node << _CHAR_BITS) | c)
            if nxt < 0:
                if n_nodes == node_piece.shape[0]:
                    node_piece = _grow_vec(node_piece, 2 * n_nodes, -1)
                nxt = n_nodes
                n_nodes += 1
                ck, c_used = map_put(ck, c_used, (node << _CHAR_BITS) | c, nxt)
            node = nxt
        node_piece[node] = new
        n_pieces += 1
        # every existing pair (x, y) with x + y == the new string stops being a candidate
        node = 0
        for k in range(1, la + lb):
            node = map_get(ck, (node << _CHAR_BITS) | piece_cps[piece_start[new] + k - 1])
            x = node_piece[node]
            if x < 0:
                continue
            ny = _trie_walk(ck, 0, piece_cps, piece_start[new] + k, la + lb - k)
            if ny < 0 or node_piece[ny] < 0:
                continue
            q = map_get(pk, (x << 32) | node_piece[ny])
            if q >= 0 and P[q, _DEAD] == 0:
                P[q, _DEAD] = 1
                if P[q, _POS] >= 0:
                    hsize = _heap_remove(hp, hsize, P, pkey, q)
        # --- merge it into the words that hold the pair
        n_aff = 0
        n_cc = 0
        e = P[bp, _WL]
        while e >= 0:
            w = WL[e, 0]
            e = WL[e, 1]
            if word_mark[w] == step:
                continue
            lo = offsets[w]
            ln = seg_len[w]
            has = False
            for t in range(ln - 1):
                if seg[lo + t] == ba and seg[lo + t + 1] == bb:
                    has = True
                    break
            if not has:
                continue
            word_mark[w] = step
            affected[n_aff] = w
            n_aff += 1
            n = wcount[w]
            # remove the word's pair counts; its pairs (the ones the where-lists know)
            # get the word's token
            prev_counted = False
            for t in range(ln - 1):
                a = seg[lo + t]
                b = seg[lo + t + 1]
                if a == b and prev_counted and seg[lo + t - 1] == a:
                    P[seg_pair[lo + t], _TOK] = tok_base + n_aff - 1
                    prev_counted = False
                    continue
                p = seg_pair[lo + t]
                P[p, _TOK] = tok_base + n_aff - 1
                P[p, _M] -= n
                if P[p, _STAMP] != step:
                    P[p, _STAMP] = step
                    changed_p[n_changed_p] = p
                    n_changed_p += 1
                prev_counted = True
            # merge left to right, non-overlapping
            out = 0
            t = 0
            while t < ln:
                x = seg[lo + t]
                counts[x] -= n
                if piece_mark[x] != step:
                    piece_mark[x] = step
                    changed_c[n_cc] = x
                    n_cc += 1
                if t + 1 < ln and x == ba and seg[lo + t + 1] == bb:
                    counts[bb] -= n
                    if piece_mark[bb] != step:
                        piece_mark[bb] = step
                        changed_c[n_cc] = bb
                        n_cc += 1
                    seg[lo + out] = new
                    t += 2
                else:
                    seg[lo + out] = x
                    t += 1
                counts[seg[lo + out]] += n
                out += 1
            seg_len[w] = out
            total -= (ln - out) * n
        # --- re-segment those words under p = c / N (Viterbi, ties: smallest i); p is
        # fixed while they are (N = total_lp), as in the spec
        total_lp = total
        # room for every pair the re-segmentations can create
        extra = 0
        for ei in range(n_aff):
            extra += offsets[affected[ei] + 1] - offsets[affected[ei]]
        if P.shape[0] < n_pairs + extra:
            rows = 2 * (n_pairs + extra)
            P = _grow_rows(P, rows, -1)
            pkey = _grow_vec(pkey, rows, 0.0)
            hp = _grow_vec(hp, rows, 0)
        if changed_p.shape[0] < n_pairs + extra:
            changed_p = _grow_vec(changed_p, 2 * (n_pairs + extra), 0)
        if WL.shape[0] < n_wl + extra:
            WL = _grow_rows(WL, 2 * (n_wl + extra), -1)
        pk = map_reserve(pk, n_pairs, extra)
        for ei in range(n_aff):
            w = affected[ei]
            lo = offsets[w]
            n = offsets[w + 1] - lo
            for j in range(n + 1):
                isset[j] = False
            isset[0] = True
            best[0] = 0.0
            for i in range(n):
                bi = best[i]
                node = 1 + cid[lo + i]  # character k is node 1 + k
                j = i + 1
                jmax = min(n, i + max_len)
                while True:
                    pid = node_piece[node]
                    if pid >= 0:
                        if lp_step[pid] != step:
                            lp_step[pid] = step
                            lp_val[pid] = math.log(counts[pid] / total_lp) if counts[pid] > 0 else -np.inf
                        cand = bi + lp_val[pid]
                        if (not isset[j]) or cand > best[j]:
                            best[j] = cand
                            isset[j] = True
                            back_i[j] = i
                            back_p[j] = pid
                    j += 1
                    if j > jmax:
                        break
                    node = map_get(ck, (node << _CHAR_BITS) | cps[lo + j - 1])
                    if node < 0:
                        break
            cnt = 0
            j = n
            while j > 0:
                cnt += 1
                j = back_i[j]
            t = cnt
            j = n
            while j > 0:
                t -= 1
                newseg[t] = back_p[j]
                j = back_i[j]
            ln = seg_len[w]
            for t in range(ln):
                oldseg[t] = seg[lo + t]
            same = cnt == ln
            if same:
                for t in range(cnt):
                    if newseg[t] != oldseg[t]:
                        same = False
                        break
            nc = wcount[w]
            if not same:
                # log p is computed lazily, from the counts before any re-segmentation:
                # a piece's value is fixed before its count first moves (the new
                # segmentation's pieces were all looked up by the sweep above)
                for t in range(ln):
                    x = oldseg[t]
                    if lp_step[x] != step:
                        lp_step[x] = step
                        lp_val[x] = math.log(counts[x] / total_lp) if counts[x] > 0 else -np.inf
                for t in range(ln):
                    counts[oldseg[t]] -= nc
                    if piece_mark[oldseg[t]] != step:
                        piece_mark[oldseg[t]] = step
                        changed_c[n_cc] = oldseg[t]
                        n_cc += 1
                for t in range(cnt):
                    seg[lo + t] = newseg[t]
                    counts[newseg[t]] += nc
                seg_len[w] = cnt
                total += (cnt - ln) * nc
            # add the word's pair counts; new pairs get rows, new (pair, word) links
            ln2 = seg_len[w]
            prev_counted = False
            for t in range(ln2 - 1):
                a = seg[lo + t]
                b = seg[lo + t + 1]
                key = (a << 32) | b
                p = map_get(pk, key)
                if p < 0:
                    p = n_pairs
                    n_pairs += 1
                    map_insert(pk, key, p)
                    P[p, _A] = a
                    P[p, _B] = b
                    P[p, _M] = 0
                    nd = _trie_walk(ck, 0, piece_cps, piece_start[a], piece_len[a])
                    nd = _trie_walk(ck, nd, piece_cps, piece_start[b], piece_len[b])
                    P[p, _DEAD] = 1 if nd >= 0 and node_piece[nd] >= 0 else 0
                    P[p, _NL] = head_l[a]
                    head_l[a] = p
                    P[p, _NR] = head_r[b]
                    head_r[b] = p
                seg_pair[lo + t] = p
                # link the word unless the pair was in its old segmentation (then it
                # is linked already) or earlier in the new one: the word's token says
                if P[p, _TOK] != tok_base + ei:
                    P[p, _TOK] = tok_base + ei
                    WL[n_wl, 0] = w
                    WL[n_wl, 1] = P[p, _WL]
                    P[p, _WL] = n_wl
                    n_wl += 1
                if a == b and prev_counted and seg[lo + t - 1] == a:
                    prev_counted = False
                    continue
                P[p, _M] += nc
                if P[p, _STAMP] != step:
                    P[p, _STAMP] = step
                    changed_p[n_changed_p] = p
                    n_changed_p += 1
                prev_counted = True
        # --- keep every candidate's heap key an upper bound of its gain: pieces whose
        # count fell below their floor get a new floor (and their pairs new keys)
        floor[new] = counts[new] - (counts[new] >> floor_shift)
        n_rev = 0
        for e2 in range(n_cc):
            x = changed_c[e2]
            if counts[x] < floor[x]:
                floor[x] = counts[x] - (counts[x] >> floor_shift)
                changed_c[n_rev] = x
                n_rev += 1
        if total > n_cap:
            # N rose past the cap (rare): a new cap, every key again
            n_cap = total + (total >> cap_shift)
            hsize = 0
            for p in range(n_pairs):
                P[p, _POS] = -1
            for p in range(n_pairs):
                if P[p, _M] > 0 and P[p, _DEAD] == 0:
                    pkey[p] = _bound(P, p, floor, n_cap)
                    hp[hsize] = p
                    P[p, _POS] = hsize
                    hsize += 1
            for i in range(hsize // 2 - 1, -1, -1):
                _sift_down(hp, hsize, P, pkey, i)
        else:
            # a lower cap for the keys made from now on; the older keys, made with a
            # higher cap, stay upper bounds (and are made again when popped)
            n_cap = min(n_cap, total + (total >> cap_shift))
            for e2 in range(n_rev):
                x = changed_c[e2]
                q = head_l[x]
                while q >= 0:
                    if P[q, _M] > 0 and P[q, _DEAD] == 0:
                        hsize = _heap_set(hp, hsize, P, pkey, q, _bound(P, q, floor, n_cap))
                    q = P[q, _NL]
                q = head_r[x]
                while q >= 0:
                    if P[q, _M] > 0 and P[q, _DEAD] == 0:
                        hsize = _heap_set(hp, hsize, P, pkey, q, _bound(P, q, floor, n_cap))
                    q = P[q, _NR]
            for e2 in range(n_changed_p):
                q = changed_p[e2]
                if P[q, _M] > 0 and P[q, _DEAD] == 0:
                    if P[q, _POS] >= 0 and P[q, _MK] == P[q, _M]:
                        continue  # m is back to its value at the key: the key holds
                    hsize = _heap_set(hp, hsize, P, pkey, q, _bound(P, q, floor, n_cap))
                elif P[q, _POS] >= 0:
                    hsize = _heap_remove(hp, hsize, P, pkey, q)
        n_changed_p = 0
        tok_base += n_aff
        step += 1
        if report and step % stride == 0:
            with objmode():
                _report(step, goal)
    return n_pieces, piece_start, piece_len, piece_cps, counts


def grow(word_counts, vocab_size: int, *, progress=None, _floor_shift: int = 5,
         _cap_shift: int = 6) -> tuple[list[str], list[int]]:
    """:func:`spec.tokenize.swe.grow` compiled: (pieces, counts), identical to the spec's
    first two results (no per-step trace). ``progress(done, total)`` is called about 200
    times while the compiled loop runs. ``_floor_shift``, ``_cap_shift``: the slack of
    the gain bounds (see :func:`_grow`), for tests."""
    spec.check_corpus(word_counts)
    words = list(word_counts)
    cps, offsets = spec.flatten_words(words)
    wcount = np.asarray([int(word_counts[w]) for w in words], dtype=np.int64)
    char_cps = np.unique(cps).astype(np.int64)
    _PROGRESS[0] = progress
    try:
        n, start, length, pcps, counts = _grow(cps, offsets, wcount, char_cps, int(vocab_size),
                                               progress is not None, int(_floor_shift), int(_cap_shift))
    finally:
        _PROGRESS[0] = None
    pieces = ["".join(map(chr, pcps[start[i]:start[i] + length[i]])) for i in range(n)]
    if progress is not None:
        progress(n - len(char_cps), max(0, int(vocab_size) - len(char_cps)))
    return pieces, [int(c) for c in counts[:n]]


# ------------------------------------------------------------------- prune training


@njit(cache=True)
def _suffix_keys(crank, offsets, max_piece_len, bits, per_key, n_keys):
    """Every suffix w[i:] cut to max_piece_len characters, packed into n_keys int64 sort
    keys (character ranks 1.., 0 past the end, so a prefix sorts first), and its length."""
    total = crank.shape[0]
    keys = np.zeros((n_keys, total), dtype=np.int64)
    slen = np.empty(total, dtype=np.int64)
    for w in range(offsets.shape[0] - 1):
        hi = offsets[w + 1]
        for i in range(offsets[w], hi):
            ln = min(hi - i, max_piece_len)
            slen[i] = ln
            for t in range(ln):
                keys[t // per_key, i] |= np.int64(crank[i + t]) << (bits * (per_key - 1 - t % per_key))
    return keys, slen


@njit(cache=True)
def _substring_groups(order, crank, slen, scount, max_piece_len):
    """Walk the sorted suffixes: the suffixes that share a prefix of length L are
    consecutive, so each distinct substring s (2 <= |s| <= max_piece_len) is one run;
    its frequency is the sum of the run's word counts (overlapping occurrences all
    count). Returns (run start in sorted order, |s|, freq) of those with freq >= 2; a
    run's (start, |s|) orders substrings as strings do."""
    K = max_piece_len
    gstart = np.zeros(K + 1, dtype=np.int64)
    gsum = np.zeros(K + 1, dtype=np.int64)  # the running sum where run L began
    cap = 1024
    out_r = np.empty(cap, dtype=np.int64)
    out_l = np.empty(cap, dtype=np.int64)
    out_f = np.empty(cap, dtype=np.int64)
    n_out = 0
    prev = -1
    prev_len = 0
    running = np.int64(0)
    for r in range(order.shape[0] + 1):
        if r < order.shape[0]:
            p = order[r]
            ln = slen[p]
            lcp = 0
            if prev >= 0:
                lim = min(ln, prev_len)
                while lcp < lim and crank[prev + lcp] == crank[p + lcp]:
                    lcp += 1
        else:
            p = -1
            ln = 0
            lcp = 0
        # the runs longer than the common prefix end here
        for ell in range(prev_len, max(lcp, 1), -1):
            f = running - gsum[ell]
            if f >= 2:
                if n_out == cap:
                    cap *= 2
                    out_r = _grow_vec(out_r, cap, 0)
                    out_l = _grow_vec(out_l, cap, 0)
                    out_f = _grow_vec(out_f, cap, 0)
                out_r[n_out] = gstart[ell]
                out_l[n_out] = ell
                out_f[n_out] = f
                n_out += 1
        for ell in range(lcp + 1, ln + 1):
            gstart[ell] = r
            gsum[ell] = running
        if p >= 0:
            running += scount[p]
        prev = p
        prev_len = ln
    return out_r[:n_out], out_l[:n_out], out_f[:n_out]


def _seed(words, cps, offsets, wcount, chars, seed_size, max_piece_len):
    """spec.prune's seed: (substrings in seed order, their freq, the characters' freq)."""
    char_cps = np.asarray([ord(c) for c in chars], dtype=np.int64)
    crank = (np.searchsorted(char_cps, cps) + 1).astype(np.int64)
    scount = np.repeat(wcount, np.diff(offsets))
    char_freq = np.bincount(crank - 1, weights=scount, minlength=len(chars)).astype(np.int64)
    if max_piece_len < 2 or seed_size <= 0 or cps.size == 0:
        return [], [], char_freq
    bits = max(1, len(chars).bit_length())
    per_key = max(1, 63 // bits)
    n_keys = -(-max_piece_len // per_key)
    keys, slen = _suffix_keys(crank, offsets, max_piece_len, bits, per_key, n_keys)
    order = np.lexsort(keys[::-1])  # the first key is the most significant
    del keys
    run, length, freq = _substring_groups(order, crank, slen, scount, max_piece_len)
    score = freq * length
    if score.size > seed_size:  # only the candidates at or above the seed_size-th score
        thr = np.partition(score, score.size - seed_size)[score.size - seed_size]
        sel = np.flatnonzero(score >= thr)
        run, length, freq, score = run[sel], length[sel], freq[sel], score[sel]
    pick = np.lexsort((length, run, -score))[:seed_size]  # (-freq x len, the string)
    joined = "".join(words)
    pos = order[run[pick]]
    subs = [joined[p:p + n] for p, n in zip(pos.tolist(), length[pick].tolist())]
    return subs, freq[pick].tolist(), char_freq


@njit(cache=True)
def _build_trie(pcps, poffsets):
    """A hash-map trie over the pieces pcps[poffsets[k]:poffsets[k+1]] (id k)."""
    nv = poffsets.shape[0] - 1
    ck = map_new(pcps.shape[0] + 1)
    c_used = 0
    node_piece = np.full(pcps.shape[0] + 1, -1, dtype=np.int64)
    n_nodes = 1
    for k in range(nv):
        node = 0
        for t in range(poffsets[k], poffsets[k + 1]):
            key = (node << _CHAR_BITS) | np.int64(pcps[t])
            nxt = map_get(ck, key)
            if nxt < 0:
                nxt = n_nodes
                n_nodes += 1
                ck, c_used = map_put(ck, c_used, key, nxt)
            node = nxt
        node_piece[node] = k
    return ck, node_piece


@njit(cache=True, inline="always")
def _logaddexp(x, y):
    # spec._logaddexp, same branches and expression
    if x == -np.inf:
        return y
    if y == -np.inf:
        return x
    if x < y:
        x, y = y, x
    return x + math.log1p(math.exp(y - x))


@njit(cache=True)
def _word_edges(cps, lo, n, ck, node_piece, alive, max_len, e_i, e_j, e_p):
    """The lattice of cps[lo:lo+n] as spec.lattice builds it (an uncovered character:
    piece -1), ordered by (i, j); returns the edge count."""
    ne = 0
    for i in range(n):
        node = 0
        for j in range(i + 1, min(n, i + max_len) + 1):
            node = map_get(ck, (node << _CHAR_BITS) | np.int64(cps[lo + j - 1]))
            pid = -1
            if node >= 0:
                pid = node_piece[node]
                if pid >= 0 and not alive[pid]:
                    pid = -1
            if pid >= 0 or j == i + 1:
                e_i[ne] = i
                e_j[ne] = j
                e_p[ne] = pid
                ne += 1
            if node < 0:
                break
    return ne


@njit(cache=True)
def _viterbi_edges(n, e_i, e_j, e_p, ne, lp, best, isset, back_e):
    """spec.best_path (unconstrained) over edges ordered by (i, j): a push sweep visits the
    candidates of each j by ascending i, as the pull sweep does."""
    for j in range(n + 1):
        isset[j] = False
    isset[0] = True
    best[0] = 0.0
    for e in range(ne):
        i = e_i[e]
        if not isset[i]:
            continue
        j = e_j[e]
        cand = best[i] + (lp[e_p[e]] if e_p[e] >= 0 else -np.inf)
        if (not isset[j]) or cand > best[j]:
            best[j] = cand
            isset[j] = True
            back_e[j] = e


@njit(cache=True)
def _lattice(cps, offsets, ck, node_piece, alive, max_len):
    """Every word's lattice (spec.lattice: edges by (i, j), an uncovered character as
    piece -1), concatenated: word w's edges are eoff[w] .. eoff[w+1]."""
    nw = offsets.shape[0] - 1
    maxn = 1
    for w in range(nw):
        maxn = max(maxn, offsets[w + 1] - offsets[w])
    wi = np.empty(maxn * max_len + 1, dtype=np.int64)
    wj = np.empty(maxn * max_len + 1, dtype=np.int64)
    wp = np.empty(maxn * max_len + 1, dtype=np.int64)
    cap = 4 * cps.shape[0] + 16
    e_i = np.empty(cap, dtype=np.int32)
    e_j = np.empty(cap, dtype=np.int32)
    e_p = np.empty(cap, dtype=np.int32)
    eoff = np.zeros(nw + 1, dtype=np.int64)
    ne = 0
    for w in range(nw):
        lo = offsets[w]
        k = _word_edges(cps, lo, offsets[w + 1] - lo, ck, node_piece, alive, max_len, wi, wj, wp)
        if ne + k > cap:
            cap = 2 * (ne + k)
            e_i = _grow_vec(e_i, cap, 0)
            e_j = _grow_vec(e_j, cap, 0)
            e_p = _grow_vec(e_p, cap, 0)
        for t in range(k):
            e_i[ne + t] = wi[t]
            e_j[ne + t] = wj[t]
            e_p[ne + t] = wp[t]
        ne += k
        eoff[w + 1] = ne
    return eoff, e_i[:ne].copy(), e_j[:ne].copy(), e_p[:ne].copy()


@njit(cache=True)
def _compact(eoff, e_i, e_j, e_p, alive):
    """Drop the edges of dead pieces, in place (order kept); returns the edge count.
    Characters never die, so no edge becomes an uncovered-character edge."""
    ne = 0
    start = 0
    for w in range(eoff.shape[0] - 1):
        end = eoff[w + 1]
        for e in range(start, end):
            if e_p[e] < 0 or alive[e_p[e]]:
                e_i[ne] = e_i[e]
                e_j[ne] = e_j[e]
                e_p[ne] = e_p[e]
                ne += 1
        start = end
        eoff[w + 1] = ne
    return ne


@njit(cache=True)
def _e_step(eoff, e_i, e_j, e_p, offsets, wcount, lp, viterbi, counts):
    """spec.expected_counts over cached lattices into counts (by piece id); returns LL.
    Edges come by (i, j): a push over them gives every alpha[j] its terms by ascending
    i, every beta[i] (edges reversed) by descending j, and every piece's count its
    terms by ascending position, the spec's orders."""
    nw = offsets.shape[0] - 1
    maxn = 1
    for w in range(nw):
        maxn = max(maxn, offsets[w + 1] - offsets[w])
    alpha = np.empty(maxn + 1, dtype=np.float64)
    beta = np.empty(maxn + 1, dtype=np.float64)
    isset = np.empty(maxn + 1, dtype=np.bool_)
    back_e = np.empty(maxn + 1, dtype=np.int64)
    for k in range(counts.shape[0]):
        counts[k] = 0.0
    ll = 0.0
    for w in range(nw):
        n = offsets[w + 1] - offsets[w]
        cnt = wcount[w]
        e0 = eoff[w]
        e1 = eoff[w + 1]
        if viterbi:
            if n == 0:
                continue
            for j in range(n + 1):
                isset[j] = False
            isset[0] = True
            alpha[0] = 0.0
            for e in range(e0, e1):
                i = e_i[e]
                if not isset[i]:
                    continue
                j = e_j[e]
                cand = alpha[i] + (lp[e_p[e]] if e_p[e] >= 0 else -np.inf)
                if (not isset[j]) or cand > alpha[j]:
                    alpha[j] = cand
                    isset[j] = True
                    back_e[j] = e
            j = n
            while j > 0:
                e = back_e[j]
                counts[e_p[e]] += cnt
                j = e_i[e]
            ll += cnt * alpha[n]
            continue
        for j in range(n + 1):
            alpha[j] = -np.inf
            beta[j] = -np.inf
        alpha[0] = 0.0
        for e in range(e0, e1):
            x = lp[e_p[e]] if e_p[e] >= 0 else -np.inf
            alpha[e_j[e]] = _logaddexp(alpha[e_j[e]], alpha[e_i[e]] + x)
        beta[n] = 0.0
        for e in range(e1 - 1, e0 - 1, -1):
            x = lp[e_p[e]] if e_p[e] >= 0 else -np.inf
            beta[e_i[e]] = _logaddexp(beta[e_i[e]], beta[e_j[e]] + x)
        z = alpha[n]
        for e in range(e0, e1):
            if e_p[e] >= 0:
                counts[e_p[e]] += cnt * math.exp(alpha[e_i[e]] + lp[e_p[e]] + beta[e_j[e]] - z)
        ll += cnt * z
    return ll


@njit(cache=True)
def _m_step(counts, alive, is_char, lp):
    """Drop the non-characters with E[c] < 0.5, raise characters to E[c] >= 0.5;
    p = E[c] / sum (summed in id order), as spec.prune's M-step."""
    z = 0.0
    for k in range(counts.shape[0]):
        if alive[k] and not (is_char[k] or counts[k] >= 0.5):
            alive[k] = False
        if is_char[k]:
            counts[k] = max(counts[k], 0.5)
        if alive[k]:
            z += counts[k]
    n = 0
    for k in range(counts.shape[0]):
        if alive[k]:
            n += 1
            lp[k] = math.log(counts[k] / z)
    return n


@njit(cache=True)
def _losses(pcps, poffsets, ck, node_piece, alive, is_char, lp, vit, max_len, loss):
    """spec.prune's loss of every live non-character piece (loss[k] = nan elsewhere)."""
    zf = 0.0
    for k in range(vit.shape[0]):
        if alive[k]:
            zf += vit[k]
    cap = max_len * max_len + 1
    e_i = np.empty(cap, dtype=np.int64)
    e_j = np.empty(cap, dtype=np.int64)
    e_p = np.empty(cap, dtype=np.int64)
    best = np.empty(max_len + 1, dtype=np.float64)
    isset = np.empty(max_len + 1, dtype=np.bool_)
    back_e = np.empty(max_len + 1, dtype=np.int64)
    alt = np.empty(max_len, dtype=np.int64)
    for k in range(vit.shape[0]):
        loss[k] = np.nan
        if not alive[k] or is_char[k]:
            continue
        f = vit[k]
        if f == 0:
            loss[k] = -np.inf
            continue
        # the best segmentation of the piece's own string without the piece
        lo = poffsets[k]
        n = poffsets[k + 1] - lo
        alive[k] = False
        ne = _word_edges(pcps, lo, n, ck, node_piece, alive, max_len, e_i, e_j, e_p)
        alive[k] = True
        _viterbi_edges(n, e_i, e_j, e_p, ne, lp, best, isset, back_e)
        h = 0
        j = n
        while j > 0:
            alt[h] = e_p[back_e[j]]
            h += 1
            j = e_i[back_e[j]]
        z_alt = zf + f * (h - 1)
        lp_alt = 0.0
        for t in range(h - 1, -1, -1):
            lp_alt += math.log((vit[alt[t]] + f) / z_alt)
        loss[k] = f * (math.log(f / zf) - lp_alt)
    return zf


def prune(word_counts, vocab_size: int, *, seed_size: int | None = None, max_piece_len: int = 16,
          em: str = "forward-backward", em_iters: int = 2, shrink: float = 0.75,
          progress=None) -> tuple[list[str], list[float], list[float]]:
    """:func:`spec.tokenize.swe.prune` compiled: the same (pieces, log_probs, history).

    The seed's substring frequencies come from sorted suffixes (each substring is a run
    of the suffixes it starts); EM, the Viterbi counts and the losses are compiled
    loops that add in the spec's order (words in order; within a word the lattice
    edges by (i, j)), so the log-probabilities are the spec's bit for bit; the sorts
    (seed, pruning, final order) use the spec's keys.
    """
    if em not in ("forward-backward", "viterbi"):
        raise ValueError(f"em: expected 'forward-backward' or 'viterbi', got {em!r}")
    spec.check_corpus(word_counts)
    chars = spec.initial_pieces(word_counts)
    if vocab_size < len(chars):
        raise ValueError(f"vocab_size: expected at least the {len(chars)} characters of the corpus, "
                         f"got {vocab_size}")
    seed_size = 10 * vocab_size if seed_size is None else int(seed_size)
    words = list(word_counts)
    cps, offsets = spec.flatten_words(words)
    wcount = np.asarray([int(word_counts[w]) for w in words], dtype=np.int64)
    subs, sub_freq, char_freq = _seed(words, cps, offsets, wcount, chars, seed_size, int(max_piece_len))
    pieces = chars + subs
    freq = [int(x) for x in char_freq.tolist()] + sub_freq
    z = float(sum(freq))
    lp = np.asarray([math.log(f / z) for f in freq], dtype=np.float64)
    pcps, poffsets = spec.flatten_words(pieces)
    ck, node_piece = _build_trie(pcps, poffsets)
    max_len = max(len(s) for s in pieces)
    nv = len(pieces)
    alive = np.ones(nv, dtype=np.bool_)
    is_char = np.zeros(nv, dtype=np.bool_)
    is_char[:len(chars)] = True
    str_rank = np.empty(nv, dtype=np.int64)
    str_rank[sorted(range(nv), key=pieces.__getitem__)] = np.arange(nv)
    counts = np.zeros(nv, dtype=np.float64)
    loss = np.empty(nv, dtype=np.float64)
    history: list[float] = []
    n_alive = nv
    # the lattices depend only on which pieces live: built once, compacted as they die
    eoff, e_i, e_j, e_p = _lattice(cps, offsets, ck, node_piece, alive, max_len)
    n_edges = e_p.size
    while True:
        for _ in range(em_iters):
            ll = _e_step(eoff, e_i, e_j, e_p, offsets, wcount, lp, em == "viterbi", counts)
            history.append(float(ll))
            n_alive_now = _m_step(counts, alive, is_char, lp)
            if n_alive_now < n_alive:
                n_edges = _compact(eoff, e_i, e_j, e_p, alive)
                e_i, e_j, e_p = e_i[:n_edges], e_j[:n_edges], e_p[:n_edges]
            n_alive = n_alive_now
        if n_alive <= vocab_size:
            break
        _e_step(eoff, e_i, e_j, e_p, offsets, wcount, lp, True, counts)
        _losses(pcps, poffsets, ck, node_piece, alive, is_char, lp, counts, max_len, loss)
        keep = max(vocab_size, int(shrink * n_alive)) - len(chars)
        cand = np.flatnonzero(alive & ~is_char)
        order = cand[np.lexsort((str_rank[cand], -loss[cand]))]  # (-loss, the string)
        alive[order[max(keep, 0):]] = False
        n_alive = int(alive.sum())
        n_edges = _compact(eoff, e_i, e_j, e_p, alive)
        e_i, e_j, e_p = e_i[:n_edges], e_j[:n_edges], e_p[:n_edges]
        if progress is not None:
            progress(max(0, nv - n_alive), max(1, nv - vocab_size))
    ids = np.flatnonzero(alive)
    ids = ids[np.lexsort((str_rank[ids], -lp[ids]))]
    return [pieces[k] for k in ids.tolist()], lp[ids].tolist(), history


def train(texts, vocab_size: int, *, method: str = "grow", boundary: str = "end",
          sep: str | None = None, max_pieces: int | None = None, progress=None,
          **options) -> spec.UnigramModel:
    """:func:`spec.tokenize.swe.train` with the training loop compiled (the same model)."""
    spec._check_train_args(vocab_size, method, progress)
    word_counts = spec.count_words(texts, boundary=boundary, sep=sep)
    spec.check_corpus(word_counts, "texts")
    if method == "grow":
        if options:
            raise TypeError(f"options: method='grow' takes none, got {sorted(options)}")
        pieces, counts = grow(word_counts, int(vocab_size), progress=progress)
        log_probs = spec.grown_log_probs(counts)
    else:
        pieces, log_probs, _ = prune(word_counts, int(vocab_size), progress=progress, **options)
    return spec.UnigramModel(pieces, log_probs, boundary=boundary, sep=sep, max_pieces=max_pieces)
