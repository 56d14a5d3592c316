// Tensor-core FlashAttention forward: float16 or bfloat16 q, k, v; float32 accumulation.
// Mirrors spec.attention.tiled.flash_forward (FlashAttention-2, Dao 2023, Algorithm 1), with
// the spec's semantics through attention_common.cuh: scale · q·k + bias, bottom-right causal
// alignment, a broadcastable bias (may hold -inf) and bool mask addressed by element strides,
// GQA/MQA (query head h reads key/value head h / (H/G)), rows with no visible key give o = 0
// and lse = -inf, NaN propagates (NaN-sticky maximum). Outputs: o in the input type, lse in
// float32 (the launcher rounds it to float16 for the float16 API).
//
// The CPU emulator has no tensor cores and runs no inline PTX, so the launcher refuses it.
// The kernel is compiled by the compile gate, run on the emulator by its tests with its seven
// PTX instructions replaced by C++ transcriptions of the PTX ISA (see "PTX wrappers"), and
// validated as it is by attention_tc.main() and the gpu-marked tests on a GPU.
//
// Versions
//   attention_forward_tc  (the only one; the float32 SIMT v1..v3 are attention.cu)
//     A block of WARPS = 4 warps owns ROWS = 16·WARPS = 64 query rows of one (b, h); warp w
//     owns the 16 rows m0 + 16w .. m0 + 16w + 15 (one m16 tile). Per block:
//       * Q fragments live in registers for the whole kernel (plain 32-bit global loads in
//         the A-fragment layout: Q is read once, so no shared-memory staging);
//       * K and V tiles of KEYS = 64 keys go through shared memory, double-buffered with
//         cp.async (sm_80+): tile j+1 is in flight while tile j is computed;
//       * S = Q·Kᵀ with mma.m16n8k16 (K fragments by ldmatrix), the online softmax on the
//         accumulator fragments (row max by two quad shuffles, exp as exp2);
//       * P is converted to 16-bit in registers and used directly as the A operand of
//         O += P·V (the FA2 register trick: the C layout of two n8 tiles is the A layout of
//         one k16 step), V fragments by ldmatrix.trans;
//       * O is divided by the row sum at the end and stored as packed pairs.
//     Key tiles wholly in the future of the block's last row are never loaded (causal).
//     Tiles with no bias, no mask, no key past S and no causal cut take a path without any
//     per-element test; the others apply ScoreRule::score element by element.
//
// Macros
//   HEAD_DIM    D = E, 64 or 128 (the launcher rejects others)
//   ELEM_BF16   1: __nv_bfloat16 inputs and o;  0: __half
//   KEYS        keys per shared-memory tile (64)
//   WARPS       warps per block (4)
//   MIN_BLOCKS  __launch_bounds__ minimum resident blocks per SM
//
// Bytes moved (the minimum; what main() reports): q, k, v read once and o written once in
// 16-bit, lse in float32: 2·(B·H·T·D + 2·B·G·S·D + B·H·T·E) + 4·B·H·T. K and V are re-read
// (from L2, mostly) once per query block and query head: ceil(T / ROWS) · H / G times.
//
// Expected ceiling (not measured here). Per warp and key tile, HEAD_DIM 128: 128 mma
// (2·16·8·16 FLOP each) fed by 64 ldmatrix.x4 (512 B each): 32 KiB of shared-memory reads,
// 256 clocks at 128 B/clock/SM, for 262144 FMA: 1024 FMA/clock/SM, i.e. the shared-memory
// bandwidth caps this design at the sm_80 dense peak and at half of sm_90's (wgmma) peak,
// about what mma.sync reaches on sm_90 anyway. 32 rows per warp would halve that traffic
// but needs Q in shared memory at HEAD_DIM 128 (Q, S and O fragments of 32 rows exceed
// 255 registers).
//
// Shared memory (dynamic): 2 stages × (K tile + V tile), each KEYS × (HEAD_DIM + 8) 16-bit
// elements: 36864 B for HEAD_DIM = 64, 69632 B for HEAD_DIM = 128. The 8-element (16 B)
// row padding makes every ldmatrix phase conflict-free (see LD below).
//
// Layout references are to the PTX ISA (CUDA 13 / PTX ISA 9.0), section "Warp Level Matrix
// Multiply-Accumulate Instructions": subsections "Matrix Fragments for mma.m16n8k16 with
// floating point type" and "Warp-level matrix load instruction: ldmatrix"; and section
// "Data Movement and Conversion Instructions: cp.async". In those subsections a lane's
// groupID = laneid >> 2 and threadID_in_group = laneid % 4; this file calls them `group`
// and `quad`.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "attention_common.cuh"

#if !defined(HEAD_DIM) || !defined(ELEM_BF16) || !defined(KEYS) || !defined(WARPS) || \
    !defined(MIN_BLOCKS)
#error "attention_tc.cu needs HEAD_DIM, ELEM_BF16, KEYS, WARPS and MIN_BLOCKS"
#endif
#if HEAD_DIM % 16 != 0 || KEYS % 16 != 0
#error "HEAD_DIM and KEYS must be multiples of 16 (the k16 step of mma.m16n8k16)"
#endif

#if ELEM_BF16
typedef __nv_bfloat16 elem_t;
#define MMA_M16N8K16 "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
#else
typedef __half elem_t;
#define MMA_M16N8K16 "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
#endif

#define THREADS (32 * WARPS)
#define ROWS (16 * WARPS)
// Row stride of a shared K/V tile in elements. 16-bit rows of HEAD_DIM elements are a
// multiple of 128 B long, so unpadded, the 8 rows one ldmatrix phase reads (8 × 16 B at the
// same column) would all start in the same bank: an 8-way conflict. With HEAD_DIM + 8 the
// stride is 144 B or 272 B, i.e. 16 B more than a multiple of 128 B: row r's 16-byte chunk at
// column chunk c falls on banks 4·((r + c) mod 8) .. +3, distinct for the 8 rows of a phase.
// 16-byte alignment of every row (ldmatrix and cp.async need it) is kept.
#define LD (HEAD_DIM + 8)
#define TILE_BYTES (KEYS * LD * 2)
#define STAGE_BYTES (2 * TILE_BYTES)  // K tile then V tile

#define LOG2E 1.4426950408889634f

// ---------------------------------------------------------------- PTX wrappers

// The only inline PTX of the kernel is in these seven functions. For a CPU check of
// everything else (indexing, masking, the online softmax, the cp.async pipeline),
// tests/backends/test_attention_tc.py compiles this file for the emulator with
// -DATTENTION_TC_PTX_EMULATION="<header>": a header that defines the same seven functions
// as C++ transcriptions of the PTX ISA's definitions (fragment formulas, ldmatrix address
// table, cp.async groups). NVRTC builds never define the macro.
#ifdef ATTENTION_TC_PTX_EMULATION
#include ATTENTION_TC_PTX_EMULATION
#else

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// cp.async.cg: 16 bytes global -> shared, bypassing L1 (K/V are reused from shared memory,
// not from L1). With src-size 0 nothing is read and the 16 bytes are zero-filled (PTX ISA,
// cp.async: "the remaining ... bytes ... are filled with zeros"): keys past S become zero
// rows, so 0 · (garbage NaN) can never reach O. `src` is still a valid address then.
__device__ __forceinline__ void cp_async_16(unsigned dst, const void* src, bool in_range) {
    const int src_bytes = in_range ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Wait until at most N of this thread's most recent cp.async groups are pending. The data
// is then visible to this thread only: a __syncthreads() must follow before other threads
// read it.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// ldmatrix.x4: four 8x8 matrices of 16-bit elements. Lanes 8i .. 8i+7 give the row
// addresses (16 B each, 16 B aligned) of matrix i; register r[i] of every lane receives
// matrix i's fragment, which is (PTX ISA, ldmatrix, "fragment layout"): without .trans,
// row `group`, columns 2·quad and 2·quad + 1 (low half = lower column); with .trans, the
// matrix transposed: rows 2·quad and 2·quad + 1 of column `group` (low half = lower row).
// volatile with a "memory" clobber: it reads shared memory that the cp.async copies and
// __syncthreads() publish, so the compiler must keep it after them (CUTLASS omits the
// clobber and relies on volatile ordering; the clobber costs no register here).
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

// d += a · b with mma.m16n8k16, fp32 accumulate (PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"), for a lane with g = group, q = quad:
//   A 16x16 (row-major), four .b32 registers each holding two 16-bit elements, lower
//   column in the low half:  a[0] = A[g][2q, 2q+1]     a[1] = A[g+8][2q, 2q+1]
//                            a[2] = A[g][2q+8, 2q+9]   a[3] = A[g+8][2q+8, 2q+9]
//   B 16x8 (k x n, "col"):   b0 = B[2q, 2q+1][g]       b1 = B[2q+8, 2q+9][g]
//   C/D 16x8 float:          d[0] = C[g][2q]  d[1] = C[g][2q+1]
//                            d[2] = C[g+8][2q]  d[3] = C[g+8][2q+1]
// A pure register operation: not volatile, so the compiler may schedule it freely.
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                          unsigned b1) {
    asm(MMA_M16N8K16 " {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif  // ATTENTION_TC_PTX_EMULATION

// Two floats rounded to nearest-even in 16 bits and packed as one .b32 operand, `lo` in
// the low half (__floats2half2_rn / __floats2bfloat162_rn put their first argument in .x,
// the lower address, i.e. the low 16 bits): the element order of the fragments above.
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
#if ELEM_BF16
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
#else
    __half2 v = __floats2half2_rn(lo, hi);
#endif
    return *reinterpret_cast<unsigned*>(&v);
}

// ---------------------------------------------------------------- tiles

// Elements (row, col) and (row, col + 1) of a row-major [rows][HEAD_DIM] head as one .b32,
// or 0 for a row past the end (its scores are computed and never stored).
__device__ __forceinline__ unsigned load_pair(const elem_t* head, int row, int col, int rows) {
    if (row >= rows) return 0u;
    return *reinterpret_cast<const unsigned*>(head + (long long)row * HEAD_DIM + col);
}

// Start copying keys s0 .. s0 + KEYS - 1 of a [S][HEAD_DIM] head into a shared tile of row
// stride LD. Consecutive threads take consecutive 16-byte chunks of a row: global reads are
// coalesced, and each 8-thread phase writes 128 contiguous shared bytes (conflict-free).
__device__ __forceinline__ void load_tile(unsigned tile, const elem_t* head, int s0, int S) {
    constexpr int CHUNKS_PER_ROW = HEAD_DIM / 8;
    static_assert(KEYS * CHUNKS_PER_ROW % THREADS == 0, "tile chunks must divide evenly");
#pragma unroll
    for (int i = 0; i < KEYS * CHUNKS_PER_ROW / THREADS; ++i) {
        const int chunk = threadIdx.x + i * THREADS;
        const int row = chunk / CHUNKS_PER_ROW, col = (chunk % CHUNKS_PER_ROW) * 8;
        const bool in_range = s0 + row < S;
        const elem_t* src = head + (long long)(in_range ? s0 + row : 0) * HEAD_DIM + col;
        cp_async_16(tile + (row * LD + col) * 2, src, in_range);
    }
}

// ---------------------------------------------------------------- the kernel

extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS)
attention_forward_tc(const elem_t* __restrict__ q, const elem_t* __restrict__ k,
                     const elem_t* __restrict__ v, elem_t* __restrict__ o,
                     float* __restrict__ lse, int H, int G, int T, int S, int D, int E,
                     SCORE_RULE_PARAMS) {
    // D and E are part of the family's argument order; this build is for D = E = HEAD_DIM,
    // which the launcher guarantees.
    (void)D;
    (void)E;
    extern __shared__ __align__(128) unsigned char smem_raw[];
    const ScoreRule rule = SCORE_RULE(T, S);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int group = lane >> 2, quad = lane & 3;
    // Heaviest query blocks first: under the causal mask the last rows see the most keys,
    // and launching them first keeps the tail of the grid short.
    const int m0 = (gridDim.x - 1 - blockIdx.x) * ROWS;
    const int h = blockIdx.y, b = blockIdx.z;
    const int kv_head = h / (H / G);  // consecutive query heads share a key/value head
    const elem_t* q_head = q + ((long long)b * H + h) * T * HEAD_DIM;
    const elem_t* k_head = k + ((long long)b * G + kv_head) * S * HEAD_DIM;
    const elem_t* v_head = v + ((long long)b * G + kv_head) * S * HEAD_DIM;
    const int row0 = m0 + 16 * warp;  // this warp's m16 tile: rows row0 .. row0 + 15

    // Q as A fragments (layout at mma_16816): qa[kk] covers rows row0 .. +15 and dims
    // 16·kk .. +15; this lane's rows are row0 + group and row0 + group + 8, its dims 16·kk +
    // 2·quad (+ 1) and 16·kk + 8 + 2·quad (+ 1). Dims are even: each pair is 4-byte aligned.
    unsigned qa[HEAD_DIM / 16][4];
#pragma unroll
    for (int kk = 0; kk < HEAD_DIM / 16; ++kk) {
        const int r = row0 + group, c = kk * 16 + 2 * quad;
        qa[kk][0] = load_pair(q_head, r, c, T);
        qa[kk][1] = load_pair(q_head, r + 8, c, T);
        qa[kk][2] = load_pair(q_head, r, c + 8, T);
        qa[kk][3] = load_pair(q_head, r + 8, c + 8, T);
    }

    // The unnormalised output Õ as C fragments: acc[et] is the 16x8 block of columns
    // 8·et .. 8·et + 7. A lane holds row row0 + group in c = 0, 1 and row row0 + group + 8 in
    // c = 2, 3; below, half = c >> 1 names the row.
    float acc[HEAD_DIM / 8][4];
#pragma unroll
    for (int et = 0; et < HEAD_DIM / 8; ++et)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[et][c] = 0.0f;
    // Per row: the running maximum m, and this lane's partial Σ exp (over its 2 columns of
    // every n8 tile; the quad's 4 partials are summed once, at the end: α is the same for
    // all four, since m is quad-uniform).
    float row_max[2] = {neg_inf(), neg_inf()}, row_sum[2] = {0.0f, 0.0f};

    // ldmatrix row addresses of this lane (matrix i = lane >> 3, row lane & 7 of it):
    //  K, no .trans, for keys 16·nj .. +15 and dims 16·kk .. +15: matrices
    //    0 = (keys +0..7, dims +0..7)  -> b0 of n tile 2nj      1 = (keys +0..7, dims +8..15)  -> b1 of 2nj
    //    2 = (keys +8..15, dims +0..7) -> b0 of n tile 2nj + 1  3 = (keys +8..15, dims +8..15) -> b1 of 2nj+1
    //    since B[d][s] = K[s][d], the lane's fragment K[s = group][d = 2q, 2q+1] = B[2q, 2q+1][group].
    //  V, .trans, for keys 16·jj .. +15 and columns 16·ep .. +15: matrices
    //    0 = (keys +0..7, cols +0..7)  -> b0 of e tile 2ep      1 = (keys +8..15, cols +0..7)  -> b1 of 2ep
    //    2 = (keys +0..7, cols +8..15) -> b0 of e tile 2ep + 1  3 = (keys +8..15, cols +8..15) -> b1 of 2ep+1
    //    since B[s][e] = V[s][e], the transposed fragment V[s = 2q, 2q+1][e = group] = B[2q, 2q+1][group].
    const int mat = lane >> 3, mat_row = lane & 7;
    const unsigned k_lane = ((mat_row + (mat >> 1) * 8) * LD + (mat & 1) * 8) * 2;
    const unsigned v_lane = ((mat_row + (mat & 1) * 8) * LD + (mat >> 1) * 8) * 2;

    const int t_end = min(m0 + ROWS, T);
    const int n_tiles = (rule.key_end(t_end) + KEYS - 1) / KEYS;
    const unsigned smem = smem_addr(smem_raw);

    if (n_tiles > 0) {
        load_tile(smem, k_head, 0, S);
        load_tile(smem + TILE_BYTES, v_head, 0, S);
    }
    cp_async_commit();

    for (int j = 0; j < n_tiles; ++j) {
        const int s0 = j * KEYS;
        // Prefetch tile j + 1 into the other stage. That stage was last read in iteration
        // j - 1, which every thread has left (the __syncthreads at the end of it).
        if (j + 1 < n_tiles) {
            const unsigned next = smem + ((j + 1) & 1) * STAGE_BYTES;
            load_tile(next, k_head, s0 + KEYS, S);
            load_tile(next + TILE_BYTES, v_head, s0 + KEYS, S);
        }
        // Committed even when empty, so that "all groups but the newest" is always tile j.
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const unsigned k_tile = smem + (j & 1) * STAGE_BYTES;
        const unsigned v_tile = k_tile + TILE_BYTES;

        // S = Q Kᵀ: sc[ni] is the 16x8 C block of keys s0 + 8·ni .. + 7.
        float sc[KEYS / 8][4];
#pragma unroll
        for (int ni = 0; ni < KEYS / 8; ++ni)
#pragma unroll
            for (int c = 0; c < 4; ++c) sc[ni][c] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < HEAD_DIM / 16; ++kk) {
#pragma unroll
            for (int nj = 0; nj < KEYS / 16; ++nj) {
                unsigned r[4];
                ldmatrix_x4(r, k_tile + k_lane + (nj * 16 * LD + kk * 16) * 2);
                mma_16816(sc[2 * nj], qa[kk], r[0], r[1]);
                mma_16816(sc[2 * nj + 1], qa[kk], r[2], r[3]);
            }
        }

        // score = scale · q·k (+ bias), -inf where not visible. The plain path is exact when
        // every row of the block sees every key of the tile and there is no bias or mask:
        // ScoreRule::score would then return scale · dot with visible = (x != -inf), and a
        // -inf score needs no test (it gives p = 0, as a masked one does). Rows past T, whose
        // q fragments are 0, get finite scores there and are never stored.
        const bool plain = !rule.has_bias && !rule.has_mask && s0 + KEYS <= S &&
                           (!rule.causal || s0 + KEYS - 1 <= m0 + S - T);
        if (plain) {
#pragma unroll
            for (int ni = 0; ni < KEYS / 8; ++ni)
#pragma unroll
                for (int c = 0; c < 4; ++c) sc[ni][c] = rule.scale * sc[ni][c];
        } else {
#pragma unroll
            for (int ni = 0; ni < KEYS / 8; ++ni)
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    // C layout: row group (+ 8 for c >= 2), column 2·quad + (c & 1)
                    const int t = row0 + group + 8 * (c >> 1);
                    const int s = s0 + ni * 8 + 2 * quad + (c & 1);
                    bool visible = false;
                    float x = neg_inf();
                    // rows past T and keys past S: never read from bias or mask, masked
                    if (t < T && s < S) x = rule.score(sc[ni][c], b, h, t, s, visible);
                    sc[ni][c] = visible ? x : neg_inf();
                }
        }

        // Online softmax per row, the spec's steps on the C fragments:
        //   m' = max(m, rowmax S);  P = exp(S - m'_safe);  α = exp(m - m'_safe);
        //   l' = α l + rowsum P;    Õ' = α Õ + P V
        // with exp(y) = exp2(y · log2 e) (ex2.approx.f32, 2 ulp). The difference is formed
        // first, as in the spec: it is exact for scores near the maximum (Sterbenz), and a
        // -inf difference (masked score, or m = -inf before the first visible one) gives 0.
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            float mx = row_max[half];
#pragma unroll
            for (int ni = 0; ni < KEYS / 8; ++ni) {
                mx = nan_max(mx, sc[ni][2 * half]);
                mx = nan_max(mx, sc[ni][2 * half + 1]);
            }
            // the row's KEYS scores are spread over the 4 lanes of a quad (columns 2·quad,
            // 2·quad + 1 of every n8 tile): xor 1 and 2 stay within the quad
            mx = nan_max(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
            mx = nan_max(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
            const float shift = safe_shift(mx);
            const float alpha = exp2f((row_max[half] - shift) * LOG2E);
            row_max[half] = mx;
            float sum = 0.0f;
#pragma unroll
            for (int ni = 0; ni < KEYS / 8; ++ni)
#pragma unroll
                for (int c = 2 * half; c < 2 * half + 2; ++c) {
                    const float p = exp2f((sc[ni][c] - shift) * LOG2E);
                    sc[ni][c] = p;
                    sum += p;
                }
            row_sum[half] = alpha * row_sum[half] + sum;
#pragma unroll
            for (int et = 0; et < HEAD_DIM / 8; ++et) {
                acc[et][2 * half] *= alpha;
                acc[et][2 * half + 1] *= alpha;
            }
        }

        // Õ += P V. The A fragment of k16 step jj (keys 16·jj .. +15) is exactly the C
        // fragments of n tiles 2jj and 2jj+1 (compare the A and C layouts at mma_16816):
        //   a[0] = P[g][16jj + 2q, +1]     = sc[2jj][0, 1]     a[1] = P[g+8][16jj + 2q, +1]     = sc[2jj][2, 3]
        //   a[2] = P[g][16jj + 8 + 2q, +1] = sc[2jj+1][0, 1]   a[3] = P[g+8][16jj + 8 + 2q, +1] = sc[2jj+1][2, 3]
        // P is rounded to 16 bits here; l above summed the float32 P (as FlashAttention-2).
#pragma unroll
        for (int jj = 0; jj < KEYS / 16; ++jj) {
            const unsigned pa[4] = {pack2(sc[2 * jj][0], sc[2 * jj][1]),
                                    pack2(sc[2 * jj][2], sc[2 * jj][3]),
                                    pack2(sc[2 * jj + 1][0], sc[2 * jj + 1][1]),
                                    pack2(sc[2 * jj + 1][2], sc[2 * jj + 1][3])};
#pragma unroll
            for (int ep = 0; ep < HEAD_DIM / 16; ++ep) {
                unsigned r[4];
                ldmatrix_x4_trans(r, v_tile + v_lane + (jj * 16 * LD + ep * 16) * 2);
                mma_16816(acc[2 * ep], pa, r[0], r[1]);
                mma_16816(acc[2 * ep + 1], pa, r[2], r[3]);
            }
        }
        // every warp is done with this stage before iteration j + 1 refills it with tile j + 2
        __syncthreads();
    }
    // Nothing is pending here (an empty group at most); wait anyway, so that no copy can
    // outlive the block.
    cp_async_wait<0>();

    // o = Õ / l and lse = m + log l; a row that saw no visible key has m = -inf and Õ = 0,
    // and gets o = 0 / 1 = 0 and lse = -inf (attention_common.cuh: row_divisor, row_lse).
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        float l = row_sum[half];
        l += __shfl_xor_sync(FULL_MASK, l, 1);
        l += __shfl_xor_sync(FULL_MASK, l, 2);
        const RowState state{row_max[half], l};
        const float divisor = row_divisor(state);
        const int t = row0 + group + 8 * half;
        if (t < T) {
            elem_t* o_row = o + (((long long)b * H + h) * T + t) * HEAD_DIM;
#pragma unroll
            for (int et = 0; et < HEAD_DIM / 8; ++et) {
                // C layout: this lane's columns 8·et + 2·quad and + 1 of the row
                *reinterpret_cast<unsigned*>(o_row + et * 8 + 2 * quad) =
                    pack2(acc[et][2 * half] / divisor, acc[et][2 * half + 1] / divisor);
            }
            if (quad == 0) lse[((long long)b * H + h) * T + t] = row_lse(state);
        }
    }
}
