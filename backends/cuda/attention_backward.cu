// FlashAttention backward, float32, SIMT (no tensor cores): dq, dk, dv without atomics.
// Mirrors spec.attention.tiled.flash_backward:
//     q_BHTD, k_BGSD, v_BGSE, o_BHTE, lse_BHT, do_BHTE -> dq_BHTD, dk_BGSD, dv_BGSE
// (Dao, 2023, "FlashAttention-2", Algorithm 2): P = exp(S - lse) is recomputed from the
// saved lse, never stored, and
//     Δ_t = Σ_e dO_te O_te,   dV = Pᵀ dO,   dP = dO Vᵀ,   dS = P ∘ (dP - Δ),
//     dQ = scale · dS K,       dK = scale · dSᵀ Q.
//
// Semantics are the spec's (attention_common.cuh): bottom-right causal alignment, the
// broadcastable bias (which may hold -inf) and boolean mask, the ALiBi distance bias (the
// ScoreRule forms it per score, as in the forward), GQA/MQA (the dk, dv of a key head are
// sums over the H/G query heads of its group), and P = 0 for masked scores and for rows
// with no visible key (lse = -inf), whose dq is then 0. RoPE is not in these kernels: the
// launcher rotates q and k with rope.cu before them, so that q and k here are the spec's
// q̃ = R q, k̃ = R k, and rotates dq, dk back by the negated positions after them.
// P is the spec's exp(where(visible, score, -inf) - lse_safe), so a NaN lse makes P NaN
// even where masked, and 0 · NaN = NaN wherever a visited pair meets a NaN in q, k, v or
// dO. Which pairs are visited is the spec's too: under causal, spec.attention.tiled skips
// a pair of *its* tiles (the caller's tile_t x tile_s) when the key tile is wholly in the
// query tile's future (_tile_is_future); SpecTiles below gives the kernels the same skip,
// so that NaN reaches exactly the gradients it reaches in the spec. For finite inputs a
// visited masked pair adds exact zeros, and the tiles change nothing.
//
// Kernels, run in this order (deterministic: every output element has one writer)
//   attention_backward_delta  Δ = rowsum(dO ∘ O), one thread per row of B·H·T.
//   attention_backward_dkdv   grid (key blocks of KEYS_KV, G, B): one thread per key row.
//                             The block loops over the H/G query heads of its group and
//                             over query tiles of QROWS_KV rows loaded into shared memory
//                             (q, dO, lse, Δ); each thread recomputes P and dS for its key
//                             and accumulates dk and dv in registers (or its own padded
//                             shared-memory row, see the macros). Query tiles the spec
//                             never visits for the block's keys are skipped.
//   attention_backward_dq     grid (query blocks of ROWS_Q, H, B): one thread per query
//                             row; K and V tiles of KEYS_Q keys in shared memory; dq in
//                             registers. Key tiles past the spec's causal skip are skipped.
// Both main kernels take STEP rows (dkdv) or keys (dq) at a time: STEP independent
// dot-product chains per thread hide the latency of the sequential sums below, and the
// shared tiles are read as broadcast float4 (every thread of the block reads the same row).
//
// Bytes moved: delta reads o and dO once (8·B·H·T·E) and writes Δ (4·B·H·T). dkdv reads k, v
// once (4·B·G·S·(D+E)), q, dO, lse, Δ once per key block and query head (4·⌈S/KEYS_KV⌉·B·H·
// T·(D+E+2), less under causal), writes dk, dv (4·B·G·S·(D+E)). dq reads q, dO, lse, Δ once
// (4·B·H·T·(D+E+2)), K and V once per query block (4·⌈T/ROWS_Q⌉·B·H·S·(D+E)), writes dq.
// FLOPs per visited (query, key) pair: 2D (score) + 2E (dP) + 2E (dV) + 2D (dK) in dkdv and
// 2D + 2E + 2D (dQ) in dq: the score and dP are computed twice, once per kernel, the price
// of having no atomics.
//
// Rounding. Compiled with --fmad=false (backends/cuda/_launch.py): a * b + c rounds twice,
// on the GPU as on the emulator. The score q·k and dP = dO·v are plain products added one
// at a time in the order of d (resp. e), as the forward (attention.cu) sums its scores, so
// that the backward's P = exp(score - lse) uses the very score the forward's lse was made
// of (with logits of 1e4 one rounding more would move P by ~1e-3). Δ is summed in the order
// dP is, so that where a row sees a single key (O = V exactly) dP - Δ is exactly 0, as it
// is in exact arithmetic. dv, dk and dq are sums in two levels: the STEP terms of a step,
// an fmaf chain in row (key) order, then that partial added to the accumulator, so that
// the rounding error grows with n/STEP + STEP terms instead of n (the spec's tile products
// are blocked sums as well); steps sit at fixed positions (multiples of STEP from a tile
// start at a multiple of the tile length), whatever the caller's tiles. scale multiplies dk
// and dq once, at the end, where the spec multiplies each tile's product before adding it:
// the same rounding when one tile holds all rows, one rounding apart otherwise.
//
// Macros
//   HEAD_DIM     compiled bound on D and E (32, 64 or 128): sizes the per-thread rows
//   STEP         query rows (dkdv) or keys (dq) a thread handles at once
//   KEYS_KV      dkdv: threads (= key rows) per block;  QROWS_KV  query rows per tile
//   ROWS_Q       dq: threads (= query rows) per block;  KEYS_Q    keys per tile
//   ROWS_DELTA   delta: threads (= rows) per block
//   KV_IN_SMEM   dkdv keeps its k and v rows in shared memory (1) or registers (0)
//   DV_IN_SMEM   dkdv keeps its dv accumulator in shared memory (1) or registers (0)
//   QDO_IN_SMEM  dq keeps its q and dO rows in shared memory (1) or registers (0)
// A row in shared memory is the thread's own, padded to HEAD_DIM + 1 floats: the 32 rows a
// warp reads at one d then sit in 32 different banks. The launcher picks the placement per
// HEAD_DIM so that no configuration spills (the compile gate checks it).
#include "attention_common.cuh"
#include "tile_rows.cuh"

#define ROW_PITCH (HEAD_DIM + 1)

// The float4 reads of the shared tiles, and the STEP rows read past a tile's last valid
// row, stay inside the tiles:
static_assert(HEAD_DIM % 4 == 0, "HEAD_DIM: float4 rows");
static_assert(QROWS_KV % STEP == 0 && KEYS_Q % STEP == 0, "tiles hold whole steps");

// Which (query, key) pairs spec.attention.tiled.flash_backward visits under causal: a pair
// of its tiles is skipped when s0 > (t1 - 1) + S - T, i.e. unless the key tile starts before
// rule.key_end(t1), t1 the end of the query tile. tile_t, tile_s are the caller's, at most
// T and S (the launcher clamps them: a larger tile is the same single tile).
struct SpecTiles {
    int tile_t, tile_s;

    // One past the last key the spec visits with query t: the end of the last key tile
    // that starts before rule.key_end(end of t's query tile).
    __device__ __forceinline__ int key_end(const ScoreRule& rule, int t) const {
        if (!rule.causal) return rule.S;
        const int t_end = min(rule.T, (t / tile_t + 1) * tile_t);
        const int end = rule.key_end(t_end);
        return min(rule.S, (end + tile_s - 1) / tile_s * tile_s);
    }

    // The first query the spec visits with key s: a query whose tile ends at t1 visits the
    // key tile starting at s0 iff rule.key_end(t1) > s0, i.e. t1 >= s0 + T - S + 1.
    __device__ __forceinline__ int query_begin(const ScoreRule& rule, int s) const {
        if (!rule.causal) return 0;
        const int need = s / tile_s * tile_s + rule.T - rule.S + 1;
        if (need <= 1) return 0;  // every query tile ends at 1 or later
        if (need > rule.T) return rule.T;
        return ((need + tile_t - 1) / tile_t - 1) * tile_t;  // the first tile ending at >= need
    }
};

// ---------------------------------------------------------------------------- delta

extern "C" __global__ void __launch_bounds__(ROWS_DELTA)
attention_backward_delta(const float* __restrict__ o_BHTE, const float* __restrict__ do_BHTE,
                         float* __restrict__ delta_BHT, long long rows, int E) {
    const long long row = (long long)blockIdx.x * ROWS_DELTA + threadIdx.x;
    if (row >= rows) return;  // no barrier in this kernel
    const float* o_E = o_BHTE + row * E;
    const float* do_E = do_BHTE + row * E;
    // Δ = Σ_e dO·O, plain products in the order of e: the order dP = Σ_e dO·v is summed in
    float acc = 0.0f;
    for (int e = 0; e < E; ++e) acc = acc + do_E[e] * o_E[e];
    delta_BHT[row] = acc;
}

// ----------------------------------------------------------------------------- dkdv

#define DKDV_PARAMS                                                                          \
    const float* __restrict__ q_BHTD, const float* __restrict__ k_BGSD,                      \
        const float* __restrict__ v_BGSE, const float* __restrict__ do_BHTE,                 \
        const float* __restrict__ lse_BHT, const float* __restrict__ delta_BHT,              \
        float* __restrict__ dk_BGSD, float* __restrict__ dv_BGSE, int H, int G, int T, int S, \
        int D, int E, int tile_t, int tile_s, SCORE_RULE_PARAMS

// Minimum 1 block per SM: without it ptxas aims at more resident blocks and, at HEAD_DIM 32
// (k, v, dk, dv all in registers), caps the kernel at 168 registers and spills a few.
extern "C" __global__ void __launch_bounds__(KEYS_KV, 1) attention_backward_dkdv(DKDV_PARAMS) {
    // q and dO tiles [QROWS_KV][HEAD_DIM] (float4 rows), lse and Δ [QROWS_KV], then the
    // per-thread rows [KEYS_KV][ROW_PITCH] of k, v (KV_IN_SMEM) and dv (DV_IN_SMEM)
    extern __shared__ __align__(16) unsigned char shared_raw[];
    float* q_tile = reinterpret_cast<float*>(shared_raw);
    float* do_tile = q_tile + QROWS_KV * HEAD_DIM;
    float* lse_tile = do_tile + QROWS_KV * HEAD_DIM;
    float* delta_tile = lse_tile + QROWS_KV;
#if KV_IN_SMEM || DV_IN_SMEM
    float* rows_s = delta_tile + QROWS_KV;
#endif

    const ScoreRule rule = SCORE_RULE(T, S);
    const SpecTiles tiles{tile_t, tile_s};
    const int b = blockIdx.z, g = blockIdx.y, group = H / G;
    const int s0 = blockIdx.x * KEYS_KV, s = s0 + threadIdx.x;
    const int n_keys = min(KEYS_KV, S - s0);
    const bool has_key = s < S;  // threads without a key still load tiles and meet barriers
    const long long kv_row0 = (long long)(b * G + g) * S;  // row of k[b, g, 0]

#if KV_IN_SMEM
    float* k_row = rows_s + threadIdx.x * ROW_PITCH;
    float* v_row = rows_s + (KEYS_KV + threadIdx.x) * ROW_PITCH;
    load_rows(rows_s, ROW_PITCH, k_BGSD + (kv_row0 + s0) * D, n_keys, D, threadIdx.x, KEYS_KV);
    load_rows(rows_s + KEYS_KV * ROW_PITCH, ROW_PITCH, v_BGSE + (kv_row0 + s0) * E, n_keys, E,
              threadIdx.x, KEYS_KV);
    // (the barrier before the first query tile makes them visible)
#else
    float k_row[HEAD_DIM], v_row[HEAD_DIM];
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) {
        k_row[d] = has_key && d < D ? k_BGSD[(kv_row0 + s) * D + d] : 0.0f;
        v_row[d] = has_key && d < E ? v_BGSE[(kv_row0 + s) * E + d] : 0.0f;
    }
#endif
    float dk[HEAD_DIM];  // Σ dS q over the group's heads and the visited queries; × scale at the end
#if DV_IN_SMEM
    float* dv = rows_s + ((2 * KV_IN_SMEM) * KEYS_KV + threadIdx.x) * ROW_PITCH;
#else
    float dv[HEAD_DIM];
#endif
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) {
        dk[d] = 0.0f;
        dv[d] = 0.0f;
    }

    // queries before t_first are in tiles the spec never visits with this thread's key
    const int t_first = has_key ? tiles.query_begin(rule, s) : T;
    // The block starts at the tile holding its earliest visited query. Tiles sit at
    // multiples of QROWS_KV whatever tile_t is, so that the rows are always grouped into
    // the same steps and the sums rounded alike: the caller's tiles change which masked
    // pairs are visited, which add exact zeros, and nothing else.
    const int t_begin = tiles.query_begin(rule, s0) / QROWS_KV * QROWS_KV;
    for (int h = g * group; h < (g + 1) * group; ++h) {
        const long long q_row0 = (long long)(b * H + h) * T;  // row of q[b, h, 0]
        for (int tq0 = t_begin; tq0 < T; tq0 += QROWS_KV) {
            const int nt = min(QROWS_KV, T - tq0);
            __syncthreads();  // every thread is done with the previous tile
            load_rows(q_tile, HEAD_DIM, q_BHTD + (q_row0 + tq0) * D, nt, D, threadIdx.x, KEYS_KV);
            load_rows(do_tile, HEAD_DIM, do_BHTE + (q_row0 + tq0) * E, nt, E, threadIdx.x, KEYS_KV);
            for (int i = threadIdx.x; i < nt; i += KEYS_KV) {
                lse_tile[i] = lse_BHT[q_row0 + tq0 + i];
                delta_tile[i] = delta_BHT[q_row0 + tq0 + i];
            }
            __syncthreads();
            if (!has_key) continue;

            for (int t = 0; t < nt; t += STEP) {
                // rows t .. t + STEP - 1 of the tile; past nt they hold stale values, unused
                bool ok[STEP];
#pragma unroll
                for (int r = 0; r < STEP; ++r) ok[r] = t + r < nt && tq0 + t + r >= t_first;

                dkdv_step(dk, dv, ok, q_tile, do_tile, lse_tile, delta_tile, t, k_row, v_row, D, E,
                          [&](int r, float x, bool& visible) {
                              // score = scale · q·k + bias
                              return rule.score(x, b, h, tq0 + t + r, s, visible);
                          });
            }
        }
    }
    if (!has_key) return;  // after the last barrier
    store_key_grads(dk_BGSD + (kv_row0 + s) * D, dv_BGSE + (kv_row0 + s) * E, dk, dv, rule.scale,
                    D, E);
}

// ------------------------------------------------------------------------------- dq

#define DQ_PARAMS                                                                            \
    const float* __restrict__ q_BHTD, const float* __restrict__ k_BGSD,                      \
        const float* __restrict__ v_BGSE, const float* __restrict__ do_BHTE,                 \
        const float* __restrict__ lse_BHT, const float* __restrict__ delta_BHT,              \
        float* __restrict__ dq_BHTD, int H, int G, int T, int S, int D, int E, int tile_t,   \
        int tile_s, SCORE_RULE_PARAMS

extern "C" __global__ void __launch_bounds__(ROWS_Q) attention_backward_dq(DQ_PARAMS) {
    // K and V tiles [KEYS_Q][HEAD_DIM] (float4 rows), then (QDO_IN_SMEM) the per-thread q
    // and dO rows [ROWS_Q][ROW_PITCH]
    extern __shared__ __align__(16) unsigned char shared_raw[];
    float* k_tile = reinterpret_cast<float*>(shared_raw);
    float* v_tile = k_tile + KEYS_Q * HEAD_DIM;
#if QDO_IN_SMEM
    float* rows_s = v_tile + KEYS_Q * HEAD_DIM;
#endif

    const ScoreRule rule = SCORE_RULE(T, S);
    const SpecTiles tiles{tile_t, tile_s};
    const int b = blockIdx.z, h = blockIdx.y, g = h / (H / G);
    const int t0 = blockIdx.x * ROWS_Q, t = t0 + threadIdx.x;
    const int n_rows = min(ROWS_Q, T - t0);
    const bool has_row = t < T;  // threads without a row still load tiles and meet barriers
    const long long q_row0 = (long long)(b * H + h) * T;   // row of q[b, h, 0]
    const long long kv_row0 = (long long)(b * G + g) * S;  // row of k[b, g, 0]

#if QDO_IN_SMEM
    float* q_row = rows_s + threadIdx.x * ROW_PITCH;
    float* do_row = rows_s + (ROWS_Q + threadIdx.x) * ROW_PITCH;
    load_rows(rows_s, ROW_PITCH, q_BHTD + (q_row0 + t0) * D, n_rows, D, threadIdx.x, ROWS_Q);
    load_rows(rows_s + ROWS_Q * ROW_PITCH, ROW_PITCH, do_BHTE + (q_row0 + t0) * E, n_rows, E,
              threadIdx.x, ROWS_Q);
    // (the barrier before the first key tile makes them visible)
#else
    float q_row[HEAD_DIM], do_row[HEAD_DIM];
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) {
        q_row[d] = has_row && d < D ? q_BHTD[(q_row0 + t) * D + d] : 0.0f;
        do_row[d] = has_row && d < E ? do_BHTE[(q_row0 + t) * E + d] : 0.0f;
    }
#endif
    const float lse = has_row ? lse_BHT[q_row0 + t] : 0.0f;
    const float delta = has_row ? delta_BHT[q_row0 + t] : 0.0f;
    float dq[HEAD_DIM];  // Σ dS k over the visited keys; × scale at the end
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) dq[d] = 0.0f;

    // keys from s_end on are in tiles the spec never visits with this thread's query
    const int s_end = has_row ? tiles.key_end(rule, t) : 0;
    const int s_stop = tiles.key_end(rule, t0 + n_rows - 1);  // the block's latest
    for (int sk0 = 0; sk0 < s_stop; sk0 += KEYS_Q) {
        const int ns = min(KEYS_Q, S - sk0);
        __syncthreads();  // every thread is done with the previous tile
        load_rows(k_tile, HEAD_DIM, k_BGSD + (kv_row0 + sk0) * D, ns, D, threadIdx.x, ROWS_Q);
        load_rows(v_tile, HEAD_DIM, v_BGSE + (kv_row0 + sk0) * E, ns, E, threadIdx.x, ROWS_Q);
        __syncthreads();
        if (!has_row) continue;

        for (int j = 0; j < ns; j += STEP) {
            // keys j .. j + STEP - 1 of the tile; past ns they hold stale values, unused
            bool ok[STEP];
#pragma unroll
            for (int r = 0; r < STEP; ++r) ok[r] = j + r < ns && sk0 + j + r < s_end;

            dq_step(dq, ok, k_tile, v_tile, j, q_row, do_row, lse, delta, D, E,
                    [&](int r, float x, bool& visible) {
                        // score = scale · q·k + bias
                        return rule.score(x, b, h, t, sk0 + j + r, visible);
                    });
        }
    }
    if (!has_row) return;  // after the last barrier
    store_query_grad(dq_BHTD + (q_row0 + t) * D, dq, rule.scale, D);
}
