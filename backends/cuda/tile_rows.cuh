// Row and tile helpers of the SIMT backward kernels (attention_backward.cu) and of the
// block-sparse kernels (block_sparse.cu): one definition, so that both sum in the same order.
// Include after HEAD_DIM and STEP are defined (the launchers pass them as -D macros), and
// after attention_common.cuh (neg_inf).
#pragma once

// P = exp(where(visible, score, -inf) - lse_safe), as spec.attention.tiled.backward_tile: 0
// where masked or where the row saw no visible key (lse = -inf, whose lse_safe is 0).
__device__ __forceinline__ float probability(float score, bool visible, float lse) {
    const bool empty = lse == neg_inf();
    return expf((visible && !empty ? score : neg_inf()) - (empty ? 0.0f : lse));
}

__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }

__device__ __forceinline__ float lane4(const float4& v, int c) {
    return c == 0 ? v.x : (c == 1 ? v.y : (c == 2 ? v.z : v.w));
}

// Widths rounded up to whole float4s: the loops step through D and E by 4; the columns up
// to the rounded width hold zeros, which add exact zeros to the sums (x + 0·0 = x) and land
// in accumulator columns never stored.
__device__ __forceinline__ int round4(int n) { return (n + 3) & ~3; }

// rows x cols of a row-major global array (row stride cols) into shared memory with row
// stride `pitch`, zero in the columns from cols up to round4(cols); consecutive threads read
// consecutive elements (coalesced).
__device__ __forceinline__ void load_rows(float* dst, int pitch, const float* src, int rows,
                                          int cols, int tid, int threads) {
    const int width = round4(cols);
    for (int i = tid; i < rows * width; i += threads) {
        const int row = i / width, col = i % width;
        dst[row * pitch + col] = col < cols ? src[(long long)row * cols + col] : 0.0f;
    }
}

// x[r] = Σ_i tile[row0 + r][i] · vec[i] for the STEP rows from row0 and i < round4(n): plain
// products added in the order of i (the rule of scores and dP). The tile's rows are HEAD_DIM
// floats, read as float4 broadcasts; `vec` is a register array or a shared-memory row.
template <typename Vec>
__device__ __forceinline__ void tile_dots(float (&x)[STEP], const float* tile, int row0,
                                          const Vec& vec, int n) {
#pragma unroll
    for (int r = 0; r < STEP; ++r) x[r] = 0.0f;
#pragma unroll
    for (int i4 = 0; i4 < HEAD_DIM; i4 += 4) {
        if (i4 < n) {
#pragma unroll
            for (int r = 0; r < STEP; ++r) {
                const float4 t4 = load4(&tile[(row0 + r) * HEAD_DIM + i4]);
#pragma unroll
                for (int c = 0; c < 4; ++c) x[r] = x[r] + lane4(t4, c) * vec[i4 + c];
            }
        }
    }
}

// acc[i] += Σ_r w[r] · tile[row0 + r][i] over the rows with ok[r], for i < round4(n): the STEP
// terms of a column fused (fmaf) in the order of r, then added to the accumulator.
template <typename Acc>
__device__ __forceinline__ void add_weighted_rows(Acc& acc, const float (&w)[STEP],
                                                  const bool (&ok)[STEP], const float* tile,
                                                  int row0, int n) {
#pragma unroll
    for (int i4 = 0; i4 < HEAD_DIM; i4 += 4) {
        if (i4 < n) {
            float4 t4[STEP];
#pragma unroll
            for (int r = 0; r < STEP; ++r) t4[r] = load4(&tile[(row0 + r) * HEAD_DIM + i4]);
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                float part = 0.0f;
#pragma unroll
                for (int r = 0; r < STEP; ++r)
                    if (ok[r]) part = fmaf(w[r], lane4(t4[r], c), part);
                acc[i4 + c] = acc[i4 + c] + part;
            }
        }
    }
}

// One step of a dk/dv thread (its key row k_row, v_row; both a register array or a shared
// row): the STEP query rows t .. of the shared q, dO tiles, ok[r] where row t + r is real.
//     P = exp(score - lse), dV += Pᵀ dO (rows in order), dP = dO·v (plain, in the order of e),
//     dS = P ∘ (dP - Δ), dK += dSᵀ Q (rows in order)
// `score(r, x, visible)` turns the dot product x = q·k of row t + r into its score and
// visibility: the dense rule with its bias and mask (attention_backward.cu), or the
// block-sparse rule with the tile's block bias (block_sparse.cu). dk is not yet scaled.
template <typename DkAcc, typename DvAcc, typename KRow, typename VRow, typename Score>
__device__ __forceinline__ void dkdv_step(DkAcc& dk, DvAcc& dv, const bool (&ok)[STEP],
                                          const float* q_tile, const float* do_tile,
                                          const float* lse_tile, const float* delta_tile, int t,
                                          const KRow& k_row, const VRow& v_row, int D, int E,
                                          Score score) {
    // score = q·k, plain products in the order of d
    float x[STEP];
    tile_dots(x, q_tile, t, k_row, D);
    // P = exp(score - lse), 0 where masked
    float p[STEP];
#pragma unroll
    for (int r = 0; r < STEP; ++r) {
        p[r] = 0.0f;
        if (ok[r]) {
            bool visible;
            const float s = score(r, x[r], visible);
            p[r] = probability(s, visible, lse_tile[t + r]);
        }
    }
    // dV += Pᵀ dO (rows in order);  dP = dO·v, plain products in the order of e
    float dp[STEP];
#pragma unroll
    for (int r = 0; r < STEP; ++r) dp[r] = 0.0f;
#pragma unroll
    for (int e4 = 0; e4 < HEAD_DIM; e4 += 4) {
        if (e4 < E) {
            float4 do4[STEP];
#pragma unroll
            for (int r = 0; r < STEP; ++r) do4[r] = load4(&do_tile[(t + r) * HEAD_DIM + e4]);
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                float part = 0.0f;
#pragma unroll
                for (int r = 0; r < STEP; ++r) {
                    dp[r] = dp[r] + lane4(do4[r], c) * v_row[e4 + c];
                    if (ok[r]) part = fmaf(p[r], lane4(do4[r], c), part);
                }
                dv[e4 + c] = dv[e4 + c] + part;
            }
        }
    }
    // dS = P ∘ (dP - Δ);  dK += dSᵀ Q (rows in order)
    float ds[STEP];
#pragma unroll
    for (int r = 0; r < STEP; ++r) ds[r] = p[r] * (dp[r] - delta_tile[t + r]);
    add_weighted_rows(dk, ds, ok, q_tile, t, D);
}

// A dk/dv thread's results: dK = scale · Σ dSᵀ Q and dV, into its key row of each.
template <typename DkAcc, typename DvAcc>
__device__ __forceinline__ void store_key_grads(float* dk_D, float* dv_E, const DkAcc& dk,
                                                const DvAcc& dv, float scale, int D, int E) {
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) {
        if (d < D) dk_D[d] = scale * dk[d];
        if (d < E) dv_E[d] = dv[d];
    }
}

// One step of a dq thread (its q row and dO row; register arrays or shared rows): the STEP
// keys j .. of the shared k, v tiles, ok[r] where key j + r is real and visited.
//     dP = dO·v (plain, in the order of e), P = exp(score - lse), dS = P ∘ (dP - Δ),
//     dQ += dS K (keys in order)
// `score(r, x, visible)` as in dkdv_step, for key j + r. dq is not yet scaled.
template <typename QRow, typename DoRow, typename Score>
__device__ __forceinline__ void dq_step(float (&dq)[HEAD_DIM], const bool (&ok)[STEP],
                                        const float* k_tile, const float* v_tile, int j,
                                        const QRow& q_row, const DoRow& do_row, float lse,
                                        float delta, int D, int E, Score score) {
    // score = q·k, plain products in the order of d;  dP = dO·v, in the order of e
    float x[STEP], dp[STEP];
    tile_dots(x, k_tile, j, q_row, D);
    tile_dots(dp, v_tile, j, do_row, E);
    // P = exp(score - lse), 0 where masked;  dS = P ∘ (dP - Δ)
    float ds[STEP];
#pragma unroll
    for (int r = 0; r < STEP; ++r) {
        ds[r] = 0.0f;
        if (ok[r]) {
            bool visible;
            const float s = score(r, x[r], visible);
            ds[r] = probability(s, visible, lse) * (dp[r] - delta);
        }
    }
    // dQ += dS K (keys in order)
    add_weighted_rows(dq, ds, ok, k_tile, j, D);
}

// A dq thread's result: dQ = scale · Σ dS K, into its query row.
__device__ __forceinline__ void store_query_grad(float* dq_D, const float (&dq)[HEAD_DIM],
                                                 float scale, int D) {
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d)
        if (d < D) dq_D[d] = scale * dq[d];
}
