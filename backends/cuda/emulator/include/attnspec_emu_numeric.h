// Numerics of the CUDA emulator: vector types, __half and __nv_bfloat16, math and bit
// intrinsics, atomics. Everything public is in the global namespace, as CUDA has it, so
// that unmodified .cu sources compile against this header with g++.
//
// Rounding is exact everywhere it can be proven exact (see README.md, "Numerics"): every
// conversion to a narrower format goes through one routine, round_scaled, that rounds an
// exact value m·2^e once, in any of the four IEEE modes. Arithmetic on half and bfloat16
// computes in double and rounds once more; why that is still correctly rounded is argued
// where it is done. Helpers live in namespace attnspec_emu_numeric; only CUDA's names are
// global.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <type_traits>
// libstdc++'s <math.h> puts the float overloads of <cmath> (sqrt(float), isnan, ...) into
// the global namespace, where CUDA code calls them unqualified.
#include <math.h>

static_assert(std::endian::native == std::endian::little,
              "half and bfloat16 atomics address the halves of a 32-bit word by position");

namespace attnspec_emu_numeric {

enum class Round { nearest_even, toward_zero, down, up };

// An IEEE binary interchange format with M stored significand bits and E exponent bits.
template <int M, int E>
struct Binary {
    static constexpr int mant_bits = M;
    static constexpr int bias = (1 << (E - 1)) - 1;
    static constexpr int emin = 1 - bias;
    static constexpr int emax = bias;
    static constexpr std::uint64_t sign_bit = std::uint64_t{1} << (M + E);
    static constexpr std::uint64_t inf_bits = ((std::uint64_t{1} << E) - 1) << M;
    static constexpr std::uint64_t max_finite_bits = inf_bits - 1;
    // All bits but the sign: CUDA's canonical NaN (0x7fff, 0x7fffffff).
    static constexpr std::uint64_t canonical_nan = sign_bit - 1;
};
using Half = Binary<10, 5>;
using BFloat16 = Binary<7, 8>;
using Single = Binary<23, 8>;
using Double = Binary<52, 11>;

// The IEEE result of a finite value too large for F: infinity, or the largest finite
// number when the mode rounds toward zero from that side.
template <class F>
constexpr std::uint64_t overflow_bits(bool negative, Round mode) {
    const bool to_infinity = mode == Round::nearest_even || (mode == Round::up && !negative) ||
                             (mode == Round::down && negative);
    return (negative ? F::sign_bit : 0) | (to_infinity ? F::inf_bits : F::max_finite_bits);
}

// Bits of the F nearest (by `mode`) to the exact value (-1)^negative · m · 2^e2.
//
// The result's last place has exponent q = max(top, emin) - mant_bits, where top is the
// exponent of m's leading bit: that one formula covers normal and subnormal results.
// Everything below q is summarised by the round bit (weight 2^(q-1)) and the sticky bit
// (anything below it), which is all the four IEEE modes need. The encoding
// ((q - q_min) << mant_bits) + kept is the IEEE bit pattern for normal and subnormal
// results alike, and a carry out of the significand moves into the exponent as it must;
// a pattern at or past infinity's is an overflow.
template <class F>
constexpr std::uint64_t round_scaled(bool negative, std::uint64_t m, int e2, Round mode) {
    const std::uint64_t sign = negative ? F::sign_bit : 0;
    if (m == 0) return sign;
    const int top = e2 + 63 - std::countl_zero(m);
    if (top > F::emax) return overflow_bits<F>(negative, mode);
    const int q = std::max(top, F::emin) - F::mant_bits;
    const int shift = q - e2;
    std::uint64_t kept;
    bool round_bit;
    bool sticky;
    if (shift <= 0) {
        kept = m << -shift;
        round_bit = sticky = false;
    } else if (shift < 64) {
        kept = m >> shift;
        round_bit = ((m >> (shift - 1)) & 1) != 0;
        sticky = (m & ((std::uint64_t{1} << (shift - 1)) - 1)) != 0;
    } else {
        kept = 0;
        round_bit = shift == 64 && (m >> 63) != 0;
        sticky = shift > 64 || (m << 1) != 0;
    }
    const bool inexact = round_bit || sticky;
    bool increment = false;
    switch (mode) {
        case Round::nearest_even: increment = round_bit && (sticky || (kept & 1) != 0); break;
        case Round::toward_zero: break;
        case Round::down: increment = negative && inexact; break;
        case Round::up: increment = !negative && inexact; break;
    }
    const std::uint64_t bits =
        (static_cast<std::uint64_t>(q - (F::emin - F::mant_bits)) << F::mant_bits) + kept +
        (increment ? 1 : 0);
    if (bits >= F::inf_bits) return overflow_bits<F>(negative, mode);
    return sign | bits;
}

// Bits of x rounded once to F. NaN becomes CUDA's canonical NaN, whatever its payload.
template <class F>
constexpr std::uint64_t round_double(double x, Round mode) {
    const auto u = std::bit_cast<std::uint64_t>(x);
    const bool negative = (u >> 63) != 0;
    const auto exponent = static_cast<int>((u >> 52) & 0x7ff);
    const std::uint64_t fraction = u & ((std::uint64_t{1} << 52) - 1);
    if (exponent == 0x7ff) {
        if (fraction != 0) return F::canonical_nan;
        return (negative ? F::sign_bit : 0) | F::inf_bits;
    }
    if (exponent == 0) return round_scaled<F>(negative, fraction, -1074, mode);
    return round_scaled<F>(negative, fraction | (std::uint64_t{1} << 52), exponent - 1075, mode);
}

// Integers round directly, not through double, which would round 64-bit values twice.
template <class F, std::integral I>
constexpr std::uint64_t round_integer(I v, Round mode) {
    const bool negative = v < 0;
    const auto magnitude = negative ? std::uint64_t{0} - static_cast<std::uint64_t>(v)
                                    : static_cast<std::uint64_t>(v);
    return round_scaled<F>(negative, magnitude, 0, mode);
}

inline float float_from_bits(std::uint64_t bits) {
    return std::bit_cast<float>(static_cast<std::uint32_t>(bits));
}
inline double double_from_bits(std::uint64_t bits) { return std::bit_cast<double>(bits); }

// Error-free addition (Knuth's TwoSum): s + error == a + b exactly, s = RN(a + b).
// Needs round-to-nearest and no overflow; uses no multiplication, so FP contraction
// cannot change it.
inline double two_sum_error(double a, double b, double s) {
    const double b_virtual = s - a;
    const double a_virtual = s - b_virtual;
    return (a - a_virtual) + (b - b_virtual);
}

// Round to odd (Boldo & Melquiond, 2008): given q = RN(x) for an exact real x and the sign
// of x - q, returns the double that truncates x and, if that was inexact, has its last bit
// set. A round-to-odd value at precision p+2 or more lies in the same open interval between
// consecutive p-bit numbers and their midpoints as x (or is x itself, when x is one of
// those), so rounding it to p bits in any mode gives the correctly rounded x. Double has
// 53 bits; half, bfloat16 and float need at most 26.
inline double round_to_odd(double q, int sign_of_error) {
    const auto bits = std::bit_cast<std::uint64_t>(q);
    if (sign_of_error == 0 || (bits & 1) != 0 || !std::isfinite(q)) return q;
    // q's last bit is even, so x lies strictly between q and its odd neighbour on the side
    // of the error; q != 0 here, as an inexact nonzero x never rounds to zero in double.
    const bool away_from_zero = (sign_of_error > 0) == !std::signbit(q);
    return std::bit_cast<double>(away_from_zero ? bits + 1 : bits - 1);
}

inline int sign_of(double x) { return (x > 0) - (x < 0); }

// IEEE's sign of an exact zero sum x + y: -0 when both are -0, or in round-down mode
// unless both are +0; +0 otherwise. Round-to-nearest double addition already gives the
// first rule, so only round-down needs this.
inline double zero_sum(double sum, double x, double y, Round mode) {
    if (sum != 0 || mode != Round::down) return sum;
    return (x == 0 && y == 0 && !std::signbit(x) && !std::signbit(y)) ? 0.0 : -0.0;
}

// CUDA's float-to-integer semantics: saturate to the destination range; NaN is 0 for
// types of up to 32 bits and the bit pattern 0x8000000000000000 for 64-bit ones, as the
// hardware's cvt instructions do. `r` is already integral (or NaN or infinite).
template <std::integral I>
I saturate_integral(double r) {
    if (std::isnan(r)) {
        return sizeof(I) == 8 ? static_cast<I>(std::uint64_t{1} << 63) : I{0};
    }
    constexpr int digits = std::numeric_limits<I>::digits;
    constexpr double limit = static_cast<double>(std::uint64_t{1} << (digits - 1)) * 2.0;
    constexpr double lowest = std::is_signed_v<I> ? -limit : 0.0;
    if (r >= limit) return std::numeric_limits<I>::max();
    if (r < lowest) return std::numeric_limits<I>::min();
    return static_cast<I>(r);
}

inline double round_integral(double x, Round mode) {
    switch (mode) {
        case Round::nearest_even: return std::nearbyint(x);  // the rounding mode is never changed
        case Round::toward_zero: return std::trunc(x);
        case Round::down: return std::floor(x);
        case Round::up: return std::ceil(x);
    }
    return x;
}

template <std::integral I>
I to_integer(double x, Round mode) {
    return saturate_integral<I>(round_integral(x, mode));
}

// The half's exact value as a float (every half is a float); NaN becomes CUDA's float NaN.
inline float half_bits_to_float(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exponent = (h >> 10) & 0x1fu;
    const std::uint32_t fraction = h & 0x3ffu;
    if (exponent == 0x1f) return std::bit_cast<float>(fraction != 0 ? 0x7fffffffu : sign | 0x7f800000u);
    if (exponent == 0) {
        // fraction·2^-24 is a normal float, and the product by a power of two is exact.
        const float magnitude = static_cast<float>(fraction) * 0x1p-24f;
        return sign != 0 ? -magnitude : magnitude;
    }
    return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (fraction << 13));
}

// A bfloat16 is the upper half of a float's bits, NaN payloads included (as on the GPU).
inline float bfloat16_bits_to_float(std::uint16_t b) {
    return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

}  // namespace attnspec_emu_numeric

// ---------------------------------------------------------------------------------------
// Vector types, with the alignment CUDA gives them (vector_types.h).

#define ATTNSPEC_EMU_VECTOR_TYPES(name, T, align1, align2, align3, align4)                      \
    struct alignas(align1) name##1 { T x; };                                                    \
    struct alignas(align2) name##2 { T x, y; };                                                 \
    struct alignas(align3) name##3 { T x, y, z; };                                              \
    struct alignas(align4) name##4 { T x, y, z, w; };                                           \
    constexpr name##1 make_##name##1(T x) { return name##1{x}; }                                \
    constexpr name##2 make_##name##2(T x, T y) { return name##2{x, y}; }                        \
    constexpr name##3 make_##name##3(T x, T y, T z) { return name##3{x, y, z}; }                \
    constexpr name##4 make_##name##4(T x, T y, T z, T w) { return name##4{x, y, z, w}; }

ATTNSPEC_EMU_VECTOR_TYPES(char, signed char, 1, 2, 1, 4)
ATTNSPEC_EMU_VECTOR_TYPES(uchar, unsigned char, 1, 2, 1, 4)
ATTNSPEC_EMU_VECTOR_TYPES(short, short, 2, 4, 2, 8)
ATTNSPEC_EMU_VECTOR_TYPES(ushort, unsigned short, 2, 4, 2, 8)
ATTNSPEC_EMU_VECTOR_TYPES(int, int, 4, 8, 4, 16)
ATTNSPEC_EMU_VECTOR_TYPES(uint, unsigned int, 4, 8, 4, 16)
ATTNSPEC_EMU_VECTOR_TYPES(long, long, 8, 16, 8, 16)
ATTNSPEC_EMU_VECTOR_TYPES(ulong, unsigned long, 8, 16, 8, 16)
ATTNSPEC_EMU_VECTOR_TYPES(longlong, long long, 8, 16, 8, 16)
ATTNSPEC_EMU_VECTOR_TYPES(ulonglong, unsigned long long, 8, 16, 8, 16)
ATTNSPEC_EMU_VECTOR_TYPES(float, float, 4, 8, 4, 16)
ATTNSPEC_EMU_VECTOR_TYPES(double, double, 8, 16, 8, 16)

#undef ATTNSPEC_EMU_VECTOR_TYPES

static_assert(std::is_aggregate_v<uint3> && sizeof(uint3) == 12);

// ---------------------------------------------------------------------------------------
// Bit reinterpretation and conversions between float, double and integers.

inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __uint_as_float(unsigned int x) { return std::bit_cast<float>(x); }
inline unsigned int __float_as_uint(float x) { return std::bit_cast<unsigned int>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline double __hiloint2double(int hi, int lo) {
    return std::bit_cast<double>(static_cast<unsigned long long>(static_cast<unsigned int>(hi)) << 32 |
                                 static_cast<unsigned int>(lo));
}
inline int __double2hiint(double x) { return static_cast<int>(std::bit_cast<unsigned long long>(x) >> 32); }
inline int __double2loint(double x) { return static_cast<int>(std::bit_cast<unsigned long long>(x)); }

#define ATTNSPEC_EMU_TO_INTEGER(name, From, To, mode)                                           \
    inline To name(From x) {                                                                    \
        return attnspec_emu_numeric::to_integer<To>(x, attnspec_emu_numeric::Round::mode);      \
    }
ATTNSPEC_EMU_TO_INTEGER(__float2int_rn, float, int, nearest_even)
ATTNSPEC_EMU_TO_INTEGER(__float2int_rz, float, int, toward_zero)
ATTNSPEC_EMU_TO_INTEGER(__float2int_rd, float, int, down)
ATTNSPEC_EMU_TO_INTEGER(__float2int_ru, float, int, up)
ATTNSPEC_EMU_TO_INTEGER(__float2uint_rn, float, unsigned int, nearest_even)
ATTNSPEC_EMU_TO_INTEGER(__float2uint_rz, float, unsigned int, toward_zero)
ATTNSPEC_EMU_TO_INTEGER(__float2uint_rd, float, unsigned int, down)
ATTNSPEC_EMU_TO_INTEGER(__float2uint_ru, float, unsigned int, up)
ATTNSPEC_EMU_TO_INTEGER(__float2ll_rn, float, long long, nearest_even)
ATTNSPEC_EMU_TO_INTEGER(__float2ll_rz, float, long long, toward_zero)
ATTNSPEC_EMU_TO_INTEGER(__float2ll_rd, float, long long, down)
ATTNSPEC_EMU_TO_INTEGER(__float2ll_ru, float, long long, up)
ATTNSPEC_EMU_TO_INTEGER(__float2ull_rn, float, unsigned long long, nearest_even)
ATTNSPEC_EMU_TO_INTEGER(__float2ull_rz, float, unsigned long long, toward_zero)
ATTNSPEC_EMU_TO_INTEGER(__float2ull_rd, float, unsigned long long, down)
ATTNSPEC_EMU_TO_INTEGER(__float2ull_ru, float, unsigned long long, up)
ATTNSPEC_EMU_TO_INTEGER(__double2int_rn, double, int, nearest_even)
ATTNSPEC_EMU_TO_INTEGER(__double2int_rz, double, int, toward_zero)
ATTNSPEC_EMU_TO_INTEGER(__double2int_rd, double, int, down)
ATTNSPEC_EMU_TO_INTEGER(__double2int_ru, double, int, up)
ATTNSPEC_EMU_TO_INTEGER(__double2uint_rn, double, unsigned int, nearest_even)
ATTNSPEC_EMU_TO_INTEGER(__double2uint_rz, double, unsigned int, toward_zero)
ATTNSPEC_EMU_TO_INTEGER(__double2uint_rd, double, unsigned int, down)
ATTNSPEC_EMU_TO_INTEGER(__double2uint_ru, double, unsigned int, up)
ATTNSPEC_EMU_TO_INTEGER(__double2ll_rn, double, long long, nearest_even)
ATTNSPEC_EMU_TO_INTEGER(__double2ll_rz, double, long long, toward_zero)
ATTNSPEC_EMU_TO_INTEGER(__double2ll_rd, double, long long, down)
ATTNSPEC_EMU_TO_INTEGER(__double2ll_ru, double, long long, up)
ATTNSPEC_EMU_TO_INTEGER(__double2ull_rn, double, unsigned long long, nearest_even)
ATTNSPEC_EMU_TO_INTEGER(__double2ull_rz, double, unsigned long long, toward_zero)
ATTNSPEC_EMU_TO_INTEGER(__double2ull_rd, double, unsigned long long, down)
ATTNSPEC_EMU_TO_INTEGER(__double2ull_ru, double, unsigned long long, up)
#undef ATTNSPEC_EMU_TO_INTEGER

// Integer and double to float or double in a given mode, rounded once from the exact value.
#define ATTNSPEC_EMU_TO_FLOATING(name, From, To, Format, from_bits, round, mode)               \
    inline To name(From x) {                                                                    \
        return attnspec_emu_numeric::from_bits(attnspec_emu_numeric::round<attnspec_emu_numeric::Format>( \
            x, attnspec_emu_numeric::Round::mode));                                             \
    }
#define ATTNSPEC_EMU_INT_TO_FLOATING(prefix, From)                                              \
    ATTNSPEC_EMU_TO_FLOATING(prefix##2float_rn, From, float, Single, float_from_bits, round_integer, nearest_even) \
    ATTNSPEC_EMU_TO_FLOATING(prefix##2float_rz, From, float, Single, float_from_bits, round_integer, toward_zero) \
    ATTNSPEC_EMU_TO_FLOATING(prefix##2float_rd, From, float, Single, float_from_bits, round_integer, down) \
    ATTNSPEC_EMU_TO_FLOATING(prefix##2float_ru, From, float, Single, float_from_bits, round_integer, up) \
    ATTNSPEC_EMU_TO_FLOATING(prefix##2double_rn, From, double, Double, double_from_bits, round_integer, nearest_even) \
    ATTNSPEC_EMU_TO_FLOATING(prefix##2double_rz, From, double, Double, double_from_bits, round_integer, toward_zero) \
    ATTNSPEC_EMU_TO_FLOATING(prefix##2double_rd, From, double, Double, double_from_bits, round_integer, down) \
    ATTNSPEC_EMU_TO_FLOATING(prefix##2double_ru, From, double, Double, double_from_bits, round_integer, up)
ATTNSPEC_EMU_INT_TO_FLOATING(__int, int)
ATTNSPEC_EMU_INT_TO_FLOATING(__uint, unsigned int)
ATTNSPEC_EMU_INT_TO_FLOATING(__ll, long long)
ATTNSPEC_EMU_INT_TO_FLOATING(__ull, unsigned long long)
ATTNSPEC_EMU_TO_FLOATING(__double2float_rn, double, float, Single, float_from_bits, round_double, nearest_even)
ATTNSPEC_EMU_TO_FLOATING(__double2float_rz, double, float, Single, float_from_bits, round_double, toward_zero)
ATTNSPEC_EMU_TO_FLOATING(__double2float_rd, double, float, Single, float_from_bits, round_double, down)
ATTNSPEC_EMU_TO_FLOATING(__double2float_ru, double, float, Single, float_from_bits, round_double, up)
#undef ATTNSPEC_EMU_INT_TO_FLOATING
#undef ATTNSPEC_EMU_TO_FLOATING

// ---------------------------------------------------------------------------------------
// Float arithmetic with an explicit rounding mode.
//
// The _rn forms are the C++ operators: g++ on x86-64 and AArch64 rounds every float
// operation to nearest even and, without -ffast-math, does not reorder them. The directed
// forms compute the exact result as a double q = RN(x) plus the sign of x - q, make that
// round-to-odd and round it to float in the mode asked for (see round_to_odd): the sum of
// two floats by TwoSum, a product of two floats exactly in double (24 + 24 bits), a
// quotient or square root with the sign of its remainder, which fma gives exactly.

namespace attnspec_emu_numeric {

inline float round_exact_to_float(double q, int sign_of_error, Round mode) {
    return float_from_bits(round_double<Single>(round_to_odd(q, sign_of_error), mode));
}

inline float add_float(float a, float b, Round mode) {
    const double x = a;
    const double y = b;
    const double s = x + y;
    if (!std::isfinite(s)) return float_from_bits(round_double<Single>(s, mode));
    return round_exact_to_float(zero_sum(s, x, y, mode), sign_of(two_sum_error(x, y, s)), mode);
}

inline float mul_float(float a, float b, Round mode) {
    return float_from_bits(round_double<Single>(static_cast<double>(a) * static_cast<double>(b), mode));
}

inline float div_float(float a, float b, Round mode) {
    const double x = a;
    const double y = b;
    const double q = x / y;
    if (!std::isfinite(q) || !std::isfinite(y)) return float_from_bits(round_double<Single>(q, mode));
    // x - q·y is computed exactly by fma up to its final rounding, which keeps its sign.
    return round_exact_to_float(q, sign_of(std::fma(-q, y, x)) * sign_of(y), mode);
}

inline float sqrt_float(float a, Round mode) {
    const double x = a;
    const double q = std::sqrt(x);
    if (!std::isfinite(q) || q == 0) return float_from_bits(round_double<Single>(q, mode));
    return round_exact_to_float(q, sign_of(std::fma(-q, q, x)), mode);
}

inline float fma_float(float a, float b, float c, Round mode) {
    const double p = static_cast<double>(a) * static_cast<double>(b);  // exact
    const double z = c;
    const double s = p + z;
    if (!std::isfinite(s)) return float_from_bits(round_double<Single>(s, mode));
    return round_exact_to_float(zero_sum(s, p, z, mode), sign_of(two_sum_error(p, z, s)), mode);
}

}  // namespace attnspec_emu_numeric

#define ATTNSPEC_EMU_FLOAT_MODES(name, impl, params, args)                                      \
    inline float name##_rz params { return attnspec_emu_numeric::impl(args, attnspec_emu_numeric::Round::toward_zero); } \
    inline float name##_rd params { return attnspec_emu_numeric::impl(args, attnspec_emu_numeric::Round::down); } \
    inline float name##_ru params { return attnspec_emu_numeric::impl(args, attnspec_emu_numeric::Round::up); }
#define ATTNSPEC_EMU_COMMA ,
ATTNSPEC_EMU_FLOAT_MODES(__fadd, add_float, (float a, float b), a ATTNSPEC_EMU_COMMA b)
ATTNSPEC_EMU_FLOAT_MODES(__fsub, add_float, (float a, float b), a ATTNSPEC_EMU_COMMA -b)
ATTNSPEC_EMU_FLOAT_MODES(__fmul, mul_float, (float a, float b), a ATTNSPEC_EMU_COMMA b)
ATTNSPEC_EMU_FLOAT_MODES(__fdiv, div_float, (float a, float b), a ATTNSPEC_EMU_COMMA b)
ATTNSPEC_EMU_FLOAT_MODES(__frcp, div_float, (float a), 1.0f ATTNSPEC_EMU_COMMA a)
ATTNSPEC_EMU_FLOAT_MODES(__fsqrt, sqrt_float, (float a), a)
ATTNSPEC_EMU_FLOAT_MODES(__fmaf, fma_float, (float a, float b, float c),
                         a ATTNSPEC_EMU_COMMA b ATTNSPEC_EMU_COMMA c)
#undef ATTNSPEC_EMU_COMMA
#undef ATTNSPEC_EMU_FLOAT_MODES

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __drcp_rn(double a) { return 1.0 / a; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }

// ---------------------------------------------------------------------------------------
// Math functions. <math.h> above supplies the C and C++ ones (expf, exp10f, sincosf, ...,
// sqrt(float), isnan). CUDA's fast intrinsics compute the libm value here: more accurate
// than the GPU's approximations, never less.

inline float rsqrtf(float x) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(x))); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return ::exp10f(x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) { ::sincosf(x, s, c); }
inline float __fdividef(float x, float y) { return x / y; }
inline float fdividef(float x, float y) { return x / y; }
// Clamps to [0, 1]; NaN gives 0.
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }

// CUDA's min and max are overloaded functions, with mixed-sign integer forms that compare
// as unsigned and float/double forms that behave as fmin/fmax (NaN loses).
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int min(int a, unsigned int b) { return min(static_cast<unsigned int>(a), b); }
inline unsigned int min(unsigned int a, int b) { return min(a, static_cast<unsigned int>(b)); }
inline long min(long a, long b) { return a < b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long min(long a, unsigned long b) { return min(static_cast<unsigned long>(a), b); }
inline unsigned long min(unsigned long a, long b) { return min(a, static_cast<unsigned long>(b)); }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long min(long long a, unsigned long long b) { return min(static_cast<unsigned long long>(a), b); }
inline unsigned long long min(unsigned long long a, long long b) { return min(a, static_cast<unsigned long long>(b)); }
inline float min(float a, float b) { return std::fmin(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double min(float a, double b) { return std::fmin(static_cast<double>(a), b); }
inline double min(double a, float b) { return std::fmin(a, static_cast<double>(b)); }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline unsigned int max(int a, unsigned int b) { return max(static_cast<unsigned int>(a), b); }
inline unsigned int max(unsigned int a, int b) { return max(a, static_cast<unsigned int>(b)); }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline unsigned long max(long a, unsigned long b) { return max(static_cast<unsigned long>(a), b); }
inline unsigned long max(unsigned long a, long b) { return max(a, static_cast<unsigned long>(b)); }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline unsigned long long max(long long a, unsigned long long b) { return max(static_cast<unsigned long long>(a), b); }
inline unsigned long long max(unsigned long long a, long long b) { return max(a, static_cast<unsigned long long>(b)); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline double max(float a, double b) { return std::fmax(static_cast<double>(a), b); }
inline double max(double a, float b) { return std::fmax(a, static_cast<double>(b)); }
inline unsigned int umin(unsigned int a, unsigned int b) { return min(a, b); }
inline unsigned int umax(unsigned int a, unsigned int b) { return max(a, b); }
inline long long llmin(long long a, long long b) { return min(a, b); }
inline long long llmax(long long a, long long b) { return max(a, b); }
inline unsigned long long ullmin(unsigned long long a, unsigned long long b) { return min(a, b); }
inline unsigned long long ullmax(unsigned long long a, unsigned long long b) { return max(a, b); }

// ---------------------------------------------------------------------------------------
// Integer intrinsics.

inline int __popc(unsigned int x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(int x) { return std::countl_zero(static_cast<unsigned int>(x)); }
inline int __clzll(long long x) { return std::countl_zero(static_cast<unsigned long long>(x)); }
// Position (from 1) of the least significant set bit; 0 when there is none.
inline int __ffs(int x) { return x == 0 ? 0 : std::countr_zero(static_cast<unsigned int>(x)) + 1; }
inline int __ffsll(long long x) {
    return x == 0 ? 0 : std::countr_zero(static_cast<unsigned long long>(x)) + 1;
}
inline unsigned long long __brevll(unsigned long long x) {
    unsigned long long r = 0;
    for (int i = 0; i < 64; ++i, x >>= 1) r = (r << 1) | (x & 1);
    return r;
}
inline unsigned int __brev(unsigned int x) { return static_cast<unsigned int>(__brevll(x) >> 32); }
// Byte n of the result is byte (s >> 4n) & 7 of the eight bytes y:x (x holds bytes 0-3).
inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
    const unsigned long long bytes = static_cast<unsigned long long>(y) << 32 | x;
    unsigned int r = 0;
    for (int n = 0; n < 4; ++n) {
        const unsigned int selector = (s >> (4 * n)) & 7;
        r |= static_cast<unsigned int>((bytes >> (8 * selector)) & 0xff) << (8 * n);
    }
    return r;
}
// Funnel shifts of the 64-bit hi:lo; the plain forms take the shift mod 32, the _c forms
// clamp it to 32.
inline unsigned int __funnelshift_l(unsigned int lo, unsigned int hi, unsigned int shift) {
    const unsigned long long v = static_cast<unsigned long long>(hi) << 32 | lo;
    return static_cast<unsigned int>((v << (shift & 31)) >> 32);
}
inline unsigned int __funnelshift_lc(unsigned int lo, unsigned int hi, unsigned int shift) {
    const unsigned long long v = static_cast<unsigned long long>(hi) << 32 | lo;
    return static_cast<unsigned int>((v << std::min(shift, 32u)) >> 32);
}
inline unsigned int __funnelshift_r(unsigned int lo, unsigned int hi, unsigned int shift) {
    const unsigned long long v = static_cast<unsigned long long>(hi) << 32 | lo;
    return static_cast<unsigned int>(v >> (shift & 31));
}
inline unsigned int __funnelshift_rc(unsigned int lo, unsigned int hi, unsigned int shift) {
    const unsigned long long v = static_cast<unsigned long long>(hi) << 32 | lo;
    return static_cast<unsigned int>(v >> std::min(shift, 32u));
}
// 24-bit multiplies: the low 24 bits of each operand (sign-extended for __mul24), the low
// 32 bits of the product.
inline int __mul24(int x, int y) {
    const auto low24 = [](int v) {
        const auto u = static_cast<unsigned int>(v) & 0xffffffu;
        return static_cast<long long>(u) - ((u & 0x800000u) != 0 ? (1ll << 24) : 0);
    };
    return static_cast<int>(static_cast<unsigned int>(low24(x) * low24(y)));
}
inline unsigned int __umul24(unsigned int x, unsigned int y) {
    return static_cast<unsigned int>(static_cast<unsigned long long>(x & 0xffffffu) * (y & 0xffffffu));
}
inline int __mulhi(int x, int y) { return static_cast<int>((static_cast<long long>(x) * y) >> 32); }
inline unsigned int __umulhi(unsigned int x, unsigned int y) {
    return static_cast<unsigned int>((static_cast<unsigned long long>(x) * y) >> 32);
}
namespace attnspec_emu_numeric {
__extension__ typedef __int128 int128;  // __extension__: g++'s 128-bit integers are not ISO
__extension__ typedef unsigned __int128 uint128;
}  // namespace attnspec_emu_numeric
inline long long __mul64hi(long long x, long long y) {
    return static_cast<long long>((static_cast<attnspec_emu_numeric::int128>(x) * y) >> 64);
}
inline unsigned long long __umul64hi(unsigned long long x, unsigned long long y) {
    return static_cast<unsigned long long>((static_cast<attnspec_emu_numeric::uint128>(x) * y) >> 64);
}
// |x - y| + z, all modulo 2^32.
inline unsigned int __sad(int x, int y, unsigned int z) {
    const unsigned int d = x > y ? static_cast<unsigned int>(x) - static_cast<unsigned int>(y)
                                 : static_cast<unsigned int>(y) - static_cast<unsigned int>(x);
    return d + z;
}
inline unsigned int __usad(unsigned int x, unsigned int y, unsigned int z) {
    return (x > y ? x - y : y - x) + z;
}
// Halving adds without intermediate overflow: (x + y) >> 1 and (x + y + 1) >> 1.
inline int __hadd(int x, int y) { return static_cast<int>((static_cast<long long>(x) + y) >> 1); }
inline int __rhadd(int x, int y) { return static_cast<int>((static_cast<long long>(x) + y + 1) >> 1); }
inline unsigned int __uhadd(unsigned int x, unsigned int y) {
    return static_cast<unsigned int>((static_cast<unsigned long long>(x) + y) >> 1);
}
inline unsigned int __urhadd(unsigned int x, unsigned int y) {
    return static_cast<unsigned int>((static_cast<unsigned long long>(x) + y + 1) >> 1);
}
// Dot product of the four bytes of a and b, plus c.
inline int __dp4a(int a, int b, int c) {
    for (int n = 0; n < 4; ++n) {
        c += static_cast<signed char>(static_cast<unsigned int>(a) >> (8 * n)) *
             static_cast<signed char>(static_cast<unsigned int>(b) >> (8 * n));
    }
    return c;
}
inline unsigned int __dp4a(unsigned int a, unsigned int b, unsigned int c) {
    for (int n = 0; n < 4; ++n) c += ((a >> (8 * n)) & 0xffu) * ((b >> (8 * n)) & 0xffu);
    return c;
}

// ---------------------------------------------------------------------------------------
// __half and __nv_bfloat16: the IEEE bit pattern, trivially constructible (so that
// __shared__ arrays of them need no constructor), converting from float and double by
// rounding to nearest even and implicitly to float.

struct __half_raw {
    unsigned short x;
};
struct __half2_raw {
    unsigned short x, y;
};
struct __nv_bfloat16_raw {
    unsigned short x;
};
struct __nv_bfloat162_raw {
    unsigned short x, y;
};

#define ATTNSPEC_EMU_NARROW_TYPE(T, Raw, Format, to_float)                                      \
    struct alignas(2) T {                                                                       \
        unsigned short __x;                                                                     \
        T() = default;                                                                          \
        constexpr T(Raw r) : __x(r.x) {}                                                        \
        T(double v) : __x(bits_from(v)) {}                                                      \
        T(float v) : __x(bits_from(v)) {}                                                       \
        template <std::integral I>                                                              \
        T(I v)                                                                                  \
            : __x(static_cast<unsigned short>(attnspec_emu_numeric::round_integer<                \
                  attnspec_emu_numeric::Format>(v, attnspec_emu_numeric::Round::nearest_even))) {} \
        operator float() const { return attnspec_emu_numeric::to_float(__x); }                  \
        constexpr operator Raw() const { return Raw{__x}; }                                     \
                                                                                                \
       private:                                                                                 \
        static unsigned short bits_from(double v) {                                             \
            return static_cast<unsigned short>(attnspec_emu_numeric::round_double<               \
                                               attnspec_emu_numeric::Format>(                     \
                v, attnspec_emu_numeric::Round::nearest_even));                                 \
        }                                                                                       \
    };
ATTNSPEC_EMU_NARROW_TYPE(__half, __half_raw, Half, half_bits_to_float)
ATTNSPEC_EMU_NARROW_TYPE(__nv_bfloat16, __nv_bfloat16_raw, BFloat16, bfloat16_bits_to_float)
#undef ATTNSPEC_EMU_NARROW_TYPE

#define ATTNSPEC_EMU_NARROW_PAIR(T2, T, Raw2)                                                   \
    struct alignas(4) T2 {                                                                      \
        T x, y;                                                                                 \
        T2() = default;                                                                         \
        constexpr T2(T a, T b) : x(a), y(b) {}                                                  \
        constexpr T2(Raw2 r) : x(std::bit_cast<T>(r.x)), y(std::bit_cast<T>(r.y)) {}           \
        constexpr operator Raw2() const { return Raw2{x.__x, y.__x}; }                          \
    };
ATTNSPEC_EMU_NARROW_PAIR(__half2, __half, __half2_raw)
ATTNSPEC_EMU_NARROW_PAIR(__nv_bfloat162, __nv_bfloat16, __nv_bfloat162_raw)
#undef ATTNSPEC_EMU_NARROW_PAIR

using half = __half;
using half2 = __half2;
using nv_bfloat16 = __nv_bfloat16;
using nv_bfloat162 = __nv_bfloat162;

static_assert(std::is_trivial_v<__half> && std::is_trivial_v<__half2> &&
              std::is_trivial_v<__nv_bfloat16> && std::is_trivial_v<__nv_bfloat162>);
static_assert(sizeof(__half) == 2 && sizeof(__half2) == 4 && alignof(__half2) == 4);
static_assert(sizeof(__nv_bfloat16) == 2 && sizeof(__nv_bfloat162) == 4);

namespace attnspec_emu_numeric {

template <class T>
concept narrow_float = std::same_as<T, __half> || std::same_as<T, __nv_bfloat16>;

template <narrow_float T>
using format_of = std::conditional_t<std::is_same_v<T, __half>, Half, BFloat16>;

template <narrow_float T>
constexpr T narrow_from_bits(std::uint64_t bits) {
    return std::bit_cast<T>(static_cast<std::uint16_t>(bits));
}

template <narrow_float T>
T narrow_from_double(double x, Round mode = Round::nearest_even) {
    return narrow_from_bits<T>(round_double<format_of<T>>(x, mode));
}

template <narrow_float T>
double wide(T x) {
    return static_cast<float>(x);
}

// +, -, * and / of two half or bfloat16 values: the double result is RN(x) of the exact x,
// and rounding it again to half or bfloat16 gives RN(x) there too. Figueroa ("When is
// double rounding innocuous?", SIGNUM Newsletter 30(3), 1995) proves this for +, -, *, /
// and sqrt of p-bit operands whenever the intermediate format has at least 2p + 2 bits:
// half has p = 11 and bfloat16 p = 8, so float (24 bits) would already do, but bfloat16
// shares float's exponent range and its subnormal results would be float subnormals, which
// the theorem does not cover. Double has 53 bits and holds every half and bfloat16 result,
// subnormals included, as a normal number, so the theorem applies without a case split.
template <narrow_float T>
T add(T a, T b) { return narrow_from_double<T>(wide(a) + wide(b)); }
template <narrow_float T>
T sub(T a, T b) { return narrow_from_double<T>(wide(a) - wide(b)); }
template <narrow_float T>
T mul(T a, T b) { return narrow_from_double<T>(wide(a) * wide(b)); }
template <narrow_float T>
T div(T a, T b) { return narrow_from_double<T>(wide(a) / wide(b)); }

// a·b + c with one rounding. The product of two values of at most 11 significant bits is
// exact in double, but the sum need not be, and rounding it twice is not innocuous: for
// bfloat16, a·b can be exactly a bfloat16 midpoint and c lie far below the last place of
// a double of that size, so the double sum is the midpoint and the tie goes to even
// whichever side of it the exact sum is. (Half's exponent range is too narrow for that to
// happen, but one argument for both is simpler.) TwoSum recovers the sum's rounding error
// exactly and round_to_odd turns the pair into a double that rounds like the exact sum.
// Operands are below 2^16 (half) or 2^128 (bfloat16) in magnitude and their products are
// at least 2^-266, so nothing overflows or underflows in double.
template <narrow_float T>
T fma(T a, T b, T c) {
    const double p = wide(a) * wide(b);
    const double z = wide(c);
    const double s = p + z;
    if (!std::isfinite(s)) return narrow_from_double<T>(s);
    return narrow_from_double<T>(round_to_odd(s, sign_of(two_sum_error(p, z, s))));
}

template <narrow_float T>
bool is_nan(T x) { return std::isnan(wide(x)); }

template <narrow_float T>
T canonical_nan() { return narrow_from_bits<T>(format_of<T>::canonical_nan); }

template <narrow_float T>
T with_sign_bit(T x, bool negative) {
    if (is_nan(x)) return canonical_nan<T>();
    const auto magnitude = static_cast<std::uint16_t>(x.__x & 0x7fffu);
    return narrow_from_bits<T>(negative ? magnitude | 0x8000u : magnitude);
}

// CUDA's max/min: a NaN operand loses (both NaN gives the canonical NaN) and +0 > -0.
template <narrow_float T>
T max(T a, T b) {
    if (is_nan(a)) return is_nan(b) ? canonical_nan<T>() : b;
    if (is_nan(b)) return a;
    if (wide(a) == wide(b)) return (a.__x & 0x8000u) != 0 ? b : a;
    return wide(a) > wide(b) ? a : b;
}
template <narrow_float T>
T min(T a, T b) {
    if (is_nan(a)) return is_nan(b) ? canonical_nan<T>() : b;
    if (is_nan(b)) return a;
    if (wide(a) == wide(b)) return (a.__x & 0x8000u) != 0 ? a : b;
    return wide(a) < wide(b) ? a : b;
}
// The _nan forms propagate NaN instead.
template <narrow_float T>
T max_nan(T a, T b) { return is_nan(a) || is_nan(b) ? canonical_nan<T>() : max(a, b); }
template <narrow_float T>
T min_nan(T a, T b) { return is_nan(a) || is_nan(b) ? canonical_nan<T>() : min(a, b); }

// Clamps to [0, 1]; NaN gives +0.
template <narrow_float T>
T saturate(T x) {
    if (is_nan(x) || wide(x) <= 0) return narrow_from_bits<T>(0);
    return wide(x) >= 1 ? narrow_from_double<T>(1.0) : x;
}

template <narrow_float T>
T relu(T x) {
    if (is_nan(x)) return canonical_nan<T>();
    return wide(x) > 0 ? x : narrow_from_bits<T>(0);
}

template <narrow_float T, class F>
T apply(T x, F f) { return narrow_from_double<T>(f(wide(x))); }

template <narrow_float T>
T from_integer(auto v, Round mode) {
    return narrow_from_bits<T>(round_integer<format_of<T>>(v, mode));
}

// Applies the scalar operation f to both lanes of a pair.
template <class T2, class F>
T2 lanes(T2 a, T2 b, F f) { return T2(f(a.x, b.x), f(a.y, b.y)); }

}  // namespace attnspec_emu_numeric

// The functions CUDA declares for both __half and __nv_bfloat16 under the same name.
#define ATTNSPEC_EMU_NARROW_FUNCTIONS(T, T2)                                                    \
    inline T __hadd(T a, T b) { return attnspec_emu_numeric::add(a, b); }                        \
    inline T __hsub(T a, T b) { return attnspec_emu_numeric::sub(a, b); }                        \
    inline T __hmul(T a, T b) { return attnspec_emu_numeric::mul(a, b); }                        \
    inline T __hdiv(T a, T b) { return attnspec_emu_numeric::div(a, b); }                        \
    inline T __hadd_rn(T a, T b) { return __hadd(a, b); }                                        \
    inline T __hsub_rn(T a, T b) { return __hsub(a, b); }                                        \
    inline T __hmul_rn(T a, T b) { return __hmul(a, b); }                                        \
    inline T __hfma(T a, T b, T c) { return attnspec_emu_numeric::fma(a, b, c); }                \
    inline T __hadd_sat(T a, T b) { return attnspec_emu_numeric::saturate(__hadd(a, b)); }       \
    inline T __hsub_sat(T a, T b) { return attnspec_emu_numeric::saturate(__hsub(a, b)); }       \
    inline T __hmul_sat(T a, T b) { return attnspec_emu_numeric::saturate(__hmul(a, b)); }       \
    inline T __hfma_sat(T a, T b, T c) { return attnspec_emu_numeric::saturate(__hfma(a, b, c)); } \
    inline T __hfma_relu(T a, T b, T c) { return attnspec_emu_numeric::relu(__hfma(a, b, c)); }  \
    inline T __hneg(T a) { return attnspec_emu_numeric::with_sign_bit(a, (a.__x & 0x8000u) == 0); } \
    inline T __habs(T a) { return attnspec_emu_numeric::with_sign_bit(a, false); }               \
    inline T __hmax(T a, T b) { return attnspec_emu_numeric::max(a, b); }                        \
    inline T __hmin(T a, T b) { return attnspec_emu_numeric::min(a, b); }                        \
    inline T __hmax_nan(T a, T b) { return attnspec_emu_numeric::max_nan(a, b); }                \
    inline T __hmin_nan(T a, T b) { return attnspec_emu_numeric::min_nan(a, b); }                \
    inline bool __hisnan(T a) { return attnspec_emu_numeric::is_nan(a); }                        \
    /* -1 for -inf, 1 for +inf, 0 otherwise. */                                                  \
    inline int __hisinf(T a) {                                                                  \
        const float f = a;                                                                      \
        return std::isinf(f) ? (f < 0 ? -1 : 1) : 0;                                            \
    }                                                                                           \
    /* Ordered comparisons are false on NaN; the ...u forms are true on NaN. */                 \
    inline bool __heq(T a, T b) { return float(a) == float(b); }                                \
    inline bool __hne(T a, T b) { return float(a) < float(b) || float(a) > float(b); }         \
    inline bool __hlt(T a, T b) { return float(a) < float(b); }                                 \
    inline bool __hle(T a, T b) { return float(a) <= float(b); }                                \
    inline bool __hgt(T a, T b) { return float(a) > float(b); }                                 \
    inline bool __hge(T a, T b) { return float(a) >= float(b); }                                \
    inline bool __hequ(T a, T b) { return !__hne(a, b); }                                       \
    inline bool __hneu(T a, T b) { return !__heq(a, b); }                                       \
    inline bool __hltu(T a, T b) { return !__hge(a, b); }                                       \
    inline bool __hleu(T a, T b) { return !__hgt(a, b); }                                       \
    inline bool __hgtu(T a, T b) { return !__hle(a, b); }                                       \
    inline bool __hgeu(T a, T b) { return !__hlt(a, b); }                                       \
    inline T operator+(T a, T b) { return __hadd(a, b); }                                       \
    inline T operator-(T a, T b) { return __hsub(a, b); }                                       \
    inline T operator*(T a, T b) { return __hmul(a, b); }                                       \
    inline T operator/(T a, T b) { return __hdiv(a, b); }                                       \
    inline T& operator+=(T& a, T b) { return a = __hadd(a, b); }                                \
    inline T& operator-=(T& a, T b) { return a = __hsub(a, b); }                                \
    inline T& operator*=(T& a, T b) { return a = __hmul(a, b); }                                \
    inline T& operator/=(T& a, T b) { return a = __hdiv(a, b); }                                \
    inline T operator+(T a) { return a; }                                                       \
    inline T operator-(T a) { return __hneg(a); }                                               \
    inline T& operator++(T& a) { return a += T(1.0f); }                                         \
    inline T& operator--(T& a) { return a -= T(1.0f); }                                         \
    inline T operator++(T& a, int) { const T old = a; ++a; return old; }                        \
    inline T operator--(T& a, int) { const T old = a; --a; return old; }                        \
    inline bool operator==(T a, T b) { return __heq(a, b); }                                    \
    inline bool operator!=(T a, T b) { return __hneu(a, b); }                                   \
    inline bool operator<(T a, T b) { return __hlt(a, b); }                                     \
    inline bool operator<=(T a, T b) { return __hle(a, b); }                                    \
    inline bool operator>(T a, T b) { return __hgt(a, b); }                                     \
    inline bool operator>=(T a, T b) { return __hge(a, b); }                                    \
    /* Math through the double libm: see README.md, "Numerics", for what is exact. */           \
    inline T hexp(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return std::exp(x); }); } \
    inline T hexp2(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return std::exp2(x); }); } \
    inline T hexp10(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return ::exp10(x); }); } \
    inline T hlog(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return std::log(x); }); } \
    inline T hlog2(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return std::log2(x); }); } \
    inline T hlog10(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return std::log10(x); }); } \
    inline T hsin(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return std::sin(x); }); } \
    inline T hcos(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return std::cos(x); }); } \
    inline T htanh(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return std::tanh(x); }); } \
    inline T hsqrt(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return std::sqrt(x); }); } \
    inline T hrsqrt(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return 1.0 / std::sqrt(x); }); } \
    inline T hrcp(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return 1.0 / x; }); } \
    inline T hfloor(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return std::floor(x); }); } \
    inline T hceil(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return std::ceil(x); }); } \
    inline T htrunc(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return std::trunc(x); }); } \
    inline T hrint(T a) { return attnspec_emu_numeric::apply(a, [](double x) { return std::nearbyint(x); }); } \
                                                                                                \
    inline T2 __hadd2(T2 a, T2 b) { return attnspec_emu_numeric::lanes(a, b, [](T x, T y) { return __hadd(x, y); }); }         \
    inline T2 __hsub2(T2 a, T2 b) { return attnspec_emu_numeric::lanes(a, b, [](T x, T y) { return __hsub(x, y); }); }         \
    inline T2 __hmul2(T2 a, T2 b) { return attnspec_emu_numeric::lanes(a, b, [](T x, T y) { return __hmul(x, y); }); }         \
    inline T2 __h2div(T2 a, T2 b) { return attnspec_emu_numeric::lanes(a, b, [](T x, T y) { return __hdiv(x, y); }); }         \
    inline T2 __hmax2(T2 a, T2 b) { return attnspec_emu_numeric::lanes(a, b, [](T x, T y) { return __hmax(x, y); }); }         \
    inline T2 __hmin2(T2 a, T2 b) { return attnspec_emu_numeric::lanes(a, b, [](T x, T y) { return __hmin(x, y); }); }         \
    inline T2 __hfma2(T2 a, T2 b, T2 c) { return T2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)); } \
    inline T2 __hneg2(T2 a) { return T2(__hneg(a.x), __hneg(a.y)); }                            \
    inline T2 __habs2(T2 a) { return T2(__habs(a.x), __habs(a.y)); }                            \
    inline bool __hbeq2(T2 a, T2 b) { return __heq(a.x, b.x) && __heq(a.y, b.y); }              \
    inline bool __hbneu2(T2 a, T2 b) { return __hneu(a.x, b.x) && __hneu(a.y, b.y); }           \
    inline T2 h2exp(T2 a) { return T2(hexp(a.x), hexp(a.y)); }                                  \
    inline T2 h2log(T2 a) { return T2(hlog(a.x), hlog(a.y)); }                                  \
    inline T2 h2sqrt(T2 a) { return T2(hsqrt(a.x), hsqrt(a.y)); }                               \
    inline T2 h2rsqrt(T2 a) { return T2(hrsqrt(a.x), hrsqrt(a.y)); }                            \
    inline T2 h2rcp(T2 a) { return T2(hrcp(a.x), hrcp(a.y)); }                                  \
    inline T2 operator+(T2 a, T2 b) { return __hadd2(a, b); }                                   \
    inline T2 operator-(T2 a, T2 b) { return __hsub2(a, b); }                                   \
    inline T2 operator*(T2 a, T2 b) { return __hmul2(a, b); }                                   \
    inline T2 operator/(T2 a, T2 b) { return __h2div(a, b); }                                   \
    inline T2& operator+=(T2& a, T2 b) { return a = __hadd2(a, b); }                            \
    inline T2& operator-=(T2& a, T2 b) { return a = __hsub2(a, b); }                            \
    inline T2& operator*=(T2& a, T2 b) { return a = __hmul2(a, b); }                            \
    inline T2& operator/=(T2& a, T2 b) { return a = __h2div(a, b); }                            \
    inline T2 operator+(T2 a) { return a; }                                                     \
    inline T2 operator-(T2 a) { return __hneg2(a); }                                            \
    inline bool operator==(T2 a, T2 b) { return __hbeq2(a, b); }                                \
    inline bool operator!=(T2 a, T2 b) { return __hbneu2(a, b); }                               \
    inline float __low2float(T2 a) { return a.x; }                                              \
    inline float __high2float(T2 a) { return a.y; }                                             \
    inline T2 __lowhigh2highlow(T2 a) { return T2(a.y, a.x); }

ATTNSPEC_EMU_NARROW_FUNCTIONS(__half, __half2)
ATTNSPEC_EMU_NARROW_FUNCTIONS(__nv_bfloat16, __nv_bfloat162)
#undef ATTNSPEC_EMU_NARROW_FUNCTIONS

// The functions whose names say half or bfloat16. `type` is the name's spelling of the type
// (half or bfloat16), `pair` its pair's (half2 or bfloat162).
#define ATTNSPEC_EMU_NARROW_NAMED(T, T2, type, pair)                                            \
    inline T __float2##type(float a) { return attnspec_emu_numeric::narrow_from_double<T>(a); } \
    inline T __float2##type##_rn(float a) { return __float2##type(a); }                         \
    inline T __float2##type##_rz(float a) {                                                     \
        return attnspec_emu_numeric::narrow_from_double<T>(a, attnspec_emu_numeric::Round::toward_zero); \
    }                                                                                           \
    inline T __float2##type##_rd(float a) {                                                     \
        return attnspec_emu_numeric::narrow_from_double<T>(a, attnspec_emu_numeric::Round::down); \
    }                                                                                           \
    inline T __float2##type##_ru(float a) {                                                     \
        return attnspec_emu_numeric::narrow_from_double<T>(a, attnspec_emu_numeric::Round::up); \
    }                                                                                           \
    inline T __double2##type(double a) { return attnspec_emu_numeric::narrow_from_double<T>(a); } \
    inline float __##type##2float(T a) { return a; }                                            \
    inline T2 __float2##pair##_rn(float a) { return T2(__float2##type(a), __float2##type(a)); } \
    inline T2 __floats2##pair##_rn(float a, float b) { return T2(__float2##type(a), __float2##type(b)); } \
    inline T2 __float22##pair##_rn(float2 a) { return __floats2##pair##_rn(a.x, a.y); }         \
    inline float2 __##pair##2float2(T2 a) { return make_float2(a.x, a.y); }                     \
    inline T2 __halves2##pair(T lo, T hi) { return T2(lo, hi); }                                \
    inline T2 __##type##2##pair(T a) { return T2(a, a); }                                       \
    inline T2 make_##pair(T x, T y) { return T2(x, y); }                                        \
    inline T __low2##type(T2 a) { return a.x; }                                                 \
    inline T __high2##type(T2 a) { return a.y; }                                                \
    inline T2 __low2##pair(T2 a) { return T2(a.x, a.x); }                                       \
    inline T2 __lows2##pair(T2 a, T2 b) { return T2(a.x, b.x); }                                \
    inline T2 __highs2##pair(T2 a, T2 b) { return T2(a.y, b.y); }                               \
    inline T2 __high2##pair(T2 a) { return T2(a.y, a.y); }                                      \
    inline T __ushort_as_##type(unsigned short a) { return std::bit_cast<T>(a); }               \
    inline unsigned short __##type##_as_ushort(T a) { return a.__x; }                           \
    inline T __short_as_##type(short a) { return std::bit_cast<T>(a); }                         \
    inline short __##type##_as_short(T a) { return std::bit_cast<short>(a); }                   \
    ATTNSPEC_EMU_FROM_INTEGER(T, __int2##type, int)                                             \
    ATTNSPEC_EMU_FROM_INTEGER(T, __uint2##type, unsigned int)                                   \
    ATTNSPEC_EMU_FROM_INTEGER(T, __short2##type, short)                                         \
    ATTNSPEC_EMU_FROM_INTEGER(T, __ushort2##type, unsigned short)                               \
    ATTNSPEC_EMU_FROM_INTEGER(T, __ll2##type, long long)                                        \
    ATTNSPEC_EMU_FROM_INTEGER(T, __ull2##type, unsigned long long)                              \
    ATTNSPEC_EMU_TO_INTEGERS(T, __##type##2int, int)                                            \
    ATTNSPEC_EMU_TO_INTEGERS(T, __##type##2uint, unsigned int)                                  \
    ATTNSPEC_EMU_TO_INTEGERS(T, __##type##2short, short)                                        \
    ATTNSPEC_EMU_TO_INTEGERS(T, __##type##2ushort, unsigned short)                              \
    ATTNSPEC_EMU_TO_INTEGERS(T, __##type##2ll, long long)                                       \
    ATTNSPEC_EMU_TO_INTEGERS(T, __##type##2ull, unsigned long long)

#define ATTNSPEC_EMU_FROM_INTEGER(T, name, I)                                                   \
    inline T name##_rn(I v) { return attnspec_emu_numeric::from_integer<T>(v, attnspec_emu_numeric::Round::nearest_even); } \
    inline T name##_rz(I v) { return attnspec_emu_numeric::from_integer<T>(v, attnspec_emu_numeric::Round::toward_zero); } \
    inline T name##_rd(I v) { return attnspec_emu_numeric::from_integer<T>(v, attnspec_emu_numeric::Round::down); } \
    inline T name##_ru(I v) { return attnspec_emu_numeric::from_integer<T>(v, attnspec_emu_numeric::Round::up); }
#define ATTNSPEC_EMU_TO_INTEGERS(T, name, I)                                                    \
    inline I name##_rn(T a) { return attnspec_emu_numeric::to_integer<I>(float(a), attnspec_emu_numeric::Round::nearest_even); } \
    inline I name##_rz(T a) { return attnspec_emu_numeric::to_integer<I>(float(a), attnspec_emu_numeric::Round::toward_zero); } \
    inline I name##_rd(T a) { return attnspec_emu_numeric::to_integer<I>(float(a), attnspec_emu_numeric::Round::down); } \
    inline I name##_ru(T a) { return attnspec_emu_numeric::to_integer<I>(float(a), attnspec_emu_numeric::Round::up); }

ATTNSPEC_EMU_NARROW_NAMED(__half, __half2, half, half2)
ATTNSPEC_EMU_NARROW_NAMED(__nv_bfloat16, __nv_bfloat162, bfloat16, bfloat162)
#undef ATTNSPEC_EMU_NARROW_NAMED
#undef ATTNSPEC_EMU_FROM_INTEGER
#undef ATTNSPEC_EMU_TO_INTEGERS

#define CUDART_INF_FP16 __ushort_as_half(static_cast<unsigned short>(0x7c00u))
#define CUDART_NAN_FP16 __ushort_as_half(static_cast<unsigned short>(0x7fffu))
#define CUDART_MIN_DENORM_FP16 __ushort_as_half(static_cast<unsigned short>(0x0001u))
#define CUDART_MAX_NORMAL_FP16 __ushort_as_half(static_cast<unsigned short>(0x7bffu))
#define CUDART_NEG_ZERO_FP16 __ushort_as_half(static_cast<unsigned short>(0x8000u))
#define CUDART_ZERO_FP16 __ushort_as_half(static_cast<unsigned short>(0x0000u))
#define CUDART_ONE_FP16 __ushort_as_half(static_cast<unsigned short>(0x3c00u))
#define CUDART_INF_BF16 __ushort_as_bfloat16(static_cast<unsigned short>(0x7f80u))
#define CUDART_NAN_BF16 __ushort_as_bfloat16(static_cast<unsigned short>(0x7fffu))
#define CUDART_MIN_DENORM_BF16 __ushort_as_bfloat16(static_cast<unsigned short>(0x0001u))
#define CUDART_MAX_NORMAL_BF16 __ushort_as_bfloat16(static_cast<unsigned short>(0x7f7fu))
#define CUDART_NEG_ZERO_BF16 __ushort_as_bfloat16(static_cast<unsigned short>(0x8000u))
#define CUDART_ZERO_BF16 __ushort_as_bfloat16(static_cast<unsigned short>(0x0000u))
#define CUDART_ONE_BF16 __ushort_as_bfloat16(static_cast<unsigned short>(0x3f80u))

// ---------------------------------------------------------------------------------------
// Atomics. Blocks run on several OS threads at once, so these are real atomic operations
// (std::atomic_ref). GPU atomics are relaxed: they order nothing but themselves, and so are
// these. All return the old value.

namespace attnspec_emu_numeric {

constexpr auto relaxed = std::memory_order_relaxed;

// Replaces *p by f(*p) atomically with a compare-and-swap loop; returns the old value.
template <class T, class F>
T atomic_update(T* p, F f) {
    std::atomic_ref<T> ref(*p);
    T old = ref.load(relaxed);
    while (!ref.compare_exchange_weak(old, f(old), relaxed)) {
    }
    return old;
}

// Updates the half or bfloat16 at p with a compare-and-swap on the aligned 32-bit word
// that contains it, as GPUs without 16-bit atomics do; the other half of the word is
// written back unchanged, and a concurrent change to it makes the swap fail and retry.
template <narrow_float T, class F>
T atomic_update_narrow(T* p, F f) {
    const auto address = reinterpret_cast<std::uintptr_t>(p);
    auto* word = reinterpret_cast<std::uint32_t*>(address & ~std::uintptr_t{3});
    const unsigned shift = (address & 2) != 0 ? 16 : 0;
    std::atomic_ref<std::uint32_t> ref(*word);
    std::uint32_t old = ref.load(relaxed);
    for (;;) {
        const T old_value = narrow_from_bits<T>((old >> shift) & 0xffffu);
        const std::uint32_t new_bits = std::bit_cast<std::uint16_t>(f(old_value));
        const std::uint32_t desired = (old & ~(0xffffu << shift)) | (new_bits << shift);
        if (ref.compare_exchange_weak(old, desired, relaxed)) return old_value;
    }
}

}  // namespace attnspec_emu_numeric

inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v, attnspec_emu_numeric::relaxed); }
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {
    return std::atomic_ref<unsigned int>(*p).fetch_add(v, attnspec_emu_numeric::relaxed);
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return std::atomic_ref<unsigned long long>(*p).fetch_add(v, attnspec_emu_numeric::relaxed);
}
// Keeps subnormals; a GPU's float atomicAdd on global memory flushes them to zero.
inline float atomicAdd(float* p, float v) {
    return std::atomic_ref<float>(*p).fetch_add(v, attnspec_emu_numeric::relaxed);
}
inline double atomicAdd(double* p, double v) {
    return std::atomic_ref<double>(*p).fetch_add(v, attnspec_emu_numeric::relaxed);
}
inline __half atomicAdd(__half* p, __half v) {
    return attnspec_emu_numeric::atomic_update_narrow(p, [v](__half old) { return __hadd(old, v); });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
    return attnspec_emu_numeric::atomic_update_narrow(p, [v](__nv_bfloat16 old) { return __hadd(old, v); });
}
inline __half2 atomicAdd(__half2* p, __half2 v) {
    return attnspec_emu_numeric::atomic_update(p, [v](__half2 old) { return __hadd2(old, v); });
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* p, __nv_bfloat162 v) {
    return attnspec_emu_numeric::atomic_update(p, [v](__nv_bfloat162 old) { return __hadd2(old, v); });
}
inline int atomicSub(int* p, int v) { return std::atomic_ref<int>(*p).fetch_sub(v, attnspec_emu_numeric::relaxed); }
inline unsigned int atomicSub(unsigned int* p, unsigned int v) {
    return std::atomic_ref<unsigned int>(*p).fetch_sub(v, attnspec_emu_numeric::relaxed);
}

#define ATTNSPEC_EMU_ATOMIC_EXCH(T)                                                             \
    inline T atomicExch(T* p, T v) { return std::atomic_ref<T>(*p).exchange(v, attnspec_emu_numeric::relaxed); }
ATTNSPEC_EMU_ATOMIC_EXCH(int)
ATTNSPEC_EMU_ATOMIC_EXCH(unsigned int)
ATTNSPEC_EMU_ATOMIC_EXCH(unsigned long long)
ATTNSPEC_EMU_ATOMIC_EXCH(float)
#undef ATTNSPEC_EMU_ATOMIC_EXCH

#define ATTNSPEC_EMU_ATOMIC_MIN_MAX(T)                                                          \
    inline T atomicMin(T* p, T v) {                                                             \
        return attnspec_emu_numeric::atomic_update(p, [v](T old) { return old < v ? old : v; }); \
    }                                                                                           \
    inline T atomicMax(T* p, T v) {                                                             \
        return attnspec_emu_numeric::atomic_update(p, [v](T old) { return old > v ? old : v; }); \
    }
ATTNSPEC_EMU_ATOMIC_MIN_MAX(int)
ATTNSPEC_EMU_ATOMIC_MIN_MAX(unsigned int)
ATTNSPEC_EMU_ATOMIC_MIN_MAX(long long)
ATTNSPEC_EMU_ATOMIC_MIN_MAX(unsigned long long)
#undef ATTNSPEC_EMU_ATOMIC_MIN_MAX

// CUDA's wrapping counters: Inc counts 0, 1, ..., v, 0, ...; Dec counts v, ..., 1, 0, v, ...
inline unsigned int atomicInc(unsigned int* p, unsigned int v) {
    return attnspec_emu_numeric::atomic_update(p, [v](unsigned int old) { return old >= v ? 0u : old + 1; });
}
inline unsigned int atomicDec(unsigned int* p, unsigned int v) {
    return attnspec_emu_numeric::atomic_update(
        p, [v](unsigned int old) { return (old == 0 || old > v) ? v : old - 1; });
}

// compare_exchange leaves the old value in `compare`: unchanged on success, reloaded on
// failure.
#define ATTNSPEC_EMU_ATOMIC_CAS(T)                                                              \
    inline T atomicCAS(T* p, T compare, T v) {                                                  \
        std::atomic_ref<T>(*p).compare_exchange_strong(compare, v, attnspec_emu_numeric::relaxed); \
        return compare;                                                                         \
    }
ATTNSPEC_EMU_ATOMIC_CAS(int)
ATTNSPEC_EMU_ATOMIC_CAS(unsigned int)
ATTNSPEC_EMU_ATOMIC_CAS(unsigned long long)
ATTNSPEC_EMU_ATOMIC_CAS(unsigned short)
#undef ATTNSPEC_EMU_ATOMIC_CAS

#define ATTNSPEC_EMU_ATOMIC_BITWISE(T)                                                          \
    inline T atomicAnd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_and(v, attnspec_emu_numeric::relaxed); } \
    inline T atomicOr(T* p, T v) { return std::atomic_ref<T>(*p).fetch_or(v, attnspec_emu_numeric::relaxed); } \
    inline T atomicXor(T* p, T v) { return std::atomic_ref<T>(*p).fetch_xor(v, attnspec_emu_numeric::relaxed); }
ATTNSPEC_EMU_ATOMIC_BITWISE(int)
ATTNSPEC_EMU_ATOMIC_BITWISE(unsigned int)
ATTNSPEC_EMU_ATOMIC_BITWISE(unsigned long long)
#undef ATTNSPEC_EMU_ATOMIC_BITWISE

// Block- and system-scoped forms: the same operation, since every thread here shares one
// coherent memory.
#define ATTNSPEC_EMU_ATOMIC_SCOPES(op)                                                          \
    template <class P, class... A>                                                              \
    inline auto op##_block(P p, A... a) -> decltype(op(p, a...)) { return op(p, a...); }        \
    template <class P, class... A>                                                              \
    inline auto op##_system(P p, A... a) -> decltype(op(p, a...)) { return op(p, a...); }
ATTNSPEC_EMU_ATOMIC_SCOPES(atomicAdd)
ATTNSPEC_EMU_ATOMIC_SCOPES(atomicSub)
ATTNSPEC_EMU_ATOMIC_SCOPES(atomicExch)
ATTNSPEC_EMU_ATOMIC_SCOPES(atomicMin)
ATTNSPEC_EMU_ATOMIC_SCOPES(atomicMax)
ATTNSPEC_EMU_ATOMIC_SCOPES(atomicInc)
ATTNSPEC_EMU_ATOMIC_SCOPES(atomicDec)
ATTNSPEC_EMU_ATOMIC_SCOPES(atomicCAS)
ATTNSPEC_EMU_ATOMIC_SCOPES(atomicAnd)
ATTNSPEC_EMU_ATOMIC_SCOPES(atomicOr)
ATTNSPEC_EMU_ATOMIC_SCOPES(atomicXor)
#undef ATTNSPEC_EMU_ATOMIC_SCOPES

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }
