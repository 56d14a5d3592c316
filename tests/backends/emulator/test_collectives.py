"""Warp collectives against NumPy models of CUDA's definitions (CUDA C++ Programming
Guide, "Warp Shuffle Functions", "Warp Vote Functions", "Warp Reduce Functions", "Warp
Match Functions"; the PTX ISA's shfl.sync for the segment rules)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.cuda.emulator import RawModule

SOURCE = r"""
#include <cuda_fp16.h>

extern "C" __global__ void shuffle(const long long* in, const int* arg, long long* out,
                                   int kind, int width) {
    const unsigned t = threadIdx.x;
    const long long v = in[t];
    const int a = arg[t];
    long long r = 0;
    switch (kind) {
        case 0: r = __shfl_sync(0xffffffffu, v, a, width); break;
        case 1: r = __shfl_up_sync(0xffffffffu, v, (unsigned)a, width); break;
        case 2: r = __shfl_down_sync(0xffffffffu, v, (unsigned)a, width); break;
        case 3: r = __shfl_xor_sync(0xffffffffu, v, a, width); break;
    }
    out[t] = r;
}

// Shuffles move any value of up to 8 bytes bit for bit.
extern "C" __global__ void shuffle_types(const float* f, const double* d, const __half* h,
                                         float* fo, double* dout, __half* ho, int* io) {
    const unsigned t = threadIdx.x;
    fo[t] = __shfl_xor_sync(0xffffffffu, f[t], 1);
    dout[t] = __shfl_down_sync(0xffffffffu, d[t], 3);
    __half2 pair = __halves2half2(h[2 * t], h[2 * t + 1]);
    pair = __shfl_sync(0xffffffffu, pair, 0);
    ho[2 * t] = __low2half(pair);
    ho[2 * t + 1] = __high2half(pair);
    io[t] = __shfl_up_sync(0xffffffffu, (int)t * 10, 1, 8);
}

// Every vote, reduction and match for one mask per thread (the lanes of each mask all
// name the same mask).
extern "C" __global__ void votes(const int* pred, const int* value, const unsigned* mask,
                                 unsigned* out) {
    const unsigned t = threadIdx.x;
    const unsigned m = mask[t];
    const int p = pred[t];
    const int v = value[t];
    unsigned* o = out + 16 * t;
    o[0] = __ballot_sync(m, p);
    o[1] = __any_sync(m, p);
    o[2] = __all_sync(m, p);
    o[3] = __reduce_add_sync(m, v);
    o[4] = __reduce_add_sync(m, (unsigned)v);
    o[5] = __reduce_min_sync(m, v);
    o[6] = __reduce_min_sync(m, (unsigned)v);
    o[7] = __reduce_max_sync(m, v);
    o[8] = __reduce_max_sync(m, (unsigned)v);
    o[9] = __reduce_and_sync(m, (unsigned)v);
    o[10] = __reduce_or_sync(m, (unsigned)v);
    o[11] = __reduce_xor_sync(m, (unsigned)v);
    o[12] = __match_any_sync(m, v);
    o[13] = __match_any_sync(m, (double)(v & 1));
    int all_pred = -1;
    o[14] = __match_all_sync(m, v, &all_pred);
    o[15] = all_pred;
}

// Lanes exchange through shared memory; __syncwarp orders the writes before the reads.
extern "C" __global__ void syncwarp_exchange(int* out, int halves) {
    __shared__ int s[64];
    const unsigned t = threadIdx.x;
    const unsigned lane = t % 32;
    s[t] = 3 * t + 1;
    if (halves) __syncwarp(lane < 16 ? 0x0000ffffu : 0xffff0000u);
    else __syncwarp();
    out[t] = s[t ^ 1];
}
"""

KINDS = ("idx", "up", "down", "xor")
WIDTHS = (1, 2, 4, 8, 16, 32)


@pytest.fixture(scope="module")
def module():
    return RawModule(code=SOURCE, source_name="collectives.cu")


def shuffle_model(kind: str, values, args, width: int) -> np.ndarray:
    """CUDA's result for every lane of a full warp (PTX ISA, shfl.sync)."""
    out = np.empty_like(values)
    for lane in range(len(values)):
        start = lane & ~(width - 1)
        end = start + width - 1
        a = int(args[lane])
        if kind == "idx":
            src = start + (a & (width - 1))  # srcLane mod width, in the caller's segment
        elif kind == "up":
            src = lane - (a & 0xFFFFFFFF)
            src = src if src >= start else lane
        elif kind == "down":
            src = lane + (a & 0xFFFFFFFF)
            src = src if src <= end else lane
        else:
            src = lane ^ (a & 0xFFFFFFFF)
            src = src if src <= end else lane  # earlier segments are readable, later not
        out[lane] = values[src]
    return out


def _run_shuffle(module, kind, args, width, warps=2):
    n = 32 * warps
    values = np.arange(n, dtype=np.int64) * 1_000_003 + (1 << 40)
    args = np.asarray(args, dtype=np.int32)
    out = np.zeros(n, np.int64)
    module.get_function("shuffle")(1, n, (values, args, out, np.int32(KINDS.index(kind)),
                                          np.int32(width)))
    for w in range(warps):
        lanes = slice(32 * w, 32 * w + 32)
        want = shuffle_model(kind, values[lanes], args[lanes], width)
        np.testing.assert_array_equal(out[lanes], want, err_msg=f"{kind} width={width} warp={w}")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_shuffle_and_width(module, kind, width):
    rng = np.random.default_rng(KINDS.index(kind) * 100 + width)
    low, high = (-40, 70) if kind == "idx" else (0, 40)
    _run_shuffle(module, kind, rng.integers(low, high, size=64), width)


@settings(max_examples=25)
@given(kind=st.sampled_from(KINDS), width=st.sampled_from(WIDTHS),
       args=st.lists(st.integers(-2**31, 2**31 - 1) | st.integers(-70, 70), min_size=64,
                     max_size=64))
def test_shuffle_operands_of_any_value(module, kind, width, args):
    _run_shuffle(module, kind, args, width)


def test_uniform_deltas_as_in_a_reduction(module):
    for kind in ("up", "down", "xor"):
        for delta in (0, 1, 2, 16, 31, 32, 33):
            for width in (8, 32):
                _run_shuffle(module, kind, [delta] * 64, width)


def test_shuffles_move_bits_of_any_type(module):
    rng = np.random.default_rng(3)
    f = rng.standard_normal(64).astype(np.float32)
    f[5] = np.nan
    d = rng.standard_normal(64)
    h = rng.standard_normal(128).astype(np.float16)
    fo, do, ho, io = (np.zeros(64, np.float32), np.zeros(64), np.zeros(128, np.float16),
                      np.zeros(64, np.int32))
    module.get_function("shuffle_types")(1, 64, (f, d, h, fo, do, ho, io))
    lanes = np.arange(64)
    np.testing.assert_array_equal(fo.view(np.uint32), f[lanes ^ 1].view(np.uint32))
    down = np.where(lanes % 32 + 3 < 32, lanes + 3, lanes)
    np.testing.assert_array_equal(do, d[down])
    pair0 = h.reshape(64, 2)[(lanes // 32) * 32]
    np.testing.assert_array_equal(ho.reshape(64, 2), pair0)
    up = np.where(lanes % 8 >= 1, lanes - 1, lanes)
    np.testing.assert_array_equal(io, up * 10)


def _masks(pattern: str, n: int) -> np.ndarray:
    lanes = np.arange(n) % 32
    warp_size = np.minimum(32, n - (np.arange(n) // 32) * 32)
    valid = ((1 << warp_size.astype(np.uint64)) - 1).astype(np.uint32)
    if pattern == "full":
        m = np.full(n, 0xFFFFFFFF, np.uint64)
    elif pattern == "halves":
        m = np.where(lanes < 16, 0x0000FFFF, 0xFFFF0000)
    elif pattern == "parity":
        m = np.where(lanes % 2 == 0, 0x55555555, 0xAAAAAAAA)
    elif pattern == "quads":
        m = 0xF << (lanes // 4 * 4)
    else:  # singletons
        m = 1 << lanes
    return (np.asarray(m, np.uint64).astype(np.uint32) & valid).astype(np.uint32)


def vote_model(pred, value, mask) -> np.ndarray:
    """Expected ``votes`` output for one block (16 words per thread)."""
    n = len(pred)
    out = np.zeros((n, 16), np.uint32)
    for t in range(n):
        base = t // 32 * 32
        group = [base + lane for lane in range(32) if mask[t] >> lane & 1]
        p = [pred[g] != 0 for g in group]
        v = np.array([value[g] for g in group], np.int64)
        u = v & 0xFFFFFFFF
        ballot = sum(1 << (g - base) for g in group if pred[g] != 0)
        same = sum(1 << (g - base) for g in group if value[g] == value[t])
        parity = sum(1 << (g - base) for g in group if value[g] % 2 == value[t] % 2)
        xor = 0
        for x in u:
            xor ^= int(x)
        and_ = 0xFFFFFFFF
        for x in u:
            and_ &= int(x)
        or_ = 0
        for x in u:
            or_ |= int(x)
        all_same = all(value[g] == value[group[0]] for g in group)
        out[t] = [ballot, any(p), all(p), u.sum() & 0xFFFFFFFF, u.sum() & 0xFFFFFFFF,
                  v.min() & 0xFFFFFFFF, u.min(), v.max() & 0xFFFFFFFF, u.max(), and_, or_, xor,
                  same, parity, mask[t] if all_same else 0, int(all_same)]
    return out


@pytest.mark.parametrize("pattern", ["full", "halves", "parity", "quads", "singletons"])
@pytest.mark.parametrize("n", [64, 40])  # 40: a partial last warp of 8 lanes
def test_votes_reductions_and_matches(module, pattern, n):
    rng = np.random.default_rng(n)
    pred = (rng.random(n) < 0.5).astype(np.int32) * rng.integers(1, 5, size=n).astype(np.int32)
    value = rng.integers(-3, 3, size=n).astype(np.int32)
    value[:8] = 2**31 - 1 - np.arange(8)  # extremes for the signed/unsigned orders
    value[8:16] = -(2**31) + np.arange(8)
    mask = _masks(pattern, n)
    out = np.zeros(n * 16, np.uint32)
    module.get_function("votes")(1, n, (pred, value, mask, out))
    np.testing.assert_array_equal(out.reshape(n, 16), vote_model(pred, value, mask))


def test_match_all_with_equal_values(module):
    n = 64
    value = np.full(n, 9, np.int32)
    mask = _masks("halves", n)
    out = np.zeros(n * 16, np.uint32)
    module.get_function("votes")(1, n, (np.ones(n, np.int32), value, mask, out))
    out = out.reshape(n, 16)
    np.testing.assert_array_equal(out[:, 14], mask)
    np.testing.assert_array_equal(out[:, 15], 1)
    np.testing.assert_array_equal(out[:, 2], 1)  # __all_sync


@pytest.mark.parametrize("halves", [0, 1])
def test_syncwarp_orders_shared_memory(module, halves):
    out = np.zeros(64, np.int32)
    module.get_function("syncwarp_exchange")(1, 64, (out, np.int32(halves)))
    np.testing.assert_array_equal(out, 3 * (np.arange(64) ^ 1) + 1)
