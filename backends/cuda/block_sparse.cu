// Block-sparse attention, float32, SIMT (no tensor cores): the forward, and the backward as a
// dk/dv kernel and a dq kernel, without atomics.
// Mirrors spec.attention.block_sparse.block_sparse_forward and block_sparse_backward:
//     q_BHTD, k_BGSD, v_BGSE, layout, block_bias_K -> o_BHTE, lse_BHT
//     ... + o_BHTE, lse_BHT, do_BHTE               -> dq_BHTD, dk_BGSD, dv_BGSE
// and through them spec.attention.prflash.prflash_forward / prflash_backward (causal, the
// layout of a sampled block mask, block_bias = log 1/p). The layout is the spec's CSR: row
// r = (b'·H' + h')·Nq + i lists the kept key blocks of query block i, ascending, at
// key_block_K[row_offsets[r] .. row_offsets[r + 1]); B' (H') is 1 when every batch (head)
// shares the pattern, and b' = b (h' = h) otherwise. The backward walks the same tiles by key
// block: the CSC transpose (spec.attention.block_sparse.key_block_columns), column
// c = (b'·H' + h')·Nk + j listing the query blocks that keep key block j, ascending, with
// pair_K giving each tile's position in the row layout (where its block bias sits).
//
// Semantics are the spec's: per kept tile (query block i, key block j) of C x C positions
// (the last block of each axis may be short),
//     score = scale · q·k + β_ij,  visible = score != -inf and (causal) s <= t + S - T,
// the visibility decided before β is added, as spec.attention.block_sparse._tile_scores does
// (β is finite); the causal mask is bottom-right and element-wise inside the tiles it cuts
// (attention_common.cuh's ScoreRule, with no bias, mask or ALiBi: POSITIONS=0). Keys outside
// kept tiles do not exist for the query. The forward folds the kept tiles of a row into the
// online softmax one tile at a time, in the layout's (ascending) order: exactly the spec's
// sequence of online_step calls. A query with no visible key in its kept tiles gets o = 0,
// lse = -inf. GQA/MQA: query head h reads key/value head h / (H/G); dk, dv of a key head are
// sums over the H/G query heads of its group, each read through its own layout row when the
// pattern is per head.
//
// Kernels (grids name CUDA blocks; C is the layout's block size, a runtime argument)
//   block_sparse_forward  grid (Nq · row_chunks, H, B), one thread per query row: a CUDA
//                         block takes `rows` = blockDim.x (<= ROWS_F) rows of query block i
//                         (row_chunks = ceil(C / rows) blocks per query block). It walks its
//                         layout row's kept key blocks; each key block is staged in shared
//                         memory in sub-tiles of KEYS_F keys (K and V together when the block
//                         fits one sub-tile, else the K sub-tiles for the scores, then the V
//                         sub-tiles for P·V). Per thread, its q row, its Õ row and the
//                         tile's scores, then P, live in shared memory (rows padded to an
//                         odd length: the 32 rows a warp reads sit in 32 banks); the k and v
//                         rows are read by every thread at once (broadcasts, float4).
//   block_sparse_dkdv     grid (Nk · key_chunks, G, B), one thread per key row of key block j
//                         (blockDim.x <= KEYS_KV keys). For each query head h of the group
//                         and each query block of the layout column of (b, h, j), ascending,
//                         the block stages the query tile's q, dO, lse and Δ in shared memory,
//                         QROWS_KV rows at a time, and each thread recomputes P and dS for
//                         its key and accumulates dk and dv (registers, or its own padded
//                         shared-memory row, per HEAD_DIM: see the macros).
//   block_sparse_dq       grid (Nq · row_chunks, H, B), one thread per query row of query
//                         block i (blockDim.x <= ROWS_Q): the layout row's kept key blocks,
//                         KEYS_Q keys of K and V at a time in shared memory; dq in registers.
// Δ = rowsum(dO ∘ O) comes first, from attention_backward.cu's attention_backward_delta (the
// launcher runs it: the same operation, summed in the order of e as dP is below).
// Every thread's work depends on its block's kept tiles only: the cost is that of the kept
// tiles, not of the T x S grid. Deterministic: every output element has one writer.
//
// Bytes moved. Forward: q read and o, lse written once (4·B·H·T·(D + E + 1)); k and v once
// per kept tile and row chunk (4·C·(D + E) each), the CSR arrays once per row. dkdv: k, v
// read once and dk, dv written once (4·B·G·S·(D + E) each way), q, dO, lse, Δ once per kept
// tile (4·C·(D + E + 2)). dq: q, dO, lse, Δ read once, k and v once per kept tile, dq written
// once. FLOPs per pair of a kept tile: forward 2D + 2E; dkdv 2D + 2E + 2E + 2D; dq 2D + 2E +
// 2D (the score and dP are computed in both backward kernels, the price of no atomics).
//
// Rounding. Compiled with --fmad=false (backends/cuda/_launch.py): a * b + c rounds twice, on
// the GPU as on the emulator. Scores and dP are plain products added in the order of d (e),
// as attention.cu and attention_backward.cu sum them, so the backward's P = exp(score - lse)
// uses the very score the forward's lse was made of. Forward, per kept tile: m' = max(m,
// rowmax(S)), α = exp(m - m'), P = exp(S - m') (in key order), l' = α l + Σ P (summed in key
// order), Õ' = α Õ + P V (P V an fmaf chain in key order): attention.cu's v2, step for step,
// so that with every causal tile of C = KEYS_V2 = 32 kept the forward equals v2 bit for bit
// (a tile without a visible key for a row changes nothing: α = 1, P = 0). A key block longer
// than KEYS_F is folded as Õ' = α Õ + P V of its first KEYS_F keys, then + P V of each next
// sub-tile: one rounding more per sub-tile, the online statistics unchanged. The backward's
// dv, dk, dq are sums in two levels as in attention_backward.cu: the STEP terms of a step (an
// fmaf chain), then that partial added to the accumulator; scale multiplies dk and dq once,
// at the end. Steps start at multiples of STEP from each block's first row (key), so with
// every causal tile kept and C a multiple of STEP the sums are attention_backward.cu's, in
// its order, and the gradients its bits (given the same o, lse).
//
// Macros
//   HEAD_DIM     compiled bound on D and E (32, 64 or 128)
//   STEP         query rows (dkdv) or keys (forward, dq) a thread takes at once
//   ROWS_F       forward: most threads (= query rows) per block;  KEYS_F keys per sub-tile
//   KEYS_KV      dkdv: most threads (= key rows) per block;  QROWS_KV query rows per tile
//   ROWS_Q       dq: most threads (= query rows) per block;  KEYS_Q keys per tile
//   KV_IN_SMEM   dkdv keeps its k and v rows in shared memory (1) or registers (0)
//   DV_IN_SMEM   dkdv keeps its dv accumulator in shared memory (1) or registers (0)
//   QDO_IN_SMEM  dq keeps its q and dO rows in shared memory (1) or registers (0)
//   POSITIONS    0: attention_common.cuh without the positional code (no RoPE, no ALiBi)
#include "attention_common.cuh"
#include "tile_rows.cuh"

#define ROW_PITCH (HEAD_DIM + 1)  // a thread's own row in shared memory: 32 rows, 32 banks
#define E_CHUNK (HEAD_DIM < 64 ? HEAD_DIM : 64)  // forward: output columns per P·V pass

static_assert(HEAD_DIM % 4 == 0, "HEAD_DIM: float4 rows");
static_assert(KEYS_F % STEP == 0 && QROWS_KV % STEP == 0 && KEYS_Q % STEP == 0,
              "tiles hold whole steps");
static_assert(E_CHUNK % 4 == 0 && HEAD_DIM % E_CHUNK == 0, "E_CHUNK: whole float4s");

// ------------------------------------------------------------------------------ shared

// The layout row (CSR) or column (CSC) of batch b, head h: the pattern's own, or the one
// every batch (head) shares when B' (H') is 1.
struct Layout {
    int Bl, Hl, Nq, Nk;

    __device__ __forceinline__ long long heads(int b, int h) const {
        return (long long)(Bl == 1 ? 0 : b) * Hl + (Hl == 1 ? 0 : h);
    }
    __device__ __forceinline__ long long row(int b, int h, int i) const {
        return heads(b, h) * Nq + i;
    }
    __device__ __forceinline__ long long column(int b, int h, int j) const {
        return heads(b, h) * Nk + j;
    }
};

// The dense score rule of a block-sparse call: scale and the causal mask, no bias, no mask,
// no ALiBi (attention_common.cuh).
__device__ __forceinline__ ScoreRule block_rule(int T, int S, int causal, float scale) {
    return ScoreRule{nullptr, 0, 0, 0, 0, nullptr, 0, 0, 0, 0, nullptr, nullptr,
                     false, false, causal != 0, false, T, S, scale};
}

// score = scale · q·k + β of the pair (t, s) of a kept tile, and whether it is visible:
// visibility is the dense tile's (score != -inf, causal), decided before β is added, as in
// spec.attention.block_sparse._tile_scores.
__device__ __forceinline__ float tile_score(const ScoreRule& rule, float dot, int t, int s,
                                            bool has_beta, float beta, bool& visible) {
    const float x = rule.score(dot, 0, 0, t, s, visible);
    return has_beta ? x + beta : x;
}

// The arguments every kernel takes after its arrays: sizes, the layout's shape, the block
// size, the rule. Bl, Hl: the layout's (B', H'); Nq, Nk: its block grid; chunks: CUDA
// blocks per query (forward, dq) or key (dkdv) block.
#define BLOCK_SPARSE_DIMS                                                                   \
    int H, int G, int T, int S, int D, int E, int C, int Bl, int Hl, int Nq, int Nk,        \
        int chunks, int has_block_bias, int causal, float scale

// ----------------------------------------------------------------------------- forward

extern "C" __global__ void __launch_bounds__(ROWS_F, 1)
block_sparse_forward(const float* __restrict__ q_BHTD, const float* __restrict__ k_BGSD,
                     const float* __restrict__ v_BGSE, const long long* __restrict__ row_offsets,
                     const long long* __restrict__ key_block_K,
                     const float* __restrict__ block_bias_K, float* __restrict__ o_BHTE,
                     float* __restrict__ lse_BHT, BLOCK_SPARSE_DIMS) {
    // K and V sub-tiles [KEYS_F][HEAD_DIM] (float4 rows), then per thread (rows = blockDim.x):
    // its q row and its Õ row [rows][ROW_PITCH], its scores, then P, [rows][p_pitch]
    extern __shared__ __align__(16) unsigned char shared_raw[];
    const int rows = blockDim.x, p_pitch = C | 1;  // odd: a warp's 32 rows in 32 banks
    float* k_s = reinterpret_cast<float*>(shared_raw);
    float* v_s = k_s + KEYS_F * HEAD_DIM;
    float* q_s = v_s + KEYS_F * HEAD_DIM;
    float* acc_s = q_s + rows * ROW_PITCH;
    float* p_s = acc_s + rows * ROW_PITCH;

    const ScoreRule rule = block_rule(T, S, causal, scale);
    const Layout layout{Bl, Hl, Nq, Nk};
    const int b = blockIdx.z, h = blockIdx.y, g = h / (H / G);
    const int i = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
    const int t0 = i * C + chunk * rows;
    const int t_end = min(min(i * C + C, T), t0 + rows);
    if (t0 >= t_end) return;  // a chunk past the short last query block: the whole block leaves
    const int t = t0 + threadIdx.x;
    const bool has_row = t < t_end;  // threads without a row still load tiles and meet barriers
    const long long q_row0 = (long long)(b * H + h) * T;   // row of q[b, h, 0]
    const long long kv_row0 = (long long)(b * G + g) * S;  // row of k[b, g, 0]

    load_rows(q_s, ROW_PITCH, q_BHTD + (q_row0 + t0) * D, t_end - t0, D, threadIdx.x, rows);
    const float* q_D = q_s + threadIdx.x * ROW_PITCH;
    float* acc_E = acc_s + threadIdx.x * ROW_PITCH;  // Õ, the unnormalised output row
    float* p_J = p_s + threadIdx.x * p_pitch;
    for (int e = 0; e < E; ++e) acc_E[e] = 0.0f;
    RowState r{neg_inf(), 0.0f};

    const long long row = layout.row(b, h, i);
    const long long kept_end = row_offsets[row + 1];
    // the layout's order is the order of the online softmax's updates
    for (long long kept = row_offsets[row]; kept < kept_end; ++kept) {
        const int s0 = (int)key_block_K[kept] * C;
        const int n = min(C, S - s0);
        const bool has_beta = has_block_bias != 0;
        const float beta = has_beta ? block_bias_K[kept] : 0.0f;
        const bool whole = n <= KEYS_F;  // one sub-tile: K and V staged together

        // scores of the tile (-inf where not visible) and their maximum
        float tile_max = neg_inf();
        for (int sub = 0; sub < n; sub += KEYS_F) {
            const int ns = min(KEYS_F, n - sub);
            __syncthreads();  // every thread is done with the previous sub-tile (q_s written)
            load_rows(k_s, HEAD_DIM, k_BGSD + (kv_row0 + s0 + sub) * D, ns, D, threadIdx.x, rows);
            if (whole)
                load_rows(v_s, HEAD_DIM, v_BGSE + (kv_row0 + s0) * E, ns, E, threadIdx.x, rows);
            __syncthreads();
            if (!has_row) continue;
            for (int j = 0; j < ns; j += STEP) {
                // keys j .. j + STEP - 1 of the sub-tile; past ns they hold stale values, unused
                float x[STEP];
                tile_dots(x, k_s, j, q_D, D);
#pragma unroll
                for (int u = 0; u < STEP; ++u) {
                    if (j + u < ns) {
                        bool visible;
                        const float score =
                            tile_score(rule, x[u], t, s0 + sub + j + u, has_beta, beta, visible);
                        p_J[sub + j + u] = visible ? score : neg_inf();
                        if (visible) tile_max = nan_max(tile_max, score);
                    }
                }
            }
        }
        // m' = max(m, rowmax(S)),  α = exp(m - m'),  P = exp(S - m'),  l' = α l + rowsum(P)
        float alpha = 0.0f;
        if (has_row) {
            const float m_new = nan_max(r.m, tile_max);
            const float shift = safe_shift(m_new);
            alpha = expf(r.m - shift);
            float p_sum = 0.0f;
            for (int j = 0; j < n; ++j) {
                p_J[j] = expf(p_J[j] - shift);
                p_sum = p_sum + p_J[j];
            }
            r.l = alpha * r.l + p_sum;
            r.m = m_new;
        }
        // Õ' = α Õ + P V, in chunks of E_CHUNK columns (a whole row of P·V in registers would
        // spill at HEAD_DIM = 128); a key block of several sub-tiles adds each one's P V
        for (int sub = 0; sub < n; sub += KEYS_F) {
            const int ns = min(KEYS_F, n - sub);
            if (!whole) {
                __syncthreads();  // every thread is done with the previous V sub-tile
                load_rows(v_s, HEAD_DIM, v_BGSE + (kv_row0 + s0 + sub) * E, ns, E, threadIdx.x,
                          rows);
                __syncthreads();
            }
            if (!has_row) continue;
            for (int e0 = 0; e0 < E; e0 += E_CHUNK) {
                float pv[E_CHUNK];
#pragma unroll
                for (int e = 0; e < E_CHUNK; ++e) pv[e] = 0.0f;
                for (int j = 0; j < ns; ++j) {
                    const float pj = p_J[sub + j];
                    const float* v_E = v_s + j * HEAD_DIM + e0;
                    // columns from round4(E) on hold stale values and are never stored
#pragma unroll
                    for (int e4 = 0; e4 < E_CHUNK; e4 += 4) {
                        const float4 v4 = load4(v_E + e4);
                        pv[e4] = fmaf(pj, v4.x, pv[e4]);
                        pv[e4 + 1] = fmaf(pj, v4.y, pv[e4 + 1]);
                        pv[e4 + 2] = fmaf(pj, v4.z, pv[e4 + 2]);
                        pv[e4 + 3] = fmaf(pj, v4.w, pv[e4 + 3]);
                    }
                }
#pragma unroll
                for (int e = 0; e < E_CHUNK; ++e)
                    if (e0 + e < E)
                        acc_E[e0 + e] = (sub == 0 ? alpha * acc_E[e0 + e] : acc_E[e0 + e]) + pv[e];
            }
        }
    }
    if (!has_row) return;  // after the last barrier
    // o = Õ / l,  lse = m + log l
    const float divisor = row_divisor(r);
    float* o_E = o_BHTE + (q_row0 + t) * E;
    for (int e = 0; e < E; ++e) o_E[e] = acc_E[e] / divisor;
    lse_BHT[q_row0 + t] = row_lse(r);
}

// -------------------------------------------------------------------------------- dkdv

// Minimum 1 block per SM: without it ptxas aims at more resident blocks and, at HEAD_DIM 32
// (k, v, dk, dv all in registers), caps the registers low enough to spill (as in
// attention_backward.cu).
extern "C" __global__ void __launch_bounds__(KEYS_KV, 1)
block_sparse_dkdv(const float* __restrict__ q_BHTD, const float* __restrict__ k_BGSD,
                  const float* __restrict__ v_BGSE, const float* __restrict__ do_BHTE,
                  const float* __restrict__ lse_BHT, const float* __restrict__ delta_BHT,
                  const long long* __restrict__ col_offsets,
                  const long long* __restrict__ query_block_K,
                  const long long* __restrict__ pair_K, const float* __restrict__ block_bias_K,
                  float* __restrict__ dk_BGSD, float* __restrict__ dv_BGSE, BLOCK_SPARSE_DIMS) {
    // q and dO tiles [QROWS_KV][HEAD_DIM] (float4 rows), lse and Δ [QROWS_KV], then the
    // per-thread rows [keys][ROW_PITCH] of k, v (KV_IN_SMEM) and dv (DV_IN_SMEM)
    extern __shared__ __align__(16) unsigned char shared_raw[];
    float* q_tile = reinterpret_cast<float*>(shared_raw);
    float* do_tile = q_tile + QROWS_KV * HEAD_DIM;
    float* lse_tile = do_tile + QROWS_KV * HEAD_DIM;
    float* delta_tile = lse_tile + QROWS_KV;
    const int keys = blockDim.x;
#if KV_IN_SMEM || DV_IN_SMEM
    float* rows_s = delta_tile + QROWS_KV;
#endif

    const ScoreRule rule = block_rule(T, S, causal, scale);
    const Layout layout{Bl, Hl, Nq, Nk};
    const int b = blockIdx.z, g = blockIdx.y, group = H / G;
    const int j = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
    const int s0 = j * C + chunk * keys;
    const int n_keys = min(min(j * C + C, S), s0 + keys) - s0;
    if (n_keys <= 0) return;  // a chunk past the short last key block: the whole block leaves
    const int s = s0 + threadIdx.x;
    const bool has_key = (int)threadIdx.x < n_keys;  // keyless threads load and meet barriers
    const long long kv_row0 = (long long)(b * G + g) * S;  // row of k[b, g, 0]

#if KV_IN_SMEM
    float* k_row = rows_s + threadIdx.x * ROW_PITCH;
    float* v_row = rows_s + (keys + threadIdx.x) * ROW_PITCH;
    load_rows(rows_s, ROW_PITCH, k_BGSD + (kv_row0 + s0) * D, n_keys, D, threadIdx.x, keys);
    load_rows(rows_s + keys * ROW_PITCH, ROW_PITCH, v_BGSE + (kv_row0 + s0) * E, n_keys, E,
              threadIdx.x, keys);
    // (the barrier before the first query tile makes them visible)
#else
    float k_row[HEAD_DIM], v_row[HEAD_DIM];
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) {
        k_row[d] = has_key && d < D ? k_BGSD[(kv_row0 + s) * D + d] : 0.0f;
        v_row[d] = has_key && d < E ? v_BGSE[(kv_row0 + s) * E + d] : 0.0f;
    }
#endif
    float dk[HEAD_DIM];  // Σ dSᵀ q over the group's heads and the kept tiles; × scale at the end
#if DV_IN_SMEM
    float* dv = rows_s + ((2 * KV_IN_SMEM) * keys + threadIdx.x) * ROW_PITCH;
#else
    float dv[HEAD_DIM];
#endif
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) {
        dk[d] = 0.0f;
        dv[d] = 0.0f;
    }

    const bool has_beta = has_block_bias != 0;
    for (int h = g * group; h < (g + 1) * group; ++h) {
        const long long q_row0 = (long long)(b * H + h) * T;  // row of q[b, h, 0]
        const long long col = layout.column(b, h, j);
        const long long kept_end = col_offsets[col + 1];
        // the query blocks that keep key block j, ascending
        for (long long kept = col_offsets[col]; kept < kept_end; ++kept) {
            const int i = (int)query_block_K[kept];
            const float beta = has_beta ? block_bias_K[pair_K[kept]] : 0.0f;
            const int t_stop = min(i * C + C, T);
            for (int tq0 = i * C; tq0 < t_stop; tq0 += QROWS_KV) {
                const int nt = min(QROWS_KV, t_stop - tq0);
                __syncthreads();  // every thread is done with the previous tile
                load_rows(q_tile, HEAD_DIM, q_BHTD + (q_row0 + tq0) * D, nt, D, threadIdx.x, keys);
                load_rows(do_tile, HEAD_DIM, do_BHTE + (q_row0 + tq0) * E, nt, E, threadIdx.x, keys);
                for (int u = threadIdx.x; u < nt; u += keys) {
                    lse_tile[u] = lse_BHT[q_row0 + tq0 + u];
                    delta_tile[u] = delta_BHT[q_row0 + tq0 + u];
                }
                __syncthreads();
                if (!has_key) continue;

                for (int t = 0; t < nt; t += STEP) {
                    // rows t .. t + STEP - 1 of the tile; past nt they hold stale values, unused
                    bool ok[STEP];
#pragma unroll
                    for (int u = 0; u < STEP; ++u) ok[u] = t + u < nt;

                    dkdv_step(dk, dv, ok, q_tile, do_tile, lse_tile, delta_tile, t, k_row, v_row,
                              D, E, [&](int u, float x, bool& visible) {
                                  // score = scale · q·k + β
                                  return tile_score(rule, x, tq0 + t + u, s, has_beta, beta, visible);
                              });
                }
            }
        }
    }
    if (!has_key) return;  // after the last barrier
    store_key_grads(dk_BGSD + (kv_row0 + s) * D, dv_BGSE + (kv_row0 + s) * E, dk, dv, rule.scale,
                    D, E);
}

// ---------------------------------------------------------------------------------- dq

extern "C" __global__ void __launch_bounds__(ROWS_Q, 1)
block_sparse_dq(const float* __restrict__ q_BHTD, const float* __restrict__ k_BGSD,
                const float* __restrict__ v_BGSE, const float* __restrict__ do_BHTE,
                const float* __restrict__ lse_BHT, const float* __restrict__ delta_BHT,
                const long long* __restrict__ row_offsets,
                const long long* __restrict__ key_block_K,
                const float* __restrict__ block_bias_K, float* __restrict__ dq_BHTD,
                BLOCK_SPARSE_DIMS) {
    // K and V tiles [KEYS_Q][HEAD_DIM] (float4 rows), then (QDO_IN_SMEM) the per-thread q and
    // dO rows [rows][ROW_PITCH]
    extern __shared__ __align__(16) unsigned char shared_raw[];
    float* k_tile = reinterpret_cast<float*>(shared_raw);
    float* v_tile = k_tile + KEYS_Q * HEAD_DIM;
    const int rows = blockDim.x;
#if QDO_IN_SMEM
    float* rows_s = v_tile + KEYS_Q * HEAD_DIM;
#endif

    const ScoreRule rule = block_rule(T, S, causal, scale);
    const Layout layout{Bl, Hl, Nq, Nk};
    const int b = blockIdx.z, h = blockIdx.y, g = h / (H / G);
    const int i = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
    const int t0 = i * C + chunk * rows;
    const int n_rows = min(min(i * C + C, T), t0 + rows) - t0;
    if (n_rows <= 0) return;  // a chunk past the short last query block: the whole block leaves
    const int t = t0 + threadIdx.x;
    const bool has_row = (int)threadIdx.x < n_rows;  // rowless threads load and meet barriers
    const long long q_row0 = (long long)(b * H + h) * T;   // row of q[b, h, 0]
    const long long kv_row0 = (long long)(b * G + g) * S;  // row of k[b, g, 0]

#if QDO_IN_SMEM
    float* q_row = rows_s + threadIdx.x * ROW_PITCH;
    float* do_row = rows_s + (rows + threadIdx.x) * ROW_PITCH;
    load_rows(rows_s, ROW_PITCH, q_BHTD + (q_row0 + t0) * D, n_rows, D, threadIdx.x, rows);
    load_rows(rows_s + rows * ROW_PITCH, ROW_PITCH, do_BHTE + (q_row0 + t0) * E, n_rows, E,
              threadIdx.x, rows);
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
    float dq[HEAD_DIM];  // Σ dS k over the kept tiles; × scale at the end
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) dq[d] = 0.0f;

    const bool has_beta = has_block_bias != 0;
    const long long row = layout.row(b, h, i);
    const long long kept_end = row_offsets[row + 1];
    for (long long kept = row_offsets[row]; kept < kept_end; ++kept) {
        const int s_block = (int)key_block_K[kept] * C;
        const int s_stop = min(s_block + C, S);
        const float beta = has_beta ? block_bias_K[kept] : 0.0f;
        for (int sk0 = s_block; sk0 < s_stop; sk0 += KEYS_Q) {
            const int ns = min(KEYS_Q, s_stop - sk0);
            __syncthreads();  // every thread is done with the previous tile
            load_rows(k_tile, HEAD_DIM, k_BGSD + (kv_row0 + sk0) * D, ns, D, threadIdx.x, rows);
            load_rows(v_tile, HEAD_DIM, v_BGSE + (kv_row0 + sk0) * E, ns, E, threadIdx.x, rows);
            __syncthreads();
            if (!has_row) continue;

            for (int j = 0; j < ns; j += STEP) {
                // keys j .. j + STEP - 1 of the tile; past ns they hold stale values, unused
                bool ok[STEP];
#pragma unroll
                for (int u = 0; u < STEP; ++u) ok[u] = j + u < ns;

                dq_step(dq, ok, k_tile, v_tile, j, q_row, do_row, lse, delta, D, E,
                        [&](int u, float x, bool& visible) {
                            // score = scale · q·k + β
                            return tile_score(rule, x, t, sk0 + j + u, has_beta, beta, visible);
                        });
            }
        }
    }
    if (!has_row) return;  // after the last barrier
    store_query_grad(dq_BHTD + (q_row0 + t) * D, dq, rule.scale, D);
}
