// Rotary position embedding of queries and keys apart from attention, float32.
// Mirrors spec.position.rope.rope_qk:
//     q_BHTD, k_BGSD -> R_i q_t with i = t + S - T (bottom-right, as the causal mask),
//                       R_s k_s
// with the rotation of spec.position.rope.rotate: for each pair (x1, x2) of a row and its
// angle, (x1 cos - x2 sin, x2 cos + x1 sin), two rounded products and a rounded sum
// (compiled with --fmad=false), with the spec's cos/sin tables passed in: the result is
// the spec's bit for bit. The attention forward (attention.cu) fuses the same rotation
// (RopeRule, attention_common.cuh); the backward (attention_backward.py) runs this kernel
// before its kernels, and again with the tables of the negated positions to carry dq, dk
// back through the rotation (spec.attention.positional.unrotate).
//
// Versions
//   rope_qk_v1  one thread per rotated pair of one row, q's rows then k's in one launch
//               (THREADS per block): reads its two features and their angle, writes the
//               two rotated features. The inputs may be the outputs (in place): a thread
//               reads both features before it writes them, and no other thread touches
//               them.
// Bytes: q and k read and written once, 8·(B·H·T·D + B·G·S·D), plus the tables,
// 8·max(T, S)·D/2 (read through the cache by every row at the same position). FLOPs:
// 3 per output element (two products, one sum).
//
// Macros
//   THREADS  threads per block
#include "attention_common.cuh"

extern "C" __global__ void __launch_bounds__(THREADS)
rope_qk_v1(const float* q_in, const float* k_in, float* q_out, float* k_out,
           const float* __restrict__ cos_TP, const float* __restrict__ sin_TP, long long q_rows,
           long long k_rows, int T, int S, int D, int row0, int layout) {
    // q_in may alias q_out and k_in k_out (in place): hence no __restrict__ on them
    const RopeRule rope{cos_TP, sin_TP, row0, layout};
    const int P = D / 2;
    const long long i = (long long)blockIdx.x * THREADS + threadIdx.x;
    const long long row = i / P;  // q's rows B·H·T, then k's rows B·G·S
    if (row >= q_rows + k_rows) return;
    const int k = (int)(i % P);
    const bool is_q = row < q_rows;
    const long long r = is_q ? row : row - q_rows;
    // position: i = t + S - T for the query row t, s for the key row s
    const int position = is_q ? (int)(r % T) + S - T : (int)(r % S);
    const float* x_D = (is_q ? q_in : k_in) + r * D;
    float* y_D = (is_q ? q_out : k_out) + r * D;
    int d1, d2;
    rope.pair(k, P, d1, d2);
    float c, s;
    rope.angle(k, P, position, c, s);
    const float x1 = x_D[d1], x2 = x_D[d2];
    y_D[d1] = rotated_first(x1, x2, c, s);
    y_D[d2] = rotated_second(x1, x2, c, s);
}
