"""The backends' cos/sin cache hands out exactly the spec's tables, however it grew."""

from __future__ import annotations

import numpy as np
import pytest

from backends import rope_cache
from spec.position.rope import tables


@pytest.mark.parametrize("negate", [False, True])
def test_every_request_equals_the_spec_table(negate):
    rope_cache._cache.clear()
    # decoding-like growth, then a prefill with T > S (negative query positions), then a
    # window inside what is cached
    requests = [(0, 1), (0, 2), (0, 3), (0, 17), (-5, 9), (3, 40), (-5, 1), (0, 1000), (7, 8)]
    for dtype in (np.float32, np.float64):
        for lo, hi in requests:
            got = rope_cache.rope_tables(lo, hi, 8, 500.0, dtype, negate=negate)
            positions = np.arange(lo, hi)
            want = tables(-positions if negate else positions, 8, 500.0, dtype)
            for g, w in zip(got, want):
                assert g.dtype == w.dtype
                np.testing.assert_array_equal(g, w)


def test_the_range_grows_by_doubling_and_keys_are_bounded():
    rope_cache._cache.clear()
    for hi in range(1, 600):  # one token at a time
        rope_cache.rope_tables(0, hi, 4, 10000.0, np.float32)
    bottom, top, _ = rope_cache._cache[(10000.0, 4, np.dtype(np.float32).str, False)]
    assert (bottom, top) == (0, 1024)  # grown by doubling
    for base in range(2, 40):
        rope_cache.rope_tables(0, 4, 4, float(base), np.float32)
    assert len(rope_cache._cache) == rope_cache._KEYS
