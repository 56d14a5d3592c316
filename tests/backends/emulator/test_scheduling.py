"""Block scheduling: __syncthreads and its votes, shared memory, grids on many workers,
seeded schedules, and the portable (ucontext) fiber switch."""

from __future__ import annotations

import numpy as np
import pytest

from backends.cuda.emulator import RawModule

SOURCE = r"""
// Tree reduction of one value per thread in static shared memory; any block shape.
extern "C" __global__ void block_sum(const float* x, float* out) {
    __shared__ float buf[1024];
    const unsigned n = blockDim.x * blockDim.y * blockDim.z;
    const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    buf[t] = x[b * n + t];
    __syncthreads();
    unsigned width = 1;
    while (width < n) width <<= 1;
    for (unsigned s = width / 2; s > 0; s >>= 1) {
        if (t < s && t + s < n) buf[t] += buf[t + s];
        __syncthreads();
    }
    if (t == 0) out[b] = buf[0];
}

extern "C" __global__ void votes(const int* pred, int* out) {
    const unsigned t = threadIdx.x;
    const int p = pred[blockIdx.x * blockDim.x + t];
    const int c = __syncthreads_count(p);
    const int a = __syncthreads_and(p);
    const int o = __syncthreads_or(p);
    if (t == 0) {
        out[3 * blockIdx.x] = c;
        out[3 * blockIdx.x + 1] = a;
        out[3 * blockIdx.x + 2] = o;
    }
}

// Thread 0 reads dynamic shared memory before anyone writes it, then every thread writes.
extern "C" __global__ void poisoned(float* first, double* first_double) {
    extern __shared__ float smem[];
    if (threadIdx.x == 0) {
        first[blockIdx.x] = smem[5];
        first_double[blockIdx.x] = reinterpret_cast<double*>(smem)[3];
    }
    __syncthreads();
    smem[threadIdx.x] = 1.0f;
    __syncthreads();
}

// Reverse through static shared memory; threads of a block see each other's writes.
extern "C" __global__ void reverse(const int* x, int* y) {
    __shared__ int tile[256];
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = x[i];
    __syncthreads();
    y[i] = tile[blockDim.x - 1 - threadIdx.x];
}

// A data race: thread t reads its neighbour's slot with no barrier in between, so what it
// sees depends on the order threads run in.
extern "C" __global__ void racy(int* out) {
    __shared__ int slot[64];
    slot[threadIdx.x] = 0;
    __syncthreads();
    slot[threadIdx.x] = threadIdx.x + 1;
    out[blockIdx.x * blockDim.x + threadIdx.x] = slot[(threadIdx.x + 1) % blockDim.x];
}

// Records the order blocks start in.
extern "C" __global__ void block_order(int* counter, int* order) {
    if (threadIdx.x == 0) order[atomicAdd(counter, 1)] = blockIdx.x;
}

// A large local array: each fiber has its own stack.
extern "C" __global__ void big_frame(float* out) {
    float local[4096];
    for (int i = 0; i < 4096; ++i) local[i] = threadIdx.x + i;
    __syncthreads();
    float s = 0;
    for (int i = 0; i < 4096; ++i) s += local[i];
    out[threadIdx.x] = s;
}
"""


@pytest.fixture(scope="module")
def module():
    return RawModule(code=SOURCE, source_name="scheduling.cu")


@pytest.mark.parametrize("block", [(1,), (64,), (100,), (1024,), (8, 8), (5, 7), (4, 4, 4),
                                   (3, 5, 7), (32, 1, 2)])
def test_tree_reduction_in_shared_memory(module, block):
    grid = (3, 2)
    n, g = int(np.prod(block)), int(np.prod(grid))
    x = np.random.default_rng(n).integers(-8, 8, size=g * n).astype(np.float32)
    out = np.full(g, np.nan, np.float32)
    module.get_function("block_sum")(grid, block, (x, out))
    np.testing.assert_array_equal(out, x.reshape(g, n).sum(axis=1))


def test_many_blocks_on_many_workers(module, monkeypatch):
    monkeypatch.setenv("ATTNSPEC_EMULATOR_WORKERS", "5")
    grid, block = (7, 3, 2), (16, 4)
    x = np.arange(42 * 64, dtype=np.float32)
    out = np.zeros(42, np.float32)
    module.get_function("block_sum")(grid, block, (x, out))
    np.testing.assert_array_equal(out, x.reshape(42, 64).sum(axis=1))


def test_syncthreads_votes(module):
    rng = np.random.default_rng(1)
    pred = (rng.random((4, 96)) < [[0.0], [1.0], [0.5], [0.02]]).astype(np.int32)
    pred[2, 7] = 5  # any non-zero value is true
    out = np.zeros(12, np.int32)
    module.get_function("votes")(4, 96, (pred.ravel(), out))
    want = [(int((p != 0).sum()), int((p != 0).all()), int((p != 0).any())) for p in pred]
    np.testing.assert_array_equal(out.reshape(4, 3), want)


def test_dynamic_shared_memory_is_nan_at_every_block_start(module, monkeypatch):
    monkeypatch.setenv("ATTNSPEC_EMULATOR_WORKERS", "1")  # the same buffer for every block
    first = np.zeros(6, np.float32)
    first_double = np.zeros(6, np.float64)
    module.get_function("poisoned")(6, 64, (first, first_double), shared_mem=64 * 4)
    assert np.isnan(first).all() and np.isnan(first_double).all()


def test_static_shared_memory_is_per_block(module):
    x = np.arange(8 * 256, dtype=np.int32)
    y = np.zeros_like(x)
    module.get_function("reverse")(8, 256, (x, y))
    np.testing.assert_array_equal(y, x.reshape(8, 256)[:, ::-1].ravel())


def test_without_a_seed_the_schedule_is_deterministic(module, monkeypatch):
    monkeypatch.delenv("ATTNSPEC_EMULATOR_SEED", raising=False)
    outs = []
    for _ in range(2):
        out = np.zeros(4 * 64, np.int32)
        module.get_function("racy")(4, 64, (out,))
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    # in thread order, thread t runs before t+1 wrote: it reads 0, except the last thread
    want = np.zeros(64, np.int32)
    want[63] = 1
    np.testing.assert_array_equal(outs[0].reshape(4, 64), np.tile(want, (4, 1)))


def _racy(seed) -> np.ndarray:
    module = RawModule(code=SOURCE, source_name="scheduling.cu", schedule_seed=seed)
    out = np.zeros(4 * 64, np.int32)
    module.get_function("racy")(4, 64, (out,))
    return out


def test_a_seed_shuffles_threads_reproducibly(monkeypatch):
    a, b, c = _racy(1), _racy(1), _racy(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (a != 0).sum() > 10  # many threads now run after their neighbour
    monkeypatch.setenv("ATTNSPEC_EMULATOR_SEED", "1")
    np.testing.assert_array_equal(_racy(None), a)


def test_a_seed_shuffles_the_block_order(monkeypatch):
    monkeypatch.setenv("ATTNSPEC_EMULATOR_WORKERS", "1")

    def order(seed):
        module = RawModule(code=SOURCE, source_name="scheduling.cu", schedule_seed=seed)
        counter, out = np.zeros(1, np.int32), np.zeros(50, np.int32)
        module.get_function("block_order")(50, 32, (counter, out))
        return out

    np.testing.assert_array_equal(order(None), np.arange(50))
    seeded = order(7)
    np.testing.assert_array_equal(seeded, order(7))
    assert sorted(seeded) == list(range(50)) and not np.array_equal(seeded, np.arange(50))


def test_stack_size_is_configurable(module, monkeypatch):
    out = np.zeros(64, np.float32)
    monkeypatch.setenv("ATTNSPEC_EMULATOR_STACK_KB", "96")  # 16 KiB of locals per thread
    module.get_function("big_frame")(2, 64, (out,))
    np.testing.assert_array_equal(out, 4096 * np.arange(64) + 4095 * 4096 / 2)


def test_the_portable_context_switch():
    module = RawModule(code=SOURCE, options=("-DATTNSPEC_EMU_UCONTEXT",), source_name="ucontext.cu")
    x = np.arange(2 * 96, dtype=np.float32)
    out = np.zeros(2, np.float32)
    module.get_function("block_sum")(2, (32, 3), (x, out))
    np.testing.assert_array_equal(out, x.reshape(2, 96).sum(axis=1))
