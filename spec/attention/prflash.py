"""PrFlashAttention: causal attention over key blocks chosen at random by block distance.

The paper (Wang et al., "Probabilistic FlashAttention", abstract and summary only)
says that a probability distribution over *block distances*, defined by a
"constrained harmonic deduction", decides which key blocks take part in a round of
attention, and that the lower-triangular shape is kept by re-shaping the tensors. It
gives no formula. This module implements the reading of shared/papers/notes.md,
section 1.6, and its alternatives:

* **Distributions** (plain functions returning keep probabilities ``p_NN`` over
  (query block i, key block j), zero above the diagonal, with the block distance
  δ = i - j): :func:`harmonic_probs` (the reading: local blocks kept, p(δ) ∝ 1/δ
  beyond, scaled to a per-row budget), :func:`uniform_probs`,
  :func:`sliding_window_probs` and :func:`power_of_two_probs` (baselines). Each row's
  probabilities sum to its expected number of kept blocks: ``min(budget, i + 1)``.
* **Samplers**: :func:`sample_keep` draws independent Bernoulli(p) blocks from any
  of them; :func:`sample_harmonic_categorical` draws a fixed number of distances
  without replacement from the normalised-harmonic categorical (the second reading).
* **Attention** takes the sampled mask itself (:func:`prflash_forward`), so every
  backend given the same mask computes the same thing: the exact online softmax over
  the kept blocks, through the CSR layout of :mod:`spec.attention.block_sparse` (the
  "reshape": each query block's kept key blocks gathered into one ragged row, the
  diagonal block last, the causal mask applied inside the blocks it cuts).

Blocks are square (one ``block_size`` for queries and keys) and distances are
counted in blocks; the distributions assume T = S (self-attention, as in training
and prefill), where the diagonal block i = j holds each query's own position.
"""

from __future__ import annotations

import math

import numpy as np

from spec.attention.block_sparse import (
    block_layout,
    block_sparse_backward,
    block_sparse_forward,
)
from spec.attention.checks import check_attention_inputs, check_tile
from spec.attention.naive import AttentionOut
from spec.attention.tiled import AttentionGrads

# ------------------------------------------------------------------- arguments


def _check_n_blocks(n_blocks) -> int:
    if isinstance(n_blocks, (bool, np.bool_)) or not isinstance(n_blocks, (int, np.integer)):
        raise TypeError(f"n_blocks: expected a positive int, got {type(n_blocks).__name__}")
    if n_blocks < 1:
        raise ValueError(f"n_blocks: expected a positive int, got {n_blocks}")
    return int(n_blocks)


def _check_window_sink(window, sink) -> tuple[int, bool]:
    window = check_tile("window", window)
    if not isinstance(sink, (bool, np.bool_)):
        raise TypeError(f"sink: expected a bool, got {type(sink).__name__}")
    return window, bool(sink)


def _check_budget(budget, window: int, sink: bool) -> float:
    """A budget is the expected number of kept blocks per row: a real number that
    covers the always-kept blocks (the local window, and the sink)."""
    if isinstance(budget, (bool, np.bool_)) or not isinstance(
        budget, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"budget: expected a real number of blocks per row, got {type(budget).__name__}")
    budget = float(budget)
    forced = window + int(sink)
    if not math.isfinite(budget) or budget < forced:
        raise ValueError(f"budget: expected a finite number of blocks per row >= {forced} "
                         f"(window={window} local blocks{' + the sink' if sink else ''} are always "
                         f"kept), got {budget}")
    return budget


def _forced_NN(n: int, window: int, sink: bool) -> np.ndarray:
    """Blocks every distribution keeps with probability 1: δ < window, and j = 0 (the
    sink) when asked; only causal ones (j <= i)."""
    i_N1, j_1N = np.arange(n)[:, None], np.arange(n)[None, :]
    delta_NN = i_N1 - j_1N
    forced_NN = (delta_NN >= 0) & (delta_NN < window)
    if sink:
        forced_NN |= (j_1N == 0) & (delta_NN >= 0)
    return forced_NN


def block_distance(n_blocks: int) -> np.ndarray:
    """δ_ij = i - j for an (n, n) block grid (negative above the diagonal: the future)."""
    n = _check_n_blocks(n_blocks)
    return np.arange(n)[:, None] - np.arange(n)[None, :]


# ---------------------------------------------------------------- distributions


def _fill_rows(weight_NN: np.ndarray, budget: float, window: int, sink: bool) -> np.ndarray:
    """Keep probabilities min(1, c_i · w_ij) for the free blocks of each row i (not forced,
    w > 0), with c_i solved exactly so that the row's probabilities sum to
    min(budget, i + 1), and 1 on the forced blocks.

    The row sum f(c) = Σ_j min(1, c·w_j) is piecewise linear and increasing in c, with
    breakpoints at c = 1/w_j. Taking the free blocks by decreasing weight, if the first
    m saturate (p = 1) then f(c) = m + c·Σ_{rest} w, so c = (target - m) / Σ_{rest} w,
    which is consistent when c·w_m <= 1 (the (m+1)-th stays unsaturated). The smallest
    consistent m gives the exact solution; no bisection.
    """
    n = weight_NN.shape[0]
    forced_NN = _forced_NN(n, window, sink)
    p_NN = forced_NN.astype(np.float64)
    for i in range(n):
        free = np.flatnonzero(~forced_NN[i, :i + 1] & (weight_NN[i, :i + 1] > 0))
        need = min(budget, i + 1) - forced_NN[i].sum()
        if need <= 0 or free.size == 0:
            continue
        # free blocks by decreasing weight; stable, so ties go to the nearer block
        order = free[np.argsort(-weight_NN[i, free], kind="stable")]
        w_K = weight_NN[i, order]
        rest_K = np.cumsum(w_K[::-1])[::-1]  # Σ_{k' >= k} w
        for m in range(order.size):
            c = (need - m) / rest_K[m]
            if c * w_K[m] <= 1:
                p_NN[i, order[:m]] = 1.0
                p_NN[i, order[m:]] = np.minimum(1.0, c * w_K[m:])
                break
        else:  # need = number of free blocks: every one saturates
            p_NN[i, order] = 1.0
    return p_NN


def harmonic_probs(n_blocks: int, budget: float, *, window: int = 1, sink: bool = False) -> np.ndarray:
    """The constrained harmonic distribution over block distances (the spec's reading).

    Math (shared/papers/notes.md, section 1.6; the paper gives no formula)
        p(δ) = 1                                  δ < window (the diagonal and local blocks)
        p(δ) = min(1, c_i / (δ - window + 2))     δ >= window: 1/2, 1/3, ... scaled by c_i
        with c_i solved exactly (not by bisection) so that Σ_j p_ij = min(budget, i + 1):
        every row expects ``budget`` kept blocks, or all of them when it has fewer.
        "Constrained" reads as the budget and the always-kept local blocks, "harmonic"
        as the 1/δ decay. ``sink=True`` also keeps block 0 (an attention sink,
        Xiao et al., 2024) with p = 1, counted in the budget.

    Shapes
        Returns p_NN, float64 (n_blocks, n_blocks), zero above the diagonal.

    Numerics
        Row sums equal min(budget, i + 1) to float64 rounding; a row saturates (every
        block p = 1) when its budget reaches its length.
    """
    n = _check_n_blocks(n_blocks)
    window, sink = _check_window_sink(window, sink)
    budget = _check_budget(budget, window, sink)
    delta_NN = block_distance(n)
    weight_NN = np.where(delta_NN >= window, 1.0 / np.maximum(delta_NN - window + 2, 1), 0.0)
    return _fill_rows(weight_NN, budget, window, sink)


def uniform_probs(n_blocks: int, budget: float, *, window: int = 1, sink: bool = False) -> np.ndarray:
    """Baseline: the local (and sink) blocks kept, every other past block with the same
    probability, so that each row expects min(budget, i + 1) blocks (as
    :func:`harmonic_probs`, with no preference by distance)."""
    n = _check_n_blocks(n_blocks)
    window, sink = _check_window_sink(window, sink)
    budget = _check_budget(budget, window, sink)
    weight_NN = (block_distance(n) >= window).astype(np.float64)
    return _fill_rows(weight_NN, budget, window, sink)


def sliding_window_probs(n_blocks: int, budget: float, *, sink: bool = False) -> np.ndarray:
    """Baseline: the nearest blocks only, deterministic where the budget is an integer.

    Each row keeps its floor(b) nearest blocks (δ = 0, 1, ...) with p = 1 and the next
    one with p = b - floor(b), so the expected count is min(budget, i + 1) exactly like
    the sampled distributions'. With ``sink``, block 0 is one of the kept blocks.
    """
    n = _check_n_blocks(n_blocks)
    _, sink = _check_window_sink(1, sink)
    budget = _check_budget(budget, 1, sink)
    p_NN = _forced_NN(n, 1, sink).astype(np.float64)
    for i in range(n):
        free_K = [j for j in range(i, -1, -1) if p_NN[i, j] == 0]  # nearest first
        need = min(budget, i + 1) - p_NN[i].sum()
        whole = min(math.floor(need), len(free_K))
        p_NN[i, free_K[:whole]] = 1.0
        if whole < len(free_K) and need > whole:
            p_NN[i, free_K[whole]] = need - whole
    return p_NN


def power_of_two_probs(n_blocks: int, *, window: int = 1, sink: bool = False) -> np.ndarray:
    """Baseline: PowerAttention's pattern (Chen et al., 2025) at block level, deterministic.

    Keeps δ < window and δ ∈ {1, 2, 4, 8, ...}: about log₂(i) + window blocks per row, a
    receptive field that doubles with every layer. Its budget is what the pattern
    gives (no ``budget`` argument); compare the others at its kept fraction.
    """
    n = _check_n_blocks(n_blocks)
    window, sink = _check_window_sink(window, sink)
    delta_NN = block_distance(n)
    power_NN = (delta_NN >= 1) & ((delta_NN & (delta_NN - 1)) == 0)
    return (_forced_NN(n, window, sink) | power_NN).astype(np.float64)


def harmonic_categorical(n_blocks: int, *, window: int = 1) -> np.ndarray:
    """The second reading: a normalised-harmonic categorical over each row's free distances.

    Math
        P_i(δ) = (1 / (δ - window + 1)) / H_{i - window + 1}    for window <= δ <= i
        (H_n the n-th harmonic number), i.e. 1/δ normalised by H over the row when
        window = 1: the notes' "(1/δ)/H" read per row, so that each row's weights are a
        distribution over the distances it can reach.

    Shapes
        Returns w_NN, float64 (n, n): each row's weights on its free distances sum to
        1; rows with no free distance (i < window) are all zero.
    """
    n = _check_n_blocks(n_blocks)
    window, _ = _check_window_sink(window, False)
    delta_NN = block_distance(n)
    free_NN = delta_NN >= window
    w_NN = np.where(free_NN, 1.0 / np.where(free_NN, delta_NN - window + 1, 1), 0.0)
    row_sum_N1 = w_NN.sum(axis=1, keepdims=True)
    return np.divide(w_NN, row_sum_N1, out=np.zeros_like(w_NN), where=row_sum_N1 > 0)


# --------------------------------------------------------------------- samplers


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


def _check_batch(batch) -> tuple[int, ...]:
    if not isinstance(batch, tuple) or len(batch) not in (0, 2) or not all(
        isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_)) and n >= 1
        for n in batch
    ):
        raise ValueError(f"batch: expected () for one shared mask or (B, H) positive ints for one "
                         f"mask per batch and head, got {batch!r}")
    return tuple(int(n) for n in batch)


def check_probs(p_NN, name: str = "p_NN") -> np.ndarray:
    """Keep probabilities: a float array (n, n) in [0, 1], zero above the diagonal."""
    if not isinstance(p_NN, np.ndarray) or p_NN.dtype.kind != "f":
        raise TypeError(f"{name}: expected a float numpy.ndarray, got "
                        f"{getattr(p_NN, 'dtype', type(p_NN).__name__)}")
    if p_NN.ndim != 2 or p_NN.shape[0] != p_NN.shape[1] or p_NN.size == 0:
        raise ValueError(f"{name}: expected a square (n, n) block grid, got shape {p_NN.shape}")
    if not (np.isfinite(p_NN).all() and (p_NN >= 0).all() and (p_NN <= 1).all()):
        raise ValueError(f"{name}: expected probabilities in [0, 1]")
    if np.triu(p_NN, 1).any():
        raise ValueError(f"{name}: blocks above the diagonal (the causal future) must have p = 0")
    return p_NN


def sample_keep(p_NN: np.ndarray, rng: np.random.Generator, *, batch: tuple = ()) -> np.ndarray:
    """One round's block mask: keep_ij ~ Bernoulli(p_ij), independently.

    Math
        keep_ij = [u_ij < p_ij] with u_ij ~ U[0, 1) from ``rng``: p = 1 always keeps
        (the diagonal), p = 0 never does (the future), and E[Σ_j keep_ij] = Σ_j p_ij.

    Shapes
        p_NN (n, n) from any distribution here; ``batch=()`` returns one mask keep_NN
        shared by every batch and head, ``batch=(B, H)`` one per batch and head,
        keep_BHNN. Draws exactly prod(batch)·n² uniforms from ``rng``.
    """
    p_NN = check_probs(p_NN)
    rng = _check_rng(rng)
    batch = _check_batch(batch)
    return rng.random(batch + p_NN.shape) < p_NN


def sample_harmonic_categorical(n_blocks: int, budget: float, rng: np.random.Generator, *,
                                window: int = 1, sink: bool = False, batch: tuple = ()) -> np.ndarray:
    """One round's block mask from the normalised-harmonic categorical, without replacement.

    Math
        Row i keeps its forced blocks (δ < window; block 0 with ``sink``) and draws
        k_i more distinct distances from :func:`harmonic_categorical` without
        replacement, where k_i = floor(r_i) plus one more with probability
        r_i - floor(r_i), r_i = min(budget, i + 1) - (forced blocks of the row): the
        same expected count as the Bernoulli distributions, but (for an integer
        budget) exactly that count in every row. Successive draws without replacement
        are taken as the k largest of log w + Gumbel noise (the Gumbel-top-k trick,
        Kool et al., 2019), which has the same distribution.

    Shapes
        Returns keep_NN (n, n) for ``batch=()``, keep_BHNN for ``batch=(B, H)``.

    Numerics
        The inclusion probabilities of this sampler are not the weights (drawing
        without replacement flattens them); :func:`prflash_forward`'s importance
        correction needs inclusion probabilities, so use it with :func:`sample_keep`.
    """
    n = _check_n_blocks(n_blocks)
    window, sink = _check_window_sink(window, sink)
    budget = _check_budget(budget, window, sink)
    rng = _check_rng(rng)
    batch = _check_batch(batch)
    forced_NN = _forced_NN(n, window, sink)
    w_NN = np.where(forced_NN, 0.0, harmonic_categorical(n, window=window))
    need_N = np.minimum(budget, np.arange(n) + 1.0) - forced_NN.sum(axis=1)
    whole_N = np.floor(need_N).astype(np.int64)
    # k_i = floor(r_i) + Bernoulli(r_i - floor(r_i))
    k_XN = whole_N + (rng.random(batch + (n,)) < need_N - whole_N)
    # Gumbel-top-k: rank the free blocks by log w + G, keep each row's k_i best
    with np.errstate(divide="ignore"):
        key_XNN = np.log(w_NN) + rng.gumbel(size=batch + (n, n))
    rank_XNN = np.argsort(np.argsort(-key_XNN, axis=-1, kind="stable"), axis=-1, kind="stable")
    free_NN = w_NN > 0
    return forced_NN | (free_NN & (rank_XNN < k_XN[..., None]))


def kept_fraction(keep: np.ndarray) -> float:
    """Computed tiles over the causal tiles of a square block mask (keep_NN or
    keep_BHNN): the compute of a round relative to dense causal FlashAttention."""
    n = keep.shape[-1]
    causal_NN = np.tril(np.ones((n, n), np.bool_))
    return float((keep & causal_NN).sum() / (causal_NN.sum() * (keep.size // (n * n))))


def budget_for_fraction(n_blocks: int, fraction: float) -> float:
    """The per-row budget b at which the masks drawn keep, in expectation, ``fraction``
    of the causal blocks (:func:`kept_fraction`): Σ_i min(b, i + 1) / (n(n+1)/2) =
    fraction, since every distribution here expects min(b, i + 1) blocks in row i.

    The kept fraction is piecewise linear and increasing in b: with b between the
    integers m and m + 1 (rows i < m keep all i + 1 blocks), it is
    (m(m+1)/2 + (n - m)·b) / (n(n+1)/2).
    """
    n = _check_n_blocks(n_blocks)
    total = n * (n + 1) / 2
    lo = 2 / (n + 1)  # b = 1: the diagonal only
    if not lo - 1e-12 <= fraction <= 1 + 1e-12:
        raise ValueError(f"fraction: expected a kept fraction in [{lo:.4f}, 1] for {n} blocks "
                         f"(the diagonal is always kept), got {fraction}")
    target = fraction * total
    for m in range(1, n):  # b in [m, m + 1]: rows i < m keep all i + 1, the other n - m keep b
        b = (target - m * (m + 1) / 2) / (n - m)
        if b <= m + 1:
            return float(max(b, 1.0))
    return float(n)


# -------------------------------------------------------------------- attention


def prflash_layout(q_BHTD, k_BGSD, v_BGSE, keep, block_size, importance):
    """The block-sparse call a PrFlashAttention call is: the CSR layout of ``keep``
    (checked against the problem's block grid) and the per-tile bias of the importance
    correction (None without it). Every backend builds its call with this, so all of
    them compute with the same layout and the same bias values."""
    shape = check_attention_inputs(q_BHTD, k_BGSD, v_BGSE, causal=True)
    layout = block_layout(keep, block_size)
    C = layout.block_size
    Nq, Nk = -(-shape.T // C), -(-shape.S // C)
    if layout.n_blocks != (Nq, Nk):
        raise ValueError(f"keep: expected a ({Nq}, {Nk}) block grid for T={shape.T}, S={shape.S}, "
                         f"block_size={C}, got {keep.shape}")
    return layout, importance_bias(importance, keep, q_BHTD.dtype)


def importance_bias(importance, keep: np.ndarray, dtype) -> np.ndarray | None:
    """β = log(1 / p) of every kept tile, in layout order and the working dtype (None
    without ``importance``): computed once here so that every backend adds the same
    numbers."""
    if importance is None:
        return None
    if not isinstance(importance, np.ndarray) or importance.dtype.kind != "f":
        raise TypeError(f"importance: expected None or a float numpy.ndarray of keep probabilities, "
                        f"got {getattr(importance, 'dtype', type(importance).__name__)}")
    if importance.shape != keep.shape[-2:] and importance.shape != keep.shape:
        raise ValueError(f"importance: expected the keep probabilities of shape {keep.shape[-2:]} "
                         f"or {keep.shape} (like keep), got {importance.shape}")
    p_XNN = np.broadcast_to(importance, keep.shape).astype(np.float64)
    p_K = p_XNN.reshape(-1)[np.flatnonzero(keep.reshape(-1))]
    if not ((p_K > 0) & (p_K <= 1)).all():
        raise ValueError("importance: every kept tile needs a keep probability in (0, 1]")
    # keep's nonzeros in C order are the layout's tiles in order (block_layout)
    return (-np.log(p_K)).astype(dtype)


def prflash_forward(
    q_BHTD: np.ndarray,
    k_BGSD: np.ndarray,
    v_BGSE: np.ndarray,
    keep: np.ndarray,
    *,
    block_size: int,
    importance: np.ndarray | None = None,
    scale: float | None = None,
) -> AttentionOut:
    """PrFlashAttention forward: causal attention over the kept blocks of one round.

    Math
        With the block mask M (``keep``, from :func:`sample_keep` or any other source),
        query t of block i attends to the causally visible keys of the blocks j with
        M_ij, by the exact online softmax (:func:`spec.attention.block_sparse.
        block_sparse_forward`, the diagonal block last, the causal mask inside it):
            o_t = Σ_{s ∈ kept, s <= t} exp(x_ts) v_s / Σ_{s ∈ kept, s <= t} exp(x_ts)
        with x_ts = scale·q_t·k_s, plus log(1/p_ij) when ``importance`` (the keep
        probabilities p the mask was drawn with) is given.

        The two estimators (the paper does not say which it means):
          * without ``importance`` the output is exact attention restricted to the kept
            blocks: given the mask there is no randomness, but it is biased toward the
            kept (local) blocks; it is unbiased only where dropped blocks carry no
            attention mass. With every causal block kept (p ≡ 1) it is exact attention.
          * with ``importance``, numerator and denominator, Σ exp(x)·v/p and Σ exp(x)/p
            over kept blocks, are Horvitz–Thompson estimates, each unbiased for the full
            sums under independent Bernoulli(p) blocks; their ratio (the output) is a
            ratio estimator, biased by O(1/kept blocks) but consistent, and its variance
            grows with Σ_j (1 - p_ij)/p_ij · (mass of block j)², so rarely kept blocks
            with much mass make it noisy. Use it with :func:`sample_keep` (whose
            inclusion probabilities are p), not with the categorical sampler.

    Shapes
        q_BHTD, k_BGSD, v_BGSE as :func:`spec.attention.tiled.flash_forward` (causal,
        bottom-right; T = S for the block distances of the distributions here).
        ``keep``: bool keep_NN (Nq, Nk) shared by all batches and heads, or keep_BHNN
        with each leading dimension 1 or full; Nq = ceil(T / block_size),
        Nk = ceil(S / block_size); no kept block may lie wholly in the causal future.
        ``importance``: None or float p of shape (Nq, Nk) or keep's shape, in (0, 1]
        on kept blocks. Returns o_BHTE and lse_BHT.

    Numerics
        Those of :func:`spec.attention.block_sparse.block_sparse_forward`. A query
        whose block kept no visible key (its diagonal block dropped, in a custom mask)
        gets o = 0, lse = -inf.
    """
    layout, block_bias = prflash_layout(q_BHTD, k_BGSD, v_BGSE, keep, block_size, importance)
    return block_sparse_forward(q_BHTD, k_BGSD, v_BGSE, layout, causal=True, scale=scale,
                                block_bias=block_bias)


def prflash_backward(
    q_BHTD: np.ndarray,
    k_BGSD: np.ndarray,
    v_BGSE: np.ndarray,
    o_BHTE: np.ndarray,
    lse_BHT: np.ndarray,
    do_BHTE: np.ndarray,
    keep: np.ndarray,
    *,
    block_size: int,
    importance: np.ndarray | None = None,
    scale: float | None = None,
) -> AttentionGrads:
    """Gradients of :func:`prflash_forward` for the same round's mask: the block-sparse
    backward (:func:`spec.attention.block_sparse.block_sparse_backward`), which gives
    dropped blocks no gradient; the mask and ``importance`` receive none."""
    layout, block_bias = prflash_layout(q_BHTD, k_BGSD, v_BGSE, keep, block_size, importance)
    return block_sparse_backward(q_BHTD, k_BGSD, v_BGSE, o_BHTE, lse_BHT, do_BHTE, layout,
                                 causal=True, scale=scale, block_bias=block_bias)
