"""RoPE's cos/sin tables for the backends, kept between calls (a "cos/sin cache").

The spec builds the tables of every call afresh (:func:`spec.position.rope.tables`:
float64 angles, cos and sin, rounded once); at T = S = 2048 and D = 64 that is about
2 ms, 5% of a causal Numba forward. The backends keep, per (base, D, dtype, sign), one
table covering a range of positions and hand out row slices of it. Each row is a
function of its own position only (``tables`` works element by element), so a slice of
a wider table is bit-identical to the table the spec builds for those positions; a
request outside the range rebuilds it wider (doubling), so decoding one token at a time
rebuilds O(log S) times. The spec itself stays pure: this cache lives in the backends.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from spec.position.rope import RopeTables, tables

_KEYS = 16  # tables of 16 (base, D, dtype, sign) combinations at most
_cache: OrderedDict[tuple, tuple[int, int, RopeTables]] = OrderedDict()
_lock = threading.Lock()


def rope_tables(lo: int, hi: int, D: int, base: float, dtype, *, negate: bool = False) -> RopeTables:
    """Rows for positions lo .. hi - 1 (row p - lo), or for their negatives with ``negate``.

    Equal, bit for bit, to ``tables(arange(lo, hi) (negated), D, base, dtype)``. The
    arrays are views into the cache: callers read them and never write.
    """
    dtype = np.dtype(dtype)
    key = (float(base), int(D), dtype.str, bool(negate))
    with _lock:
        entry = _cache.get(key)
        if entry is None or lo < entry[0] or hi > entry[1]:
            top = max(hi, 1 if entry is None else entry[1])
            top = 1 << (top - 1).bit_length()  # grow to a power of two: few rebuilds
            bottom = min(lo, 0 if entry is None else entry[0])
            positions = np.arange(bottom, top, dtype=np.int64)
            entry = (bottom, top, tables(-positions if negate else positions, D, base, dtype))
            _cache[key] = entry
        _cache.move_to_end(key)
        while len(_cache) > _KEYS:
            _cache.popitem(last=False)
    bottom, _, table = entry
    return RopeTables(table.cos_TP[lo - bottom:hi - bottom], table.sin_TP[lo - bottom:hi - bottom])
