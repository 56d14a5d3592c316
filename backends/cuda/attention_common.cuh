// What the attention kernels (attention.cu, attention_backward.cu, attention_tc.cu) and the
// rotary kernel (rope.cu) share: the score of one (query, key) pair with the spec's masking
// and distance bias, the rotation of a feature by RoPE, and the online-softmax update rule.
// Mirrors the helpers of spec/attention/tiled.py (_score_tile, the m/l/alpha steps of
// flash_forward) and spec/attention/positional.py.
//
// Semantics (spec.attention.naive.attention):
//   score = scale · (q̃ · k̃) + (bias[b, h, t, s] + alibi[h, t, s])
//   query t sits at position i = t + S - T, key s at s (bottom-right, negative when T > S);
//   q̃, k̃ are q and k rotated at those positions (RoPE, else q and k themselves), and
//   alibi = -(m_h · f(|i - s|)) with the slopes m_H and the penalty table f
//   (spec.attention.positional.penalty_table), the two added together first;
//   a key is visible when score != -inf, and (causal) s <= t + S - T, and mask[b, h, t, s];
//   NaN scores stay visible so that NaN propagates.
//   A row with no visible key has o = 0 and lse = -inf.
//
// Rounding. Every kernel is compiled with --fmad=false (backends/cuda/_launch.py), so the
// GPU rounds a * b + c twice, as the emulator on the CPU does; a fused multiply-add
// happens only where the source writes fmaf. The scores are sums of plain products in
// the order of d (no fma): the amplification by exp makes the score the place where
// rounding shows, and this is the order the Numba backend measured safe (see
// backends/cpu/attention.py). A rotated feature is the spec's two rounded products and one
// rounded sum with the spec's cos/sin tables (spec.position.rope.tables, passed in, never
// computed here), so kernels rotate bit for bit as spec.position.rope.rotate does; the
// distance bias is the spec's one rounded product, negated.
#pragma once

#define FULL_MASK 0xffffffffu

// POSITIONS 1 (the default) compiles the positional options (RoPE, the ALiBi distance bias)
// into a kernel; 0 leaves their code out, so that a build for calls without them is the
// kernel it was before they existed (registers included). The parameters are the same
// either way: a POSITIONS=0 build ignores has_alibi and the rope layout, and its launcher
// uses it only for calls that have neither.
#ifndef POSITIONS
#define POSITIONS 1
#endif

// NVRTC has no <math.h>, hence no INFINITY: -inf by its bit pattern.
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// True when b replaces a as the running maximum: b is larger, or b is NaN (which then
// sticks, as NumPy's max propagates NaN; fmaxf would drop it).
__device__ __forceinline__ bool takes_max(float a, float b) { return b > a || b != b; }

__device__ __forceinline__ float nan_max(float a, float b) { return takes_max(a, b) ? b : a; }

// The optional additive bias and boolean mask of one call, the ALiBi-style distance bias,
// and the causal flag. Bias and mask are addressed through element strides, 0 along a
// broadcast dimension, so that a (1, H, T, S) or (B, 1, 1, S) array is never expanded to
// (B, H, T, S); the distance bias is formed per score from H slopes and a table of
// max(T, S) penalties, never as a T x S array.
struct ScoreRule {
    const float* bias;
    long long bias_b, bias_h, bias_t, bias_s;
    const bool* mask;
    long long mask_b, mask_h, mask_t, mask_s;
    const float* alibi_slopes;  // m_H
    const float* alibi_f;       // f(0), f(1), ...: the penalty of each distance |i - s|
    bool has_bias, has_mask, causal, has_alibi;
    int T, S;
    float scale;

    // scale · dot + (bias + alibi) and whether the key is visible; dot = q̃·k̃ from the caller.
    __device__ __forceinline__ float score(float dot, int b, int h, int t, int s, bool& visible) const {
        float x = scale * dot;
        if (has_bias || (POSITIONS && has_alibi)) x = x + added(b, h, t, s);
        visible = x != neg_inf() && (!causal || s <= t + S - T) &&
                  (!has_mask || mask[b * mask_b + h * mask_h + t * mask_t + s * mask_s]);
        return x;
    }

    // bias + alibi, the one term the score adds (spec.attention.positional.add_bias)
    __device__ __forceinline__ float added(int b, int h, int t, int s) const {
        const float user =
            has_bias ? bias[b * bias_b + h * bias_h + t * bias_t + s * bias_s] : 0.0f;
        if (!POSITIONS || !has_alibi) return user;
        // alibi = -(m_h · f(|i - s|)),  i = t + S - T
        const int d = t + S - T - s;
        const float alibi = -(alibi_slopes[h] * alibi_f[d < 0 ? -d : d]);
        return has_bias ? user + alibi : alibi;
    }

    // The first key no query of rows [.., t_end) may see under the causal mask: key tiles
    // from there on are skipped (spec.attention.tiled._tile_is_future).
    __device__ __forceinline__ int key_end(int t_end) const {
        if (!causal) return S;
        const int end = t_end + S - T;  // the last visible key is (t_end - 1) + S - T
        return end < 0 ? 0 : (end < S ? end : S);
    }
};

// Every kernel takes the rule as these scalar parameters, in this order (kernels cannot
// take structs through the emulator's strict argument check). Without ALiBi, alibi_slopes
// and alibi_f are one-element placeholders the kernel never reads (has_alibi = 0).
#define SCORE_RULE_PARAMS                                                                   \
    const float* __restrict__ bias, long long bias_b, long long bias_h, long long bias_t,   \
        long long bias_s, const bool* __restrict__ mask, long long mask_b, long long mask_h,\
        long long mask_t, long long mask_s, int has_bias, int has_mask, int causal,         \
        float scale, const float* __restrict__ alibi_slopes,                               \
        const float* __restrict__ alibi_f, int has_alibi
#define SCORE_RULE(T, S)                                                                    \
    ScoreRule{bias, bias_b, bias_h, bias_t, bias_s, mask, mask_b, mask_h, mask_t, mask_s,   \
              alibi_slopes, alibi_f, has_bias != 0, has_mask != 0, causal != 0,             \
              has_alibi != 0, (T), (S), scale}

// RoPE's two layouts: which features form a rotated pair (spec.position.rope.RoPE).
#define ROPE_NONE 0
#define ROPE_ROTATE_HALF 1  // feature k with k + D/2
#define ROPE_INTERLEAVED 2  // feature 2k with 2k + 1

// R_θ (x1, x2) = (x1 cos θ - x2 sin θ, x2 cos θ + x1 sin θ): two rounded products and a
// rounded sum per output (Su et al., eq. 13; spec.position.rope.rotate)
__device__ __forceinline__ float rotated_first(float x1, float x2, float c, float s) {
    return x1 * c - x2 * s;
}
__device__ __forceinline__ float rotated_second(float x1, float x2, float c, float s) {
    return x2 * c + x1 * s;
}

// The rotation of one call: the cos/sin tables of spec.position.rope.tables (float32, one
// row of D/2 pairs per position; row row0 + p holds position p, so that negative positions
// have rows) and the layout. Position p of a row is the caller's: t + S - T for queries,
// s for keys.
struct RopeRule {
    const float* cos_TP;
    const float* sin_TP;
    int row0;
    int layout;

    __device__ __forceinline__ bool on() const { return POSITIONS && layout != ROPE_NONE; }

    // The two features of pair k of a row of D = 2P features: (k, k + P) or (2k, 2k + 1).
    __device__ __forceinline__ void pair(int k, int P, int& d1, int& d2) const {
        const bool half = layout == ROPE_ROTATE_HALF;
        d1 = half ? k : 2 * k;
        d2 = half ? k + P : 2 * k + 1;
    }

    // The cos and sin of pair k at position p (table rows of P entries).
    __device__ __forceinline__ void angle(int k, int P, int p, float& c, float& s) const {
        const long long at = (long long)(row0 + p) * P + k;
        c = cos_TP[at];
        s = sin_TP[at];
    }

    // Feature d of the row x (D features, D even) rotated to position p: the spec's
    // arithmetic for the pair d belongs to (its partner read from x as well).
    __device__ __forceinline__ float feature(const float* x, int d, int D, int p) const {
        const int P = D / 2;
        const bool half = layout == ROPE_ROTATE_HALF;
        const bool first = half ? d < P : (d & 1) == 0;
        const int k = half ? (first ? d : d - P) : d >> 1;  // the pair, turned by p·θ_k
        const int partner = half ? (first ? d + P : d - P) : d ^ 1;
        float c, s;
        angle(k, P, p, c, s);
        return first ? rotated_first(x[d], x[partner], c, s)
                     : rotated_second(x[partner], x[d], c, s);
    }
};

// The forward kernels take the rotation as these parameters; without RoPE the tables are
// one-element placeholders never read (rope_layout = ROPE_NONE).
#define ROPE_PARAMS                                                                         \
    const float* __restrict__ rope_cos, const float* __restrict__ rope_sin, int rope_row0, \
        int rope_layout
#define ROPE_RULE RopeRule{rope_cos, rope_sin, rope_row0, rope_layout}

// The running statistics of one query row over the key tiles seen so far.
struct RowState {
    float m;  // running maximum of the visible scores (-inf before the first)
    float l;  // Σ exp(score - m) over the visible scores
};

// The shift the exponentials use: m, or 0 while no visible score has been seen, so that
// no exp(-inf - (-inf)) = NaN arises (the spec's m_safe).
__device__ __forceinline__ float safe_shift(float m) { return m == neg_inf() ? 0.0f : m; }

// lse = m + log l, and -inf for a row that saw no visible key.
__device__ __forceinline__ float row_lse(RowState r) {
    return r.m == neg_inf() ? neg_inf() : r.m + logf(r.l);
}

// o = Õ / l; an empty row divides its accumulator (which is 0) by 1, as the spec does.
__device__ __forceinline__ float row_divisor(RowState r) {
    return r.m == neg_inf() ? 1.0f : r.l;
}
