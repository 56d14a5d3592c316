"""Attention over packed variable-length sequences: no padding, offsets instead.

A batch of sequences of lengths T_0, T_1, ... is stored concatenated along one axis
(``q_THD`` with T = Σ T_b) and described by cumulative offsets
``cu_seqlens_q = [0, T_0, T_0 + T_1, ...]``: sequence b owns rows
cu_seqlens_q[b] : cu_seqlens_q[b+1]. This is the "unpadding" of MosaicBERT (Portes
et al., 2023) and the ``flash_attn_varlen_func`` interface of FlashAttention-2: a
batch of short and long sequences costs what its tokens cost, not what
B x max length costs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spec.attention.checks import FLOAT_DTYPES, check_scale, check_tile
from spec.attention.positional import check_positions
from spec.attention.tiled import flash_forward
from spec.position.rope import RoPE


class VarlenOut(NamedTuple):
    """Output of a packed attention forward pass."""

    o_THE: np.ndarray
    lse_HT: np.ndarray
    """Per head and packed query row (the layout of FlashAttention's varlen lse);
    -inf for a row whose sequence has no key."""


class VarlenShape(NamedTuple):
    """Sizes of a packed problem: N sequences, T and S packed rows."""

    N: int
    H: int
    G: int
    T: int
    S: int
    D: int
    E: int


def check_cu_seqlens(name: str, cu_seqlens, total: int) -> np.ndarray:
    """Offsets are a 1-D int array [0, ..., total], non-decreasing; returned as int64."""
    if not isinstance(cu_seqlens, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray of ints, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer dtype, got {cu_seqlens.dtype}")
    if cu_seqlens.ndim != 1 or cu_seqlens.size < 2:
        raise ValueError(f"{name}: expected shape (N+1,) with N >= 1 sequences, got {cu_seqlens.shape}")
    cu = cu_seqlens.astype(np.int64)
    if cu[0] != 0 or cu[-1] != total:
        raise ValueError(f"{name}: expected to start at 0 and end at the packed length {total}, "
                         f"got {cu[0]} ... {cu[-1]}")
    if (np.diff(cu) < 0).any():
        raise ValueError(f"{name}: offsets must be non-decreasing, got {cu.tolist()}")
    return cu


def _check_packed(name: str, x, letters: str) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{name}: expected 3 dimensions ({letters}), got shape {x.shape}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float16, float32, float64 or longdouble, got {x.dtype}")


def check_varlen_inputs(q_THD, k_SGD, v_SGE, cu_seqlens_q, cu_seqlens_k, causal):
    """Validate a packed problem; return its sizes and both offset arrays (int64)."""
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    for name, x, letters in (("q_THD", q_THD, "THD"), ("k_SGD", k_SGD, "SGD"), ("v_SGE", v_SGE, "SGE")):
        _check_packed(name, x, letters)
    if not (q_THD.dtype == k_SGD.dtype == v_SGE.dtype):
        raise TypeError(f"q_THD, k_SGD, v_SGE: expected one dtype, got {q_THD.dtype}, {k_SGD.dtype}, {v_SGE.dtype}")
    T, H, D = q_THD.shape
    S, G, Dk = k_SGD.shape
    Sv, Gv, E = v_SGE.shape
    if Dk != D:
        raise ValueError(f"k_SGD: expected width D={D} as in q_THD {q_THD.shape}, got {k_SGD.shape}")
    if Sv != S or Gv != G:
        raise ValueError(f"v_SGE: expected S={S} rows and G={G} heads as in k_SGD {k_SGD.shape}, got {v_SGE.shape}")
    if min(H, G, D, E) == 0 or H % G:
        raise ValueError(f"k_SGD: key/value heads G={G} must divide query heads H={H}, "
                         f"and widths must be >= 1 (q_THD {q_THD.shape}, v_SGE {v_SGE.shape})")
    cu_q = check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, T)
    cu_k = check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, S)
    if cu_q.size != cu_k.size:
        raise ValueError(f"cu_seqlens_q, cu_seqlens_k: expected the same number of sequences, "
                         f"got {cu_q.size - 1} and {cu_k.size - 1}")
    return VarlenShape(cu_q.size - 1, H, G, T, S, D, E), cu_q, cu_k


def flash_varlen_forward(
    q_THD: np.ndarray,
    k_SGD: np.ndarray,
    v_SGE: np.ndarray,
    cu_seqlens_q: np.ndarray,
    cu_seqlens_k: np.ndarray,
    *,
    causal: bool = False,
    scale: float | None = None,
    tile_t: int = 64,
    tile_s: int = 64,
    rope: RoPE | None = None,
    alibi_slopes: np.ndarray | None = None,
    alibi_form: str = "linear",
) -> VarlenOut:
    """Attention of each packed sequence to its own keys only.

    Math
        For each sequence b, with rows t ∈ [cu_q[b], cu_q[b+1]) and keys
        s ∈ [cu_k[b], cu_k[b+1]):
            o_t, lse_t = flash_forward(q_b, k_b, v_b, ...)
        so tokens never attend across sequences, the causal mask is bottom-right
        aligned within each sequence (T_b ≠ S_b allowed: a decoding step per sequence),
        and RoPE and ALiBi positions restart at 0 in every sequence.

    Shapes
        q_THD, k_SGD, v_SGE packed (T = Σ T_b, S = Σ S_b); cu_seqlens_q and
        cu_seqlens_k int arrays of length N + 1. A sequence may have no queries
        (nothing to compute) or no keys (its rows get o = 0, lse = -inf). Returns
        o_THE and lse_HT.

    Numerics
        As :func:`spec.attention.tiled.flash_forward`, which this calls on each
        sequence: this definition is the per-sequence result by construction, and
        the backends' packed kernels are tested against it. ``scale`` defaults to
        1/sqrt(D).
    """
    shape, cu_q, cu_k = check_varlen_inputs(q_THD, k_SGD, v_SGE, cu_seqlens_q, cu_seqlens_k, causal)
    check_tile("tile_t", tile_t)
    check_tile("tile_s", tile_s)
    scale = check_scale(scale, shape.D)
    check_positions(rope, alibi_slopes, alibi_form, H=shape.H, D=shape.D, dtype=q_THD.dtype)
    dtype = q_THD.dtype
    o_THE = np.zeros((shape.T, shape.H, shape.E), dtype)
    lse_HT = np.full((shape.H, shape.T), -np.inf, dtype)
    for b in range(shape.N):
        tq, tq1, sk, sk1 = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
        if tq1 == tq or sk1 == sk:
            continue  # no queries, or no keys: o = 0, lse = -inf as initialised
        # sequence b as a batch of one: (T_b, H, D) -> (1, H, T_b, D)
        out = flash_forward(
            q_THD[tq:tq1].transpose(1, 0, 2)[None],
            k_SGD[sk:sk1].transpose(1, 0, 2)[None],
            v_SGE[sk:sk1].transpose(1, 0, 2)[None],
            causal=causal, scale=scale, tile_t=tile_t, tile_s=tile_s,
            rope=rope, alibi_slopes=alibi_slopes, alibi_form=alibi_form,
        )
        o_THE[tq:tq1] = out.o_BHTE[0].transpose(1, 0, 2)
        lse_HT[:, tq:tq1] = out.lse_BHT[0]
    return VarlenOut(o_THE, lse_HT)


def pack(xs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-sequence arrays (each (T_b, ...)) and return them with cu_seqlens."""
    if not xs:
        raise ValueError("xs: expected at least one sequence")
    lengths = [x.shape[0] for x in xs]
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return np.concatenate(xs, axis=0), cu
