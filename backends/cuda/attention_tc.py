"""Launcher of ``attention_tc.cu``: FlashAttention forward on tensor cores, float16 and bfloat16.

Mirrors :func:`spec.attention.tiled.flash_forward` (same signature plus ``version=``, same
:class:`~spec.attention.naive.AttentionOut`), with every option of the float32 kernels
(``backends.cuda.attention``): causal (bottom-right), GQA/MQA, a broadcastable bias that
may hold -inf, a boolean mask, rows with no visible key (o = 0, lse = -inf), and lse. The
kernel multiplies 16-bit q, k, v on tensor cores (``mma.sync.m16n8k16``) and accumulates
in float32; see the header of ``attention_tc.cu`` for the design.

**Needs a GPU.** The CPU emulator has no tensor cores and runs no inline PTX, so both
public functions raise :class:`backends.cuda.CudaUnavailableError` there, after checking
their inputs (bad input gets the spec's TypeError/ValueError on any machine) and before
compiling anything. Without a GPU the kernel is still compiled by the compile gate
(``python -m backends.cuda.nvrtc_check``).

**float16**: :func:`flash_forward` takes float16 arrays (``bias`` float16 too, as the spec
requires; it is widened to float32 on the device, exactly) and returns float16 o and lse
(the kernel's float32 lse rounded to nearest).

**bfloat16**: NumPy and CuPy have no bfloat16 dtype, so :func:`flash_forward_bf16` takes
uint16 arrays holding bfloat16 bit patterns (``bias`` too), made with :func:`to_bf16_bits`
(round to nearest even) and read back with :func:`from_bf16_bits` (exact). It returns o as
bfloat16 bits (uint16) and lse in float32, which is what the kernel computes: in bfloat16
lse would keep 8 of its 24 significand bits, and at |lse| ~ 1e4 an ulp would be 64, while
the backward pass needs exp(score - lse).

Only D = E in :data:`HEAD_DIMS` are built (the head sizes of current models); others raise
ValueError. The positional keywords (``rope``, ``alibi_slopes``, ``alibi_form``) are
accepted for the spec's signature, and any of them given raises ValueError: this kernel
does not implement them (the float32 kernels v1-v3 of ``backends.cuda.attention`` do).
``tile_t`` and ``tile_s`` are validated for the spec's signature and do not change the
result beyond rounding (the kernel's tiles are 64 x 64).

    >>> from backends.cuda.attention_tc import flash_forward, flash_forward_bf16, to_bf16_bits
    >>> o_BHTE, lse_BHT = flash_forward(q_BHTD.astype(np.float16), k16, v16, causal=True)
    >>> o_bits, lse_f32 = flash_forward_bf16(to_bf16_bits(q32), to_bf16_bits(k32), to_bf16_bits(v32))
"""

from __future__ import annotations

import functools
import sys
import time

import numpy as np

from backends.cuda import _launch, _timing
from backends.cuda._launch import CudaUnavailableError, KernelConfig
from backends.cuda.attention import Call, alibi_params, flops
from spec.attention.checks import (
    AttentionShape,
    check_attention_inputs,
    check_scale,
    check_tile,
)
from spec.attention.naive import (
    AttentionOut,
    attention,
    causal_visible_TS,
    expand_kv_heads,
)
from spec.attention.positional import NO_POSITIONS
from spec.attention.tiled import flash_forward as spec_flash_forward
from spec.tolerance import ToleranceReport, compare

SPEC = "spec.attention.tiled:flash_forward"
SOURCE = "attention_tc.cu"

VERSIONS = ("tc",)
HEAD_DIMS = (64, 128)
"""The head sizes D = E the kernel is built for."""
ELEMENT_TYPES = ("float16", "bfloat16")

WARPS = 4
ROWS = 16 * WARPS  # query rows per block: one m16 tile per warp
KEYS = 64  # keys per shared-memory tile
# __launch_bounds__ minimum blocks per SM (NVRTC 13.0 register counts). HEAD_DIM 128 takes
# 225 (sm_80) and 246 (sm_90) registers and spills under the 168 that 3 blocks leave, so 2:
# 8 warps per SM, as FlashAttention-2 runs. HEAD_DIM 64 takes 163 unbounded and 158 with 3
# blocks, spill-free (4 blocks would force 128 registers).
MIN_BLOCKS = {64: 3, 128: 2}


def smem_bytes(head_dim: int) -> int:
    """Dynamic shared memory: 2 stages x (K, V) tiles of KEYS rows of head_dim + 8 16-bit
    elements (the padding makes ldmatrix conflict-free, see attention_tc.cu)."""
    return 2 * 2 * KEYS * (head_dim + 8) * 2


def _config(element: str, head_dim: int) -> KernelConfig:
    defines = (("HEAD_DIM", str(head_dim)), ("ELEM_BF16", "1" if element == "bfloat16" else "0"),
               ("KEYS", str(KEYS)), ("WARPS", str(WARPS)),
               ("MIN_BLOCKS", str(MIN_BLOCKS[head_dim])))
    return KernelConfig(SOURCE, "attention_forward_tc", defines, threads=32 * WARPS,
                        dynamic_smem=smem_bytes(head_dim))


KERNELS: dict[tuple[str, int], KernelConfig] = {
    (element, head_dim): _config(element, head_dim)
    for element in ELEMENT_TYPES for head_dim in HEAD_DIMS
}
"""Every configuration this launcher uses; the compile gate compiles exactly these."""


# ---------------------------------------------------------------- bfloat16 as uint16 bits

def _xp(x):
    if _launch.is_cupy_array(x):
        import cupy

        return cupy
    return np


def to_bf16_bits(x_f32):
    """bfloat16 bit patterns (uint16) of a float32 array, rounded to nearest, ties to even.

    The upper 16 bits of the float32, plus one when the dropped 16 bits exceed half an
    ulp or equal it with an odd kept part: IEEE round-to-nearest-even, so a finite value
    past the largest bfloat16 rounds to inf. NaN stays NaN (sign and top mantissa bits
    kept, the quiet bit set, so that truncation never makes it inf); ±inf and ±0 are kept.
    NumPy or CuPy in, the same kind out.
    """
    if not _is_array(x_f32):
        raise TypeError(f"x_f32: expected a numpy or cupy array, got {type(x_f32).__name__}")
    xp = _xp(x_f32)
    if np.dtype(x_f32.dtype) != np.float32:
        raise TypeError(f"x_f32: expected dtype float32, got {x_f32.dtype}")
    u = x_f32.view(xp.uint32)
    # uint32 arithmetic: for finite values and ±inf the sum stays below 2^32 (at most
    # 0xFF800000 + 0x8000); NaNs may wrap around and are replaced below
    rounded = ((u + xp.uint32(0x7FFF) + ((u >> 16) & xp.uint32(1))) >> 16).astype(xp.uint16)
    nan = (u & xp.uint32(0x7FFFFFFF)) > xp.uint32(0x7F800000)
    quiet = ((u >> 16) | xp.uint32(0x0040)).astype(xp.uint16)
    return xp.where(nan, quiet, rounded)


def from_bf16_bits(bits_u16):
    """The float32 values of bfloat16 bit patterns (exact: bfloat16 is float32's upper half)."""
    if not _is_array(bits_u16):
        raise TypeError(f"bits_u16: expected a numpy or cupy array, got {type(bits_u16).__name__}")
    xp = _xp(bits_u16)
    if np.dtype(bits_u16.dtype) != np.uint16:
        raise TypeError(f"bits_u16: expected dtype uint16 (bfloat16 bits), got {bits_u16.dtype}")
    return (bits_u16.astype(xp.uint32) << 16).view(xp.float32)


# ---------------------------------------------------------------- validation

_TAKES = {
    "float16": "float16 (bfloat16: flash_forward_bf16 on uint16 bit arrays)",
    "bfloat16": "uint16 arrays holding bfloat16 bits (see to_bf16_bits)",
}


def _proxy(x, dtype=None):
    """What the spec's checks see: the array itself (NumPy) or a zero-byte view of its
    shape (CuPy); with ``dtype``, a view with that dtype instead of the array's."""
    if dtype is None and not _launch.is_cupy_array(x):
        return x
    return np.broadcast_to(np.zeros((), dtype=dtype or x.dtype), x.shape)


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or _launch.is_cupy_array(x)


def _check_bias_values(bias) -> None:
    """The spec's value rule for a bias on the device (NumPy biases are checked by the spec)."""
    xp = _xp(bias)
    if bool(xp.isnan(bias).any()) or bool(xp.isposinf(bias).any()):
        raise ValueError("bias: +inf and NaN are not allowed (use -inf or mask to forbid a key)")


def _check(q, k, v, *, causal, scale, bias, mask, tile_t, tile_s, element: str) -> AttentionShape:
    """The spec's checks, then this kernel's limits; no device needed.

    Order: causal, layout, dtype agreement and values as the spec checks them (a float32
    call gets the spec's messages for every other mistake), then tiles and scale, then
    the element type this entry point takes, then the head sizes built.
    """
    mask_view = None if mask is None else _proxy(mask)
    if element == "float16":
        bias_view = None if bias is None else _proxy(bias)
        shape = check_attention_inputs(_proxy(q), _proxy(k), _proxy(v), bias=bias_view,
                                       mask=mask_view, causal=causal)
        if bias is not None and _launch.is_cupy_array(bias):
            _check_bias_values(bias)
    else:
        named = (("q_BHTD", q), ("k_BGSD", k), ("v_BGSE", v), ("bias", bias))
        for name, x in named:
            if x is None:
                continue
            if not _is_array(x):
                raise TypeError(f"{name}: expected a numpy.ndarray, got {type(x).__name__}")
            if np.dtype(x.dtype) != np.uint16:
                raise TypeError(f"{name}: flash_forward_bf16 takes {_TAKES['bfloat16']}, "
                                f"got {np.dtype(x.dtype)}")
        # the spec's shape rules on float32 stand-ins; the bias's values decoded (exact)
        bias_view = None
        if bias is not None:
            bias_view = (from_bf16_bits(bias) if isinstance(bias, np.ndarray)
                         else _proxy(bias, np.float32))
        shape = check_attention_inputs(*(_proxy(x, np.float32) for x in (q, k, v)),
                                       bias=bias_view, mask=mask_view, causal=causal)
        if bias is not None and _launch.is_cupy_array(bias):
            _check_bias_values(from_bf16_bits(bias))
    check_tile("tile_t", tile_t)
    check_tile("tile_s", tile_s)
    check_scale(scale, shape.D)
    if element == "float16" and np.dtype(q.dtype) != np.float16:
        raise TypeError(f"q_BHTD, k_BGSD, v_BGSE: the tensor-core attention kernel takes "
                        f"{_TAKES['float16']}, got {np.dtype(q.dtype)}")
    if shape.D != shape.E or shape.D not in HEAD_DIMS:
        raise ValueError(
            f"q_BHTD, v_BGSE: the tensor-core attention kernel is built for head sizes "
            f"D = E in {HEAD_DIMS}, got D={shape.D}, E={shape.E} (other sizes: the float32 "
            f"kernels of backends.cuda.attention)"
        )
    return shape


def _require_gpu() -> None:
    """Raise CudaUnavailableError unless CuPy can run kernels here (checked before compiling)."""
    why = ("the tensor-core attention kernel needs a CUDA GPU: it is built from mma.sync and "
           "ldmatrix (inline PTX), and the CPU emulator has no tensor cores and runs no PTX")
    try:
        name = _launch.engine()
    except CudaUnavailableError:
        raise CudaUnavailableError(f"{why} ({_launch.gpu_unusable_reason()})") from None
    if name != "cupy":
        raise CudaUnavailableError(f"{why} ({_launch.ENV_VAR}={name} selects the emulator)")


# ---------------------------------------------------------------- launching

def _strides(shape_4, shape: AttentionShape) -> tuple[np.int64, ...]:
    """Element strides of a C-contiguous (B|1, H|1, T|1, S|1) array, 0 where broadcast."""
    full = (shape.B, shape.H, shape.T, shape.S)
    out, step = [], 1
    for n, f in reversed(list(zip(shape_4, full))):
        out.append(0 if (n == 1 and f != 1) else step)
        step *= n
    return tuple(np.int64(s) for s in reversed(out))


def _aligned(x):
    """The device array, copied when its address is not 16-byte aligned (cp.async needs it;
    a fresh CuPy allocation always is, a view with an offset need not be)."""
    if isinstance(x, np.ndarray):  # the emulator's "device" memory (tests only)
        return x
    return x if x.data.ptr % 16 == 0 else x.copy()


def _prepare(q, k, v, *, causal, scale, bias, mask, tile_t, tile_s, element: str) -> Call:
    """Validate, require a GPU, move the arrays to it and build the kernel's rule args."""
    shape = _check(q, k, v, causal=causal, scale=scale, bias=bias, mask=mask, tile_t=tile_t,
                   tile_s=tile_s, element=element)
    _require_gpu()
    return _to_engine("cupy", shape, q, k, v, causal=causal, scale=scale, bias=bias, mask=mask,
                      element=element)


def _to_engine(engine_name: str, shape: AttentionShape, q, k, v, *, causal, scale, bias, mask,
               element: str) -> Call:
    """A checked call's arrays on ``engine_name`` and the kernel's SCORE_RULE_PARAMS.

    "cupy" for every public call; "emulator" only for the test that runs this kernel with
    its PTX emulated (tests/backends/test_attention_tc.py), which launches it itself.
    """
    arrays = _launch.Arrays(engine_name, q, k, v, *(x for x in (bias, mask) if x is not None))
    xp = arrays.xp
    q_d, k_d, v_d = (_aligned(arrays.to_device(x)) for x in (q, k, v))
    # the kernel reads the bias as float32 (attention_common.cuh); both widenings are exact
    if bias is None:
        bias_d = xp.zeros((1, 1, 1, 1), np.float32)  # a placeholder the kernel never reads
    elif element == "float16":
        bias_d = arrays.to_device(bias).astype(np.float32)
    else:
        bias_d = xp.ascontiguousarray(from_bf16_bits(arrays.to_device(bias)))
    mask_d = arrays.to_device(mask) if mask is not None else xp.ones((1, 1, 1, 1), bool)
    rule = (bias_d, *_strides(bias_d.shape, shape), mask_d, *_strides(mask_d.shape, shape),
            np.int32(bias is not None), np.int32(mask is not None), np.int32(bool(causal)),
            np.float32(check_scale(scale, shape.D)), *alibi_params(arrays, NO_POSITIONS, 1))
    # no RoPE and no packed layout: those are arguments of the float32 kernels only
    return Call(shape, arrays, q_d, k_d, v_d, rule, NO_POSITIONS, (), ())


def _run(element: str, call: Call, o, lse_f32, kernel=None) -> None:
    """Launch the kernel (``kernel``, or the compiled configuration) on a prepared call."""
    B, H, G, T, S, D, E = call.shape
    config = KERNELS[(element, D)]
    if kernel is None:
        kernel = _launch.get_kernel(config)
    grid = (-(-T // ROWS), H, B)
    dims = tuple(np.int32(n) for n in (H, G, T, S, D, E))
    kernel(grid, (32 * WARPS,), (call.q, call.k, call.v, o, lse_f32, *dims, *call.rule),
           shared_mem=config.dynamic_smem)


def _outputs(element: str, call: Call):
    """o (NaN-poisoned; for bfloat16 the NaN bit pattern 0x7FC0) and a float32 lse."""
    B, H, _, T, _, _, E = call.shape
    xp = call.arrays.xp
    if element == "float16":
        o = call.arrays.empty((B, H, T, E), np.float16)
    else:
        o = xp.full((B, H, T, E), 0x7FC0, dtype=np.uint16)
    return o, call.arrays.empty((B, H, T), np.float32)


def _check_version(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"version: expected one of {VERSIONS}, got {version!r}")


def _reject_positions(rope, alibi_slopes, alibi_form) -> None:
    """The positional keywords are the spec's signature; this kernel implements none."""
    given = [name for name, is_given in (("rope", rope is not None),
                                         ("alibi_slopes", alibi_slopes is not None),
                                         ("alibi_form", not (isinstance(alibi_form, str)
                                                             and alibi_form == "linear")))
             if is_given]
    if given:
        raise ValueError(f"{', '.join(given)}: the tensor-core kernel does not implement "
                         f"positional options; use version v1-v3 (backends.cuda.attention)")


def flash_forward(q_BHTD, k_BGSD, v_BGSE, *, causal: bool = False, scale: float | None = None,
                  bias=None, mask=None, tile_t: int = 64, tile_s: int = 64, rope=None,
                  alibi_slopes=None, alibi_form: str = "linear",
                  version: str = "tc") -> AttentionOut:
    """FlashAttention forward on tensor cores, float16, as :func:`spec.attention.tiled.flash_forward`.

    ``q_BHTD, k_BGSD, v_BGSE``: float16 NumPy (copied to the GPU) or CuPy (used in place)
    arrays with D = E in :data:`HEAD_DIMS`; ``bias`` float16 (widened exactly to float32
    on the device), ``mask`` bool. Returns float16 o and lse as the kind of array that went
    in. Float32 accumulation; P is rounded to float16 before P·V (as FlashAttention-2).
    Raises CudaUnavailableError where no GPU is usable (the emulator cannot run it), and
    ValueError for any positional option (``rope``, ``alibi_slopes``, ``alibi_form``).
    """
    _check_version(version)
    _reject_positions(rope, alibi_slopes, alibi_form)
    call = _prepare(q_BHTD, k_BGSD, v_BGSE, causal=causal, scale=scale, bias=bias, mask=mask,
                    tile_t=tile_t, tile_s=tile_s, element="float16")
    o, lse = _outputs("float16", call)
    _run("float16", call, o, lse)
    return AttentionOut(call.arrays.result(o), call.arrays.result(lse.astype(np.float16)))


def flash_forward_bf16(q_bits, k_bits, v_bits, *, causal: bool = False,
                       scale: float | None = None, bias=None, mask=None, tile_t: int = 64,
                       tile_s: int = 64, rope=None, alibi_slopes=None, alibi_form: str = "linear",
                       version: str = "tc") -> AttentionOut:
    """FlashAttention forward on tensor cores, bfloat16, on bit patterns.

    ``q_bits, k_bits, v_bits`` (and ``bias``): uint16 NumPy or CuPy arrays holding bfloat16
    bits (:func:`to_bf16_bits`), shapes as :func:`flash_forward`; ``mask`` bool. Returns
    ``AttentionOut(o_bits, lse)``: o as bfloat16 bits (uint16; :func:`from_bf16_bits` gives
    its values) and lse in float32. Float32 accumulation; P is rounded to bfloat16 before
    P·V. Raises CudaUnavailableError where no GPU is usable, and ValueError for any
    positional option.
    """
    _check_version(version)
    _reject_positions(rope, alibi_slopes, alibi_form)
    call = _prepare(q_bits, k_bits, v_bits, causal=causal, scale=scale, bias=bias, mask=mask,
                    tile_t=tile_t, tile_s=tile_s, element="bfloat16")
    o, lse = _outputs("bfloat16", call)
    _run("bfloat16", call, o, lse)
    return AttentionOut(call.arrays.result(o), call.arrays.result(lse))


# ---------------------------------------------------------------- the bfloat16 bound

def _round_toward_zero_f32(x64: np.ndarray) -> np.ndarray:
    """float64 values rounded to float32 toward zero (returned as float64)."""
    with np.errstate(over="ignore"):
        r = x64.astype(np.float32)
    too_far = np.abs(r.astype(np.float64)) > np.abs(x64)  # rounded away from zero (or to inf)
    return np.where(too_far, np.nextafter(r, np.float32(0)), r).astype(np.float64)


def _tensor_core_dot(q_BHTD: np.ndarray, k_BHSD: np.ndarray) -> np.ndarray:
    """q·kᵀ (float32 values in, float32 out) as a model of mma.m16n8k16 accumulating in
    float32: per k16 step, the 16 products of 16-bit inputs (exact) summed exactly and added
    to the accumulator, the result rounded toward zero. NVIDIA does not document the
    rounding; Fasi, Higham, Mikaitis and Pranesh ("Numerical behavior of NVIDIA tensor
    cores", PeerJ Computer Science 7:e330, 2021) measured truncation, not rounding to
    nearest, on V100, T4 and A100. The float64 sums are exact for the spreads of exponent
    that attention's inputs have (53 bits against 16-bit products)."""
    D = q_BHTD.shape[-1]
    acc = np.zeros(q_BHTD.shape[:-1] + (k_BHSD.shape[-2],), np.float64)
    for d0 in range(0, D, 16):
        chunk = np.einsum("BHTD,BHSD->BHTS", q_BHTD[..., d0:d0 + 16].astype(np.float64),
                          k_BHSD[..., d0:d0 + 16].astype(np.float64))
        acc = _round_toward_zero_f32(acc + chunk)
    return acc.astype(np.float32)


def bf16_model(q_bits, k_bits, v_bits, *, causal: bool = False, scale: float | None = None,
               bias=None, mask=None, rounding: bool = True) -> AttentionOut:
    """NumPy model of the kernel's bfloat16 rounding points: the baseline of the bf16 bound.

    The spec has no bfloat16 to run in, so the baseline of the tolerance rule is this model
    instead: the spec's online softmax (spec.attention.tiled.flash_forward, key tiles of
    KEYS = 64 like the kernel's, so the running maxima P is scaled by are the kernel's)
    computed in float32 on the bfloat16 inputs, rounding where the kernel rounds:

        q·k    accumulated as the tensor cores do it (see _tensor_core_dot): per k16
               step of mma, the exact sum of 16 exact products added to the float32
               accumulator and rounded toward zero
        score  = scale · q·k (+ bias), float32
        P      = exp(score - m), float32; l sums this float32 P
        P·V    = bf16(P) · v: P rounded to bfloat16 (the A operand of mma), float32 sums
        o      = bf16(Õ / l);  lse = m + log l, float32

    The rounding toward zero matters only for lse, a float32 output: with logits of 1e4 a
    score's accumulation error is a few float32 ulps of 1e4, and lse inherits it. Left
    out: float32 rounding elsewhere (summation orders, exp2 against exp, the P·V
    accumulation), below the bfloat16 roundings of o by ~2^16. With ``rounding=False``
    it is the spec in float32 (a test holds it to the float64 oracle). NumPy uint16 bit
    arrays in (bias too); o and lse out as float32 arrays.
    """
    q, k, v = (from_bf16_bits(np.asarray(x)) for x in (q_bits, k_bits, v_bits))
    B, H, T, D = q.shape
    S, E = k.shape[2], v.shape[3]
    scale32 = np.float32(check_scale(scale, D))
    k_BHSD, v_BHSE = expand_kv_heads(k, H), expand_kv_heads(v, H)
    full = (B, H, T, S)
    bias_BHTS = None if bias is None else np.broadcast_to(from_bf16_bits(np.asarray(bias)), full)
    mask_BHTS = None if mask is None else np.broadcast_to(np.asarray(mask), full)
    causal_TS = causal_visible_TS(T, S) if causal else None
    minus_inf = np.float32(-np.inf)

    def bf16(x):
        return from_bf16_bits(to_bf16_bits(x)) if rounding else x

    m_BHT = np.full((B, H, T), minus_inf, np.float32)
    l_BHT = np.zeros((B, H, T), np.float32)
    acc_BHTE = np.zeros((B, H, T, E), np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        for s0 in range(0, S, KEYS):
            s1 = min(s0 + KEYS, S)
            # score = scale · q kᵀ + bias, -inf where not visible
            k_tile = k_BHSD[:, :, s0:s1]
            dot = (_tensor_core_dot(q, k_tile) if rounding
                   else np.einsum("BHTD,BHSD->BHTS", q, k_tile))
            x = scale32 * dot
            if bias_BHTS is not None:
                x = x + bias_BHTS[..., s0:s1]
            visible = np.ones(x.shape, bool)
            if causal_TS is not None:
                visible &= causal_TS[:, s0:s1]
            if mask_BHTS is not None:
                visible &= mask_BHTS[..., s0:s1]
            x = np.where(visible, x, minus_inf)
            # m' = max(m, rowmax), P = exp(x - m'_safe), α = exp(m - m'_safe)
            m_new = np.maximum(m_BHT, np.max(x, axis=-1))
            shift = np.where(m_new == minus_inf, np.float32(0), m_new)
            p = np.exp(x - shift[..., None])
            alpha = np.exp(m_BHT - shift)
            # l' = α l + rowsum(P) in float32;  Õ' = α Õ + bf16(P) V
            l_BHT = alpha * l_BHT + p.sum(axis=-1, dtype=np.float32)
            acc_BHTE = alpha[..., None] * acc_BHTE + np.einsum(
                "BHTS,BHSE->BHTE", bf16(p), v_BHSE[:, :, s0:s1])
            m_BHT = m_new
    empty = m_BHT == minus_inf
    l_safe = np.where(empty, np.float32(1), l_BHT)
    o = bf16((acc_BHTE / l_safe[..., None]).astype(np.float32))
    with np.errstate(divide="ignore"):
        lse = np.where(empty, minus_inf, m_BHT + np.log(l_safe)).astype(np.float32)
    return AttentionOut(o, lse)


def bf16_floor(oracle) -> float:
    """2 · max ulp_bf16(|oracle| + 0.3): the floor of the tolerance rule in bfloat16.

    The magnitude is rounded to bfloat16 first (as spec.tolerance does for its dtype);
    a bfloat16 ulp is 2^16 float32 ulps (8 against 24 significand bits) for the normal
    numbers that |x| + 0.3 always is.
    """
    oracle = np.asarray(oracle)
    finite = np.isfinite(oracle)
    if not finite.any():
        return 0.0
    with np.errstate(over="ignore"):
        magnitude = from_bf16_bits(to_bf16_bits((np.abs(oracle[finite]) + 0.3).astype(np.float32)))
    return float(2.0 * np.max(np.spacing(magnitude)) * 2.0**16)


def compare_bf16(out: AttentionOut, reference: AttentionOut,
                 model: AttentionOut) -> tuple[ToleranceReport, ToleranceReport]:
    """The bf16 bound: (report for o, report for lse) of a flash_forward_bf16 result.

    ``reference`` is the float64 oracle (or, as a cross-check, the float32 SIMT kernel) on
    the bfloat16 inputs' values; ``model`` is :func:`bf16_model` on them. o passes when
        max |o - reference| <= 2 · max |model.o - reference| + 2 · max ulp_bf16(|reference| + 0.3)
    (the rule of spec.tolerance with the model as baseline and a bfloat16 floor); lse,
    a float32 output, is held to spec.tolerance.compare with the model's float32 lse as
    the baseline.
    """
    o = from_bf16_bits(np.asarray(out.o_BHTE))
    report = compare(o, reference.o_BHTE, model.o_BHTE)
    floor = bf16_floor(reference.o_BHTE)
    bound = 2.0 * report.baseline_err + floor
    ok = report.reason != "non-finite mismatch" and report.err <= bound
    reason = report.reason if report.reason == "non-finite mismatch" else (
        "within tolerance" if ok else "outside tolerance")
    o_report = report._replace(ok=ok, floor=floor, bound=bound, reason=reason)
    return o_report, compare(np.asarray(out.lse_BHT), reference.lse_BHT, model.lse_BHT)


# ---------------------------------------------------------------- main

# Dense 16-bit tensor-core FMAs per clock per SM (float32 accumulate), by compute capability:
#   8.0 (A100): 312 TFLOP/s dense FP16/BF16 = 108 SMs x 1.41 GHz x 1024 FMA x 2
#               (NVIDIA A100 Tensor Core GPU Architecture whitepaper, 2020, Table 1)
#   9.0 (H100/H200 SXM): 989.4 TFLOP/s dense = 132 SMs x 1.83 GHz x 2048 FMA x 2
#               (NVIDIA H100 Tensor Core GPU Architecture whitepaper, 2022, Table 2). That
#               rate is reached by wgmma only; mma.sync, which this kernel uses, is reported
#               to reach roughly 60-70 % of it on Hopper, so "% of peak" on sm_90 reads
#               against a ceiling this design cannot reach.
_DENSE_FMA_PER_CLOCK = {(8, 0): 1024, (9, 0): 2048}
# cudaDeviceAttr values (CUDA runtime API)
_ATTR_CLOCK_KHZ, _ATTR_SM_COUNT, _ATTR_CC_MAJOR, _ATTR_CC_MINOR = 13, 16, 75, 76


def tensor_peak() -> tuple[float | None, str]:
    """(dense 16-bit tensor-core FLOP/s of this GPU at its boost clock, or None; a label)."""
    import cupy

    dev = cupy.cuda.Device().id

    def attr(a):
        return int(cupy.cuda.runtime.deviceGetAttribute(a, dev))

    cc = (attr(_ATTR_CC_MAJOR), attr(_ATTR_CC_MINOR))
    fma = _DENSE_FMA_PER_CLOCK.get(cc)
    if fma is None:
        return None, f"sm_{cc[0]}{cc[1]}: no peak in the table"
    peak = 2.0 * fma * attr(_ATTR_SM_COUNT) * attr(_ATTR_CLOCK_KHZ) * 1e3
    note = " (wgmma peak; mma.sync reaches ~60-70 % of it)" if cc[0] == 9 else ""
    return peak, f"dense 16-bit peak {peak / 1e12:.0f} TFLOP/s{note}"


def _validation_problems():
    """(name, B, H, G, T, S, bias kind, mask kind): tiles at edges (T = 77 is one full and
    one partial query block; S = 131 two full and one partial key tile), GQA, plain tiles
    (no bias or mask) and per-element ones, and T > S (rows with no visible key when
    causal)."""
    return (("plain", 2, 4, 2, 77, 131, None, None),
            ("bias+mask", 1, 4, 2, 77, 131, "per_head", "per_key"),
            ("T>S", 1, 2, 1, 150, 70, None, "per_key"))


def _validation_inputs(rng, B, H, G, T, S, D, bias_kind, mask_kind):
    q = rng.standard_normal((B, H, T, D))
    k = rng.standard_normal((B, G, S, D))
    v = rng.standard_normal((B, G, S, D))
    bias = None
    if bias_kind == "per_head":
        bias = np.where(rng.random((1, H, T, S)) < 0.1, -np.inf, rng.standard_normal((1, H, T, S)))
    mask = None if mask_kind is None else rng.random((B, 1, 1, S)) < 0.9
    return q, k, v, bias, mask


def _line(name: str, reports) -> tuple[bool, str]:
    ok = all(r.ok for r in reports)
    text = "  ".join(f"{n} err {r.err:.1e} (bound {r.bound:.1e})" for n, r in zip(("o", "lse"), reports))
    return ok, f"  {name:44s} {text}" + ("" if ok else "  FAILED")


def _validate(rng) -> bool:
    """Every dtype, head size, problem and causal flag against the float64 spec and against
    the float32 SIMT kernel v3; True when something failed."""
    from backends.cuda import attention as simt

    failed = False
    for D in HEAD_DIMS:
        for name, B, H, G, T, S, bias_kind, mask_kind in _validation_problems():
            q, k, v, bias, mask = _validation_inputs(rng, B, H, G, T, S, D, bias_kind, mask_kind)
            for causal in (False, True):
                tag = f"{name} B={B} H={H} G={G} T={T} S={S} D={D} causal={causal!s:5s}"
                # float16: baseline = the spec in float16
                x16 = [None if a is None else a.astype(np.float16) for a in (q, k, v, bias)]
                opts = {"causal": causal, "mask": mask}
                oracle = attention(*(a.astype(np.float64) for a in x16[:3]), **opts,
                                   bias=None if bias is None else x16[3].astype(np.float64))
                base = spec_flash_forward(*x16[:3], bias=x16[3], **opts)
                out = flash_forward(*x16[:3], bias=x16[3], **opts)
                ok, text = _line(f"float16  {tag}", [compare(o, r, b) for o, r, b in zip(out, oracle, base)])
                simt_out = simt.flash_forward(*(a.astype(np.float32) for a in x16[:3]), **opts,
                                              bias=None if bias is None else x16[3].astype(np.float32),
                                              version="v3")
                ok2, text2 = _line("   vs SIMT v3", [compare(o, r.astype(np.float64), b)
                                                     for o, r, b in zip(out, simt_out, base)])
                print(text + "\n" + text2)
                failed |= not (ok and ok2)
                # bfloat16: baseline = the rounding-point model (bf16_model)
                bits = [None if a is None else to_bf16_bits(a.astype(np.float32)) for a in (q, k, v, bias)]
                vals = [None if b is None else from_bf16_bits(b) for b in bits]
                oracle = attention(*(a.astype(np.float64) for a in vals[:3]), **opts,
                                   bias=None if bias is None else vals[3].astype(np.float64))
                model = bf16_model(*bits[:3], bias=bits[3], **opts)
                out = flash_forward_bf16(*bits[:3], bias=bits[3], **opts)
                ok, text = _line(f"bfloat16 {tag}", compare_bf16(out, oracle, model))
                simt_out = simt.flash_forward(*vals[:3], bias=vals[3], **opts, version="v3")
                ok2, text2 = _line("   vs SIMT v3", compare_bf16(
                    out, AttentionOut(*(r.astype(np.float64) for r in simt_out)), model))
                print(text + "\n" + text2)
                failed |= not (ok and ok2)
    return failed


def _time(args, rng) -> None:
    """ms, GB/s, TFLOP/s, % of the tensor-core peak and the ratio to PyTorch SDPA."""
    import cupy

    B, H, T, D = args.B, args.H, args.T, args.D
    shape = AttentionShape(B, H, H, T, T, D, D)
    nbytes = 2 * (B * H * T * D + 2 * B * H * T * D + B * H * T * D) + 4 * B * H * T
    bandwidth, _ = _timing.peaks()
    peak, peak_label = tensor_peak()
    print(f"attention_tc  time B={B} H={H} T=S={T} D=E={D}  {peak_label}; "
          f"bandwidth {bandwidth / 1e9:.0f} GB/s")
    for element in ("bfloat16", "float16"):
        x32 = [cupy.asarray(rng.standard_normal((B, H, T, D)).astype(np.float32)) for _ in range(3)]
        x = [to_bf16_bits(a) for a in x32] if element == "bfloat16" else [a.astype(np.float16) for a in x32]
        for causal in (False, True):
            call = _prepare(*x, causal=causal, scale=None, bias=None, mask=None, tile_t=64,
                            tile_s=64, element=element)
            o, lse = _outputs(element, call)
            ms = _timing.time_ms(functools.partial(_run, element, call, o, lse), repeats=10)
            n_flop = flops(shape, causal)
            tfs = n_flop / (ms * 1e-3)
            line = (f"  {element:8s} causal={causal!s:5s} {ms:8.3f} ms  "
                    f"{nbytes / (ms * 1e-3) / 1e9:6.0f} GB/s  {tfs / 1e12:6.1f} TFLOP/s")
            if peak is not None:
                line += f" ({100 * tfs / peak:.1f}% of peak)"
            sdpa = _timing.torch_sdpa_ms(B, H, T, D, causal, element)
            if sdpa is not None:
                line += f"  SDPA {sdpa:.3f} ms: {sdpa / ms:.2f}x SDPA's throughput"
            print(line + f"  [{nbytes} B, {n_flop} FLOP]")


def main(argv: list[str] | None = None) -> int:
    """Validate the float16 and bfloat16 kernels against the float64 spec; time them on a GPU.

    float16: the tolerance rule of spec.tolerance with the spec in float16 as baseline.
    bfloat16: the same rule with :func:`bf16_model` (the spec in float32 on the bfloat16
    inputs, rounding P and o to bfloat16 where the kernel does) as baseline and a bfloat16
    floor, see :func:`compare_bf16`. Both also against the float32 SIMT kernel v3 on the
    same input values. Timing at B, H, T = S, D = E (default 4, 16, 4096, 128), causal and
    not: FLOPs 2·B·H·(visible pairs)·(D + E) (attention.flops; exp not counted); bytes
    2·(B·H·T·D + 2·B·H·S·D + B·H·T·E) + 4·B·H·T (q, k, v read once, o and lse written once);
    % of the dense 16-bit tensor-core peak (see tensor_peak); the ratio to PyTorch SDPA in
    the same dtype. ``--sanitize``: validation only (for compute-sanitizer). Without a GPU
    (or on the emulator) it says so and returns 0: nothing here can run there.
    """
    args = _timing.attention_arguments(main.__doc__, argv, HEAD_DIMS)
    try:
        _require_gpu()
    except CudaUnavailableError as exc:
        print(f"attention_tc: skipped, {exc}")
        return 0
    print(f"attention_tc  validate  {_timing.device_name()}  {time.strftime('%Y-%m-%d')}")
    rng = np.random.default_rng(0)
    failed = _validate(rng)
    if not args.sanitize:
        _time(args, rng)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
