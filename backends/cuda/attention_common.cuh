// What the attention kernels (attention.cu, attention_backward.cu, attention_tc.cu) share:
// the score of one (query, key) pair with the spec's masking, and the online-softmax
// update rule. Mirrors the helpers of spec/attention/tiled.py (_score_tile, the
// m/l/alpha steps of flash_forward).
//
// Semantics (spec.attention.naive.attention):
//   score = scale · (q · k) + bias[b, h, t, s]
//   a key is visible when score != -inf, and (causal) s <= t + S - T (bottom-right
//   alignment), and mask[b, h, t, s]; NaN scores stay visible so that NaN propagates.
//   A row with no visible key has o = 0 and lse = -inf.
//
// Rounding. Every kernel is compiled with --fmad=false (backends/cuda/_launch.py), so the
// GPU rounds a * b + c twice, as the emulator on the CPU does; a fused multiply-add
// happens only where the source writes fmaf. The scores are sums of plain products in
// the order of d (no fma): the amplification by exp makes the score the place where
// rounding shows, and this is the order the Numba backend measured safe (see
// backends/cpu/attention.py).
#pragma once

#define FULL_MASK 0xffffffffu

// NVRTC has no <math.h>, hence no INFINITY: -inf by its bit pattern.
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// True when b replaces a as the running maximum: b is larger, or b is NaN (which then
// sticks, as NumPy's max propagates NaN; fmaxf would drop it).
__device__ __forceinline__ bool takes_max(float a, float b) { return b > a || b != b; }

__device__ __forceinline__ float nan_max(float a, float b) { return takes_max(a, b) ? b : a; }

// The optional additive bias and boolean mask of one call, and the causal flag. Bias and
// mask are addressed through element strides, 0 along a broadcast dimension, so that a
// (1, H, T, S) or (B, 1, 1, S) array is never expanded to (B, H, T, S).
struct ScoreRule {
    const float* bias;
    long long bias_b, bias_h, bias_t, bias_s;
    const bool* mask;
    long long mask_b, mask_h, mask_t, mask_s;
    bool has_bias, has_mask, causal;
    int T, S;
    float scale;

    // scale · dot (+ bias) and whether the key is visible; dot = q · k from the caller.
    __device__ __forceinline__ float score(float dot, int b, int h, int t, int s, bool& visible) const {
        float x = scale * dot;
        if (has_bias) x = x + bias[b * bias_b + h * bias_h + t * bias_t + s * bias_s];
        visible = x != neg_inf() && (!causal || s <= t + S - T) &&
                  (!has_mask || mask[b * mask_b + h * mask_h + t * mask_t + s * mask_s]);
        return x;
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
// take structs through the emulator's strict argument check).
#define SCORE_RULE_PARAMS                                                                   \
    const float* __restrict__ bias, long long bias_b, long long bias_h, long long bias_t,   \
        long long bias_s, const bool* __restrict__ mask, long long mask_b, long long mask_h,\
        long long mask_t, long long mask_s, int has_bias, int has_mask, int causal, float scale
#define SCORE_RULE(T, S)                                                                    \
    ScoreRule{bias, bias_b, bias_h, bias_t, bias_s, mask, mask_b, mask_h, mask_t, mask_s,   \
              has_bias != 0, has_mask != 0, causal != 0, (T), (S), scale}

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
