"""FlashAttention forward and backward on the CPU, compiled with Numba.

Mirrors :mod:`spec.attention.tiled` (same signatures, same return types, same
semantics): query tiles of ``tile_t`` rows stream over key tiles of ``tile_s`` keys
with the online softmax (Dao, 2023, "FlashAttention-2", Algorithms 1 and 2). Only the
arithmetic is arranged differently, for speed:

* **Panels of 64, register-blocked products.** Every tile operand is copied into a
  zero-padded buffer laid out ``X_PRW[panel, row, lane]``: columns in panels of
  ``W = 64`` lanes, rows padded to a multiple of 4. The matrix-product helpers
  (:func:`_mm_nn`, :func:`_mm_tn`, :func:`_mm_nn_plain`) hold a 4-row x 64-lane
  block of the result in 16 vector values of ``L = 16`` lanes for the whole reduction
  (a small explicit-SIMD layer: a Numba type whose LLVM representation is
  ``<16 x float>``, with load, store, fma, mul and add intrinsics), so the block stays
  in zmm registers instead of being loaded and stored per reduction step, as LLVM's
  loop and SLP vectorisers did not manage from scalar code (measured on one Zen 4
  core, 64x64x64: about 115 GFLOP/s against about 60 for the former scalar-written kernel).
* **Rounding: fma where it is safe, plain sequential sums where it is not.** ``fastmath``
  stays off (no reassociation, no NaN/inf assumptions, no contraction flag); fused
  multiply-adds are explicit calls of ``llvm.fma`` (one rounding, deterministic).
  :func:`_mm_nn` and :func:`_mm_tn` sum c ← fma(a, b, c) in the order of the
  reduction index (P·V, dV, dK, dQ). The scores (q·k) and dP = v·dO use
  :func:`_mm_nn_plain` instead: plain products added one at a time in the order of
  the reduction index, because there the rounding is amplified (exp of logits of
  order 30 and more; the cancellation dP - Δ). Measured against the conformance
  suite's rounding-order baselines (the spec run on inputs with permuted axes): one
  long fma chain failed the tolerance on such problems, and so did blocks of 4
  summed as a pairwise tree (an association no permutation of a sequential sum
  reaches; e.g. 3.7x the spec's error on a D=4, logit-30 float64 problem), while
  the sequential order passed 4000 of 4000 drawn checks. The float32 ``exp``
  evaluates its polynomial with fma.
* **Transposed scores.** Scores are computed as ``score_ST = k q^T`` (keys in rows,
  queries in lanes), so the per-query statistics of the online softmax (running max,
  denominator, lse, Δ) are element-wise over lanes and vectorise, instead of being
  horizontal reductions along a row, which LLVM does not vectorise without fast-math.
* **A vectorisable exp for float32.** There is no SVML here, so ``math.exp`` in a loop
  is a scalar libm call per element; :func:`_exp` uses Cephes' ``expf`` (range
  reduction plus a degree-5 polynomial, about 1 ulp) for float32, and ``math.exp``
  for float64.

* **One tile step, shared.** The online-softmax step of a query tile over a list of key
  tiles (:func:`_attend_tiles`) and the backward's step of one (query tile, key tile)
  pair (:func:`_backward_tile`) are inlined helpers used by this module's kernels, the
  packed forward (:mod:`backends.cpu.varlen`) and block-sparse attention
  (:mod:`backends.cpu.block_sparse`, which visits only a layout's kept tiles and adds
  a scalar bias per tile); they differ only in which tiles they visit, so they round
  alike. Numba's ``cache=True`` checks only the source file of the cached function:
  after editing these helpers, clear the other modules' cached kernels
  (``backends/cpu/__pycache__/*.nbi``) or they run the old code.

* **Positions fused, never a T x S array.** RoPE rotates q and k while their tiles are
  copied into the panel buffers (:func:`_load_tile`; keys once per call, each query
  tile once), reading the spec's cos/sin tables; ALiBi's -(m_h · f(|i - j|)) is formed
  in the score loop from the slopes and a table of f by signed distance
  (:func:`_visible_scores`). The options travel as arrays that are empty when off
  (:class:`Fused`), so plain and positional calls share one compiled kernel per dtype.

Padding contributes exact zeros (0·0 = 0) and padded keys are masked, so it changes no
result. NaN propagation and -inf masking are untouched: no fast-math flag is set
anywhere, and fma propagates NaN and infinities as a product and a sum do.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

from backends.cpu._alloc import contiguous, poisoned_empty
from backends.cpu.rope import position_tables, rotate_qk_rows, rotate_row
from spec.attention.checks import (
    check_attention_inputs,
    check_backward_inputs,
    check_scale,
    check_tile,
)
from spec.attention.naive import AttentionOut
from spec.attention.positional import Positions, check_positions, penalty_table
from spec.attention.tiled import AttentionGrads
from spec.position.rope import RoPE

W = 64
"""Lanes per panel: the compile-time length of every innermost loop (see module doc)."""

_DQ_CHUNKS = 4
"""The backward splits each head's key tiles into this many interleaved chunks, each
with its own dq accumulator, so that the key-tile-parallel loop has no write race on
dq; the chunks are summed in a fixed order, so the result does not depend on the
number of threads."""

_SUPPORTED = (np.dtype(np.float32), np.dtype(np.float64))


# ------------------------------------------------------------- explicit SIMD

L = 16
"""Lanes per vector register value (a float32 zmm register; two for float64)."""


class _Vec(types.Type):
    """L lanes of a float dtype held as one LLVM vector value (in registers, not memory)."""

    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(name=f"vec{L}({dtype})")


@register_model(_Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elem = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(elem, L))


def _lanes_ptr(context, builder, arrty, arr, n0):
    data = context.make_array(arrty)(context, builder, arr).data
    vty = ir.VectorType(context.get_value_type(arrty.dtype), L)
    return builder.bitcast(builder.gep(data, [n0]), vty.as_pointer())


def _is_row(arr):
    return (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"
            and arr.dtype in (types.float32, types.float64))


@intrinsic
def _vload(typingctx, row, n0):
    """row[n0 : n0 + L] as one vector value (row: a C-contiguous 1-D float array)."""
    if not (_is_row(row) and isinstance(n0, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _lanes_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load(ptr, align=sig.args[0].dtype.bitwidth // 8)

    return _Vec(row.dtype)(row, n0), codegen


@intrinsic
def _vstore(typingctx, row, n0, vec):
    """row[n0 : n0 + L] = vec."""
    if not (_is_row(row) and isinstance(n0, types.Integer) and vec == _Vec(row.dtype)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _lanes_ptr(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], ptr, align=sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(row, n0, vec), codegen


@intrinsic
def _vzero(typingctx, x):
    """A vector of zeros of x's float type."""
    if x not in (types.float32, types.float64):
        return None

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(sig.return_type), None)

    return _Vec(x)(x), codegen


def _fma_function(builder, ty):
    """The llvm.fma intrinsic for a float or vector type: a·b + c with one rounding."""
    elem = ty.element if isinstance(ty, ir.VectorType) else ty
    suffix = "f32" if isinstance(elem, ir.FloatType) else "f64"
    if isinstance(ty, ir.VectorType):
        suffix = f"v{ty.count}{suffix}"
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ty, [ty, ty, ty]), f"llvm.fma.{suffix}")


@intrinsic
def _vfma(typingctx, a, x, acc):
    """acc + a·x lane by lane with one rounding (llvm.fma); a is a scalar, broadcast."""
    if not (isinstance(x, _Vec) and acc == x and a == x.dtype):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(sig.args[1])
        undef = ir.Constant(vty, ir.Undefined)
        a_v = builder.insert_element(undef, args[0], ir.Constant(ir.IntType(32), 0))
        a_v = builder.shuffle_vector(
            a_v, undef, ir.Constant(ir.VectorType(ir.IntType(32), L), [0] * L))
        return builder.call(_fma_function(builder, vty), [a_v, args[1], args[2]])

    return x(a, x, acc), codegen


def _broadcast(builder, vty, x):
    undef = ir.Constant(vty, ir.Undefined)
    x_v = builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(x_v, undef, ir.Constant(ir.VectorType(ir.IntType(32), L), [0] * L))


@intrinsic
def _vmul(typingctx, a, x):
    """a·x lane by lane (a scalar, broadcast), rounded once as a plain product."""
    if not (isinstance(x, _Vec) and a == x.dtype):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(sig.args[1])
        return builder.fmul(_broadcast(builder, vty, args[0]), args[1])

    return x(a, x), codegen


@intrinsic
def _vadd(typingctx, x, y):
    """x + y lane by lane."""
    if not (isinstance(x, _Vec) and x == y):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return x(x, y), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a·b + c with one rounding (llvm.fma), scalar."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, sig, args):
        return builder.call(_fma_function(builder, context.get_value_type(a)), args)

    return a(a, a, a), codegen


# --------------------------------------------------------------------------- exp


@intrinsic
def _bits_as_float32(typingctx, bits):
    """Reinterpret the bits of an int32 as a float32 (used to build 2**n)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


_F32_LOG2E = np.float32(1.44269504088896341)
_F32_LN2_HI = np.float32(0.693359375)
_F32_LN2_LO = np.float32(-2.12194440e-4)
_F32_LO = np.float32(-87.3)  # below this exp underflows float32's normal range
_F32_HI = np.float32(88.0)  # above this 2**n overflows; softmax arguments are <= 0
_F32_P = tuple(
    np.float32(c)
    for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
              4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
)


def _exp(x):
    """exp(x) in the dtype of x; compiled only (see the overload below)."""
    raise NotImplementedError("_exp is a Numba overload stub")


@overload(_exp)
def _exp_overload(x):
    if x == types.float64:
        def exp_f64(x):
            return math.exp(x)
        return exp_f64
    if x == types.float32:
        zero, half, one = np.float32(0.0), np.float32(0.5), np.float32(1.0)
        p0, p1, p2, p3, p4, p5 = _F32_P

        def exp_f32(x):
            # Cephes expf: exp(x) = 2**n · exp(r), n = round(x / ln 2), |r| <= ln2 / 2.
            # Branch-free so that a loop over it vectorises; NaN stays NaN through r,
            # and x below _F32_LO (including -inf) gives exactly 0.
            xc = _F32_HI if x > _F32_HI else x
            xc = _F32_LO if xc < _F32_LO else xc
            n = np.floor(_fma(xc, _F32_LOG2E, half))
            n = zero if n != n else n  # NaN would make the int conversion undefined
            r = _fma(n, -_F32_LN2_HI, xc)
            r = _fma(n, -_F32_LN2_LO, r)
            z = r * r
            y = _fma(_fma(_fma(_fma(_fma(p0, r, p1), r, p2), r, p3), r, p4), r, p5)
            y = _fma(y, z, r) + one
            two_n = _bits_as_float32(np.int32((np.int32(n) + np.int32(127)) << 23))
            e = y * two_n
            return zero if x < _F32_LO else e
        return exp_f32
    return None


def _like(x, value):
    """``value`` as a scalar of x's float type; compiled only (see the overload below)."""
    raise NotImplementedError("_like is a Numba overload stub")


@overload(_like)
def _like_overload(x, value):
    # Python float constants would promote float32 arithmetic to float64 in Numba.
    if x == types.float32:
        return lambda x, value: np.float32(value)
    if x == types.float64:
        return lambda x, value: np.float64(value)
    return None


@njit(inline="always")
def _nanmax(a, b):
    """max(a, b) that returns NaN if either is NaN, as np.max does (branch-free)."""
    return a if (a > b or a != a) else b


# ---------------------------------------------------------------- tile products


@njit(inline="always")
def _block_start(c0, c1, c2, c3, accumulate):
    """A 4-row x W-lane block of c (rows c0..c3) as 16 vectors: its values, or zeros."""
    if accumulate:
        return (_vload(c0, 0), _vload(c0, L), _vload(c0, 2 * L), _vload(c0, 3 * L),
                _vload(c1, 0), _vload(c1, L), _vload(c1, 2 * L), _vload(c1, 3 * L),
                _vload(c2, 0), _vload(c2, L), _vload(c2, 2 * L), _vload(c2, 3 * L),
                _vload(c3, 0), _vload(c3, L), _vload(c3, 2 * L), _vload(c3, 3 * L))
    zv = _vzero(c0[0])
    return (zv, zv, zv, zv, zv, zv, zv, zv, zv, zv, zv, zv, zv, zv, zv, zv)


@njit(inline="always")
def _block_store(c0, c1, c2, c3, y00, y01, y02, y03, y10, y11, y12, y13,
                 y20, y21, y22, y23, y30, y31, y32, y33):
    """Write the 16 vectors of :func:`_block_start` back to rows c0..c3."""
    _vstore(c0, 0, y00), _vstore(c0, L, y01), _vstore(c0, 2 * L, y02), _vstore(c0, 3 * L, y03)
    _vstore(c1, 0, y10), _vstore(c1, L, y11), _vstore(c1, 2 * L, y12), _vstore(c1, 3 * L, y13)
    _vstore(c2, 0, y20), _vstore(c2, L, y21), _vstore(c2, 2 * L, y22), _vstore(c2, 3 * L, y23)
    _vstore(c3, 0, y30), _vstore(c3, L, y31), _vstore(c3, 2 * L, y32), _vstore(c3, 3 * L, y33)


@njit
def _mm_nn(a_PRW, b_PKW, c_PRW, n_rows, n_k, n_panels, accumulate):
    """c(r, n) += Σ_k a(r, k) · b(k, n) on panelled buffers.

    a(r, k) = a_PRW[k // W, r, k % W];  b(k, n) = b_PKW[n // W, k, n % W];
    c(r, n) = c_PRW[n // W, r, n % W].  ``n_rows`` is a multiple of 4 and the buffers
    are zero beyond the real data; ``n_panels`` panels of c are updated, or
    overwritten (c = Σ …, no memset needed) when ``accumulate`` is False.
    A 4-row x W-lane block of c is held in 16 vector values (registers) for the whole
    reduction; each c element is updated as c ← fma(a(r, k), b(k, n), c) for k = 0, 1,
    … in order: one rounding per term, summed in the order of the reduction index.
    """
    for p in range(n_panels):
        for r in range(0, n_rows, 4):
            c0, c1, c2, c3 = c_PRW[p, r], c_PRW[p, r + 1], c_PRW[p, r + 2], c_PRW[p, r + 3]
            (y00, y01, y02, y03, y10, y11, y12, y13,
             y20, y21, y22, y23, y30, y31, y32, y33) = _block_start(c0, c1, c2, c3, accumulate)
            for k in range(n_k):
                pk = k // W
                kk = k - pk * W
                a0, a1, a2, a3 = a_PRW[pk, r, kk], a_PRW[pk, r + 1, kk], a_PRW[pk, r + 2, kk], a_PRW[pk, r + 3, kk]
                bk = b_PKW[p, k]
                x0, x1, x2, x3 = _vload(bk, 0), _vload(bk, L), _vload(bk, 2 * L), _vload(bk, 3 * L)
                y00, y01, y02, y03 = _vfma(a0, x0, y00), _vfma(a0, x1, y01), _vfma(a0, x2, y02), _vfma(a0, x3, y03)
                y10, y11, y12, y13 = _vfma(a1, x0, y10), _vfma(a1, x1, y11), _vfma(a1, x2, y12), _vfma(a1, x3, y13)
                y20, y21, y22, y23 = _vfma(a2, x0, y20), _vfma(a2, x1, y21), _vfma(a2, x2, y22), _vfma(a2, x3, y23)
                y30, y31, y32, y33 = _vfma(a3, x0, y30), _vfma(a3, x1, y31), _vfma(a3, x2, y32), _vfma(a3, x3, y33)
            _block_store(c0, c1, c2, c3, y00, y01, y02, y03, y10, y11, y12, y13,
                         y20, y21, y22, y23, y30, y31, y32, y33)


@njit
def _mm_tn(a_PKW, b_PKW, c_PRW, n_rows, n_k, n_panels, accumulate):
    """c(r, n) += Σ_k a(k, r) · b(k, n): as :func:`_mm_nn` with a read transposed.

    a(k, r) = a_PKW[r // W, k, r % W]: the rows of c are the lanes of a.
    """
    for p in range(n_panels):
        for r in range(0, n_rows, 4):
            pr = r // W
            rr = r - pr * W
            c0, c1, c2, c3 = c_PRW[p, r], c_PRW[p, r + 1], c_PRW[p, r + 2], c_PRW[p, r + 3]
            (y00, y01, y02, y03, y10, y11, y12, y13,
             y20, y21, y22, y23, y30, y31, y32, y33) = _block_start(c0, c1, c2, c3, accumulate)
            for k in range(n_k):
                ak = a_PKW[pr, k]
                a0, a1, a2, a3 = ak[rr], ak[rr + 1], ak[rr + 2], ak[rr + 3]
                bk = b_PKW[p, k]
                x0, x1, x2, x3 = _vload(bk, 0), _vload(bk, L), _vload(bk, 2 * L), _vload(bk, 3 * L)
                y00, y01, y02, y03 = _vfma(a0, x0, y00), _vfma(a0, x1, y01), _vfma(a0, x2, y02), _vfma(a0, x3, y03)
                y10, y11, y12, y13 = _vfma(a1, x0, y10), _vfma(a1, x1, y11), _vfma(a1, x2, y12), _vfma(a1, x3, y13)
                y20, y21, y22, y23 = _vfma(a2, x0, y20), _vfma(a2, x1, y21), _vfma(a2, x2, y22), _vfma(a2, x3, y23)
                y30, y31, y32, y33 = _vfma(a3, x0, y30), _vfma(a3, x1, y31), _vfma(a3, x2, y32), _vfma(a3, x3, y33)
            _block_store(c0, c1, c2, c3, y00, y01, y02, y03, y10, y11, y12, y13,
                         y20, y21, y22, y23, y30, y31, y32, y33)


@njit(inline="always")
def _acc4(y, a_row, kk, x0, x1, x2, x3):
    """(((y + a0·x0) + a1·x1) + a2·x2) + a3·x3 with a_i = a_row[kk + i], lane by lane,
    without fma: a plain sequential sum, one rounding per product and per addition."""
    y = _vadd(y, _vmul(a_row[kk], x0))
    y = _vadd(y, _vmul(a_row[kk + 1], x1))
    y = _vadd(y, _vmul(a_row[kk + 2], x2))
    return _vadd(y, _vmul(a_row[kk + 3], x3))


@njit
def _mm_nn_plain(a_PRW, b_PKW, c_PRW, n_rows, n_k, n_panels):
    """c(r, n) = Σ_k a(r, k) · b(k, n), as :func:`_mm_nn` (not accumulating) but with
    plain products (no fma) added in the order of k; ``n_k`` a multiple of 4.

    Used where the rounding of a sum is amplified downstream: the scores (with logits
    of order 30 and more, one rounding of a score moves exp(score - lse) visibly) and
    dP = v doᵀ in the backward (dP - Δ cancels); see the module docstring for what
    was measured. Δ is summed in exactly this order (see the backward kernel).
    """
    for p in range(n_panels):
        for r in range(0, n_rows, 4):
            c0, c1, c2, c3 = c_PRW[p, r], c_PRW[p, r + 1], c_PRW[p, r + 2], c_PRW[p, r + 3]
            (y00, y01, y02, y03, y10, y11, y12, y13,
             y20, y21, y22, y23, y30, y31, y32, y33) = _block_start(c0, c1, c2, c3, False)
            for k in range(0, n_k, 4):
                pk = k // W
                kk = k - pk * W
                ar0, ar1, ar2, ar3 = a_PRW[pk, r], a_PRW[pk, r + 1], a_PRW[pk, r + 2], a_PRW[pk, r + 3]
                b0, b1, b2, b3 = b_PKW[p, k], b_PKW[p, k + 1], b_PKW[p, k + 2], b_PKW[p, k + 3]
                for n in range(4):
                    x0, x1, x2, x3 = _vload(b0, n * L), _vload(b1, n * L), _vload(b2, n * L), _vload(b3, n * L)
                    if n == 0:
                        y00, y10 = _acc4(y00, ar0, kk, x0, x1, x2, x3), _acc4(y10, ar1, kk, x0, x1, x2, x3)
                        y20, y30 = _acc4(y20, ar2, kk, x0, x1, x2, x3), _acc4(y30, ar3, kk, x0, x1, x2, x3)
                    elif n == 1:
                        y01, y11 = _acc4(y01, ar0, kk, x0, x1, x2, x3), _acc4(y11, ar1, kk, x0, x1, x2, x3)
                        y21, y31 = _acc4(y21, ar2, kk, x0, x1, x2, x3), _acc4(y31, ar3, kk, x0, x1, x2, x3)
                    elif n == 2:
                        y02, y12 = _acc4(y02, ar0, kk, x0, x1, x2, x3), _acc4(y12, ar1, kk, x0, x1, x2, x3)
                        y22, y32 = _acc4(y22, ar2, kk, x0, x1, x2, x3), _acc4(y32, ar3, kk, x0, x1, x2, x3)
                    else:
                        y03, y13 = _acc4(y03, ar0, kk, x0, x1, x2, x3), _acc4(y13, ar1, kk, x0, x1, x2, x3)
                        y23, y33 = _acc4(y23, ar2, kk, x0, x1, x2, x3), _acc4(y33, ar3, kk, x0, x1, x2, x3)
            _block_store(c0, c1, c2, c3, y00, y01, y02, y03, y10, y11, y12, y13,
                         y20, y21, y22, y23, y30, y31, y32, y33)


# ------------------------------------------------------------- tile loading


@njit
def _load_tile(x_NX, n0, count, out, transposed, rope, cos_TP, sin_TP, p0, interleaved, y_X):
    """Rows n0 .. n0 + count - 1 of x into a zero-padded panel buffer, each rotated
    first (with ``rope``) by the table row p0 + r; ``y_X`` is scratch for one row.

    Not transposed: out(r, x) = out[x // W, r, x % W] (rows stay rows); transposed:
    out(x, r) = out[r // W, x, r % W] (rows in lanes). The rotation happens here, while
    the tile is copied anyway, so RoPE costs no pass over q or k of its own.
    """
    out[:] = 0
    X = x_NX.shape[1]
    for r in range(count):
        row = x_NX[n0 + r]
        if rope:
            rotate_row(row, cos_TP[p0 + r], sin_TP[p0 + r], interleaved, y_X)
            row = y_X
        if transposed:
            pr, rr = r // W, r % W
            for x in range(X):
                out[pr, x, rr] = row[x]
        else:
            for x in range(X):
                out[x // W, r, x % W] = row[x]


@njit
def _tiling(n, tile, p_shift):
    """First row, row count and first table row (row + p_shift) of each tile of n rows."""
    n0_N = np.arange(0, n, tile)
    count_N = np.minimum(tile, n - n0_N)
    return n0_N, count_N, n0_N + p_shift


@njit(parallel=True)
def _panel_tiles(x_GSX, n0_N, count_N, p0_N, tile, transposed, rope, cos_TP, sin_TP, interleaved):
    """Tiles of x (rows n0_N[j] .. + count_N[j] of every x_GSX[g]) in the panel layout of
    :func:`_load_tile`, out[g, j]; rotated at table rows p0_N[j] .. with ``rope``.

    Done once per call, so the (query tile, key tile) loops read ready-made (and
    ready-rotated) tiles instead of re-copying the same rows for every pair of tiles.
    """
    G, _, X = x_GSX.shape
    n_tiles = n0_N.shape[0]
    if transposed:
        shape = (G, n_tiles, _panels(tile), _round4(X), W)
    else:
        shape = (G, n_tiles, _panels(X), _round4(tile), W)
    out = np.empty(shape, x_GSX.dtype)
    for item in prange(G * n_tiles):
        g, j = item // n_tiles, item % n_tiles
        y_X = np.empty(X, x_GSX.dtype)
        _load_tile(x_GSX[g], n0_N[j], count_N[j], out[g, j], transposed,
                   rope, cos_TP, sin_TP, p0_N[j], interleaved, y_X)
    return out


@njit(inline="always")
def _panels(n):
    return (n + W - 1) // W


@njit(inline="always")
def _round4(n):
    return (n + 3) // 4 * 4


@njit
def _visible_scores(score_PSW, b, h, t0, ct, s0, cs, n_t_panels, scale, T, S, causal,
                    has_bias, bias_2BHTS, has_mask, mask_2BHTS, alibi, slope, f_N, f0,
                    has_tile_bias, tile_bias):
    """score ← scale·score + (bias + alibi) on visible entries and -inf elsewhere, in place.

    score_PSW holds score(s, t) for key s0 + s, query t0 + t of a sequence of T queries
    and S keys. Visible, as in the spec: score != -inf (a -inf bias masks; NaN stays
    visible), causal s <= t + S - T, mask, and a real (not padding) key. Padding query
    lanes are left finite and ignored. With ``alibi``, alibi = -(m · f(|i - j|)) with
    m = ``slope``, i = t + S - T, j = s, and f(|δ|) read at f_N[f0 + δ]: along a row of
    scores the lanes are consecutive queries, so they read consecutive entries of f_N
    (a vector load, not a gather). The arithmetic and its order are the spec's: the
    product m·f rounded, and (bias + alibi) summed before it is added to scale·q·k.

    With ``has_tile_bias`` (block-sparse attention, :mod:`backends.cpu.block_sparse`),
    the finite scalar ``tile_bias`` of the whole tile is added to the visible scores
    after the scaling, as spec.attention.block_sparse does: score = scale·q·k + β,
    visibility decided before β is added (β is finite, so it changes none). It is not
    combined with bias, mask or ALiBi (no caller passes both).
    """
    minus_inf = _like(scale, -np.inf)
    shift = S - T
    for s in range(_round4(cs)):
        for p in range(n_t_panels):
            row = score_PSW[p, s]
            # causal: query t0+t sees key s0+s iff t >= s0 + s - shift - t0
            t_first = s0 + s - shift - t0 - p * W
            if not causal:
                t_first = -W
            key_real = s < cs
            t_end = ct - p * W  # padding query lanes are invisible too
            # f_W[j] = f(|i - j|) for lane j (query t0 + pW + j) and key s0 + s
            f_W = f_N[f0 + t0 + p * W + shift - s0 - s:] if alibi else f_N
            if has_tile_bias:
                for j in range(W):
                    # score = scale·q·k + β  (β finite: a masked -inf stays -inf)
                    x = row[j] * scale
                    keep = key_real & (j >= t_first) & (j < t_end) & (x != minus_inf)
                    row[j] = x + tile_bias if keep else minus_inf
            elif alibi and not has_bias:
                for j in range(W):
                    # score = scale·q·k + alibi,  alibi = -(m · f(|i - j|))
                    x = row[j] * scale + -(slope * f_W[j])
                    keep = key_real & (j >= t_first) & (j < t_end) & (x != minus_inf)
                    row[j] = x if keep else minus_inf
            else:
                for j in range(W):
                    x = row[j] * scale
                    keep = key_real & (j >= t_first) & (j < t_end) & (x != minus_inf)
                    row[j] = x if keep else minus_inf
            if has_bias or has_mask:
                # broadcast views: strided, so kept out of the vectorised loops above
                for j in range(min(W, ct - p * W)):
                    t = p * W + j
                    x = row[j]
                    if x != minus_inf:
                        if has_bias:
                            bias = bias_2BHTS[0, b, h, t0 + t, s0 + s]
                            # score = scale·q·k + (bias + alibi)
                            x = x + ((bias + -(slope * f_W[j])) if alibi else bias)
                        if has_mask and not mask_2BHTS[0, b, h, t0 + t, s0 + s]:
                            x = minus_inf
                    row[j] = x


# ------------------------------------------------------------------- forward


@njit(inline="always")
def _attend(qT_PDW, k_NPSW, v_NPSW, t0, ct, T, S, b, h, scale, causal, tile_s,
            has_bias, bias_2BHTS, has_mask, mask_2BHTS, alibi, slope, f_N, f0,
            acc_PTW, m_PW, l_PW):
    """:func:`_attend_tiles` over every key tile of the sequence, 0, 1, ... in order,
    no tile bias: the packed forward's entry (:mod:`backends.cpu.varlen`, whose
    sequences differ in their number of key tiles)."""
    _attend_tiles(qT_PDW, k_NPSW, v_NPSW, np.arange((S + tile_s - 1) // tile_s),
                  m_PW[0, :0], False, t0, ct, T, S, b, h, scale, causal, tile_s,
                  has_bias, bias_2BHTS, has_mask, mask_2BHTS, alibi, slope, f_N, f0,
                  acc_PTW, m_PW, l_PW)


@njit(inline="always")
def _attend_tiles(qT_PDW, k_NPSW, v_NPSW, tiles_J, tile_bias_J, has_tile_bias,
                  t0, ct, T, S, b, h, scale, causal, tile_s,
                  has_bias, bias_2BHTS, has_mask, mask_2BHTS, alibi, slope, f_N, f0,
                  acc_PTW, m_PW, l_PW):
    """The online softmax of one query tile over a list of key tiles of its sequence.

    qT_PDW is the tile of queries t0 .. t0 + ct - 1 transposed (queries in lanes), rotated
    with RoPE; the sequence has T queries and S keys, its key/value tiles are
    k_NPSW[j], v_NPSW[j] (keys j·tile_s ..). The tiles visited are tiles_J[0], tiles_J[1],
    ... in that order (ascending): every tile for the dense forwards (:func:`_attend`),
    a layout row's kept tiles for the block-sparse one, whose scalar bias β of tile
    tiles_J[n] is tile_bias_J[n] when ``has_tile_bias`` (score = scale·q·k + β).
    Leaves Õ in acc_PTW (rows t, panels of e), the running max in m_PW and the
    denominator in l_PW (one lane per query); with no tile visited, m = -inf, l = 0,
    Õ = 0. Shared by the batched, the packed (varlen) and the block-sparse forward,
    which differ only in where a sequence's rows live and which tiles they visit.
    Inlined into each: as a called function it made the plain forward a few per cent
    slower than the kernel that had this loop in its body.
    """
    dt = qT_PDW.dtype
    Pt, cs_max, d4 = m_PW.shape[0], k_NPSW.shape[2], qT_PDW.shape[1]
    Pe = acc_PTW.shape[0]
    n_tp = _panels(ct)
    zero, minus_inf = _like(scale, 0.0), _like(scale, -np.inf)
    score_PSW = np.empty((Pt, cs_max, W), dt)
    mt_PW = np.empty((Pt, W), dt)
    msafe_PW = np.empty((Pt, W), dt)
    lt_PW = np.empty((Pt, W), dt)
    alpha_PW = np.empty((Pt, W), dt)
    acc_PTW[:] = 0
    m_PW[:] = minus_inf
    l_PW[:] = 0
    for n in range(tiles_J.shape[0]):
        jt = tiles_J[n]
        s0 = jt * tile_s
        # key tiles wholly in this query tile's future contribute nothing (ascending
        # tiles: none after it does either)
        if causal and s0 > (t0 + ct - 1) + S - T:
            break
        cs = min(tile_s, S - s0)
        cs4 = _round4(cs)
        k_PSW = k_NPSW[jt]
        v_PSW = v_NPSW[jt]
        tile_bias = tile_bias_J[n] if has_tile_bias else zero
        # score(s, t) = k_s · q_t
        _mm_nn_plain(k_PSW, qT_PDW, score_PSW, cs4, d4, n_tp)
        _visible_scores(score_PSW, b, h, t0, ct, s0, cs, n_tp, scale, T, S, causal,
                        has_bias, bias_2BHTS, has_mask, mask_2BHTS, alibi, slope, f_N, f0,
                        has_tile_bias, tile_bias)
        # m' = max(m, rowmax(S)) over visible scores (NaN propagates)
        # (4 keys at a time: a max is exact in any order, and this keeps the chain
        # of loads and stores of mt 4x shorter)
        mt_PW[:] = minus_inf
        for s in range(0, cs4, 4):
            for p in range(n_tp):
                r0, r1, r2, r3 = score_PSW[p, s], score_PSW[p, s + 1], score_PSW[p, s + 2], score_PSW[p, s + 3]
                mt = mt_PW[p]
                for j in range(W):
                    mt[j] = _nanmax(mt[j], _nanmax(_nanmax(r0[j], r1[j]), _nanmax(r2[j], r3[j])))
        for p in range(n_tp):
            for j in range(W):
                m_new = _nanmax(m_PW[p, j], mt_PW[p, j])
                # a row with no visible key yet has m = -inf: use 0 so no -inf - -inf
                msafe_PW[p, j] = zero if m_new == minus_inf else m_new
                mt_PW[p, j] = m_new
        # P = exp(S - m'),  rowsum(P) in blocks of 4 keys, pairwise inside a block
        # (so its rounding stays near that of NumPy's blocked sums)
        lt_PW[:] = 0
        for s in range(0, cs4, 4):
            for p in range(n_tp):
                r0, r1, r2, r3 = score_PSW[p, s], score_PSW[p, s + 1], score_PSW[p, s + 2], score_PSW[p, s + 3]
                ms, lt = msafe_PW[p], lt_PW[p]
                for j in range(W):
                    e0, e1 = _exp(r0[j] - ms[j]), _exp(r1[j] - ms[j])
                    e2, e3 = _exp(r2[j] - ms[j]), _exp(r3[j] - ms[j])
                    r0[j], r1[j], r2[j], r3[j] = e0, e1, e2, e3
                    lt[j] = lt[j] + ((e0 + e1) + (e2 + e3))
        # α = exp(m - m');  l' = α l + rowsum(P);  Õ' = α Õ + P V
        for p in range(n_tp):
            m, ms, mt, l, lt, al = m_PW[p], msafe_PW[p], mt_PW[p], l_PW[p], lt_PW[p], alpha_PW[p]
            for j in range(W):
                alpha = _exp(m[j] - ms[j])
                l[j] = alpha * l[j] + lt[j]
                m[j] = mt[j]
                al[j] = alpha
        for t in range(ct):
            alpha = alpha_PW[t // W, t % W]
            for pe in range(Pe):
                a = acc_PTW[pe, t]
                for n in range(W):
                    a[n] = a[n] * alpha
        _mm_tn(score_PSW, v_PSW, acc_PTW, _round4(ct), cs4, Pe, True)


@njit(inline="always")
def _row_result(m_PW, l_PW, t):
    """(l, lse) of query lane t: o = Õ / l, lse = m + log l; a row that saw no visible
    key has m = -inf and gets l = 1 (so o = 0, or NaN from v) and lse = -inf."""
    p, j = t // W, t % W
    m = m_PW[p, j]
    minus_inf = _like(m, -np.inf)
    if m == minus_inf:
        return _like(m, 1.0), minus_inf
    l = l_PW[p, j]
    return l, m + np.log(l)


@njit(inline="always")
def _write_rows(acc_PTW, m_PW, l_PW, ct, o_TE, lse_T, t0):
    """o = Õ / l and lse of the ct query rows t0 .. of one tile (:func:`_row_result`)."""
    E = o_TE.shape[1]
    for t in range(ct):
        l, lse = _row_result(m_PW, l_PW, t)
        for e in range(E):
            o_TE[t0 + t, e] = acc_PTW[e // W, t, e % W] / l
        lse_T[t0 + t] = lse


@njit(parallel=True, cache=True)
def _forward_kernel(q_BHTD, k_BGSD, v_BGSE, bias_2BHTS, mask_2BHTS, has_bias, has_mask,
                    causal, scale, tile_t, tile_s,
                    rope, cos_TP, sin_TP, p_min, interleaved, alibi, slopes_H, f_N, f0,
                    o_BHTE, lse_BHT):
    B, H, T, D = q_BHTD.shape
    G, S, E = k_BGSD.shape[1], k_BGSD.shape[2], v_BGSE.shape[3]
    group = H // G
    n_tiles_t = (T + tile_t - 1) // tile_t
    dt = q_BHTD.dtype
    Pt, Pe = _panels(tile_t), _panels(E)
    ct_max = _round4(tile_t)
    # key j sits at position j (table row j - p_min); k is rotated once here, not per query tile
    kn0_N, kcount_N, kp0_N = _tiling(S, tile_s, -p_min)
    k_GNPSW = _panel_tiles(k_BGSD.reshape(B * G, S, D), kn0_N, kcount_N, kp0_N, tile_s, False,
                           rope, cos_TP, sin_TP, interleaved)
    v_GNPSW = _panel_tiles(v_BGSE.reshape(B * G, S, E), kn0_N, kcount_N, kp0_N, tile_s, False,
                           False, cos_TP, sin_TP, interleaved)
    tiles_N = np.arange(kn0_N.shape[0])  # every key tile, in order
    # one work item per (batch, head, query tile): independent rows, no shared writes
    for item in prange(B * H * n_tiles_t):
        b = item // (H * n_tiles_t)
        h = (item // n_tiles_t) % H
        i = item % n_tiles_t
        g = h // group
        t0 = i * tile_t
        ct = min(tile_t, T - t0)
        # query t sits at position t + S - T
        qT_PDW = np.empty((Pt, _round4(D), W), dt)
        _load_tile(q_BHTD[b, h], t0, ct, qT_PDW, True, rope, cos_TP, sin_TP,
                   t0 + S - T - p_min, interleaved, np.empty(D, dt))
        acc_PTW = np.empty((Pe, ct_max, W), dt)
        m_PW = np.empty((Pt, W), dt)
        l_PW = np.empty((Pt, W), dt)
        slope = slopes_H[h] if alibi else scale  # (not read without ALiBi)
        _attend_tiles(qT_PDW, k_GNPSW[b * G + g], v_GNPSW[b * G + g], tiles_N, m_PW[0, :0],
                      False, t0, ct, T, S, b, h, scale, causal, tile_s,
                      has_bias, bias_2BHTS, has_mask, mask_2BHTS, alibi, slope, f_N, f0,
                      acc_PTW, m_PW, l_PW)
        _write_rows(acc_PTW, m_PW, l_PW, ct, o_BHTE[b, h], lse_BHT[b, h], t0)


# ------------------------------------------------------------------ backward


@njit(parallel=True)
def _row_deltas(o_BHTE, do_BHTE, zero):
    """Δ = rowsum(dO ∘ O) (B, H, T), summed in exactly the order _mm_nn_plain sums
    dP = Σ_e v·dO (plain products, e ascending; the padding adds exact zeros). Where a
    row sees one key, O = V bit for bit, so dP - Δ is then exactly 0, as in the spec.
    ``zero`` is 0 in the working dtype."""
    B, H, T, E = o_BHTE.shape
    delta_BHT = np.empty((B, H, T), o_BHTE.dtype)
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        for t in range(T):
            acc = zero
            for e in range(E):
                acc = acc + do_BHTE[b, h, t, e] * o_BHTE[b, h, t, e]
            delta_BHT[b, h, t] = acc
    return delta_BHT


@njit
def _backward_panels(q_BHTD, k_BGSD, v_BGSE, do_BHTE, tile_t, tile_s,
                     rope, cos_TP, sin_TP, p_min, interleaved):
    """Every tile the backward reads, panelled once per call (:func:`_panel_tiles`):
    k, v by key tile (G axis = b·G + g), and q, qᵀ, dO, dOᵀ by query tile (H axis =
    b·H + h). q and k are rotated with ``rope`` while panelled (q̃ = R q, k̃ = R k); the
    dq, dk computed from them are with respect to q̃, k̃ (un-rotated by the caller)."""
    B, H, T, D = q_BHTD.shape
    G, S, E = k_BGSD.shape[1], k_BGSD.shape[2], v_BGSE.shape[3]
    kn0_N, kcount_N, kp0_N = _tiling(S, tile_s, -p_min)
    qn0_N, qcount_N, qp0_N = _tiling(T, tile_t, S - T - p_min)
    k_GNPSW = _panel_tiles(k_BGSD.reshape(B * G, S, D), kn0_N, kcount_N, kp0_N, tile_s, False,
                           rope, cos_TP, sin_TP, interleaved)
    v_GNPSW = _panel_tiles(v_BGSE.reshape(B * G, S, E), kn0_N, kcount_N, kp0_N, tile_s, False,
                           False, cos_TP, sin_TP, interleaved)
    # batch and head axes merged (B·H rows of tiles), as in the panel arrays' first axis
    q_HTD = q_BHTD.reshape(B * H, T, D)
    do_HTE = do_BHTE.reshape(B * H, T, E)
    q_HNPTW = _panel_tiles(q_HTD, qn0_N, qcount_N, qp0_N, tile_t, False,
                           rope, cos_TP, sin_TP, interleaved)
    qT_HNPDW = _panel_tiles(q_HTD, qn0_N, qcount_N, qp0_N, tile_t, True,
                            rope, cos_TP, sin_TP, interleaved)
    do_HNPTW = _panel_tiles(do_HTE, qn0_N, qcount_N, qp0_N, tile_t, False,
                            False, cos_TP, sin_TP, interleaved)
    doT_HNPEW = _panel_tiles(do_HTE, qn0_N, qcount_N, qp0_N, tile_t, True,
                             False, cos_TP, sin_TP, interleaved)
    return k_GNPSW, v_GNPSW, q_HNPTW, qT_HNPDW, do_HNPTW, doT_HNPEW


@njit(inline="always")
def _backward_scratch(dt, tile_t, tile_s, D, E):
    """One work item's buffers: dk, dv of one query head and of the GQA group (dkg,
    dvg), and the ``scratch`` of :func:`_backward_tile` (P, dS, dQ of one tile pair,
    lse and Δ by lane)."""
    Pt, Pd, Pe = _panels(tile_t), _panels(D), _panels(E)
    ct_max, cs_max = _round4(tile_t), _round4(tile_s)
    scratch = (np.empty((Pt, cs_max, W), dt), np.empty((Pt, cs_max, W), dt),
               np.empty((Pd, ct_max, W), dt), np.empty((Pt, W), dt), np.empty((Pt, W), dt))
    return (np.empty((Pd, cs_max, W), dt), np.empty((Pe, cs_max, W), dt),
            np.empty((Pd, cs_max, W), dt), np.empty((Pe, cs_max, W), dt), scratch)


@njit(inline="always")
def _backward_tile(k_PSW, v_PSW, query_tiles, lse_T, delta_T,
                   b, h, t0, ct, s0, cs, T, S, scale, causal,
                   has_bias, bias_2BHTS, has_mask, mask_2BHTS, alibi, slope, f_N, f0,
                   has_tile_bias, tile_bias, scratch, dk_PSW, dv_PSW, dq_TD):
    """One (query tile, key tile) pair of the backward (FlashAttention-2, Algorithm 2,
    lines 11-19): dk_PSW += dSᵀ Q and dv_PSW += Pᵀ dO (panelled, keys in rows), and
    dQ = dS K added to rows t0 .. t0 + ct - 1 of dq_TD.

    Queries t0 .. of a sequence of T queries and S keys against keys s0 .. s0 + cs - 1;
    ``query_tiles`` = (qᵀ, q, dOᵀ, dO) of the query tile as :func:`_backward_panels`
    lays them out; lse_T, delta_T are the forward's lse and Δ of the query head;
    scores as in :func:`_visible_scores` (tile bias included); ``scratch`` = (P, dS,
    dQ, lse, Δ) buffers of :func:`_backward_scratch`. (Grouped in tuples: a call with
    more than 30 arguments compiles to CALL_FUNCTION_EX, which Numba cannot inline.)
    Shared by the dense and the block-sparse backward, which differ only in which
    pairs they visit.
    """
    qT_PDW, q_PTW, doT_PEW, do_PTW = query_tiles
    p_PSW, ds_PSW, dq_PTW, lse_PW, delta_PW = scratch
    zero, minus_inf = _like(scale, 0.0), _like(scale, -np.inf)
    Pd, Pe = dk_PSW.shape[0], dv_PSW.shape[0]
    d4, e4 = qT_PDW.shape[1], doT_PEW.shape[1]
    D = dq_TD.shape[1]
    cs4, ct4, n_tp = _round4(cs), _round4(ct), _panels(ct)
    lse_PW[:] = 0
    delta_PW[:] = 0
    for t in range(ct):
        lse_PW[t // W, t % W] = lse_T[t0 + t]
        delta_PW[t // W, t % W] = delta_T[t0 + t]
    # S = k qᵀ (transposed scores), then P = exp(S - lse) on visible keys
    _mm_nn_plain(k_PSW, qT_PDW, p_PSW, cs4, d4, n_tp)
    _visible_scores(p_PSW, b, h, t0, ct, s0, cs, n_tp, scale, T, S, causal,
                    has_bias, bias_2BHTS, has_mask, mask_2BHTS,
                    alibi, slope, f_N, f0, has_tile_bias, tile_bias)
    for s in range(cs4):
        for p in range(n_tp):
            row, lse = p_PSW[p, s], lse_PW[p]
            for j in range(W):
                # rows with no visible key (lse = -inf) have P = 0
                lse_j = lse[j]
                empty = lse_j == minus_inf
                x = row[j] - (zero if empty else lse_j)
                e = _exp(x)
                row[j] = zero if empty else e
    # dV += Pᵀ dO
    _mm_nn(p_PSW, do_PTW, dv_PSW, cs4, ct4, Pe, True)
    # dP = dO Vᵀ (transposed: v doᵀ);  dS = scale · P ∘ (dP - Δ)
    _mm_nn_plain(v_PSW, doT_PEW, ds_PSW, cs4, e4, n_tp)
    for s in range(cs4):
        for p in range(n_tp):
            row, pr, dl = ds_PSW[p, s], p_PSW[p, s], delta_PW[p]
            for j in range(W):
                row[j] = scale * (pr[j] * (row[j] - dl[j]))
    # dK += dSᵀ Q;  dQ += dS K
    _mm_nn(ds_PSW, q_PTW, dk_PSW, cs4, ct4, Pd, True)
    _mm_tn(ds_PSW, k_PSW, dq_PTW, ct4, cs4, Pd, False)
    for t in range(ct):
        for d in range(D):
            dq_TD[t0 + t, d] += dq_PTW[d // W, t, d % W]


@njit(inline="always")
def _add_head(dxg_PSW, dx_PSW, first):
    """The GQA group's sum: the first query head's accumulator copied, the next added
    in order (as the spec sums dk_BHSD, dv_BHSE over the group)."""
    if first:
        dxg_PSW[:] = dx_PSW
    else:
        dxg_PSW += dx_PSW


@njit(inline="always")
def _store_key_rows(dx_PSW, dx_SX, s0, cs):
    """Rows s0 .. s0 + cs - 1 of dx_SX from a panelled key tile (keys in rows)."""
    X = dx_SX.shape[1]
    for s in range(cs):
        for x in range(X):
            dx_SX[s0 + s, x] = dx_PSW[x // W, s, x % W]


@njit(parallel=True)
def _sum_chunks(dq_CBHTD, dq_BHTD):
    """dq = Σ_c dq_CBHTD[c], summed over c = 0, 1, ... in this fixed order."""
    n_chunks, B, H, T, D = dq_CBHTD.shape
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        for t in range(T):
            for d in range(D):
                acc = dq_CBHTD[0, b, h, t, d]
                for c in range(1, n_chunks):
                    acc += dq_CBHTD[c, b, h, t, d]
                dq_BHTD[b, h, t, d] = acc


@njit(parallel=True, cache=True)
def _backward_kernel(q_BHTD, k_BGSD, v_BGSE, o_BHTE, lse_BHT, do_BHTE, bias_2BHTS,
                     mask_2BHTS, has_bias, has_mask, causal, scale, tile_t, tile_s,
                     rope, cos_TP, sin_TP, p_min, interleaved, alibi, slopes_H, f_N, f0,
                     dq_BHTD, dk_BGSD, dv_BGSE):
    B, H, T, D = q_BHTD.shape
    G, S, E = k_BGSD.shape[1], k_BGSD.shape[2], v_BGSE.shape[3]
    group = H // G
    dt = q_BHTD.dtype
    n_tiles_s = (S + tile_s - 1) // tile_s
    n_chunks = min(_DQ_CHUNKS, n_tiles_s)
    delta_BHT = _row_deltas(o_BHTE, do_BHTE, _like(scale, 0.0))
    k_GNPSW, v_GNPSW, q_HNPTW, qT_HNPDW, do_HNPTW, doT_HNPEW = _backward_panels(
        q_BHTD, k_BGSD, v_BGSE, do_BHTE, tile_t, tile_s, rope, cos_TP, sin_TP, p_min,
        interleaved)
    # one work item per (batch, kv head, chunk of key tiles): it owns dk, dv of its key
    # tiles and its own dq accumulator, so no two items write the same element
    dq_CBHTD = np.zeros((n_chunks, B, H, T, D), dt)
    for item in prange(B * G * n_chunks):
        b = item // (G * n_chunks)
        g = (item // n_chunks) % G
        c = item % n_chunks
        dk_PSW, dv_PSW, dkg_PSW, dvg_PSW, scratch = _backward_scratch(dt, tile_t, tile_s, D, E)
        for jt in range(c, n_tiles_s, n_chunks):
            s0 = jt * tile_s
            cs = min(tile_s, S - s0)
            k_PSW = k_GNPSW[b * G + g, jt]
            v_PSW = v_GNPSW[b * G + g, jt]
            for h in range(g * group, (g + 1) * group):
                slope = slopes_H[h] if alibi else scale  # (not read without ALiBi)
                # one accumulator per query head, summed over the group's heads in
                # order afterwards, as the spec sums dk_BHSD, dv_BHSE over the group
                dk_PSW[:] = 0
                dv_PSW[:] = 0
                for t0 in range(0, T, tile_t):
                    ct = min(tile_t, T - t0)
                    if causal and s0 > (t0 + ct - 1) + S - T:
                        continue
                    it = t0 // tile_t
                    bh = b * H + h
                    query_tiles = (qT_HNPDW[bh, it], q_HNPTW[bh, it],
                                   doT_HNPEW[bh, it], do_HNPTW[bh, it])
                    _backward_tile(k_PSW, v_PSW, query_tiles, lse_BHT[b, h], delta_BHT[b, h],
                                   b, h, t0, ct, s0, cs, T, S, scale, causal,
                                   has_bias, bias_2BHTS, has_mask, mask_2BHTS,
                                   alibi, slope, f_N, f0, False, scale,
                                   scratch, dk_PSW, dv_PSW, dq_CBHTD[c, b, h])
                _add_head(dkg_PSW, dk_PSW, h == g * group)
                _add_head(dvg_PSW, dv_PSW, h == g * group)
            _store_key_rows(dkg_PSW, dk_BGSD[b, g], s0, cs)
            _store_key_rows(dvg_PSW, dv_BGSE[b, g], s0, cs)
    _sum_chunks(dq_CBHTD, dq_BHTD)


# ------------------------------------------------------------ public functions


_ALIBI_MARGIN = W + 4
"""How far past the distances of real (query, key) pairs the table f_N reaches: the
padding lanes of a query panel (up to W - 1 past the last query) and the padding keys
of a tile (up to 3 past the last key) read it too; their scores are masked right
after, but the reads must stay inside the table."""


class Fused(NamedTuple):
    """The positional options as kernel arguments.

    Always the same types (empty arrays where an option is off), so that a plain call
    and a call with RoPE and/or ALiBi run the same compiled kernel: one
    specialisation per dtype, not one per combination of options.
    """

    rope: bool
    cos_TP: np.ndarray
    """cos of position p at row p - p_min (:func:`backends.cpu.rope.position_tables`)."""
    sin_TP: np.ndarray
    p_min: int
    interleaved: bool
    alibi: bool
    slopes_H: np.ndarray
    """m_h in the working dtype."""
    f_N: np.ndarray
    """f(|δ|) at index f0 + δ, for every distance δ = i - j a kernel reads."""
    f0: int


def fused_positions(pos: Positions, *, p_min: int, p_end: int, t_max: int, s_max: int,
                    D: int, dtype) -> Fused:
    """Kernel arguments for validated options, for sequences of at most t_max queries and
    s_max keys whose positions lie in p_min .. p_end - 1.

    Both tables are O(positions) (never T x S): RoPE's cos/sin rows are the spec's
    ``tables`` at each position, ALiBi's f is the spec's ``penalty_table`` laid out by
    signed distance, so the kernels reproduce the spec's values exactly.
    """
    dtype = np.dtype(dtype)
    no_table = np.empty((0, 0), dtype)
    cos_TP = sin_TP = no_table
    if pos.rope is not None:
        cos_TP, sin_TP = position_tables(p_min, p_end, D, pos.rope, dtype)
    slopes_H = f_N = np.empty(0, dtype)
    f0 = 0
    if pos.slopes_H is not None:
        slopes_H = pos.slopes_H
        f0 = t_max + _ALIBI_MARGIN
        f_table = penalty_table(max(t_max, s_max) + _ALIBI_MARGIN + 1, pos.form, dtype)
        f_N = f_table[np.abs(np.arange(-f0, s_max + _ALIBI_MARGIN + 1))]
    return Fused(pos.rope is not None, cos_TP, sin_TP, p_min,
                 pos.rope is not None and pos.rope.layout == "interleaved",
                 pos.slopes_H is not None, slopes_H, f_N, f0)


def kernel_view(x: np.ndarray | None, full: tuple[int, ...], dummy) -> np.ndarray:
    """x broadcast to ``full`` behind a leading axis of 2 with stride 0 (kernels read index 0).

    That axis makes the view non-contiguous whatever x is, so Numba types every bias
    (and every mask) alike, layout 'A': absent (a 1-element ``dummy``), per head, per
    key or full, they all run one compiled kernel instead of one per layout.
    """
    if x is None:
        x, full = np.asarray(dummy).reshape(1, 1, 1, 1), (1, 1, 1, 1)
    return np.broadcast_to(np.broadcast_to(x, full)[None], (2,) + full)


def check_cpu_dtype(name: str, dtype) -> None:
    """This backend's one rule beyond the spec's validation: float32 or float64."""
    if dtype not in _SUPPORTED:
        raise TypeError(f"{name}: the cpu backend supports dtype float32 and float64, got {dtype}")


def _prepare(q_BHTD, k_BGSD, v_BGSE, scale, bias, mask, causal, tile_t, tile_s,
             rope, alibi_slopes, alibi_form):
    """Validate exactly as the spec does, then add this backend's dtype rule."""
    shape = check_attention_inputs(q_BHTD, k_BGSD, v_BGSE, bias=bias, mask=mask, causal=causal)
    tile_t = check_tile("tile_t", tile_t)
    tile_s = check_tile("tile_s", tile_s)
    dtype = q_BHTD.dtype
    pos = check_positions(rope, alibi_slopes, alibi_form, H=shape.H, D=shape.D, dtype=dtype)
    check_cpu_dtype("q_BHTD", dtype)
    scale = dtype.type(check_scale(scale, shape.D))
    full = (shape.B, shape.H, shape.T, shape.S)
    bias_2BHTS = kernel_view(bias, full, np.zeros(1, dtype))
    mask_2BHTS = kernel_view(mask, full, np.ones(1, np.bool_))
    # queries sit at S-T .. S-1, keys at 0 .. S-1
    fused = fused_positions(pos, p_min=min(0, shape.S - shape.T), p_end=shape.S,
                            t_max=shape.T, s_max=shape.S, D=shape.D, dtype=dtype)
    return shape, scale, bias_2BHTS, mask_2BHTS, tile_t, tile_s, fused


def flash_forward(
    q_BHTD: np.ndarray,
    k_BGSD: np.ndarray,
    v_BGSE: np.ndarray,
    *,
    causal: bool = False,
    scale: float | None = None,
    bias: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    tile_t: int = 64,
    tile_s: int = 64,
    rope: RoPE | None = None,
    alibi_slopes: np.ndarray | None = None,
    alibi_form: str = "linear",
) -> AttentionOut:
    """FlashAttention forward, compiled: same semantics as spec.attention.tiled.flash_forward.

    Same arguments, validation and errors as the spec, plus a ``TypeError`` for float16
    (this backend computes in float32 or float64 only). Non-contiguous inputs are
    copied; ``bias`` and ``mask`` are read through broadcast views.

    Positions (fused, no T x S array)
        ``rope``: q and k are rotated inside the kernel while their tiles are copied
        into the panel buffers (k once per call, each query tile once), with the
        spec's cos/sin tables computed on the host (O(max(T, S)·D/2) numbers).
        ``alibi_slopes``: the term -(m_h · f(|i - j|)) is computed in the score loop
        from the slopes and a table of f by distance (O(T + S) numbers).

    Parallel
        ``prange`` over (batch, head, query tile): each work item owns its output rows.

    Numerics
        Computes and accumulates in the input dtype, with the spec's tiling (the same
        key tiles are skipped under ``causal``), bottom-right causal alignment,
        GQA/MQA head grouping, masking, empty rows (o = 0, lse = -inf) and NaN
        propagation. The rotation and the ALiBi term are the spec's arithmetic
        exactly (no fma; bias + alibi summed before being added to scale·q·k), so the
        output with ``rope`` equals, bit for bit, the output without it on
        :func:`backends.cpu.rope.rope_qk`-rotated inputs. Differs from the spec only in
        rounding: the order of the sums and, in float32, an exp accurate to about
        1 ulp (Cephes ``expf``); arguments below -87.3 give 0 rather than a subnormal.
    """
    shape, scale, bias_2BHTS, mask_2BHTS, tile_t, tile_s, fused = _prepare(
        q_BHTD, k_BGSD, v_BGSE, scale, bias, mask, causal, tile_t, tile_s,
        rope, alibi_slopes, alibi_form)
    B, H, T, E = shape.B, shape.H, shape.T, shape.E
    dtype = q_BHTD.dtype
    o_BHTE = poisoned_empty((B, H, T, E), dtype)
    lse_BHT = poisoned_empty((B, H, T), dtype)
    _forward_kernel(
        contiguous(q_BHTD), contiguous(k_BGSD), contiguous(v_BGSE),
        bias_2BHTS, mask_2BHTS, bias is not None, mask is not None, bool(causal),
        scale, tile_t, tile_s, *fused, o_BHTE, lse_BHT,
    )
    return AttentionOut(o_BHTE, lse_BHT)


def flash_backward(
    q_BHTD: np.ndarray,
    k_BGSD: np.ndarray,
    v_BGSE: np.ndarray,
    o_BHTE: np.ndarray,
    lse_BHT: np.ndarray,
    do_BHTE: np.ndarray,
    *,
    causal: bool = False,
    scale: float | None = None,
    bias: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    tile_t: int = 64,
    tile_s: int = 64,
    rope: RoPE | None = None,
    alibi_slopes: np.ndarray | None = None,
    alibi_form: str = "linear",
) -> AttentionGrads:
    """FlashAttention backward, compiled: same semantics as spec.attention.tiled.flash_backward.

    Same arguments, validation and errors as the spec, plus a ``TypeError`` for
    float16. Returns dq_BHTD, and dk_BGSD, dv_BGSE summed over the query heads of each
    GQA group.

    Positions
        ``rope``: q and k are rotated while the kernel copies them into its panel
        buffers (q̃ = R q, k̃ = R k, as in the forward); the kernel's dq̃, dk̃ are then
        un-rotated in place by a second parallel pass, dq = Rᵀ dq̃, dk = Rᵀ dk̃ (the
        rotation by the negated positions, with the spec's tables for them).
        ``alibi_slopes``: fused in the recomputation of the scores, as in the forward.

    Parallel
        ``prange`` over (batch, key/value head, chunk of key tiles): an item owns the
        dk, dv rows of its key tiles and accumulates dq into its own buffer (one per
        chunk, ``_DQ_CHUNKS`` chunks with interleaved key tiles); the buffers are then
        summed in a fixed order. dk and dv are accumulated per query head and then
        summed over the heads of the GQA group in order, as the spec does. No two
        threads write the same element, and the result does not depend on the thread
        count.

    Numerics
        Computes and accumulates in the input dtype, recomputing P = exp(S - lse) per
        tile as the spec does, with the same skipped key tiles under ``causal``;
        masked scores and rows with lse = -inf have P = 0. Differs from the spec only
        in rounding (order of sums, scale applied to dS before the products, the
        float32 exp of :func:`flash_forward`); the rotations are the spec's exactly.
    """
    shape, scale, bias_2BHTS, mask_2BHTS, tile_t, tile_s, fused = _prepare(
        q_BHTD, k_BGSD, v_BGSE, scale, bias, mask, causal, tile_t, tile_s,
        rope, alibi_slopes, alibi_form)
    check_backward_inputs(shape, q_BHTD, o_BHTE, lse_BHT, do_BHTE)
    B, H, G, T, S, D, E = shape
    dtype = q_BHTD.dtype
    dq_BHTD = poisoned_empty((B, H, T, D), dtype)
    dk_BGSD = poisoned_empty((B, G, S, D), dtype)
    dv_BGSE = poisoned_empty((B, G, S, E), dtype)
    _backward_kernel(
        contiguous(q_BHTD), contiguous(k_BGSD), contiguous(v_BGSE),
        contiguous(o_BHTE), contiguous(lse_BHT), contiguous(do_BHTE),
        bias_2BHTS, mask_2BHTS, bias is not None, mask is not None, bool(causal),
        scale, tile_t, tile_s, *fused, dq_BHTD, dk_BGSD, dv_BGSE,
    )
    if rope is not None:
        # dq = R_iᵀ dq̃, dk = R_jᵀ dk̃: the rotation by -i, -j (spec.attention.positional.unrotate)
        p_min = fused.p_min
        cos_TP, sin_TP = position_tables(p_min, S, D, rope, dtype, negate=True)
        rotate_qk_rows(dq_BHTD, dk_BGSD, dq_BHTD, dk_BGSD, T, S, cos_TP, sin_TP,
                       p_min, fused.interleaved)
    return AttentionGrads(dq_BHTD, dk_BGSD, dv_BGSE)
