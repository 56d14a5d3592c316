// The in-context regression read-out: one query reads a scalar out of a prompt through H
// full-width heads, forward and the hand-written backward of its mean squared error.
// Mirrors
//   spec.attention.readout.readout_forward   per prompt b and head h:
//       s_hs = scale · z_sᵀ KQ_h z_q,   a_h = softmax_s(s_h)  or  s_h / norm,
//       v_hs = ov_h · z_s,              ŷ_b = Σ_h Σ_s a_hs v_hs
//   spec.attention.readout.readout_mse       (1/B) Σ_b (ŷ_b − y_b)², ∂KQ, ∂ov and ŷ, with
//       g_b = 2 (ŷ_b − y_b) / B,  ∂s_hs = g_b a_hs (v_hs − out_h) (softmax,
//       out_h = Σ_s a_hs v_hs)
//       or g_b v_hs / norm (linear),  ∂ov_h = Σ_b g_b Σ_s a_hs z_s,
//       ∂KQ_h = scale · Σ_b (Σ_s ∂s_hs z_s) z_qᵀ
// as backends/cpu/readout.py does it: every block computes one prompt's rows, and the
// sums over the batch are a second kernel's, in a fixed order (no atomics): the result
// does not depend on the schedule.
//
// Versions
//   readout_forward_v1  one block of THREADS threads per prompt b: writes ŷ_b, a_b and v_b.
//   readout_v1          the same forward, then the prompt's backward: writes ŷ_b, its
//                       residual r_b = ŷ_b − y_b (REAL) and per head the two REAL rows
//                       gw[b,h,:] = g_b · Σ_s a_hs z_s               (this prompt's ∂ov_h)
//                       gr[b,h,:] = g_b · scale · Σ_s ds_hs z_s      (its ∂KQ_h before the
//                       outer product with z_q), ds = a (v − out_h) (softmax) or v / norm
//                       (linear), so that ∂s = g_b ds.
//   readout_reduce_v1   one thread per output, each summing over b = 0, 1, ... in order:
//                       ∂KQ[h,d,e] = Σ_b gr[b,h,d] z_q[b,e], ∂ov[h,d] = Σ_b gw[b,h,d], and
//                       the loss (1/B) Σ_b r_b² (the last thread).
//
// How a block runs its prompt (readout_forward_v1, readout_v1):
//   1. z_b (S×D) is copied to shared memory, ov (H×D) too, and u_h = KQ_h z_q (H×D) is
//      computed there: thread per (h, i), summing over j in order.
//   2. Heads in rounds: G = max(1, WARPS / H) warps per head and WARPS / G heads per
//      round. A warp's lanes take the positions s = part·32 + lane, + G·32, ... of their
//      head; each computes s_hs and v_hs (sums over i in order) into shared memory. Row
//      maximum, Σ exp and out_h = Σ a v are reduced by a warp butterfly (every lane ends
//      with the same value) and then across the head's G warps through shared memory,
//      read back in warp order by every thread: each reduction is fixed, deterministic.
//   3. ŷ_b = Σ_h out_h in head order, by every thread.
//   4. (readout_v1) the 2·H·D row sums over s: with P = H·D < THREADS, K = THREADS / P
//      threads per output each take s = c, c + K, ..., and their partial sums are added
//      in the order c = 0 .. K−1; else a thread per output sums over all s in order.
//
// Dynamic shared memory (REAL values, then the SCALAR tokens), per block:
//   a_HS, v_HS [H·S each] · u_HD, ov_HD [H·D each] · out_H [H] · red [2·WARPS] ·
//   part [2·THREADS] · z_SD [S·D, SCALAR]
// i.e. sizeof(REAL)·(2HS + 2HD + H + 2·WARPS + 2·THREADS) + sizeof(SCALAR)·SD bytes
// (readout.py, smem_bytes, computes the same).
//
// Rounding: the weights a = e / Σ e and a = s / norm are correctly rounded quotients, as
// the spec's divisions are (divide(): the reciprocal and one fma correction, since a plain
// division in the loop made ptxas spill); multiplying by the reciprocal alone would add a
// rounding to every weight that the spec does not make. The linear backward's v / norm is
// computed the same way. Sums are the kernel's own (per head over s, by warp butterflies,
// then over heads in order), which spec.tolerance's baselines in other orders cover.
//
// Macros
//   SCALAR   storage type of the inputs and outputs: float or double
//   REAL     the type everything is computed and the per-prompt rows kept in: float or
//            double (the launcher uses double for both storage types, as the Numba
//            backend does)
//   THREADS  threads per block, a multiple of 32
#define FULL_MASK 0xffffffffu
#define WARPS (THREADS / 32)

// NVRTC has no <math.h>, hence no INFINITY: -inf by its bit pattern.
__device__ __forceinline__ REAL neg_inf() { return (REAL)__int_as_float(0xff800000); }

__device__ __forceinline__ float real_exp(float x) { return expf(x); }
__device__ __forceinline__ double real_exp(double x) { return exp(x); }

// x / y from r = 1/y (rounded): q = x·r, then one correction with the residual x − q·y,
// exact by fma: q + (x − q·y)·r is the correctly rounded quotient when r is the rounded
// reciprocal (Markstein's theorem; Muller et al., Handbook of Floating-Point Arithmetic,
// sec. 4.7), so the weights equal the spec's divisions. A plain division in these loops is
// a call to a slow path, around which ptxas spilled (sm_90, readout_forward_v1).
__device__ __forceinline__ REAL divide(REAL x, REAL y, REAL r) {
    const REAL q = x * r;
    return fma(fma(-q, y, x), r, q);
}

// b replaces a as the maximum when it is larger or NaN (NaN then sticks, as in NumPy's max).
__device__ __forceinline__ REAL nan_max(REAL a, REAL b) { return (b > a || b != b) ? b : a; }

__device__ __forceinline__ REAL warp_max(REAL x) {
    for (int offset = 16; offset > 0; offset >>= 1)
        x = nan_max(x, __shfl_xor_sync(FULL_MASK, x, offset));
    return x;
}

// A butterfly: lanes i and i ^ offset add the same two numbers, so every lane ends with
// the same sum, bit for bit.
__device__ __forceinline__ REAL warp_sum(REAL x) {
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(FULL_MASK, x, offset);
    return x;
}

// The block's shared memory, carved as the header says.
struct Shared {
    REAL* a_HS;
    REAL* v_HS;
    REAL* u_HD;
    REAL* ov_HD;
    REAL* out_H;
    REAL* red;   // one partial per warp
    REAL* part;  // 2·THREADS partial row sums (readout_v1)
    SCALAR* z_SD;
};

__device__ __forceinline__ Shared carve(unsigned char* raw, int H, int S, int D) {
    Shared sh;
    REAL* p = reinterpret_cast<REAL*>(raw);
    sh.a_HS = p;
    p += H * S;
    sh.v_HS = p;
    p += H * S;
    sh.u_HD = p;
    p += H * D;
    sh.ov_HD = p;
    p += H * D;
    sh.out_H = p;
    p += H;
    sh.red = p;
    p += 2 * WARPS;
    sh.part = p;
    p += 2 * THREADS;
    sh.z_SD = reinterpret_cast<SCALAR*>(p);
    return sh;
}

// Which head a warp works on in a round, and which of the head's positions.
struct HeadSlot {
    int G;       // warps per head
    int slots;   // heads per round
    int slot;    // this warp's head within the round
    int part;    // this warp's index among its head's G warps
    int first;   // this thread's first position
    int stride;  // distance between its positions
};

__device__ __forceinline__ HeadSlot head_slot(int H) {
    HeadSlot hs;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    hs.G = WARPS / H > 1 ? WARPS / H : 1;
    hs.slots = WARPS / hs.G;
    hs.slot = warp / hs.G;
    hs.part = warp % hs.G;
    hs.first = hs.part * 32 + lane;
    hs.stride = hs.G * 32;
    return hs;
}

// The maximum (is_max) or sum of x over the G warps of this thread's head; every thread of
// the block calls it (it holds two barriers), `mine` says whether this thread's warp works
// on a head this round (uniform per warp). The warps' partials are combined in warp order.
__device__ __forceinline__ REAL head_reduce(REAL x, bool is_max, bool mine, const HeadSlot& hs,
                                            REAL* red) {
    const int warp = threadIdx.x / 32;
    if (mine) {
        x = is_max ? warp_max(x) : warp_sum(x);
        if (threadIdx.x % 32 == 0) red[warp] = x;
    }
    __syncthreads();
    REAL total = is_max ? neg_inf() : (REAL)0;
    if (mine) {
        const int w0 = hs.slot * hs.G;
        for (int k = 0; k < hs.G; ++k)
            total = is_max ? nan_max(total, red[w0 + k]) : total + red[w0 + k];
    }
    __syncthreads();  // red is free again
    return total;
}

// Steps 1-3 of the header for prompt b: fills a_HS, v_HS, out_H and returns ŷ_b (the same
// value in every thread).
__device__ __forceinline__ REAL prompt_forward(const Shared& sh, const SCALAR* __restrict__ z_SD,
                               const SCALAR* __restrict__ zq_D, const SCALAR* __restrict__ kq_HDD,
                               const SCALAR* __restrict__ ov_HD, int H, int S, int D, int softmax,
                               REAL scale, REAL norm) {
    // 1. the prompt's tokens and ov in shared memory; u_h = KQ_h z_q
    for (int k = threadIdx.x; k < S * D; k += THREADS) sh.z_SD[k] = z_SD[k];
    for (int k = threadIdx.x; k < H * D; k += THREADS) {
        sh.ov_HD[k] = (REAL)ov_HD[k];
        const SCALAR* kq_D = kq_HDD + (long long)k * D;  // row i of KQ_h, k = h·D + i
        REAL u = 0;
        for (int j = 0; j < D; ++j) u += (REAL)kq_D[j] * (REAL)zq_D[j];
        sh.u_HD[k] = u;
    }
    __syncthreads();

    // 2. heads in rounds of hs.slots
    const HeadSlot hs = head_slot(H);
    for (int h0 = 0; h0 < H; h0 += hs.slots) {
        const int h = h0 + hs.slot;
        const bool mine = hs.slot < hs.slots && h < H;  // uniform per warp
        REAL* a_S = sh.a_HS + (long long)(mine ? h : 0) * S;
        REAL* v_S = sh.v_HS + (long long)(mine ? h : 0) * S;
        const REAL* u_D = sh.u_HD + (mine ? h : 0) * D;
        const REAL* w_D = sh.ov_HD + (mine ? h : 0) * D;
        REAL m = neg_inf();
        if (mine) {
            for (int s = hs.first; s < S; s += hs.stride) {
                // s_hs = scale · z_s · u_h;  v_hs = ov_h · z_s
                const SCALAR* z_D = sh.z_SD + s * D;
                REAL dot = 0, val = 0;
                for (int i = 0; i < D; ++i) {
                    const REAL z = (REAL)z_D[i];
                    dot += z * u_D[i];
                    val += z * w_D[i];
                }
                a_S[s] = scale * dot;
                v_S[s] = val;
                m = nan_max(m, a_S[s]);
            }
        }
        if (softmax) {  // uniform: a kernel argument
            // a = exp(s − max s) / Σ exp(s − max s)
            m = head_reduce(m, true, mine, hs, sh.red);
            REAL total = 0;
            if (mine) {
                for (int s = hs.first; s < S; s += hs.stride) {
                    a_S[s] = real_exp(a_S[s] - m);
                    total += a_S[s];
                }
            }
            total = head_reduce(total, false, mine, hs, sh.red);
            const REAL inv_total = (REAL)1 / total;
            if (mine) {
                for (int s = hs.first; s < S; s += hs.stride) a_S[s] = divide(a_S[s], total, inv_total);
            }
        } else if (mine) {
            // a = s / norm
            const REAL inv_norm = (REAL)1 / norm;
            for (int s = hs.first; s < S; s += hs.stride) a_S[s] = divide(a_S[s], norm, inv_norm);
        }
        // out_h = Σ_s a_hs v_hs
        REAL out = 0;
        if (mine) {
            for (int s = hs.first; s < S; s += hs.stride) out += a_S[s] * v_S[s];
        }
        out = head_reduce(out, false, mine, hs, sh.red);
        if (mine && hs.part == 0 && threadIdx.x % 32 == 0) sh.out_H[h] = out;
    }
    __syncthreads();

    // 3. ŷ_b = Σ_h out_h
    REAL yhat = 0;
    for (int h = 0; h < H; ++h) yhat += sh.out_H[h];
    return yhat;
}

extern "C" __global__ void __launch_bounds__(THREADS)
readout_forward_v1(const SCALAR* __restrict__ z_BSD, const SCALAR* __restrict__ zq_BD,
                   const SCALAR* __restrict__ kq_HDD, const SCALAR* __restrict__ ov_HD, int H,
                   int S, int D, int softmax, REAL scale, REAL norm,
                   SCALAR* __restrict__ yhat_B,
                   SCALAR* __restrict__ a_BHS, SCALAR* __restrict__ v_BHS) {
    extern __shared__ __align__(16) unsigned char shared_raw[];
    const Shared sh = carve(shared_raw, H, S, D);
    const long long b = blockIdx.x;
    const REAL yhat = prompt_forward(sh, z_BSD + b * S * D, zq_BD + b * D, kq_HDD, ov_HD, H, S, D,
                                     softmax, scale, norm);
    if (threadIdx.x == 0) yhat_B[b] = (SCALAR)yhat;
    for (int k = threadIdx.x; k < H * S; k += THREADS) {
        a_BHS[b * H * S + k] = (SCALAR)sh.a_HS[k];
        v_BHS[b * H * S + k] = (SCALAR)sh.v_HS[k];
    }
}

extern "C" __global__ void __launch_bounds__(THREADS)
readout_v1(const SCALAR* __restrict__ z_BSD, const SCALAR* __restrict__ zq_BD,
           const SCALAR* __restrict__ y_B, const SCALAR* __restrict__ kq_HDD,
           const SCALAR* __restrict__ ov_HD, int B, int H, int S, int D, int softmax, REAL scale,
           REAL norm, SCALAR* __restrict__ yhat_B, REAL* __restrict__ r_B,
           REAL* __restrict__ gw_BHD, REAL* __restrict__ gr_BHD) {
    extern __shared__ __align__(16) unsigned char shared_raw[];
    const Shared sh = carve(shared_raw, H, S, D);
    const long long b = blockIdx.x;
    const REAL yhat = prompt_forward(sh, z_BSD + b * S * D, zq_BD + b * D, kq_HDD, ov_HD, H, S, D,
                                     softmax, scale, norm);
    // ∂ŷ_b = 2 (ŷ_b − y_b) / B
    const REAL r = yhat - (REAL)y_B[b];
    const REAL g = (REAL)2 * r / (REAL)B;
    if (threadIdx.x == 0) {
        yhat_B[b] = (SCALAR)yhat;
        r_B[b] = r;
    }
    // 4. per head: Σ_s a_hs z_s and Σ_s ds_hs z_s, ds = a (v − out_h) or v / norm
    const REAL inv_norm = (REAL)1 / norm;
    const int P = H * D;
    REAL* gw_D = gw_BHD + b * P;
    REAL* gr_D = gr_BHD + b * P;
    const int K = THREADS / P;  // threads per output; uniform across the block
    if (K <= 1) {
        for (int o = threadIdx.x; o < P; o += THREADS) {
            const int h = o / D, i = o % D;
            const REAL* a_S = sh.a_HS + h * S;
            const REAL* v_S = sh.v_HS + h * S;
            const REAL out = sh.out_H[h];
            REAL sw = 0, sr = 0;
#pragma unroll 1  // unrolled, ptxas spilled at 40 registers (sm_80, SCALAR=float)
            for (int s = 0; s < S; ++s) {
                const REAL z = (REAL)sh.z_SD[s * D + i];
                const REAL ds = softmax ? a_S[s] * (v_S[s] - out) : divide(v_S[s], norm, inv_norm);
                sw += a_S[s] * z;
                sr += ds * z;
            }
            gw_D[o] = g * sw;
            gr_D[o] = sr * (g * scale);
        }
        return;
    }
    if (threadIdx.x < K * P) {
        const int o = threadIdx.x % P, c = threadIdx.x / P;
        const int h = o / D, i = o % D;
        const REAL* a_S = sh.a_HS + h * S;
        const REAL* v_S = sh.v_HS + h * S;
        const REAL out = sh.out_H[h];
        REAL sw = 0, sr = 0;
#pragma unroll 1
        for (int s = c; s < S; s += K) {
            const REAL z = (REAL)sh.z_SD[s * D + i];
            const REAL ds = softmax ? a_S[s] * (v_S[s] - out) : divide(v_S[s], norm, inv_norm);
            sw += a_S[s] * z;
            sr += ds * z;
        }
        sh.part[c * P + o] = sw;
        sh.part[THREADS + c * P + o] = sr;
    }
    __syncthreads();
    if (threadIdx.x < P) {
        const int o = threadIdx.x;
        REAL sw = 0, sr = 0;
        for (int c = 0; c < K; ++c) {
            sw += sh.part[c * P + o];
            sr += sh.part[THREADS + c * P + o];
        }
        gw_D[o] = g * sw;
        gr_D[o] = sr * (g * scale);
    }
}

extern "C" __global__ void __launch_bounds__(THREADS)
readout_reduce_v1(const REAL* __restrict__ gw_BHD, const REAL* __restrict__ gr_BHD,
                  const SCALAR* __restrict__ zq_BD, const REAL* __restrict__ r_B, int B, int H,
                  int D, SCALAR* __restrict__ dkq_HDD, SCALAR* __restrict__ dov_HD,
                  REAL* __restrict__ loss_1) {
    const long long o = (long long)blockIdx.x * THREADS + threadIdx.x;
    const long long n_kq = (long long)H * D * D, P = (long long)H * D;
    if (o < n_kq) {
        // ∂KQ[h,d,e] = Σ_b gr[b,h,d] z_q[b,e]
        const long long hd = o / D;  // h·D + d
        const int e = (int)(o % D);
        REAL acc = 0;
        for (int b = 0; b < B; ++b)
            acc += gr_BHD[(long long)b * P + hd] * (REAL)zq_BD[(long long)b * D + e];
        dkq_HDD[o] = (SCALAR)acc;
    } else if (o < n_kq + P) {
        // ∂ov[h,d] = Σ_b gw[b,h,d]
        const long long hd = o - n_kq;
        REAL acc = 0;
        for (int b = 0; b < B; ++b) acc += gw_BHD[(long long)b * P + hd];
        dov_HD[hd] = (SCALAR)acc;
    } else if (o == n_kq + P) {
        // (1/B) Σ_b r_b²
        REAL acc = 0;
        for (int b = 0; b < B; ++b) acc += r_B[b] * r_B[b];
        loss_1[0] = acc / (REAL)B;
    }
}
