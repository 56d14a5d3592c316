// Row softmax and log-sum-exp of a score matrix.
// Mirrors spec.attention.softmax.softmax:
//     x_TS -> p_TS = exp(x - m) / l,  lse_T = m + log l,  m = rowmax x,  l = Σ exp(x - m).
// The running (m, l) pair is the online normaliser of Milakov & Gimelshein (2018),
// merged across threads as FlashAttention merges it across key tiles.
//
// Semantics are the spec's: -inf is a masked score; a row of only -inf gives p = 0 and
// lse = -inf; NaN anywhere in a row makes the whole row NaN (fmaxf would drop it, so
// the maximum below is written out); the launcher rejects +inf.
//
// Versions
//   softmax_v1  one warp per row, WARPS rows per block. Each lane keeps (m, l) over
//               the columns lane, lane+32, ...; a shuffle butterfly merges the lanes.
//               Suits short rows (decode, small S).
//   softmax_v2  one block of THREADS threads per row: lanes as in v1, then every warp's
//               (m, l) goes through dynamic shared memory to warp 0, which merges them.
//               Suits long rows; the row's statistics cost two __syncthreads.
// Both read x twice (statistics, then p) and write p once: 2·T·S·sizeof(SCALAR) read,
// T·S·sizeof(SCALAR) written.
//
// Macros
//   SCALAR  storage type of x, p and lse: __half, float or double
//   ACC     the type (m, l) and exp are computed in: float (for __half, float) or double
//   WARPS   rows per block (v1);  THREADS  threads per row, a multiple of 32 (v2)
#include <cuda_fp16.h>

#define FULL_MASK 0xffffffffu

struct RowStats {
    ACC m;  // running maximum
    ACC l;  // Σ exp(x - m) over the columns seen
};

// NVRTC has no <math.h>, hence no INFINITY: -inf by its bit pattern.
__device__ __forceinline__ ACC neg_inf() { return (ACC)__int_as_float(0xff800000); }

__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ ACC to_acc(float x) { return (ACC)x; }
__device__ __forceinline__ ACC to_acc(double x) { return (ACC)x; }

__device__ __forceinline__ void store(__half* out, float v) { *out = __float2half_rn(v); }
__device__ __forceinline__ void store(float* out, ACC v) { *out = (float)v; }
__device__ __forceinline__ void store(double* out, ACC v) { *out = (double)v; }

__device__ __forceinline__ float acc_exp(float x) { return expf(x); }
__device__ __forceinline__ double acc_exp(double x) { return exp(x); }
__device__ __forceinline__ float acc_log(float x) { return logf(x); }
__device__ __forceinline__ double acc_log(double x) { return log(x); }

// True when b replaces a as the maximum: b is larger, or b is NaN (which then sticks,
// because no comparison with NaN is true).
__device__ __forceinline__ bool takes_max(ACC a, ACC b) { return b > a || b != b; }

// Add one score to the running statistics: rescale l only when the maximum grows.
__device__ __forceinline__ void push(RowStats& r, ACC x) {
    if (takes_max(r.m, x)) {
        // l · exp(m - x) + exp(x - x); from the start (m = -inf, l = 0) this gives 1
        r.l = r.l * acc_exp(r.m - x) + (ACC)1;
        r.m = x;
    } else if (x != neg_inf()) {
        // a masked score adds nothing; skipping it also avoids exp(-inf + inf) = NaN
        r.l += acc_exp(x - r.m);
    }
}

// Merge two partial statistics (of disjoint column sets) into those of the union.
__device__ __forceinline__ RowStats merge(RowStats a, RowStats b) {
    const ACC m = takes_max(a.m, b.m) ? b.m : a.m;
    if (m == neg_inf()) return RowStats{m, (ACC)0};  // neither side has seen a score
    return RowStats{m, a.l * acc_exp(a.m - m) + b.l * acc_exp(b.m - m)};
}

__device__ __forceinline__ RowStats warp_merge(RowStats r) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        RowStats other;
        other.m = __shfl_xor_sync(FULL_MASK, r.m, offset);
        other.l = __shfl_xor_sync(FULL_MASK, r.l, offset);
        r = merge(r, other);
    }
    return r;
}

// Statistics of the columns first, first + stride, ... of one row.
__device__ __forceinline__ RowStats strided_stats(const SCALAR* x_S, int S, int first, int stride) {
    RowStats r{neg_inf(), (ACC)0};
    for (int s = first; s < S; s += stride) push(r, to_acc(x_S[s]));
    return r;
}

// p = exp(x - m) / l for the columns first, first + stride, ...; lse by the caller.
__device__ __forceinline__ void write_probabilities(
    const SCALAR* x_S, SCALAR* p_S, int S, int first, int stride, RowStats r) {
    const bool empty = r.m == neg_inf();
    const ACC m = empty ? (ACC)0 : r.m;
    const ACC inv_l = empty ? (ACC)0 : (ACC)1 / r.l;
    for (int s = first; s < S; s += stride) store(&p_S[s], acc_exp(to_acc(x_S[s]) - m) * inv_l);
}

__device__ __forceinline__ ACC log_sum_exp(RowStats r) {
    return r.m == neg_inf() ? neg_inf() : r.m + acc_log(r.l);
}

extern "C" __global__ void softmax_v1(const SCALAR* __restrict__ x_TS, SCALAR* __restrict__ p_TS,
                                      SCALAR* __restrict__ lse_T, int T, int S) {
    const int t = blockIdx.x * WARPS + threadIdx.y;
    if (t >= T) return;  // the whole warp leaves together: shuffles stay convergent
    const SCALAR* x_S = x_TS + (long long)t * S;
    const RowStats r = warp_merge(strided_stats(x_S, S, threadIdx.x, 32));
    write_probabilities(x_S, p_TS + (long long)t * S, S, threadIdx.x, 32, r);
    if (threadIdx.x == 0) store(&lse_T[t], log_sum_exp(r));
}

extern "C" __global__ void __launch_bounds__(THREADS)
softmax_v2(const SCALAR* __restrict__ x_TS, SCALAR* __restrict__ p_TS, SCALAR* __restrict__ lse_T,
           int T, int S) {
    // THREADS / 32 partial statistics, one per warp; sized by the launcher's shared_mem
    extern __shared__ __align__(16) unsigned char shared_raw[];
    RowStats* warp_stats = reinterpret_cast<RowStats*>(shared_raw);
    const int t = blockIdx.x;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const SCALAR* x_S = x_TS + (long long)t * S;

    RowStats r = warp_merge(strided_stats(x_S, S, threadIdx.x, THREADS));
    if (lane == 0) warp_stats[warp] = r;
    __syncthreads();
    if (warp == 0) {
        r = lane < THREADS / 32 ? warp_stats[lane] : RowStats{neg_inf(), (ACC)0};
        r = warp_merge(r);
        if (lane == 0) warp_stats[0] = r;
    }
    __syncthreads();
    r = warp_stats[0];
    write_probabilities(x_S, p_TS + (long long)t * S, S, threadIdx.x, THREADS, r);
    if (threadIdx.x == 0) store(&lse_T[t], log_sum_exp(r));
}
