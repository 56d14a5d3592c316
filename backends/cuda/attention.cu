// FlashAttention forward, float32, SIMT (no tensor cores): three versions of one algorithm,
// each for a padded batch and for packed variable-length sequences.
// Mirrors spec.attention.tiled.flash_forward:
//     q_BHTD, k_BGSD, v_BGSE -> o_BHTE = softmax(scale · q kᵀ + bias, masked) v,  lse_BHT
// and spec.attention.varlen.flash_varlen_forward:
//     q_THD, k_SGD, v_SGE, cu_seqlens_q, cu_seqlens_k -> o_THE, lse_HT
// computed with the online softmax over key tiles (Dao, 2023, "FlashAttention-2",
// Algorithm 1): per query row a running maximum m, denominator l and unnormalised
// output Õ, rescaled by α = exp(m_old - m_new) whenever the maximum grows.
//
// Semantics are the spec's (attention_common.cuh): bottom-right causal alignment, GQA/MQA
// (query head h reads key/value head h / (H/G)), a broadcastable additive bias and boolean
// mask addressed through strides, NaN propagation, and o = 0, lse = -inf for a row with no
// visible key. Key tiles past the causal diagonal of a block's last row are skipped.
// Positional options (spec.attention.positional) are fused: with RoPE, q and k are rotated
// as they are loaded (the cos/sin tables are inputs, never computed here), and the ALiBi
// distance bias is formed per score by the ScoreRule from H slopes and a penalty table;
// neither materialises anything of size T x S. Each version is built twice: POSITIONS=1
// with that code, POSITIONS=0 without it (attention_common.cuh), which is what calls
// without positional options run: the kernel as it was before positions existed.
//
// One kernel per version serves both layouts (KERNEL_PARAMS): a padded batch (packed = 0;
// grid: query-row blocks, H, B) and packed sequences (packed = 1; grid: query-row blocks
// of the longest sequence, H, N). locate() turns blockIdx into the block's Problem: the
// first row of q, k, v, o, lse of its (batch entry or sequence, head), the row strides
// (D for q_BHTD, H·D for q_THD) and its own T and S, read from cu_seqlens for a sequence.
// Causal alignment and positions are then the sequence's own, a block past its
// sequence's last row leaves at once (before any barrier), and no block reads another
// sequence's rows.
//
// Versions
//   v1  the direct port: one thread per query row, ROWS_V1 per block. q, k and v are read
//       from global memory (each thread reads every key of its row: the k and v traffic is
//       T·S·(D+E) loads, served by the caches); KEYS_V1 scores at a time in registers. With
//       RoPE each product rotates its q and k features on the fly (v1 has no tile to
//       rotate once).
//   v2  v1 with the block's ROWS_V2 query rows, and tiles of KEYS_V2 keys and values, in
//       shared memory: every k and v element is read from global memory once per block
//       instead of once per row, and rotated (RoPE) once as it is stored. Each thread keeps
//       its q row, Õ row and the tile's P in shared memory (rows padded by one float, so
//       the 32 rows a warp reads sit in 32 different banks) and reads the tile's k and v
//       (the same address for the whole warp: a broadcast); only the tile's P·V is held in
//       registers. Loops over keys are not unrolled, which keeps NVRTC's compile time at
//       seconds.
//   v3  a warp computes ROWS_PER_WARP_V3 rows at once over tiles of 32 keys, one key per
//       lane: the score of lane j is q·k_j for each of the warp's rows (q read as broadcast
//       float4, k_j as float4 from a row padded by 4 floats, conflict-free); the row
//       maximum and denominator are warp-shuffle reductions; P·V broadcasts p_j from lane
//       j by shuffle while each lane owns the output columns e = lane + 32i. Tiles are
//       loaded with float4 where D, E are multiples of 4 (rotated tiles feature by
//       feature, each rotated once, as v2).
// Every version moves at least q, k, v once and o once: 4·(B·H·T·D + 2·B·G·S·D + B·H·T·E)
// bytes (+ 4·B·H·T for lse; + the RoPE tables, 4·max(T, S)·D, read once per block); FLOPs
// are 2·(visible pairs)·(D + E).
//
// Rounding: scores are sums of plain products in the order of d, P·V is an fmaf chain in
// the order of the keys, and the rescaling is the spec's α·l + Σp and α·Õ + PV
// (attention_common.cuh says why).
//
// Macros
//   HEAD_DIM           compiled bound on D and E (32, 64 or 128): sizes register arrays
//   ROWS_V1, KEYS_V1   v1: threads (= rows) per block, keys per step
//   ROWS_V2, KEYS_V2   v2: threads (= rows) per block, keys per shared-memory tile
//   WARPS_V3, ROWS_PER_WARP_V3   v3: warps per block, rows per warp (keys per tile: 32)
#include "attention_common.cuh"

#define E_CHUNKS (HEAD_DIM / 32)  // v3: output columns per lane
#define E_CHUNK_V2 (HEAD_DIM < 64 ? HEAD_DIM : 64)  // v2: output columns per P·V pass

// Every version's kernel serves a padded batch and packed sequences (grid: query-row
// blocks, H, then B or N), one uniform branch apart:
//   packed = 0  q_BHTD, k_BGSD, v_BGSE, o_BHTE, lse_BHT; T and S are every entry's lengths
//               (cu_seqlens_q and cu_seqlens_k are one-element placeholders, never read)
//   packed = 1  q_THD, k_SGD, v_SGE, o_THE, lse_HT; T and S are the packed row counts, and
//               sequence n owns query rows cu_seqlens_q[n] .. cu_seqlens_q[n + 1] - 1 and
//               key rows cu_seqlens_k[n] .. cu_seqlens_k[n + 1] - 1
#define KERNEL_PARAMS                                                                      \
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, \
        float* __restrict__ o, float* __restrict__ lse, const int* __restrict__ cu_seqlens_q, \
        const int* __restrict__ cu_seqlens_k, int packed, int H, int G, int T, int S, int D,  \
        int E, SCORE_RULE_PARAMS, ROPE_PARAMS

// The one (batch entry or sequence, head) problem a block works on: its T queries and S
// keys, and where their rows are (q_row(t) is q + t·q_stride, and so on; lse[t] is lse + t).
struct Problem {
    const float* q;
    const float* k;
    const float* v;
    float* o;
    float* lse;
    int q_stride, k_stride, v_stride, o_stride;
    int b, h, T, S;

    __device__ __forceinline__ const float* q_row(int t) const {
        return q + (long long)t * q_stride;
    }
    __device__ __forceinline__ const float* k_row(int s) const {
        return k + (long long)s * k_stride;
    }
    __device__ __forceinline__ const float* v_row(int s) const {
        return v + (long long)s * v_stride;
    }
    __device__ __forceinline__ float* o_row(int t) const { return o + (long long)t * o_stride; }
};

// The problem of block (·, h, n): entry n of the batch, or sequence n.
__device__ __forceinline__ Problem locate(const float* q, const float* k, const float* v,
                                          float* o, float* lse, const int* cu_seqlens_q,
                                          const int* cu_seqlens_k, int packed, int H, int G,
                                          int T, int S, int D, int E) {
    const int n = blockIdx.z, h = blockIdx.y, g = h / (H / G);
    if (packed) {
        const long long t0 = cu_seqlens_q[n], s0 = cu_seqlens_k[n];  // its first rows
        return Problem{q + (t0 * H + h) * D, k + (s0 * G + g) * D, v + (s0 * G + g) * E,
                       o + (t0 * H + h) * E, lse + (long long)h * T + t0, H * D, G * D, G * E,
                       H * E, n, h, cu_seqlens_q[n + 1] - (int)t0, cu_seqlens_k[n + 1] - (int)s0};
    }
    const long long q_row0 = (long long)(n * H + h) * T;   // row of q[n, h, 0]
    const long long kv_row0 = (long long)(n * G + g) * S;  // row of k[n, g, 0]
    return Problem{q + q_row0 * D, k + kv_row0 * D, v + kv_row0 * E, o + q_row0 * E,
                   lse + q_row0, D, D, E, E, n, h, T, S};
}

#define LOCATE locate(q, k, v, o, lse, cu_seqlens_q, cu_seqlens_k, packed, H, G, T, S, D, E)

// One online-softmax step of a row over one tile (spec: the body of the key-tile loop).
// x holds the tile's scores, -inf where a key is not visible, and becomes P.
// Returns α, the factor the caller rescales its accumulator with.
template <int N>
__device__ __forceinline__ float online_step(RowState& r, float (&x)[N], float tile_max) {
    // m' = max(m, rowmax(S)),  α = exp(m - m'),  P = exp(S - m'),  l' = α l + rowsum(P)
    const float m_new = nan_max(r.m, tile_max);
    const float shift = safe_shift(m_new);
    const float alpha = expf(r.m - shift);
    float p_sum = 0.0f;
#pragma unroll
    for (int j = 0; j < N; ++j) {
        x[j] = expf(x[j] - shift);  // a masked score is -inf: its P is 0
        p_sum = p_sum + x[j];
    }
    r.l = alpha * r.l + p_sum;
    r.m = m_new;
    return alpha;
}

// ------------------------------------------------------------------------------ v1

// Minimum 1 block per SM: without it ptxas aims at more resident blocks and, in some builds,
// caps the registers below what the unrolled key loop needs and spills.
extern "C" __global__ void __launch_bounds__(ROWS_V1, 1) attention_forward_v1(KERNEL_PARAMS) {
    const Problem p = LOCATE;
    const ScoreRule rule = SCORE_RULE(p.T, p.S);
    const RopeRule rope = ROPE_RULE;
    const int t = blockIdx.x * ROWS_V1 + threadIdx.x;
    if (t >= p.T) return;  // v1 has no barrier: a thread without a row just leaves
    const float* q_D = p.q_row(t);
    const int i = t + p.S - p.T;  // the query's position

    RowState r{neg_inf(), 0.0f};
    float acc[HEAD_DIM];  // Õ, the unnormalised output row
#pragma unroll
    for (int e = 0; e < HEAD_DIM; ++e) acc[e] = 0.0f;

    const int s_end = rule.key_end(t + 1);
    for (int s0 = 0; s0 < s_end; s0 += KEYS_V1) {
        const int n = min(KEYS_V1, s_end - s0);
        float x[KEYS_V1];
        float tile_max = neg_inf();
#pragma unroll
        for (int j = 0; j < KEYS_V1; ++j) {
            x[j] = neg_inf();
            if (j < n) {
                // score = scale · q̃·k̃ + bias, plain products summed in the order of d
                const float* k_D = p.k_row(s0 + j);
                float dot = 0.0f;
                if (rope.on()) {
                    for (int d = 0; d < D; ++d)
                        dot = dot + rope.feature(q_D, d, D, i) * rope.feature(k_D, d, D, s0 + j);
                } else {
                    for (int d = 0; d < D; ++d) dot = dot + __ldg(&q_D[d]) * __ldg(&k_D[d]);
                }
                bool visible;
                const float score = rule.score(dot, p.b, p.h, t, s0 + j, visible);
                if (visible) {
                    x[j] = score;
                    tile_max = nan_max(tile_max, score);
                }
            }
        }
        const float alpha = online_step(r, x, tile_max);
        // Õ' = α Õ + P V
#pragma unroll
        for (int e = 0; e < HEAD_DIM; ++e) {
            if (e < E) {
                float pv = 0.0f;
#pragma unroll
                for (int j = 0; j < KEYS_V1; ++j)
                    if (j < n) pv = fmaf(x[j], __ldg(&p.v_row(s0 + j)[e]), pv);
                acc[e] = alpha * acc[e] + pv;
            }
        }
    }
    // o = Õ / l,  lse = m + log l
    const float divisor = row_divisor(r);
    float* o_E = p.o_row(t);
#pragma unroll
    for (int e = 0; e < HEAD_DIM; ++e)
        if (e < E) o_E[e] = acc[e] / divisor;
    p.lse[t] = row_lse(r);
}

// ------------------------------------------------------------------------------ v2

// rows x cols of a source with row stride src_stride into shared memory (row stride
// dst_stride), zero past the valid rows; threads of the block share the copy.
__device__ __forceinline__ void load_rows(float* dst, int dst_stride, const float* src,
                                          int src_stride, int cols, int rows,
                                          int valid_rows, int tid, int threads) {
    for (int i = tid; i < rows * cols; i += threads) {
        const int row = i / cols, col = i % cols;
        dst[row * dst_stride + col] =
            row < valid_rows ? src[(long long)row * src_stride + col] : 0.0f;
    }
}

// As load_rows, each row rotated on the way (RoPE): row r sits at position pos0 + r. Zero
// from cols up to `padded` columns (v3's float4 rows).
__device__ __forceinline__ void load_rows_rotated(float* dst, int dst_stride, const float* src,
                                                  int src_stride, int cols, int padded,
                                                  int rows, int valid_rows, const RopeRule& rope,
                                                  int pos0, int tid, int threads) {
    for (int i = tid; i < rows * padded; i += threads) {
        const int row = i / padded, col = i % padded;
        dst[row * dst_stride + col] = row < valid_rows && col < cols
            ? rope.feature(src + (long long)row * src_stride, col, cols, pos0 + row) : 0.0f;
    }
}

extern "C" __global__ void __launch_bounds__(ROWS_V2) attention_forward_v2(KERNEL_PARAMS) {
    // Per thread (rows padded by one float, so that a warp's 32 rows sit in 32 different
    // banks): its q row and its Õ row [ROWS_V2][HEAD_DIM + 1], its scores, then P, of the
    // tile [ROWS_V2][KEYS_V2 + 1]. Shared by the block: the K and V tiles [KEYS_V2][HEAD_DIM].
    // The tile's P·V is accumulated in registers and added to Õ once per tile, as the
    // spec's α Õ + P V: summing each tile apart keeps the rounding of a long row small.
    extern __shared__ __align__(16) unsigned char shared_raw[];
    float* q_s = reinterpret_cast<float*>(shared_raw);
    float* acc_s = q_s + ROWS_V2 * (HEAD_DIM + 1);
    float* k_s = acc_s + ROWS_V2 * (HEAD_DIM + 1);
    float* v_s = k_s + KEYS_V2 * HEAD_DIM;
    float* p_s = v_s + KEYS_V2 * HEAD_DIM;
    const int row_stride = HEAD_DIM + 1, p_stride = KEYS_V2 + 1;

    const Problem p = LOCATE;
    const ScoreRule rule = SCORE_RULE(p.T, p.S);
    const RopeRule rope = ROPE_RULE;
    const int t0 = blockIdx.x * ROWS_V2, t = t0 + threadIdx.x;
    if (t0 >= p.T) return;  // packed: past the sequence's rows, the whole block leaves
    const int t_end = min(t0 + ROWS_V2, p.T);
    const bool has_row = t < p.T;  // threads without a row still load tiles and meet barriers

    const float* q_rows = p.q_row(t0);
    if (rope.on())  // q̃ = R_i q, i = t + S - T
        load_rows_rotated(q_s, row_stride, q_rows, p.q_stride, D, D, ROWS_V2, t_end - t0, rope,
                          t0 + p.S - p.T, threadIdx.x, ROWS_V2);
    else
        load_rows(q_s, row_stride, q_rows, p.q_stride, D, ROWS_V2, t_end - t0, threadIdx.x,
                  ROWS_V2);
    const float* q_D = q_s + threadIdx.x * row_stride;
    float* acc_E = acc_s + threadIdx.x * row_stride;  // Õ, the unnormalised output row
    float* p_J = p_s + threadIdx.x * p_stride;
    for (int e = 0; e < E; ++e) acc_E[e] = 0.0f;
    RowState r{neg_inf(), 0.0f};

    const int s_end = rule.key_end(t_end);
    for (int s0 = 0; s0 < s_end; s0 += KEYS_V2) {
        const int n = min(KEYS_V2, s_end - s0);
        __syncthreads();  // every thread is done with the previous tile (and q_s is written)
        if (rope.on())  // k̃ = R_s k
            load_rows_rotated(k_s, HEAD_DIM, p.k_row(s0), p.k_stride, D, D, n, n, rope,
                              s0, threadIdx.x, ROWS_V2);
        else
            load_rows(k_s, HEAD_DIM, p.k_row(s0), p.k_stride, D, n, n, threadIdx.x, ROWS_V2);
        load_rows(v_s, HEAD_DIM, p.v_row(s0), p.v_stride, E, n, n, threadIdx.x, ROWS_V2);
        __syncthreads();
        if (!has_row) continue;

        // scores of the tile (-inf where not visible) and their maximum
        float tile_max = neg_inf();
        for (int j = 0; j < n; ++j) {
            const float* k_D = k_s + j * HEAD_DIM;
            float dot = 0.0f;
            for (int d = 0; d < D; ++d) dot = dot + q_D[d] * k_D[d];
            bool visible;
            const float score = rule.score(dot, p.b, p.h, t, s0 + j, visible);
            p_J[j] = visible ? score : neg_inf();
            if (visible) tile_max = nan_max(tile_max, score);
        }
        // m' = max(m, rowmax(S)),  α = exp(m - m'),  P = exp(S - m'),  l' = α l + rowsum(P)
        const float m_new = nan_max(r.m, tile_max);
        const float shift = safe_shift(m_new);
        const float alpha = expf(r.m - shift);
        float p_sum = 0.0f;
        for (int j = 0; j < n; ++j) {
            p_J[j] = expf(p_J[j] - shift);
            p_sum = p_sum + p_J[j];
        }
        r.l = alpha * r.l + p_sum;
        r.m = m_new;
        // Õ' = α Õ + P V, in chunks of E_CHUNK_V2 columns (a whole row of P·V in registers
        // would spill at HEAD_DIM = 128)
        for (int e0 = 0; e0 < E; e0 += E_CHUNK_V2) {
            float pv[E_CHUNK_V2];
#pragma unroll
            for (int e = 0; e < E_CHUNK_V2; ++e) pv[e] = 0.0f;
            for (int j = 0; j < n; ++j) {
                const float pj = p_J[j];
                const float* v_E = v_s + j * HEAD_DIM + e0;
                // columns from E on hold stale values and are never stored; an `e < E`
                // test here made ptxas spill
#pragma unroll
                for (int e = 0; e < E_CHUNK_V2; ++e) pv[e] = fmaf(pj, v_E[e], pv[e]);
            }
#pragma unroll
            for (int e = 0; e < E_CHUNK_V2; ++e)
                if (e0 + e < E) acc_E[e0 + e] = alpha * acc_E[e0 + e] + pv[e];
        }
    }
    if (!has_row) return;
    const float divisor = row_divisor(r);
    float* o_E = p.o_row(t);
    for (int e = 0; e < E; ++e) o_E[e] = acc_E[e] / divisor;
    p.lse[t] = row_lse(r);
}

// ------------------------------------------------------------------------------ v3

#define ROWS_V3 (WARPS_V3 * ROWS_PER_WARP_V3)
#define K_STRIDE_V3 (HEAD_DIM + 4)  // rows stay 16-byte aligned; 8 lanes float4-read 8 bank groups

// As load_rows, but the first `cols` columns of each row (zero from `cols` up to `padded`,
// a multiple of 4), with float4 loads when every row's elements are 16-byte aligned.
__device__ __forceinline__ void load_rows4(float* dst, int dst_stride, const float* src,
                                           int src_stride, int cols, int padded, int rows,
                                           int valid_rows, int tid, int threads) {
    const bool vec = cols % 4 == 0 && src_stride % 4 == 0 &&
                     reinterpret_cast<unsigned long long>(src) % 16 == 0;
    for (int i = tid; i < rows * (padded / 4); i += threads) {
        const int row = i / (padded / 4), col = 4 * (i % (padded / 4));
        float4 value = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (row < valid_rows) {
            const float* from = src + (long long)row * src_stride + col;
            if (vec) {
                value = __ldg(reinterpret_cast<const float4*>(from));
            } else {
                value.x = col < cols ? from[0] : 0.0f;
                value.y = col + 1 < cols ? from[1] : 0.0f;
                value.z = col + 2 < cols ? from[2] : 0.0f;
                value.w = col + 3 < cols ? from[3] : 0.0f;
            }
        }
        *reinterpret_cast<float4*>(dst + row * dst_stride + col) = value;
    }
}

__device__ __forceinline__ float warp_max(float x) {
    for (int offset = 16; offset > 0; offset >>= 1)
        x = nan_max(x, __shfl_xor_sync(FULL_MASK, x, offset));
    return x;
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x = x + __shfl_xor_sync(FULL_MASK, x, offset);
    return x;
}

extern "C" __global__ void __launch_bounds__(32 * WARPS_V3) attention_forward_v3(KERNEL_PARAMS) {
    // q rows [ROWS_V3][HEAD_DIM], K tile [32][K_STRIDE_V3], V tile [32][HEAD_DIM]
    extern __shared__ __align__(16) unsigned char shared_raw[];
    float* q_s = reinterpret_cast<float*>(shared_raw);
    float* k_s = q_s + ROWS_V3 * HEAD_DIM;
    float* v_s = k_s + 32 * K_STRIDE_V3;

    const Problem p = LOCATE;
    const ScoreRule rule = SCORE_RULE(p.T, p.S);
    const RopeRule rope = ROPE_RULE;
    const int lane = threadIdx.x, warp = threadIdx.y, tid = warp * 32 + lane;
    const int threads = 32 * WARPS_V3;
    const int t0 = blockIdx.x * ROWS_V3;
    if (t0 >= p.T) return;  // packed: past the sequence's rows, the whole block leaves
    const int t_end = min(t0 + ROWS_V3, p.T);
    const int d_padded = (D + 3) & ~3, e_padded = (E + 3) & ~3;
    const int row0 = warp * ROWS_PER_WARP_V3;  // the warp's first row within the block

    const float* q_rows = p.q_row(t0);
    if (rope.on())  // q̃ = R_i q, i = t + S - T
        load_rows_rotated(q_s, HEAD_DIM, q_rows, p.q_stride, D, d_padded, ROWS_V3, t_end - t0,
                          rope, t0 + p.S - p.T, tid, threads);
    else
        load_rows4(q_s, HEAD_DIM, q_rows, p.q_stride, D, d_padded, ROWS_V3, t_end - t0, tid,
                   threads);
    RowState r[ROWS_PER_WARP_V3];
    float acc[ROWS_PER_WARP_V3][E_CHUNKS];  // Õ[row][lane + 32i]
#pragma unroll
    for (int i = 0; i < ROWS_PER_WARP_V3; ++i) {
        r[i] = RowState{neg_inf(), 0.0f};
#pragma unroll
        for (int c = 0; c < E_CHUNKS; ++c) acc[i][c] = 0.0f;
    }

    const int s_end = rule.key_end(t_end);
    for (int s0 = 0; s0 < s_end; s0 += 32) {
        const int n = min(32, s_end - s0);  // the same for the whole block: shuffles converge
        __syncthreads();
        const float* k_rows = p.k_row(s0);
        if (rope.on())  // k̃ = R_s k
            load_rows_rotated(k_s, K_STRIDE_V3, k_rows, p.k_stride, D, d_padded, 32, n, rope, s0,
                              tid, threads);
        else
            load_rows4(k_s, K_STRIDE_V3, k_rows, p.k_stride, D, d_padded, 32, n, tid, threads);
        load_rows4(v_s, HEAD_DIM, p.v_row(s0), p.v_stride, E, e_padded, 32, n, tid,
                   threads);
        __syncthreads();

        // lane j: q·k_j for each of the warp's rows, in the order of d (padding adds +0)
        float x[ROWS_PER_WARP_V3];
#pragma unroll
        for (int i = 0; i < ROWS_PER_WARP_V3; ++i) x[i] = 0.0f;
        const float* k_D = k_s + lane * K_STRIDE_V3;
        for (int d = 0; d < d_padded; d += 4) {
            const float4 k4 = *reinterpret_cast<const float4*>(k_D + d);
#pragma unroll
            for (int i = 0; i < ROWS_PER_WARP_V3; ++i) {
                const float4 q4 = *reinterpret_cast<const float4*>(q_s + (row0 + i) * HEAD_DIM + d);
                x[i] = x[i] + q4.x * k4.x;
                x[i] = x[i] + q4.y * k4.y;
                x[i] = x[i] + q4.z * k4.z;
                x[i] = x[i] + q4.w * k4.w;
            }
        }
        float alpha[ROWS_PER_WARP_V3], pr[ROWS_PER_WARP_V3];
#pragma unroll
        for (int i = 0; i < ROWS_PER_WARP_V3; ++i) {
            const int t = t0 + row0 + i;
            bool visible = false;
            float score = neg_inf();
            if (lane < n && t < p.T) score = rule.score(x[i], p.b, p.h, t, s0 + lane, visible);
            score = visible ? score : neg_inf();
            // m' = max(m, rowmax(S)),  α = exp(m - m'),  P = exp(S - m'),  l' = α l + rowsum(P)
            const float m_new = nan_max(r[i].m, warp_max(score));
            const float shift = safe_shift(m_new);
            alpha[i] = expf(r[i].m - shift);
            pr[i] = expf(score - shift);
            r[i].l = alpha[i] * r[i].l + warp_sum(pr[i]);
            r[i].m = m_new;
        }
        // Õ' = α Õ + P V: p_j comes from lane j, v_j[e] from shared memory
        float pv[ROWS_PER_WARP_V3][E_CHUNKS];
#pragma unroll
        for (int i = 0; i < ROWS_PER_WARP_V3; ++i)
#pragma unroll
            for (int c = 0; c < E_CHUNKS; ++c) pv[i][c] = 0.0f;
        for (int j = 0; j < n; ++j) {
            float v_j[E_CHUNKS];
#pragma unroll
            for (int c = 0; c < E_CHUNKS; ++c) v_j[c] = v_s[j * HEAD_DIM + lane + 32 * c];
#pragma unroll
            for (int i = 0; i < ROWS_PER_WARP_V3; ++i) {
                const float p_j = __shfl_sync(FULL_MASK, pr[i], j);
#pragma unroll
                for (int c = 0; c < E_CHUNKS; ++c) pv[i][c] = fmaf(p_j, v_j[c], pv[i][c]);
            }
        }
#pragma unroll
        for (int i = 0; i < ROWS_PER_WARP_V3; ++i)
#pragma unroll
            for (int c = 0; c < E_CHUNKS; ++c) acc[i][c] = alpha[i] * acc[i][c] + pv[i][c];
    }
    // o = Õ / l (each lane its columns),  lse = m + log l (lane 0)
#pragma unroll
    for (int i = 0; i < ROWS_PER_WARP_V3; ++i) {
        const int t = t0 + row0 + i;
        if (t >= p.T) continue;
        const float divisor = row_divisor(r[i]);
        float* o_E = p.o_row(t);
#pragma unroll
        for (int c = 0; c < E_CHUNKS; ++c)
            if (lane + 32 * c < E) o_E[lane + 32 * c] = acc[i][c] / divisor;
        if (lane == 0) p.lse[t] = row_lse(r[i]);
    }
}

