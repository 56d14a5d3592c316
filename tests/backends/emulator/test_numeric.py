"""Numerics of the CUDA emulator (attnspec_emu_numeric.h), checked through kernels.

Every kernel below runs a grid-stride loop over its inputs, so one launch checks up to
millions of values. References are independent of the header's code: NumPy's own
float16 conversions and arithmetic, exact rational arithmetic (``fractions``), and for
bfloat16 a table of every bfloat16 value searched for the two neighbours of the input,
whose midpoint is compared with the input in float64 (exactly: the midpoint of two
neighbouring bfloat16 values and twice a float or double are representable there).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.cuda.emulator import RawModule

SOURCE = r"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// CUDA's layout of the vector types, and the property __shared__ arrays of half rely on.
static_assert(sizeof(char3) == 3 && alignof(char4) == 4 && alignof(short2) == 4);
static_assert(sizeof(uint3) == 12 && alignof(uint3) == 4 && alignof(int4) == 16);
static_assert(alignof(float2) == 8 && alignof(float4) == 16 && sizeof(float3) == 12);
static_assert(alignof(double2) == 16 && alignof(longlong2) == 16 && alignof(ulonglong1) == 8);
static_assert(std::is_trivial_v<__half> && std::is_trivial_v<__nv_bfloat162>);

#define FOR_EACH(i) \
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)

// ---- conversions; mode 0 = the plain name, 1 = _rn, 2 = _rz, 3 = _rd, 4 = _ru, 5 = constructor

extern "C" __global__ void float_to_half(const float* x, __half* out, int n, int mode) {
    FOR_EACH(i) {
        const float v = x[i];
        out[i] = mode == 0 ? __float2half(v) : mode == 1 ? __float2half_rn(v)
               : mode == 2 ? __float2half_rz(v) : mode == 3 ? __float2half_rd(v)
               : mode == 4 ? __float2half_ru(v) : __half(v);
    }
}

extern "C" __global__ void float_to_bfloat16(const float* x, __nv_bfloat16* out, int n, int mode) {
    FOR_EACH(i) {
        const float v = x[i];
        out[i] = mode == 0 ? __float2bfloat16(v) : mode == 1 ? __float2bfloat16_rn(v)
               : mode == 2 ? __float2bfloat16_rz(v) : mode == 3 ? __float2bfloat16_rd(v)
               : mode == 4 ? __float2bfloat16_ru(v) : __nv_bfloat16(v);
    }
}

extern "C" __global__ void double_to_half(const double* x, __half* out, __half* ctor, int n) {
    FOR_EACH(i) {
        out[i] = __double2half(x[i]);
        ctor[i] = __half(x[i]);
    }
}

extern "C" __global__ void double_to_bfloat16(const double* x, __nv_bfloat16* out, int n) {
    FOR_EACH(i) out[i] = __double2bfloat16(x[i]);
}

extern "C" __global__ void half_to_float(const __half* x, float* out, float* implicit, int n) {
    FOR_EACH(i) {
        out[i] = __half2float(x[i]);
        implicit[i] = x[i];
    }
}

extern "C" __global__ void bfloat16_to_float(const __nv_bfloat16* x, float* out, float* implicit, int n) {
    FOR_EACH(i) {
        out[i] = __bfloat162float(x[i]);
        implicit[i] = x[i];
    }
}

// ---- integers to and from half and bfloat16; mode 0 rn, 1 rz, 2 rd, 3 ru

extern "C" __global__ void int_to_half(const int* x, __half* out, int n, int mode) {
    FOR_EACH(i) {
        out[i] = mode == 0 ? __int2half_rn(x[i]) : mode == 1 ? __int2half_rz(x[i])
               : mode == 2 ? __int2half_rd(x[i]) : __int2half_ru(x[i]);
    }
}

extern "C" __global__ void ll_to_bfloat16(const long long* x, __nv_bfloat16* out, int n, int mode) {
    FOR_EACH(i) {
        out[i] = mode == 0 ? __ll2bfloat16_rn(x[i]) : mode == 1 ? __ll2bfloat16_rz(x[i])
               : mode == 2 ? __ll2bfloat16_rd(x[i]) : __ll2bfloat16_ru(x[i]);
    }
}

extern "C" __global__ void half_to_ints(const __half* x, int* rn, int* rz, int* rd, int* ru,
                                        long long* ll, unsigned int* u, int n) {
    FOR_EACH(i) {
        rn[i] = __half2int_rn(x[i]);
        rz[i] = __half2int_rz(x[i]);
        rd[i] = __half2int_rd(x[i]);
        ru[i] = __half2int_ru(x[i]);
        ll[i] = __half2ll_rz(x[i]);
        u[i] = __half2uint_rz(x[i]);
    }
}

extern "C" __global__ void bfloat16_to_ints(const __nv_bfloat16* x, int* rz, long long* ll,
                                            unsigned short* us, int n) {
    FOR_EACH(i) {
        rz[i] = __bfloat162int_rz(x[i]);
        ll[i] = __bfloat162ll_rz(x[i]);
        us[i] = __bfloat162ushort_rz(x[i]);
    }
}

// ---- half and bfloat16 arithmetic

template <class T>
__device__ T binary(T a, T b, int op) {
    T r = a;
    switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        case 3: return a / b;
        case 4: return __hadd(a, b);
        case 5: return __hsub(a, b);
        case 6: return __hmul(a, b);
        case 7: return __hdiv(a, b);
        case 8: r += b; return r;
        case 9: r -= b; return r;
        case 10: r *= b; return r;
        case 11: r /= b; return r;
        case 12: return __hmax(a, b);
        case 13: return __hmin(a, b);
        case 14: return __hmax_nan(a, b);
        default: return __hmin_nan(a, b);
    }
}

extern "C" __global__ void half_binary(const __half* a, const __half* b, __half* out, int n, int op) {
    FOR_EACH(i) out[i] = binary(a[i], b[i], op);
}

extern "C" __global__ void bfloat16_binary(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                           __nv_bfloat16* out, int n, int op) {
    FOR_EACH(i) out[i] = binary(a[i], b[i], op);
}

extern "C" __global__ void half_fma(const __half* a, const __half* b, const __half* c, __half* out, int n) {
    FOR_EACH(i) out[i] = __hfma(a[i], b[i], c[i]);
}

extern "C" __global__ void bfloat16_fma(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                        const __nv_bfloat16* c, __nv_bfloat16* out, int n) {
    FOR_EACH(i) out[i] = __hfma(a[i], b[i], c[i]);
}

// Pairs: element 2k and 2k+1 of each array form one __half2; ops on pairs must agree with
// the scalar ops on each lane.
extern "C" __global__ void half2_ops(const __half* a, const __half* b, const __half* c,
                                     __half* sum, __half* product, __half* quotient, __half* fma,
                                     float* lows, int n) {
    FOR_EACH(k) {
        const __half2 x = __halves2half2(a[2 * k], a[2 * k + 1]);
        const __half2 y = make_half2(b[2 * k], b[2 * k + 1]);
        const __half2 z = __floats2half2_rn(__half2float(c[2 * k]), __half2float(c[2 * k + 1]));
        const __half2 s = x + y;
        const __half2 p = __hmul2(x, y);
        const __half2 q = x / y;
        const __half2 f = __hfma2(x, y, z);
        sum[2 * k] = __low2half(s);  sum[2 * k + 1] = __high2half(s);
        product[2 * k] = p.x;        product[2 * k + 1] = p.y;
        quotient[2 * k] = q.x;       quotient[2 * k + 1] = q.y;
        const float2 ff = __half22float2(f);
        fma[2 * k] = __float2half(ff.x);
        fma[2 * k + 1] = __float2half(ff.y);
        lows[k] = __low2float(x) + __high2float(__lowhigh2highlow(x));  // a[2k] + a[2k]
    }
}

extern "C" __global__ void bfloat162_ops(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                         const __nv_bfloat16* c, __nv_bfloat16* sum,
                                         __nv_bfloat16* fma, int n) {
    FOR_EACH(k) {
        const __nv_bfloat162 x = __halves2bfloat162(a[2 * k], a[2 * k + 1]);
        const __nv_bfloat162 y = make_bfloat162(b[2 * k], b[2 * k + 1]);
        const float2 cf = __bfloat1622float2(__halves2bfloat162(c[2 * k], c[2 * k + 1]));
        const __nv_bfloat162 z = __floats2bfloat162_rn(cf.x, cf.y);
        const __nv_bfloat162 s = __hadd2(x, y);
        const __nv_bfloat162 f = __hfma2(x, y, z);
        sum[2 * k] = __low2bfloat16(s);  sum[2 * k + 1] = __high2bfloat16(s);
        fma[2 * k] = f.x;                fma[2 * k + 1] = f.y;
    }
}

template <class T>
__device__ T unary(T x, int fn) {
    switch (fn) {
        case 0: return hexp(x);
        case 1: return hexp2(x);
        case 2: return hexp10(x);
        case 3: return hlog(x);
        case 4: return hlog2(x);
        case 5: return hlog10(x);
        case 6: return hsin(x);
        case 7: return hcos(x);
        case 8: return hsqrt(x);
        case 9: return hrcp(x);
        case 10: return hfloor(x);
        case 11: return hceil(x);
        case 12: return htrunc(x);
        case 13: return hrint(x);
        case 14: return __habs(x);
        case 15: return __hneg(x);
        case 16: return -x;
        default: return hrsqrt(x);
    }
}

extern "C" __global__ void half_unary(const __half* x, __half* out, int n, int fn) {
    FOR_EACH(i) out[i] = unary(x[i], fn);
}

extern "C" __global__ void bfloat16_unary(const __nv_bfloat16* x, __nv_bfloat16* out, int n, int fn) {
    FOR_EACH(i) out[i] = unary(x[i], fn);
}

// One bit per comparison, in the order of the Python COMPARISONS list.
template <class T>
__device__ int compare(T a, T b) {
    const bool r[] = {a == b, a != b, a < b, a <= b, a > b, a >= b,
                      __heq(a, b), __hne(a, b), __hlt(a, b), __hle(a, b), __hgt(a, b), __hge(a, b),
                      __hequ(a, b), __hneu(a, b), __hltu(a, b), __hleu(a, b), __hgtu(a, b),
                      __hgeu(a, b), __hisnan(a)};
    int bits = 0;
    for (int k = 0; k < 19; ++k) bits |= int(r[k]) << k;
    return bits;
}

extern "C" __global__ void half_compare(const __half* a, const __half* b, int* out, int* isinf, int n) {
    FOR_EACH(i) {
        out[i] = compare(a[i], b[i]);
        isinf[i] = __hisinf(a[i]);
    }
}

extern "C" __global__ void bfloat16_compare(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                            int* out, int* isinf, int n) {
    FOR_EACH(i) {
        out[i] = compare(a[i], b[i]);
        isinf[i] = __hisinf(a[i]);
    }
}

// ---- float and double

extern "C" __global__ void float_unary(const float* x, float* out, int n, int fn) {
    FOR_EACH(i) {
        const float v = x[i];
        float s, c;
        switch (fn) {
            case 0: out[i] = __expf(v); break;
            case 1: out[i] = expf(v); break;
            case 2: out[i] = exp(v); break;  // the float overload, as in CUDA
            case 3: out[i] = exp2f(v); break;
            case 4: out[i] = __exp10f(v); break;
            case 5: out[i] = exp10f(v); break;
            case 6: out[i] = __logf(v); break;
            case 7: out[i] = logf(v); break;
            case 8: out[i] = __log2f(v); break;
            case 9: out[i] = __log10f(v); break;
            case 10: out[i] = __sinf(v); break;
            case 11: out[i] = __cosf(v); break;
            case 12: out[i] = __tanf(v); break;
            case 13: __sincosf(v, &s, &c); out[i] = s; break;
            case 14: sincosf(v, &s, &c); out[i] = c; break;
            case 15: out[i] = tanhf(v); break;
            case 16: out[i] = erff(v); break;
            case 17: out[i] = sqrtf(v); break;
            case 18: out[i] = sqrt(v); break;
            case 19: out[i] = __fsqrt_rn(v); break;
            case 20: out[i] = __frcp_rn(v); break;
            case 21: out[i] = rsqrtf(v); break;
            case 22: out[i] = __saturatef(v); break;
            case 23: out[i] = floorf(v); break;
            case 24: out[i] = ceilf(v); break;
            case 25: out[i] = truncf(v); break;
            case 26: out[i] = roundf(v); break;
            case 27: out[i] = rintf(v); break;
            case 28: out[i] = fabsf(v); break;
            case 29: out[i] = sinf(v); break;
            case 30: out[i] = cosf(v); break;
            default: out[i] = v;
        }
    }
}

extern "C" __global__ void float_binary(const float* a, const float* b, float* out, int n, int op) {
    FOR_EACH(i) {
        const float x = a[i], y = b[i];
        switch (op) {
            case 0: out[i] = __powf(x, y); break;
            case 1: out[i] = powf(x, y); break;
            case 2: out[i] = __fdividef(x, y); break;
            case 3: out[i] = fdividef(x, y); break;
            case 4: out[i] = fminf(x, y); break;
            case 5: out[i] = fmaxf(x, y); break;
            case 6: out[i] = min(x, y); break;
            case 7: out[i] = max(x, y); break;
            case 8: out[i] = __fadd_rn(x, y); break;
            case 9: out[i] = __fsub_rn(x, y); break;
            case 10: out[i] = __fmul_rn(x, y); break;
            default: out[i] = __fdiv_rn(x, y);
        }
    }
}

// op = 4 * operation + mode (0 rn, 1 rz, 2 rd, 3 ru); operations: add, sub, mul, div, rcp(a),
// sqrt(a), fma(a, b, c).
extern "C" __global__ void float_rounded(const float* a, const float* b, const float* c,
                                         float* out, int n, int op) {
#define MODES(f, ...)                                                                   \
    (mode == 0 ? f##_rn(__VA_ARGS__) : mode == 1 ? f##_rz(__VA_ARGS__)                  \
     : mode == 2 ? f##_rd(__VA_ARGS__) : f##_ru(__VA_ARGS__))
    const int mode = op % 4;
    FOR_EACH(i) {
        const float x = a[i], y = b[i], z = c[i];
        switch (op / 4) {
            case 0: out[i] = MODES(__fadd, x, y); break;
            case 1: out[i] = MODES(__fsub, x, y); break;
            case 2: out[i] = MODES(__fmul, x, y); break;
            case 3: out[i] = MODES(__fdiv, x, y); break;
            case 4: out[i] = MODES(__frcp, x); break;
            case 5: out[i] = MODES(__fsqrt, x); break;
            default: out[i] = MODES(__fmaf, x, y, z);
        }
    }
}

extern "C" __global__ void double_to_float(const double* x, float* out, int n, int mode) {
    FOR_EACH(i) out[i] = MODES(__double2float, x[i]);
}

extern "C" __global__ void integer_to_floating(const long long* x, const unsigned long long* u,
                                               const int* k, float* ll_f, double* ll_d,
                                               float* ull_f, float* int_f, int n, int mode) {
    FOR_EACH(i) {
        ll_f[i] = MODES(__ll2float, x[i]);
        ll_d[i] = MODES(__ll2double, x[i]);
        ull_f[i] = MODES(__ull2float, u[i]);
        int_f[i] = MODES(__int2float, k[i]);
    }
}

extern "C" __global__ void double_ops(const double* a, const double* b, const double* c,
                                      double* sum, double* product, double* fma, int n) {
    FOR_EACH(i) {
        sum[i] = __dadd_rn(a[i], b[i]);
        product[i] = __dmul_rn(a[i], b[i]);
        fma[i] = __fma_rn(a[i], b[i], c[i]);
    }
}

// mode 0 rn, 1 rz, 2 rd, 3 ru
extern "C" __global__ void float_to_integers(const float* x, int* i32, unsigned int* u32,
                                             long long* i64, unsigned long long* u64, int n, int mode) {
    FOR_EACH(i) {
        i32[i] = MODES(__float2int, x[i]);
        u32[i] = MODES(__float2uint, x[i]);
        i64[i] = MODES(__float2ll, x[i]);
        u64[i] = MODES(__float2ull, x[i]);
    }
}

extern "C" __global__ void double_to_integers(const double* x, int* i32, unsigned int* u32,
                                              long long* i64, unsigned long long* u64, int n, int mode) {
    FOR_EACH(i) {
        i32[i] = MODES(__double2int, x[i]);
        u32[i] = MODES(__double2uint, x[i]);
        i64[i] = MODES(__double2ll, x[i]);
        u64[i] = MODES(__double2ull, x[i]);
    }
}
#undef MODES

extern "C" __global__ void reinterpret(const float* f, const double* d, int* f_as_int,
                                       float* round_trip, long long* d_as_ll, int* hi, int* lo,
                                       double* rebuilt, unsigned int* f_as_uint, int n) {
    FOR_EACH(i) {
        f_as_int[i] = __float_as_int(f[i]);
        f_as_uint[i] = __float_as_uint(f[i]);
        round_trip[i] = __int_as_float(__float_as_int(f[i])) + __uint_as_float(0u);
        d_as_ll[i] = __double_as_longlong(d[i]);
        hi[i] = __double2hiint(d[i]);
        lo[i] = __double2loint(d[i]);
        rebuilt[i] = __hiloint2double(hi[i], lo[i]) + __longlong_as_double(0);
    }
}

// ---- integer intrinsics, in the order of the Python BIT_OPS list

extern "C" __global__ void bit_ops(const unsigned int* x, const unsigned int* y,
                                   const unsigned int* z, unsigned int* out, int n, int op) {
    FOR_EACH(i) {
        const unsigned int a = x[i], b = y[i], c = z[i];
        const int sa = int(a), sb = int(b);
        unsigned int r;
        switch (op) {
            case 0: r = __popc(a); break;
            case 1: r = __clz(sa); break;
            case 2: r = __ffs(sa); break;
            case 3: r = __brev(a); break;
            case 4: r = __byte_perm(a, b, c); break;
            case 5: r = __funnelshift_l(a, b, c); break;
            case 6: r = __funnelshift_lc(a, b, c); break;
            case 7: r = __funnelshift_r(a, b, c); break;
            case 8: r = __funnelshift_rc(a, b, c); break;
            case 9: r = __mul24(sa, sb); break;
            case 10: r = __umul24(a, b); break;
            case 11: r = __mulhi(sa, sb); break;
            case 12: r = __umulhi(a, b); break;
            case 13: r = __sad(sa, sb, c); break;
            case 14: r = __usad(a, b, c); break;
            case 15: r = __hadd(sa, sb); break;
            case 16: r = __rhadd(sa, sb); break;
            case 17: r = __uhadd(a, b); break;
            case 18: r = __urhadd(a, b); break;
            case 19: r = __dp4a(sa, sb, int(c)); break;
            case 20: r = __dp4a(a, b, c); break;
            case 21: r = min(sa, sb); break;
            case 22: r = max(sa, sb); break;
            case 23: r = umin(a, b); break;
            case 24: r = umax(a, b); break;
            default: r = min(sa, b);  // mixed signedness compares as unsigned, as in CUDA
        }
        out[i] = r;
    }
}

extern "C" __global__ void bit_ops64(const unsigned long long* x, const unsigned long long* y,
                                     unsigned long long* out, int n, int op) {
    FOR_EACH(i) {
        const unsigned long long a = x[i], b = y[i];
        const long long sa = (long long)a, sb = (long long)b;
        switch (op) {
            case 0: out[i] = __popcll(a); break;
            case 1: out[i] = __clzll(sa); break;
            case 2: out[i] = __ffsll(sa); break;
            case 3: out[i] = __brevll(a); break;
            case 4: out[i] = __mul64hi(sa, sb); break;
            case 5: out[i] = __umul64hi(a, b); break;
            case 6: out[i] = llmin(sa, sb); break;
            case 7: out[i] = llmax(sa, sb); break;
            case 8: out[i] = ullmin(a, b); break;
            default: out[i] = ullmax(a, b);
        }
    }
}
"""

GRID, BLOCK = (16,), (128,)
RN, RZ, RD, RU = "rn", "rz", "rd", "ru"
DIRECTED_CODE = {RN: 0, RZ: 1, RD: 2, RU: 3}


@pytest.fixture(scope="module")
def mod():
    module = RawModule(code=SOURCE, source_name="test_numeric.cu")
    module.compile()
    return module


def run(mod, name, inputs, outputs, *extra, n=None):
    """Runs kernel `name` with the input arrays, fresh output arrays of the given dtypes
    (as long as the first input), n (the first input's length unless given) and the extra
    int32 arguments; returns the outputs."""
    inputs = [np.ascontiguousarray(a) for a in inputs]
    outs = [np.zeros(len(inputs[0]), dtype) for dtype in outputs]
    n = len(inputs[0]) if n is None else n
    args = (*inputs, *outs, np.int32(n), *(np.int32(e) for e in extra))
    mod.get_function(name)(GRID, BLOCK, args)
    return outs[0] if len(outs) == 1 else outs


# ---------------------------------------------------------------------------------------
# Exact references


def fraction_to_bits(v: Fraction, mant_bits: int, exp_bits: int, mode: str, negative_zero=False) -> int:
    """Bits of the IEEE binary format (mant_bits, exp_bits) nearest to v in `mode`."""
    bias = (1 << (exp_bits - 1)) - 1
    emin, emax = 1 - bias, bias
    sign_shift = mant_bits + exp_bits
    negative = v < 0 or (v == 0 and negative_zero)
    a = abs(v)
    sign = int(negative) << sign_shift
    if a == 0:
        return sign
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    q = max(e, emin) - mant_bits  # exponent of the last place
    scaled = a / Fraction(2) ** q
    k = scaled.numerator // scaled.denominator
    rest = scaled - k
    toward_zero = mode == RZ or (mode == RD and not negative) or (mode == RU and negative)
    if mode == RN:
        k += rest > Fraction(1, 2) or (rest == Fraction(1, 2) and k % 2 == 1)
    elif not toward_zero:
        k += rest != 0
    if k == 1 << (mant_bits + 1):
        k, q = k >> 1, q + 1
    inf = ((1 << exp_bits) - 1) << mant_bits
    if q + mant_bits > emax:
        return sign | (inf - 1 if toward_zero else inf)
    if k < 1 << mant_bits:
        return sign | k  # subnormal (q == emin - mant_bits)
    return sign | ((q + mant_bits + bias) << mant_bits) | (k - (1 << mant_bits))


def _table(finite_values: np.ndarray, overflow_threshold: float) -> np.ndarray:
    return np.append(finite_values.astype(np.float64), overflow_threshold)


# Every non-negative finite value, indexed by its bit pattern, then 2^(emax+1): the index
# of that last entry is the pattern of +inf.
HALF_TABLE = _table(np.arange(0x7C00, dtype=np.uint16).view(np.float16), 2.0**16)
BF16_TABLE = _table((np.arange(0x7F80, dtype=np.uint32) << 16).view(np.float32), 2.0**128)


def round_by_table(x, table: np.ndarray, mode: str) -> np.ndarray:
    """uint16 bits of x rounded to the format `table` lists, by finding the neighbours
    lo <= |x| < hi and comparing 2|x| with lo + hi (exact in float64)."""
    with np.errstate(invalid="ignore"):  # signalling NaNs
        x = np.asarray(x, np.float64)
    inf = len(table) - 1
    a = np.abs(x)
    negative = np.signbit(x)
    with np.errstate(invalid="ignore"):
        lo = np.minimum(np.searchsorted(table, a, side="right") - 1, inf)
        hi = np.minimum(lo + 1, inf)
        exact = table[lo] == a
        if mode == RN:
            twice = 2 * np.minimum(a, 2.0**200)
            middle = table[lo] + table[hi]
            up = (twice > middle) | ((twice == middle) & (lo % 2 == 1))
            magnitude = np.where(up, hi, lo)
        else:
            away = ((mode == RU) & ~negative) | ((mode == RD) & negative)
            magnitude = np.where(away, np.where(exact, lo, hi), np.minimum(lo, inf - 1))
        magnitude = np.where(np.isinf(a), inf, magnitude)
    bits = (magnitude | (negative.astype(np.int64) << 15)).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FFF), bits)


def bf16_to_f64(bits) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # signalling NaNs
        return (np.asarray(bits, np.uint32) << 16).view(np.float32).astype(np.float64)


def f64_to_bf16(x) -> np.ndarray:
    return round_by_table(x, BF16_TABLE, RN)


def assert_same_bits(got, want, what: str, nan_bits=None):
    """Bit equality, where NaN must meet NaN (and be `nan_bits` exactly if given). Arrays
    of uint16 are bfloat16 bits; half values come as float16."""
    got = np.asarray(got)
    want = np.asarray(want)
    width = {2: np.uint16, 4: np.uint32, 8: np.uint64}[got.dtype.itemsize]
    float_type = {2: np.float16, 4: np.float32, 8: np.float64}[got.dtype.itemsize]
    g_bits, w_bits = got.view(width), want.view(width)
    if got.dtype == np.uint16 and want.dtype == np.uint16:  # bfloat16 bits
        g_nan = bf16_is_nan(g_bits)
        w_nan = bf16_is_nan(w_bits)
    else:
        g_nan = np.isnan(got.view(float_type))
        w_nan = np.isnan(want.view(float_type))
    bad = (g_nan != w_nan) | (~w_nan & (g_bits != w_bits))
    if nan_bits is not None:
        bad |= w_nan & (g_bits != nan_bits)
    if bad.any():
        k = np.flatnonzero(bad)[:8]
        raise AssertionError(
            f"{what}: {bad.sum()} of {bad.size} differ; first at {k.tolist()}: "
            f"got {[hex(v) for v in g_bits[k]]}, want {[hex(v) for v in w_bits[k]]}"
        )


def bf16_is_nan(bits) -> np.ndarray:
    bits = np.asarray(bits, np.uint16)
    return (bits & 0x7FFF) > 0x7F80


def assert_within_ulps(got: np.ndarray, want: np.ndarray, ulps: int, what: str):
    """float32 results at most `ulps` units in the last place from the reference (±0 are
    0 apart, infinities count as the next value past the largest float); NaN where the
    reference has NaN."""

    def ordered(x):
        i = x.astype(np.float32).view(np.int32).astype(np.int64)
        return np.where(i >= 0, i, -(i & 0x7FFFFFFF))

    nan = np.isnan(want)
    assert (np.isnan(got) == nan).all(), f"{what}: NaN where the reference has none, or not"
    distance = np.abs(ordered(got[~nan]) - ordered(want[~nan]))
    assert distance.max(initial=0) <= ulps, f"{what}: {distance.max()} ulp from the reference"


RNG = np.random.default_rng(20240611)

# Lower 16 bits of a float32 that put it on, next to, or between half/bfloat16 ties.
TIE_LOWS = np.array([0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0xFFFF], np.uint32)


def float32_words() -> np.ndarray:
    """Every upper-16-bit pattern with each of TIE_LOWS, plus random words."""
    upper = np.arange(1 << 16, dtype=np.uint32) << 16
    every = (upper[:, None] | TIE_LOWS[None, :]).ravel()
    return np.concatenate([every, RNG.integers(0, 1 << 32, 1 << 17, dtype=np.uint32)])


def half_specials() -> np.ndarray:
    bits = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x0401, 0x3BFF, 0x3C00, 0x3C01,
            0xBC00, 0x4000, 0x7BFF, 0xFBFF, 0x7BFE, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x3555,
            0x5640, 0x1400]
    return np.array(bits, np.uint16).view(np.float16)


def bf16_specials() -> np.ndarray:
    bits = [0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x0081, 0x3F7F, 0x3F80, 0x3F81,
            0xBF80, 0x4000, 0x7F7F, 0xFF7F, 0x7F7E, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0x3EAB,
            0x4B40, 0x0D80]
    return np.array(bits, np.uint16)


def all_pairs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.meshgrid(values, values, indexing="ij")
    return a.ravel(), b.ravel()


# ---------------------------------------------------------------------------------------
# Conversions


def test_float_to_half_matches_numpy_on_every_exponent_and_tie(mod):
    x = float32_words().view(np.float32)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    for mode, name in enumerate(["__float2half", "__float2half_rn"]):
        assert_same_bits(run(mod, "float_to_half", [x], [np.float16], mode), want, name, 0x7FFF)
    assert_same_bits(run(mod, "float_to_half", [x], [np.float16], 5), want, "__half(float)", 0x7FFF)


def test_float_to_half_directed_modes_match_an_exact_reference(mod):
    x = float32_words()[::7].view(np.float32)
    for mode, code in ((RZ, 2), (RD, 3), (RU, 4)):
        got = run(mod, "float_to_half", [x], [np.float16], code)
        assert_same_bits(got, round_by_table(x, HALF_TABLE, mode).view(np.float16),
                         f"__float2half_{mode}", 0x7FFF)


def test_half_to_float_on_all_patterns(mod):
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    out, implicit = run(mod, "half_to_float", [x], [np.float32, np.float32])
    assert_same_bits(out, x.astype(np.float32), "__half2float", 0x7FFFFFFF)
    assert_same_bits(implicit, x.astype(np.float32), "operator float", 0x7FFFFFFF)


def double_near_ties(table: np.ndarray) -> np.ndarray:
    """Doubles on, one double-ulp beside, and far beside every midpoint between
    neighbouring finite values of a format (both signs), where rounding via float would
    go wrong."""
    lo, hi = table[:-2], table[1:-1]
    middle = (lo + hi) / 2
    candidates = [middle, np.nextafter(middle, 0), np.nextafter(middle, np.inf), lo,
                  middle + (hi - lo) / 2**20, middle - (hi - lo) / 2**30]
    x = np.concatenate(candidates)
    return np.concatenate([x, -x])


def test_double_to_half_rounds_once_from_the_double(mod):
    scale = 2.0 ** RNG.integers(-30, 18, 1 << 16)
    x = np.concatenate([double_near_ties(HALF_TABLE), RNG.standard_normal(1 << 16) * scale,
                        [np.inf, -np.inf, np.nan, 65519.99, 65520.0, -65520.0, 2.0**-25,
                         np.nextafter(2.0**-25, 1), 1e300, -0.0]])
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    out, ctor = run(mod, "double_to_half", [x], [np.float16, np.float16])
    assert_same_bits(out, want, "__double2half", 0x7FFF)
    assert_same_bits(ctor, want, "__half(double)", 0x7FFF)


def test_float_to_bfloat16_matches_a_table_reference_in_every_mode(mod):
    x = float32_words().view(np.float32)
    for code, mode in ((0, RN), (1, RN), (5, RN), (2, RZ), (3, RD), (4, RU)):
        got = run(mod, "float_to_bfloat16", [x], [np.uint16], code)
        assert_same_bits(got, round_by_table(x, BF16_TABLE, mode), f"float->bf16 {code}", 0x7FFF)


def test_bfloat16_to_float_on_all_patterns(mod):
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    out, implicit = run(mod, "bfloat16_to_float", [x], [np.float32, np.float32])
    value = np.where(x & 0x8000, -1, 1) * np.append(BF16_TABLE[:-1], np.inf)[np.minimum(x & 0x7FFF, 0x7F80)]
    want = np.where(bf16_is_nan(x), np.nan, value).astype(np.float32)
    assert_same_bits(out, want, "__bfloat162float")
    assert_same_bits(implicit, want, "operator float")


def test_double_to_bfloat16_rounds_once_from_the_double(mod):
    scale = 2.0 ** RNG.integers(-140, 130, 1 << 16)
    x = np.concatenate([double_near_ties(BF16_TABLE), RNG.standard_normal(1 << 16) * scale,
                        [np.inf, -np.inf, np.nan, 1e300, -1e-300, -0.0]])
    got = run(mod, "double_to_bfloat16", [x], [np.uint16])
    assert_same_bits(got, round_by_table(x, BF16_TABLE, RN), "__double2bfloat16", 0x7FFF)


def test_nan_of_any_payload_becomes_the_canonical_nan(mod):
    words = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FA00000],
                     np.uint32)
    x = words.view(np.float32)
    for code in range(6):
        assert (run(mod, "float_to_half", [x], [np.float16], code).view(np.uint16) == 0x7FFF).all()
        assert (run(mod, "float_to_bfloat16", [x], [np.uint16], code) == 0x7FFF).all()
    with np.errstate(invalid="ignore"):
        d = x.astype(np.float64)
    assert (run(mod, "double_to_bfloat16", [d], [np.uint16]) == 0x7FFF).all()
    assert (run(mod, "double_to_half", [d], [np.float16, np.float16])[0].view(np.uint16) == 0x7FFF).all()


def test_integers_to_half_and_bfloat16_round_once(mod):
    ints = np.concatenate([np.arange(-70000, 70000, 23), [2**31 - 1, -(2**31), 65504, 65519,
                                                         65520, 2049, 2051, 4097, -2049]])
    ints = ints.astype(np.int32)
    big = [2**60 + 2**52 + 1, 2**60 + 2**52, 2**60 + 3 * 2**52, 2**63 - 1, -(2**63),
           -(2**62 + 2**54 + 1), 257, 259, 0, -1, 2**24 + 1]
    lls = np.concatenate([np.array(big, np.int64), RNG.integers(-(2**63), 2**63 - 1, 4000)])
    for mode, code in DIRECTED_CODE.items():
        got = run(mod, "int_to_half", [ints], [np.float16], code)
        want = np.array([fraction_to_bits(Fraction(int(v)), 10, 5, mode) for v in ints], np.uint16)
        assert_same_bits(got, want.view(np.float16), f"__int2half_{mode}")
        got = run(mod, "ll_to_bfloat16", [lls], [np.uint16], code)
        want = np.array([fraction_to_bits(Fraction(int(v)), 7, 8, mode) for v in lls], np.uint16)
        assert_same_bits(got, want, f"__ll2bfloat16_{mode}")


def python_to_int(x: float, mode: str, bits: int, signed: bool) -> int:
    """CUDA's float-to-integer conversion, as an unsigned bit pattern: round, saturate;
    NaN is 0, or 2^63 for 64 bits."""
    if math.isnan(x):
        return (1 << 63) if bits == 64 else 0
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if math.isinf(x):
        return (hi if x > 0 else lo) % 2**bits
    r = {RZ: math.trunc, RD: math.floor, RU: math.ceil, RN: round}[mode](x)  # round(): to even
    return min(max(r, lo), hi) % 2**bits


def as_patterns(values: np.ndarray, bits: int) -> list[int]:
    return [int(v) % 2**bits for v in values.tolist()]


def test_half_and_bfloat16_to_integers(mod):
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    rn, rz, rd, ru, ll, u = run(mod, "half_to_ints", [h],
                                [np.int32, np.int32, np.int32, np.int32, np.int64, np.uint32])
    values = h.astype(np.float64).tolist()
    for got, mode, bits, signed in ((rn, RN, 32, True), (rz, RZ, 32, True), (rd, RD, 32, True),
                                    (ru, RU, 32, True), (ll, RZ, 64, True), (u, RZ, 32, False)):
        want = [python_to_int(v, mode, bits, signed) for v in values]
        assert as_patterns(got, bits) == want, (mode, bits, signed)
    b = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    rz, ll, us = run(mod, "bfloat16_to_ints", [b], [np.int32, np.int64, np.uint16])
    values = np.where(bf16_is_nan(b), np.nan, bf16_to_f64(b)).tolist()
    assert as_patterns(rz, 32) == [python_to_int(v, RZ, 32, True) for v in values]
    assert as_patterns(ll, 64) == [python_to_int(v, RZ, 64, True) for v in values]
    assert as_patterns(us, 16) == [python_to_int(v, RZ, 16, False) for v in values]


# ---------------------------------------------------------------------------------------
# Half and bfloat16 arithmetic

BINARY_NAMES = ["+", "-", "*", "/", "__hadd", "__hsub", "__hmul", "__hdiv", "+=", "-=", "*=", "/="]


def random_half_bits(n: int) -> np.ndarray:
    return RNG.integers(0, 1 << 16, n, dtype=np.uint32).astype(np.uint16)


def test_half_arithmetic_matches_numpy(mod):
    """NumPy computes float16 arithmetic in float32 and rounds once, which is correctly
    rounded (float has 24 >= 2·11 + 2 bits); the emulator must agree bit for bit."""
    sa, sb = all_pairs(half_specials())
    a = np.concatenate([sa, random_half_bits(1 << 17).view(np.float16)])
    b = np.concatenate([sb, random_half_bits(1 << 17).view(np.float16)])
    with np.errstate(all="ignore"):
        wants = [a + b, a - b, a * b, a / b]
    for op, name in enumerate(BINARY_NAMES):
        got = run(mod, "half_binary", [a, b], [np.float16], op)
        assert_same_bits(got, wants[op % 4], name)


def bf16_binary_reference(a: np.ndarray, b: np.ndarray, op: int) -> np.ndarray:
    """Exact rational result rounded once; zeros, infinities and NaN (whose signs and
    classes float64 gets right) from float64."""
    x, y = bf16_to_f64(a), bf16_to_f64(b)
    x = np.where(bf16_is_nan(a), np.nan, x)
    y = np.where(bf16_is_nan(b), np.nan, y)
    with np.errstate(all="ignore"):
        f64 = [x + y, x - y, x * y, x / y][op]
    want = round_by_table(f64, BF16_TABLE, RN)
    for k in np.flatnonzero(np.isfinite(f64) & (f64 != 0)):
        fx, fy = Fraction(float(x[k])), Fraction(float(y[k]))
        exact = [fx + fy, fx - fy, fx * fy, fx / fy if fy else None][op]
        want[k] = fraction_to_bits(exact, 7, 8, RN)
    return want


def test_bfloat16_arithmetic_is_correctly_rounded(mod):
    sa, sb = all_pairs(bf16_specials())
    a_random = random_half_bits(3000)
    # Exponents within three binades of a's, so that sums round non-trivially.
    exponent = (a_random & 0x7F80).astype(np.int64) + 0x80 * RNG.integers(-3, 4, 3000)
    b_random = (random_half_bits(3000) & 0x807F) | np.clip(exponent, 0, 0x7F00).astype(np.uint16)
    a = np.concatenate([sa, a_random])
    b = np.concatenate([sb, b_random])
    for op, name in enumerate(BINARY_NAMES):
        got = run(mod, "bfloat16_binary", [a, b], [np.uint16], op)
        assert_same_bits(got, bf16_binary_reference(a, b, op % 4), f"bf16 {name}")


def test_half_max_min_semantics(mod):
    a, b = all_pairs(half_specials())
    fa, fb = a.astype(np.float64), b.astype(np.float64)
    nan_a, nan_b = np.isnan(fa), np.isnan(fb)
    either_nan = nan_a | nan_b
    with np.errstate(invalid="ignore"):
        # NaN loses (signalling or quiet; np.fmax would return NaN for a signalling one),
        # +0 > -0, both NaN give NaN.
        bigger = np.where(fa == fb, np.where(np.signbit(fa), fb, fa), np.where(fa > fb, fa, fb))
        smaller = np.where(fa == fb, np.where(np.signbit(fa), fa, fb), np.where(fa < fb, fa, fb))
    bigger = np.where(nan_a, fb, np.where(nan_b, fa, bigger))
    smaller = np.where(nan_a, fb, np.where(nan_b, fa, smaller))
    wants = {12: bigger, 13: smaller, 14: np.where(either_nan, np.nan, bigger),
             15: np.where(either_nan, np.nan, smaller)}
    for op, want in wants.items():
        got = run(mod, "half_binary", [a, b], [np.float16], op)
        assert_same_bits(got, want.astype(np.float16), f"op {op}", 0x7FFF)
    got = run(mod, "bfloat16_binary", [f64_to_bf16(fa), f64_to_bf16(fb)], [np.uint16], 12)
    assert_same_bits(got, f64_to_bf16(bigger), "bf16 __hmax", 0x7FFF)


def fma_cases(mantissa_bits: int, table: np.ndarray) -> tuple:
    """float64 triples of values of the format `table` lists: random ones; products that
    are exactly a midpoint of the format plus the smallest subnormal either side (where
    rounding a·b + c to double first would round wrongly); and c = -a·b rounded to
    float64 (near-cancellations, once the caller rounds c to the format)."""
    n = 4000
    finite = table[:-1]
    values = np.concatenate([finite, -finite])
    a, b, c = (values[RNG.integers(0, len(values), n)] for _ in range(3))
    # (1 + 2^-m)·1.5 = 1.5 + 2^-m + 2^-(m+1) needs one bit more than the format has.
    m = mantissa_bits
    rows = [(s * (1 + j * 2.0**-m), 1.5 * 2.0**k, t * finite[1])
            for k in range(-4, 5) for s in (1, -1) for j in (1, 3, 5) for t in (1, -1)]
    x, y, z = np.array(rows).T
    return (np.concatenate([a, x, a]), np.concatenate([b, y, b]), np.concatenate([c, z, -a * b]))


def exact_fma_reference(a, b, c, mant_bits, exp_bits, rounder) -> np.ndarray:
    with np.errstate(all="ignore"):
        f64 = a * b + c
        want = rounder(f64)
    for k in np.flatnonzero(np.isfinite(f64) & np.isfinite(a) & np.isfinite(b) & np.isfinite(c)):
        exact = Fraction(float(a[k])) * Fraction(float(b[k])) + Fraction(float(c[k]))
        if exact != 0:
            want[k] = fraction_to_bits(exact, mant_bits, exp_bits, RN)
    return want


def test_hfma_is_correctly_rounded(mod):
    with np.errstate(over="ignore"):  # c = -a·b overflows for some rows: fine
        a, b, c = (v.astype(np.float16) for v in fma_cases(10, HALF_TABLE))
    got = run(mod, "half_fma", [a, b, c], [np.float16])
    want = exact_fma_reference(a.astype(np.float64), b.astype(np.float64), c.astype(np.float64),
                               10, 5, lambda f: f.astype(np.float16).view(np.uint16))
    assert_same_bits(got, want.view(np.float16), "__hfma")


def test_bfloat16_hfma_is_correctly_rounded(mod):
    a, b, c = (f64_to_bf16(v) for v in fma_cases(7, BF16_TABLE))
    got = run(mod, "bfloat16_fma", [a, b, c], [np.uint16])
    want = exact_fma_reference(bf16_to_f64(a), bf16_to_f64(b), bf16_to_f64(c), 7, 8, f64_to_bf16)
    assert_same_bits(got, want, "bf16 __hfma")


half_bits = st.integers(0, 0xFFFF).map(lambda v: np.uint16(v))


@settings(max_examples=25)
@given(st.lists(st.tuples(half_bits, half_bits, half_bits), min_size=1, max_size=64))
def test_hfma_property(mod, triples):
    a, b, c = (np.array(col, np.uint16).view(np.float16) for col in zip(*triples))
    got = run(mod, "half_fma", [a, b, c], [np.float16])
    want = exact_fma_reference(a.astype(np.float64), b.astype(np.float64), c.astype(np.float64),
                               10, 5, lambda f: f.astype(np.float16).view(np.uint16))
    assert_same_bits(got, want.view(np.float16), "__hfma")


def test_pair_operations_agree_with_the_scalar_ones(mod):
    a, b, c = (random_half_bits(4096).view(np.float16) for _ in range(3))
    n = len(a) // 2
    s, p, q, f, lows = run(mod, "half2_ops", [a, b, c],
                           [np.float16, np.float16, np.float16, np.float16, np.float32], n=n)
    with np.errstate(all="ignore"):
        assert_same_bits(s, a + b, "half2 +")
        assert_same_bits(p, a * b, "__hmul2")
        assert_same_bits(q, a / b, "half2 /")
    assert_same_bits(f, run(mod, "half_fma", [a, b, c], [np.float16]), "__hfma2")
    with np.errstate(invalid="ignore"):
        assert_same_bits(lows[:n], 2 * a[0::2].astype(np.float32), "__low2float")
    a, b, c = (random_half_bits(4096) for _ in range(3))
    s, f = run(mod, "bfloat162_ops", [a, b, c], [np.uint16, np.uint16], n=n)
    assert_same_bits(s, run(mod, "bfloat16_binary", [a, b], [np.uint16], 4), "bf16 __hadd2")
    assert_same_bits(f, run(mod, "bfloat16_fma", [a, b, c], [np.uint16]), "bf16 __hfma2")


UNARY = [("hexp", np.exp), ("hexp2", np.exp2), ("hexp10", lambda x: 10.0**x), ("hlog", np.log),
         ("hlog2", np.log2), ("hlog10", np.log10), ("hsin", np.sin), ("hcos", np.cos),
         ("hsqrt", np.sqrt), ("hrcp", lambda x: 1 / x), ("hfloor", np.floor), ("hceil", np.ceil),
         ("htrunc", np.trunc), ("hrint", np.rint), ("__habs", np.abs), ("__hneg", np.negative),
         ("unary -", np.negative)]


def test_half_math_on_every_input(mod):
    """sqrt and 1/x in double then rounded are correctly rounded (Figueroa's theorem);
    the libm functions are checked against NumPy's float64 ones rounded once, which they
    match on every half input."""
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    x64 = x.astype(np.float64)
    for fn, (name, ref) in enumerate(UNARY):
        with np.errstate(all="ignore"):
            want = ref(x64).astype(np.float16)
        assert_same_bits(run(mod, "half_unary", [x], [np.float16], fn), want, name)


def test_bfloat16_math_on_every_input(mod):
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    x64 = np.where(bf16_is_nan(x), np.nan, bf16_to_f64(x))
    for fn, (name, ref) in enumerate(UNARY):
        with np.errstate(all="ignore"):
            want = f64_to_bf16(ref(x64))
        assert_same_bits(run(mod, "bfloat16_unary", [x], [np.uint16], fn), want, f"bf16 {name}")


def check_rsqrt_correctly_rounded(x64: np.ndarray, got64: np.ndarray, next_up, next_down):
    """1/sqrt(x) lies strictly between the midpoints m_lo < m_hi around the result, that
    is m_lo²·x < 1 < m_hi²·x (no tie is possible: 1/sqrt(x) of a dyadic x is a power of
    two or irrational). The products are exact in float64: at most 12 + 12 + 11 bits."""
    m_lo = (got64 + next_down) / 2
    m_hi = (got64 + next_up) / 2
    assert (m_lo * m_lo * x64 < 1).all() and (m_hi * m_hi * x64 > 1).all()


def test_hrsqrt_is_correctly_rounded_on_every_input(mod):
    positive = np.arange(1, 0x7C00, dtype=np.uint16)
    got = run(mod, "half_unary", [positive.view(np.float16)], [np.float16], len(UNARY))
    g = got.view(np.uint16)

    def as64(bits):
        return bits.view(np.float16).astype(np.float64)

    check_rsqrt_correctly_rounded(as64(positive), as64(g), as64(g + 1), as64(g - 1))
    got = run(mod, "bfloat16_unary", [np.arange(1, 0x7F80, dtype=np.uint16)], [np.uint16], len(UNARY))
    x = bf16_to_f64(np.arange(1, 0x7F80, dtype=np.uint16))
    check_rsqrt_correctly_rounded(x, bf16_to_f64(got), bf16_to_f64(got + 1), bf16_to_f64(got - 1))


COMPARISONS = ["==", "!=", "<", "<=", ">", ">=", "__heq", "__hne", "__hlt", "__hle", "__hgt",
               "__hge", "__hequ", "__hneu", "__hltu", "__hleu", "__hgtu", "__hgeu", "__hisnan"]


def expected_comparisons(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    unordered = np.isnan(x) | np.isnan(y)
    with np.errstate(invalid="ignore"):
        ordered = [x == y, (x < y) | (x > y), x < y, x <= y, x > y, x >= y]
    results = ([x == y, x != y] + ordered[2:] + ordered
               + [r | unordered for r in ordered] + [np.isnan(x)])
    return sum(r.astype(np.int64) << k for k, r in enumerate(results))


def test_comparisons_follow_ieee(mod):
    sa, sb = all_pairs(half_specials())
    a = np.concatenate([sa, random_half_bits(4096).view(np.float16)])
    b = np.concatenate([sb, random_half_bits(4096).view(np.float16)])
    got, isinf = run(mod, "half_compare", [a, b], [np.int32, np.int32])
    x, y = a.astype(np.float64), b.astype(np.float64)
    np.testing.assert_array_equal(got, expected_comparisons(x, y))
    np.testing.assert_array_equal(isinf, np.where(np.isinf(x), np.sign(x), 0))
    ba, bb = all_pairs(bf16_specials())
    got, isinf = run(mod, "bfloat16_compare", [ba, bb], [np.int32, np.int32])
    x = np.where(bf16_is_nan(ba), np.nan, bf16_to_f64(ba))
    y = np.where(bf16_is_nan(bb), np.nan, bf16_to_f64(bb))
    np.testing.assert_array_equal(got, expected_comparisons(x, y))
    np.testing.assert_array_equal(isinf, np.where(np.isinf(x), np.sign(x), 0))


# ---------------------------------------------------------------------------------------
# Float and double functions

FLOAT_SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.0, -1.0, 0.5,
                           3.4028235e38, 1e-38, 2.5, -2.5], np.float32)

# (kernel fn, reference on float64, max ulps, input sampler). The libm bounds are glibc's
# documented worst cases for these float functions; the fast __ intrinsics must give the
# same value as their libm counterparts (checked separately below).
FLOAT_UNARY = [
    (0, np.exp, 1, "exp"), (1, np.exp, 1, "exp"), (2, np.exp, 1, "exp"), (3, np.exp2, 1, "exp"),
    (4, lambda x: 10.0**x, 1, "exp"), (5, lambda x: 10.0**x, 1, "exp"), (6, np.log, 1, "log"),
    (7, np.log, 1, "log"), (8, np.log2, 1, "log"), (9, np.log10, 2, "log"), (10, np.sin, 1, "trig"),
    (11, np.cos, 1, "trig"), (12, np.tan, 2, "trig"), (13, np.sin, 1, "trig"),
    (14, np.cos, 1, "trig"), (15, np.tanh, 2, "wide"), (16, np.vectorize(math.erf), 2, "wide"),
    (17, np.sqrt, 0, "log"), (18, np.sqrt, 0, "log"), (19, np.sqrt, 0, "log"),
    (20, lambda x: 1 / x, 0, "wide"), (21, lambda x: 1 / np.sqrt(x), 1, "log"),
    (23, np.floor, 0, "wide"), (24, np.ceil, 0, "wide"), (25, np.trunc, 0, "wide"),
    (26, lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5), 0, "wide"), (27, np.rint, 0, "wide"),
    (28, np.abs, 0, "wide"),
]


def float_inputs(kind: str) -> np.ndarray:
    n = 20000
    sample = {
        "exp": RNG.uniform(-87, 88, n),
        "log": np.exp(RNG.uniform(-80, 80, n)),
        "trig": RNG.uniform(-100, 100, n),
        "wide": RNG.standard_normal(n) * 2.0 ** RNG.integers(-20, 20, n),
    }[kind]
    return np.concatenate([sample.astype(np.float32), FLOAT_SPECIALS])


def test_float_math_functions_are_within_their_libm_bounds(mod):
    for fn, ref, ulps, kind in FLOAT_UNARY:
        x = float_inputs(kind)
        got = run(mod, "float_unary", [x], [np.float32], fn)
        with np.errstate(all="ignore"):
            want = ref(x.astype(np.float64)).astype(np.float32)
        assert_within_ulps(got, want, ulps, f"float_unary {fn}")


def test_fast_intrinsics_compute_the_libm_value(mod):
    pairs = ((0, 1, "exp"), (4, 5, "exp"), (6, 7, "log"), (10, 29, "trig"), (11, 30, "trig"),
             (13, 29, "trig"), (14, 30, "trig"))
    for fast, exact, kind in pairs:
        x = float_inputs(kind)
        assert_same_bits(run(mod, "float_unary", [x], [np.float32], fast),
                         run(mod, "float_unary", [x], [np.float32], exact), f"fn {fast}")


def test_saturatef(mod):
    x = np.concatenate([float_inputs("wide"), [0.999999, 1.0000001, 1e-40]]).astype(np.float32)
    # NaN and -0 give +0.
    want = np.where(x > 0, np.minimum(x, 1), 0).astype(np.float32)
    assert_same_bits(run(mod, "float_unary", [x], [np.float32], 22), want, "__saturatef")


def test_float_binary_functions(mod):
    a = np.concatenate([RNG.standard_normal(5000) * 100, all_pairs(FLOAT_SPECIALS)[0]]).astype(np.float32)
    b = np.concatenate([RNG.standard_normal(5000) * 10, all_pairs(FLOAT_SPECIALS)[1]]).astype(np.float32)
    with np.errstate(all="ignore"):
        exact = {8: a + b, 9: a - b, 10: a * b, 11: a / b, 2: a / b, 3: a / b}
        for op, want in exact.items():
            assert_same_bits(run(mod, "float_binary", [a, b], [np.float32], op), want, f"op {op}")
        # fmin and fmax (and CUDA's min and max of floats) drop a NaN; either zero may come
        # out of (+0, -0).
        for op, want in ((4, np.fmin(a, b)), (5, np.fmax(a, b)), (6, np.fmin(a, b)), (7, np.fmax(a, b))):
            got = run(mod, "float_binary", [a, b], [np.float32], op)
            assert ((got == want) | (np.isnan(got) & np.isnan(want))).all(), f"op {op}"
    x = np.abs(a) + np.float32(0.5)
    with np.errstate(all="ignore"):
        want = np.power(x.astype(np.float64), b.astype(np.float64)).astype(np.float32)
    for op in (0, 1):
        assert_within_ulps(run(mod, "float_binary", [x, b], [np.float32], op), want, 1, f"pow {op}")


def random_floats(n: int) -> np.ndarray:
    """Floats of every magnitude, subnormals included."""
    return RNG.integers(0, 1 << 32, n, dtype=np.uint32).view(np.float32)


def exact_float_reference(op: int, mode: str, x: float, y: float, z: float) -> int:
    """uint32 bits of the correctly rounded float result of operation op of the kernel
    float_rounded: add, sub, mul, div, rcp, sqrt, fma."""
    operands = (x,) if op in (4, 5) else (x, y, z) if op == 6 else (x, y)
    with np.errstate(all="ignore"):
        x32, y32, z32 = np.float32(x), np.float32(y), np.float32(z)
        rn = [x32 + y32, x32 - y32, x32 * y32, x32 / y32, np.float32(1) / x32, np.sqrt(x32),
              np.float32(np.float64(x32) * np.float64(y32) + np.float64(z32))][op]
    # Infinite and NaN operands, division by zero, square roots of negatives and of zeros
    # give the same result in every mode.
    special = (not all(math.isfinite(v) for v in operands) or (op == 3 and y == 0)
               or (op == 4 and x == 0) or (op == 5 and x <= 0))
    if special:
        return int(rn.view(np.uint32))
    fx, fy, fz = (Fraction(v) if math.isfinite(v) else None for v in (x, y, z))
    if op == 5:
        return sqrt_bits(fx, mode)
    exact = [lambda: fx + fy, lambda: fx - fy, lambda: fx * fy, lambda: fx / fy, lambda: 1 / fx,
             None, lambda: fx * fy + fz][op]()
    if exact != 0:
        return fraction_to_bits(exact, 23, 8, mode)
    if op in (2, 3):
        return int(rn.view(np.uint32))  # a zero operand: the sign is the product of signs
    # An exact zero sum keeps the sign both addends share when they are zeros of the same
    # sign; otherwise it is -0 when rounding down and +0 in the other modes (IEEE 754 6.3).
    p, q = (x * y, z) if op == 6 else (x, y if op == 0 else -y)
    if p == 0 and q == 0 and math.copysign(1, p) == math.copysign(1, q):
        negative = math.copysign(1, p) < 0
    else:
        negative = mode == RD
    return 0x80000000 if negative else 0


def sqrt_bits(x: Fraction, mode: str) -> int:
    """The float square root of x > 0 in `mode`: the neighbours lo <= sqrt(x) <= hi among
    floats near float64's estimate, compared by their exact squares."""
    r = np.float32(math.sqrt(float(x)))
    below = np.nextafter(r, np.float32(0))
    above = np.nextafter(r, np.float32(np.inf))
    candidates = sorted({float(below), float(r), float(above), float(np.nextafter(below, np.float32(0))),
                         float(np.nextafter(above, np.float32(np.inf)))})
    lo = max(c for c in candidates if Fraction(c) ** 2 <= x)
    hi = min(c for c in candidates if Fraction(c) ** 2 >= x)
    if lo == hi:
        return int(np.float32(lo).view(np.uint32))
    if mode in (RZ, RD):
        pick = lo
    elif mode == RU:
        pick = hi
    else:
        mid = (Fraction(lo) + Fraction(hi)) / 2
        pick = lo if mid**2 > x else hi  # never a tie: a float's square root is no midpoint
    return int(np.float32(pick).view(np.uint32))


def test_float_arithmetic_in_every_rounding_mode(mod):
    n = 1500
    x, y, z = random_floats(n), random_floats(n), random_floats(n)
    # Sums that cancel exactly or nearly, and operands of close magnitude.
    y[:100] = -x[:100]
    y[100:300] = (x[100:300] * np.float32(1.0000001)).astype(np.float32)
    with np.errstate(over="ignore"):
        z[300:400] = -(x[300:400].astype(np.float64) * y[300:400]).astype(np.float32)
    z[400:500] = 0
    x[500:520] = 0
    for op in range(7):
        for mode, code in DIRECTED_CODE.items():
            got = run(mod, "float_rounded", [x, y, z], [np.float32], 4 * op + code)
            want = np.array([exact_float_reference(op, mode, float(a), float(b), float(c))
                             for a, b, c in zip(x, y, z)], np.uint32)
            assert_same_bits(got.view(np.uint32), want, f"op {op} {mode}")


def test_double_to_float_in_every_rounding_mode(mod):
    x = np.concatenate([RNG.standard_normal(3000) * 2.0 ** RNG.integers(-160, 140, 3000),
                        [np.inf, -np.inf, np.nan, 1e300, -1e300, 1e-300, -0.0, 3.4028235677973366e38,
                         3.4028235677973362e38, 2.0**-150, 2.0**-149 * 1.5]])
    for mode, code in DIRECTED_CODE.items():
        got = run(mod, "double_to_float", [x], [np.float32], code)
        want = np.array([fraction_to_bits(Fraction(v), 23, 8, mode, math.copysign(1, v) < 0)
                         if math.isfinite(v) else int(np.float32(v).view(np.uint32)) for v in x],
                        np.uint32)
        assert_same_bits(got.view(np.uint32), want, f"__double2float_{mode}", 0x7FFFFFFF)


def integer_bits(values: np.ndarray, mant_bits: int, exp_bits: int, mode: str) -> np.ndarray:
    bits = [fraction_to_bits(Fraction(int(v)), mant_bits, exp_bits, mode) for v in values]
    return np.array(bits, np.uint32 if exp_bits == 8 else np.uint64)


def test_integers_to_float_and_double_in_every_rounding_mode(mod):
    n = 3000
    ll = RNG.integers(-(2**63), 2**63 - 1, n, dtype=np.int64) >> RNG.integers(0, 63, n)
    ll[:4] = [2**60 + 2**36 + 1, 2**60 + 2**36, -(2**63), 2**53 + 1]
    u = RNG.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    u[:2] = [2**64 - 1, 2**63 + 2**39]
    k = (ll >> 32).astype(np.int32)
    for mode, code in DIRECTED_CODE.items():
        ll_f, ll_d, ull_f, int_f = run(mod, "integer_to_floating", [ll, u, k],
                                       [np.float32, np.float64, np.float32, np.float32], code)
        assert_same_bits(ll_f.view(np.uint32), integer_bits(ll, 23, 8, mode), f"__ll2float_{mode}")
        assert_same_bits(ull_f.view(np.uint32), integer_bits(u, 23, 8, mode), f"__ull2float_{mode}")
        assert_same_bits(int_f.view(np.uint32), integer_bits(k, 23, 8, mode), f"__int2float_{mode}")
        assert_same_bits(ll_d.view(np.uint64), integer_bits(ll, 52, 11, mode), f"__ll2double_{mode}")


def test_double_rn_operations(mod):
    a, b, c = (RNG.standard_normal(3000) * 2.0 ** RNG.integers(-60, 60, 3000) for _ in range(3))
    c[:500] = -(a[:500] * b[:500])  # fma recovers the product's rounding error
    s, p, f = run(mod, "double_ops", [a, b, c], [np.float64, np.float64, np.float64])
    np.testing.assert_array_equal(s, a + b)
    np.testing.assert_array_equal(p, a * b)
    want = [float(Fraction(x) * Fraction(y) + Fraction(z)) for x, y, z in zip(a, b, c)]
    np.testing.assert_array_equal(f, want)


INT_SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997,
                2.0**31, -(2.0**31), 2.0**31 - 128, 3e9, -3e9, 2.0**32, 4294967040.0, 2.0**63,
                -(2.0**63), 2.0**64, 1e20, -1e20, -1.0, 1e-45, 8388609.0, 16777217.0]


def check_float_to_integers(mod, kernel: str, x: np.ndarray):
    for mode, code in DIRECTED_CODE.items():
        outs = run(mod, kernel, [x], [np.int32, np.uint32, np.int64, np.uint64], code)
        for got, bits, signed in zip(outs, (32, 32, 64, 64), (True, False, True, False)):
            want = [python_to_int(float(v), mode, bits, signed) for v in x]
            assert as_patterns(got, bits) == want, (kernel, mode, bits, signed)


def test_float_to_integer_conversions_saturate(mod):
    check_float_to_integers(mod, "float_to_integers", np.array(INT_SPECIALS, np.float32))
    check_float_to_integers(mod, "double_to_integers", np.array(INT_SPECIALS + [2.0**31 - 0.5,
                                                                                 -(2.0**31) - 0.5,
                                                                                 4294967295.5],
                                                                np.float64))


@settings(max_examples=20)
@given(st.lists(st.floats(width=32), min_size=1, max_size=64))
def test_float_to_integer_property(mod, values):
    check_float_to_integers(mod, "float_to_integers", np.array(values, np.float32))


def test_reinterpretation(mod):
    f = random_floats(1000)
    d = RNG.integers(0, 2**64 - 1, 1000, dtype=np.uint64, endpoint=True).view(np.float64)
    outs = run(mod, "reinterpret", [f, d],
               [np.int32, np.float32, np.int64, np.int32, np.int32, np.float64, np.uint32])
    f_as_int, round_trip, d_as_ll, hi, lo, rebuilt, f_as_uint = outs
    np.testing.assert_array_equal(f_as_int, f.view(np.int32))
    np.testing.assert_array_equal(f_as_uint, f.view(np.uint32))
    assert_same_bits(round_trip, f + np.float32(0), "__int_as_float")
    np.testing.assert_array_equal(d_as_ll, d.view(np.int64))
    np.testing.assert_array_equal(hi, (d.view(np.uint64) >> 32).astype(np.uint32).view(np.int32))
    np.testing.assert_array_equal(lo, d.view(np.uint64).astype(np.uint32).view(np.int32))
    assert_same_bits(rebuilt, d + 0.0, "__hiloint2double")


# ---------------------------------------------------------------------------------------
# Integer intrinsics


def s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def s64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def byte_perm(x: int, y: int, s: int) -> int:
    source = x | y << 32
    return sum(((source >> (8 * ((s >> (4 * n)) & 7))) & 0xFF) << (8 * n) for n in range(4))


def signed24(v: int) -> int:
    v &= 0xFFFFFF
    return v - (1 << 24) if v >> 23 else v


def dp4a(a: int, b: int, c: int, signed: bool) -> int:
    def byte(v, n):
        v = (v >> (8 * n)) & 0xFF
        return v - 256 if signed and v >> 7 else v

    return c + sum(byte(a, n) * byte(b, n) for n in range(4))


BIT_OPS = [
    lambda a, b, c: a.bit_count(),
    lambda a, b, c: 32 - a.bit_length(),
    lambda a, b, c: (a & -a).bit_length(),
    lambda a, b, c: int(f"{a:032b}"[::-1], 2),
    byte_perm,
    lambda a, b, c: ((b << 32 | a) << (c & 31)) >> 32,
    lambda a, b, c: ((b << 32 | a) << min(c, 32)) >> 32,
    lambda a, b, c: (b << 32 | a) >> (c & 31),
    lambda a, b, c: (b << 32 | a) >> min(c, 32),
    lambda a, b, c: signed24(a) * signed24(b),
    lambda a, b, c: (a & 0xFFFFFF) * (b & 0xFFFFFF),
    lambda a, b, c: (s32(a) * s32(b)) >> 32,
    lambda a, b, c: (a * b) >> 32,
    lambda a, b, c: abs(s32(a) - s32(b)) + c,
    lambda a, b, c: abs(a - b) + c,
    lambda a, b, c: (s32(a) + s32(b)) >> 1,
    lambda a, b, c: (s32(a) + s32(b) + 1) >> 1,
    lambda a, b, c: (a + b) >> 1,
    lambda a, b, c: (a + b + 1) >> 1,
    lambda a, b, c: dp4a(a, b, s32(c), True),
    lambda a, b, c: dp4a(a, b, c, False),
    lambda a, b, c: min(s32(a), s32(b)),
    lambda a, b, c: max(s32(a), s32(b)),
    lambda a, b, c: min(a, b),
    lambda a, b, c: max(a, b),
    lambda a, b, c: min(a, b),
]

BIT_OPS64 = [
    lambda a, b: a.bit_count(),
    lambda a, b: 64 - a.bit_length(),
    lambda a, b: (a & -a).bit_length(),
    lambda a, b: int(f"{a:064b}"[::-1], 2),
    lambda a, b: (s64(a) * s64(b)) >> 64,
    lambda a, b: (a * b) >> 64,
    lambda a, b: min(s64(a), s64(b)),
    lambda a, b: max(s64(a), s64(b)),
    lambda a, b: min(a, b),
    lambda a, b: max(a, b),
]


def test_integer_intrinsics_match_python(mod):
    edges = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x00800000, 0x00FFFFFF, 0x01000000,
             0x12345678, 31, 32, 33, 64]
    a, b = (np.array(v, np.uint32) for v in zip(*[(x, y) for x in edges for y in edges]))
    a = np.concatenate([a, RNG.integers(0, 1 << 32, 2000, dtype=np.uint32)])
    b = np.concatenate([b, RNG.integers(0, 1 << 32, 2000, dtype=np.uint32)])
    c = np.concatenate([b[::-1][: len(b) - 2000], RNG.integers(0, 70, 1000, dtype=np.uint32),
                        RNG.integers(0, 1 << 32, 1000, dtype=np.uint32)])
    for op, ref in enumerate(BIT_OPS):
        got = run(mod, "bit_ops", [a, b, c], [np.uint32], op)
        want = [ref(int(x), int(y), int(z)) % 2**32 for x, y, z in zip(a, b, c)]
        assert got.tolist() == want, f"bit op {op}"
    edges64 = [0, 1, 2**63, 2**64 - 1, 2**63 - 1, 2**32, 0x123456789ABCDEF0]
    x, y = (np.array(v, np.uint64) for v in zip(*[(p, q) for p in edges64 for q in edges64]))
    x = np.concatenate([x, RNG.integers(0, 2**64 - 1, 2000, dtype=np.uint64, endpoint=True)])
    y = np.concatenate([y, RNG.integers(0, 2**64 - 1, 2000, dtype=np.uint64, endpoint=True)])
    for op, ref in enumerate(BIT_OPS64):
        got = run(mod, "bit_ops64", [x, y], [np.uint64], op)
        want = [ref(int(p), int(q)) % 2**64 for p, q in zip(x, y)]
        assert got.tolist() == want, f"bit op64 {op}"
