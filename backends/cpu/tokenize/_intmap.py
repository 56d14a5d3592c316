"""An open-addressing int64 -> int64 hash map over one flat array, for Numba kernels.

Shared by :mod:`backends.cpu.tokenize.bpe` (pair table of training, rank table of the
encoder) and :mod:`backends.cpu.tokenize.swe` (pairs, trie children, character ids).
No typed containers: a map is a plain ``int64`` array, so it passes through
``@njit`` signatures, ``prange`` shares and caching like any other array.

Layout and contract:

* **Interleaved.** Slot i holds its key at ``kv[2i]`` and its value at ``kv[2i + 1]``,
  side by side so a probe (and the value read of a hit) touches one cache line. The
  number of slots is a power of two (>= 16); probing is linear.
* **Key domain: keys are >= 0.** :data:`EMPTY` (-1) marks an empty slot, so no key may
  be negative (no check is made in the kernels; callers document why theirs are >= 0:
  a pair packed as ``(a << 32) | b`` with ``0 <= a, b < 2**31``, a trie edge as
  ``(node << 21) | code_point``...).
* **Value domain: values are >= 0.** :func:`map_get` returns :data:`MISSING` (-1) for an
  absent key, so a stored -1 would read as absent.
* **Load factor <= 1/2**, kept by :func:`map_reserve` / :func:`map_put` (a caller may size
  a table larger with :func:`map_new` for a lower load). Insertion assumes the key is
  absent (callers look it up first); there is no deletion.

Keys are only ever looked up, never iterated in order, so the hash and the table size
affect speed only, never a result.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["EMPTY", "MISSING", "map_get", "map_insert", "map_new", "map_put", "map_reserve"]

#: Key of an empty slot (keys are >= 0).
EMPTY = -1
#: What :func:`map_get` returns for an absent key (values are >= 0).
MISSING = -1
_MUL = np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15, the golden ratio, as int64


@njit(cache=True, inline="always")
def _hash(key):
    """A multiplicative hash (int64 multiply, wrapping) with the high bits folded into
    the low ones: the slot is the low bits, and a product's low bits see only the key's
    low bits (a pair key ``(a << 32) | b`` would hash on b alone)."""
    h = key * _MUL
    return h ^ (h >> 29)


@njit(cache=True)
def map_new(n):
    """An empty map with room for ``n`` keys at load <= 1/2 (16 slots at least)."""
    size = 16
    while size < 2 * n:
        size *= 2
    return np.full(2 * size, EMPTY, dtype=np.int64)


@njit(cache=True, inline="always")
def map_get(kv, key):
    """The value of ``key`` (>= 0), or :data:`MISSING`."""
    mask = (kv.shape[0] >> 1) - 1
    i = _hash(key) & mask
    while True:
        k = kv[2 * i]
        if k == key:
            return kv[2 * i + 1]
        if k == EMPTY:
            return MISSING
        i = (i + 1) & mask


@njit(cache=True, inline="always")
def map_insert(kv, key, val):
    """Insert an absent ``key`` (>= 0) into a map with room (see :func:`map_reserve`)."""
    mask = (kv.shape[0] >> 1) - 1
    i = _hash(key) & mask
    while kv[2 * i] != EMPTY:
        i = (i + 1) & mask
    kv[2 * i] = key
    kv[2 * i + 1] = val


@njit(cache=True)
def _rehash(kv, need):
    """A copy of ``kv`` with twice the slots (or more) so that ``need`` keys keep the
    load factor <= 1/2."""
    size = kv.shape[0] >> 1
    while 2 * need > size:
        size *= 2
    new = np.full(2 * size, EMPTY, dtype=np.int64)
    for t in range(kv.shape[0] >> 1):
        if kv[2 * t] != EMPTY:
            map_insert(new, kv[2 * t], kv[2 * t + 1])
    return new


@njit(cache=True, inline="always")
def map_reserve(kv, used, extra):
    """The map, grown (rehashed) if needed so that ``extra`` more keys (beyond the
    ``used`` it holds) keep the load factor <= 1/2. The check is inlined (hot loops call
    this per insertion); the rehash is not."""
    if 4 * (used + extra) <= kv.shape[0]:
        return kv
    return _rehash(kv, used + extra)


@njit(cache=True)
def map_put(kv, used, key, val):
    """Insert an absent ``key``; returns the (possibly grown) map and the new count."""
    kv = map_reserve(kv, used, 1)
    map_insert(kv, key, val)
    return kv, used + 1
