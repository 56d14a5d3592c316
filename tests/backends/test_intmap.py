"""The shared int64 -> int64 map of the Numba tokenizers against a dict."""
import numpy as np

from backends.cpu.tokenize._intmap import (
    EMPTY,
    MISSING,
    map_get,
    map_insert,
    map_new,
    map_put,
    map_reserve,
)


def _random_keys(rng, n):
    # the callers' key shapes: pair keys (a << 32) | b, trie keys (node << 21) | char,
    # small ids; all >= 0, with 0 and near-2**63 extremes
    a = rng.integers(0, 2**31, n)
    b = rng.integers(0, 2**31, n)
    keys = np.concatenate([(a << 32) | b, (a[: n // 4] << 21) | (b[: n // 4] & 0x1FFFFF),
                           rng.integers(0, 64, n // 8), [0, 2**63 - 1]])
    return [int(k) for k in rng.permutation(keys)]


def _check(kv, ref, absent):
    occupied = kv[0::2] != EMPTY
    assert int(occupied.sum()) == len(ref)
    assert 4 * len(ref) <= kv.shape[0]  # load factor <= 1/2
    for k, v in ref.items():
        assert map_get(kv, k) == v
    for k in absent:
        if k not in ref:
            assert map_get(kv, k) == MISSING


def test_map_matches_dict_through_growth():
    rng = np.random.default_rng(1234)
    keys = _random_keys(rng, 1200)
    absent = _random_keys(np.random.default_rng(99), 200)
    kv = map_new(1)  # 16 slots: many rehashes below
    assert kv.shape[0] == 32 and (kv == EMPTY).all()
    ref: dict[int, int] = {}
    used = 0
    for i, k in enumerate(keys):
        if k in ref:  # insertion takes absent keys only (callers look up first)
            assert map_get(kv, k) == ref[k]
            continue
        assert map_get(kv, k) == MISSING
        v = int(rng.integers(0, 2**62))
        if i % 3 == 0:
            kv, used = map_put(kv, used, k, v)
        else:  # reserve room for a batch, then insert without growth
            kv = map_reserve(kv, used, 1 + i % 5)
            size = kv.shape[0]
            map_insert(kv, k, v)
            used += 1
            assert kv.shape[0] == size
        ref[k] = v
        if i % 97 == 0:
            _check(kv, ref, absent)
    _check(kv, ref, absent)


def test_map_new_sizes_for_half_load():
    for n in (0, 1, 8, 9, 1000, 4096):
        kv = map_new(n)
        slots = kv.shape[0] // 2
        assert slots >= 16 and slots & (slots - 1) == 0 and slots >= 2 * n
        assert slots == 16 or slots < 4 * n
