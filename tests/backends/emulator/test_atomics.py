"""Atomics of the CUDA emulator: many threads in many blocks (which run concurrently on
several OS threads) hit the same few addresses, and the results must be what serialised
atomic operations give: exact counts, old values that form a permutation, wrap-arounds
at the documented points, and 16-bit atomics that leave their neighbours alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.cuda.emulator import RawModule

BLOCKS, THREADS = 64, 256
N = BLOCKS * THREADS

SOURCE = r"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#define ID (blockIdx.x * blockDim.x + threadIdx.x)

extern "C" __global__ void add(int* i, int* olds, unsigned int* u, unsigned long long* ull,
                               float* f, double* d, int* scoped) {
    const unsigned id = ID;
    olds[id] = atomicAdd(i, 1);
    atomicAdd(u, 0x10000001u);  // wraps modulo 2^32
    atomicAdd(ull, 1ull << 40);
    atomicAdd(f, 1.0f);
    atomicAdd(d, 0.5);
    atomicAdd_block(&scoped[0], 1);
    atomicAdd_system(&scoped[1], 2);
    atomicSub(&scoped[2], 3);
    atomicSub_block(reinterpret_cast<unsigned int*>(&scoped[3]), 1u);
}

// Long enough per block that blocks on different worker threads overlap in time: a
// non-atomic read-modify-write would lose updates here.
extern "C" __global__ void hammer(int* i, float* f, __half* h, int rounds) {
    for (int k = 0; k < rounds; ++k) {
        atomicAdd(i, 1);
        atomicAdd(f, 1.0f);
        atomicAdd(&h[threadIdx.x % 32], __float2half(1.0f));
    }
}

extern "C" __global__ void min_max(const int* v, int* mm, const long long* lv, long long* lmm,
                                   const unsigned int* uv, unsigned int* umm,
                                   const unsigned long long* ulv, unsigned long long* ulmm) {
    const unsigned id = ID;
    atomicMax(&mm[0], v[id]);
    atomicMin(&mm[1], v[id]);
    atomicMax_system(&lmm[0], lv[id]);
    atomicMin_block(&lmm[1], lv[id]);
    atomicMax(&umm[0], uv[id]);
    atomicMin(&umm[1], uv[id]);
    atomicMax(&ulmm[0], ulv[id]);
    atomicMin(&ulmm[1], ulv[id]);
}

// Adds by compare-and-swap loops, the way CUDA code builds atomics it lacks.
extern "C" __global__ void cas_add(int* i, unsigned int* u, unsigned long long* ull,
                                   unsigned short* us) {
    int old = *i, assumed;
    do {
        assumed = old;
        old = atomicCAS(i, assumed, assumed + 1);
    } while (old != assumed);
    unsigned int uold = *u, uassumed;
    do {
        uassumed = uold;
        uold = atomicCAS_block(u, uassumed, uassumed + 7u);
    } while (uold != uassumed);
    unsigned long long lold = *ull, lassumed;
    do {
        lassumed = lold;
        lold = atomicCAS(ull, lassumed, lassumed + (1ull << 33));
    } while (lold != lassumed);
    unsigned short sold = *us, sassumed;
    do {
        sassumed = sold;
        sold = atomicCAS(us, sassumed, (unsigned short)(sassumed + 5));
    } while (sold != sassumed);
}

extern "C" __global__ void inc_dec(unsigned int* counters, unsigned int* inc_olds, unsigned int limit) {
    const unsigned id = ID;
    inc_olds[id] = atomicInc(&counters[0], limit);
    atomicDec(&counters[1], limit);
    atomicDec_system(&counters[2], limit);
}

extern "C" __global__ void exchange(int* slot, int* olds, float* fslot, float* folds,
                                    unsigned long long* lslot, unsigned long long* lolds,
                                    unsigned int* uslot) {
    const unsigned id = ID;
    olds[id] = atomicExch(slot, int(id) + 1);
    folds[id] = atomicExch(fslot, float(id) + 1.0f);
    lolds[id] = atomicExch(lslot, (unsigned long long)id << 32);
    atomicExch_block(uslot, id);
}

extern "C" __global__ void bitwise(unsigned int* ored, unsigned int* anded, const unsigned int* values,
                                   unsigned int* xored, int* signed_words,
                                   unsigned long long* wide_words) {
    const unsigned id = ID;
    const unsigned bit = 1u << (id / 8 % 32);
    atomicOr(&ored[id % 8], bit);
    atomicAnd(&anded[id % 8], ~bit);
    atomicXor(xored, values[id]);
    atomicOr(&signed_words[0], int(bit));
    atomicAnd(&signed_words[1], ~int(bit));
    atomicXor_system(&signed_words[2], int(values[id]));
    atomicOr(&wide_words[0], (unsigned long long)bit << 32);
    atomicXor_block(&wide_words[1], (unsigned long long)values[id] << 16);
    atomicAnd(&wide_words[2], ~((unsigned long long)bit << 31));
}

// 16-bit float atomics: slot id % slots of an array whose last element (a sentinel that
// shares its 32-bit word with the last slot) nobody adds to.
extern "C" __global__ void add_half(__half* h, int slots, __half* olds) {
    const unsigned id = ID;
    olds[id] = atomicAdd(&h[id % slots], __float2half(0.25f));
}

extern "C" __global__ void add_bfloat16(__nv_bfloat16* b, int slots) {
    atomicAdd(&b[ID % slots], __float2bfloat16(1.0f));
}

// Pairs travel as their 32-bit words: lane x in the low half, lane y in the high half.
extern "C" __global__ void add_pairs(unsigned int* h2, int h2_slots, unsigned int* b2, int b2_slots) {
    const unsigned id = ID;
    atomicAdd(reinterpret_cast<__half2*>(&h2[id % h2_slots]), __floats2half2_rn(0.25f, 1.0f));
    atomicAdd_block(reinterpret_cast<__nv_bfloat162*>(&b2[id % b2_slots]),
                    __floats2bfloat162_rn(1.0f, 2.0f));
}

// Atomics on shared memory, and the fences, which must at least compile and not hang.
extern "C" __global__ void shared_counter(int* out) {
    __shared__ int count;
    if (threadIdx.x == 0) count = 0;
    __syncthreads();
    atomicAdd(&count, 1);
    __threadfence_block();
    __syncthreads();
    __threadfence();
    __threadfence_system();
    if (threadIdx.x == 0) out[blockIdx.x] = count;
}
"""


@pytest.fixture(scope="module")
def mod():
    module = RawModule(code=SOURCE, source_name="test_atomics.cu")
    module.compile()
    return module


def launch(mod, name, *args):
    mod.get_function(name)((BLOCKS,), (THREADS,), args)


RNG = np.random.default_rng(7)


def test_add_and_sub_count_every_thread(mod):
    i, olds = np.zeros(1, np.int32), np.full(N, -1, np.int32)
    u, ull = np.array([5], np.uint32), np.array([3], np.uint64)
    f, d, scoped = np.zeros(1, np.float32), np.zeros(1, np.float64), np.zeros(4, np.int32)
    launch(mod, "add", i, olds, u, ull, f, d, scoped)
    assert i[0] == N
    np.testing.assert_array_equal(np.sort(olds), np.arange(N))  # each old value exactly once
    assert int(u[0]) == (5 + N * 0x10000001) % 2**32
    assert int(ull[0]) == 3 + N * 2**40
    assert f[0] == N and d[0] == N / 2  # every partial sum is exact
    np.testing.assert_array_equal(scoped, [N, 2 * N, -3 * N, -N])


def test_concurrent_blocks_lose_no_update(mod):
    rounds = 64
    i, f, h = np.zeros(1, np.int32), np.zeros(1, np.float32), np.zeros(32, np.float16)
    blocks = 4  # 4 · 256 · 64 / 32 = 2048 adds of 1 per half: every partial sum is exact
    mod.get_function("hammer")((blocks,), (THREADS,), (i, f, h, np.int32(rounds)))
    assert i[0] == f[0] == blocks * THREADS * rounds
    np.testing.assert_array_equal(h, np.full(32, 2048))
    i[0] = 0
    mod.get_function("hammer")((BLOCKS,), (THREADS,), (i, f, h, np.int32(rounds)))
    assert i[0] == N * rounds


def test_min_and_max(mod):
    v = RNG.integers(-(2**31), 2**31 - 1, N, dtype=np.int32)
    lv = RNG.integers(-(2**63), 2**63 - 1, N, dtype=np.int64)
    uv = RNG.integers(0, 2**32 - 1, N, dtype=np.uint32)
    ulv = RNG.integers(0, 2**64 - 1, N, dtype=np.uint64, endpoint=True)
    mm = np.array([np.iinfo(np.int32).min, np.iinfo(np.int32).max], np.int32)
    lmm = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max], np.int64)
    umm = np.array([0, 2**32 - 1], np.uint32)
    ulmm = np.array([0, 2**64 - 1], np.uint64)
    launch(mod, "min_max", v, mm, lv, lmm, uv, umm, ulv, ulmm)
    for got, values in ((mm, v), (lmm, lv), (umm, uv), (ulmm, ulv)):
        np.testing.assert_array_equal(got, [values.max(), values.min()])


def test_compare_and_swap_loops(mod):
    i, u = np.array([-100], np.int32), np.zeros(1, np.uint32)
    ull, us = np.array([2**40], np.uint64), np.array([65000], np.uint16)
    launch(mod, "cas_add", i, u, ull, us)
    assert i[0] == N - 100
    assert int(u[0]) == 7 * N
    assert int(ull[0]) == 2**40 + N * 2**33
    assert int(us[0]) == (65000 + 5 * N) % 2**16


def serial_inc_dec(start: int, limit: int, steps: int, inc: bool) -> int:
    value = start
    for _ in range(steps):
        if inc:
            value = 0 if value >= limit else value + 1
        else:
            value = limit if value == 0 or value > limit else value - 1
    return value


def test_inc_and_dec_wrap_as_cuda_defines(mod):
    limit = 99
    counters = np.array([0, 0, 500], np.uint32)
    inc_olds = np.zeros(N, np.uint32)
    launch(mod, "inc_dec", counters, inc_olds, np.uint32(limit))
    want = [serial_inc_dec(0, limit, N, True), serial_inc_dec(0, limit, N, False),
            serial_inc_dec(500, limit, N, False)]
    np.testing.assert_array_equal(counters, want)
    # Increments from 0 pass through 0, 1, ..., limit in turn.
    counts = np.bincount(inc_olds, minlength=limit + 1)
    np.testing.assert_array_equal(counts, [N // (limit + 1) + (k < N % (limit + 1))
                                           for k in range(limit + 1)])


@settings(max_examples=10)
@given(start=st.integers(0, 2**32 - 1), limit=st.integers(0, 2**32 - 1))
def test_inc_and_dec_from_any_start(mod, start, limit):
    counters = np.array([start, start, start], np.uint32)
    launch(mod, "inc_dec", counters, np.zeros(N, np.uint32), np.uint32(limit))
    np.testing.assert_array_equal(counters, [serial_inc_dec(start, limit, N, True),
                                             serial_inc_dec(start, limit, N, False),
                                             serial_inc_dec(start, limit, N, False)])


def test_exchange_hands_every_value_on_once(mod):
    slot, olds = np.zeros(1, np.int32), np.zeros(N, np.int32)
    fslot, folds = np.zeros(1, np.float32), np.zeros(N, np.float32)
    lslot, lolds = np.array([7], np.uint64), np.zeros(N, np.uint64)
    uslot = np.array([2**32 - 1], np.uint32)
    launch(mod, "exchange", slot, olds, fslot, folds, lslot, lolds, uslot)
    # The old values and the last value written are the initial value and every thread's.
    np.testing.assert_array_equal(np.sort(np.append(olds, slot)), np.arange(N + 1))
    np.testing.assert_array_equal(np.sort(np.append(folds, fslot)), np.arange(N + 1))
    want = np.sort(np.append(np.arange(N, dtype=np.uint64) << np.uint64(32), np.uint64(7)))
    np.testing.assert_array_equal(np.sort(np.append(lolds, lslot)), want)
    assert uslot[0] < N


def test_bitwise_operations(mod):
    ored, anded = np.zeros(8, np.uint32), np.full(8, 2**32 - 1, np.uint32)
    values = RNG.integers(0, 2**32 - 1, N, dtype=np.uint32)
    xored = np.zeros(1, np.uint32)
    signed_words = np.array([0, -1, 0], np.int32)
    wide_words = np.array([0, 0, 2**64 - 1], np.uint64)
    launch(mod, "bitwise", ored, anded, values, xored, signed_words, wide_words)
    np.testing.assert_array_equal(ored, np.full(8, 2**32 - 1))
    np.testing.assert_array_equal(anded, np.zeros(8))
    assert xored[0] == np.bitwise_xor.reduce(values)
    np.testing.assert_array_equal(signed_words, [-1, 0, np.bitwise_xor.reduce(values.view(np.int32))])
    xor_wide = np.bitwise_xor.reduce(values.astype(np.uint64) << np.uint64(16))
    # Bits 31..62 cleared; bit 63 and bits 0..30 untouched.
    want = np.array([0xFFFFFFFF00000000, xor_wide, 0x800000007FFFFFFF], np.uint64)
    np.testing.assert_array_equal(wide_words, want)


def test_half_add_is_exact_and_leaves_neighbours_alone(mod):
    slots = 17
    h = np.zeros(slots + 1, np.float16)
    h[slots] = np.float16(-3.5)  # sentinel in the same 32-bit word as slot 16
    olds = np.zeros(N, np.float16)
    launch(mod, "add_half", h, np.int32(slots), olds)
    per_slot = np.bincount(np.arange(N) % slots, minlength=slots)
    np.testing.assert_array_equal(h[:slots], per_slot * 0.25)  # all partial sums exact
    assert h[slots] == np.float16(-3.5)
    # The old values seen at slot 0 are 0, 0.25, ..., each once.
    seen = np.sort(olds[np.arange(N) % slots == 0].astype(np.float64))
    np.testing.assert_array_equal(seen, np.arange(per_slot[0]) * 0.25)


def test_bfloat16_add_is_exact_and_leaves_neighbours_alone(mod):
    slots = 65
    b = np.zeros(slots + 1, np.uint16)
    b[slots] = 0xBF80  # -1.0, the sentinel sharing a word with slot 64
    launch(mod, "add_bfloat16", b, np.int32(slots))
    per_slot = np.bincount(np.arange(N) % slots, minlength=slots)  # 252 or 253: exact
    values = (b[:slots].astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(values, per_slot)
    assert b[slots] == 0xBF80


def test_pair_adds(mod):
    # 2048 adds per half2 slot, 256 per bfloat162 slot: every partial sum is exact.
    h2, b2 = np.zeros(8, np.uint32), np.zeros(64, np.uint32)
    launch(mod, "add_pairs", h2, np.int32(len(h2)), b2, np.int32(len(b2)))
    halves = h2.view(np.float16).reshape(-1, 2)
    np.testing.assert_array_equal(halves, np.tile([2048 * 0.25, 2048.0], (len(h2), 1)))
    bf = (b2.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(-1, 2)
    np.testing.assert_array_equal(bf, np.tile([256.0, 512.0], (len(b2), 1)))


def test_shared_memory_atomics_and_fences(mod):
    out = np.zeros(BLOCKS, np.int32)
    launch(mod, "shared_counter", out)
    np.testing.assert_array_equal(out, np.full(BLOCKS, THREADS))
