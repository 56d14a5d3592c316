"""Hypothesis strategies that draw attention *problems*, not raw float arrays.

A problem is a small frozen description (shapes, options, regime, seed); its arrays
are made from the seed on demand, in float64 and then rounded to the working dtype,
so the oracle (run in a wider dtype) sees exactly the values the implementation
under test sees. Shapes are biased to tile edges (1, tile-1, tile, tile+1,
2·tile+1) and widths are often odd, where tiled code goes wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import example
from hypothesis import strategies as st

from spec.position.alibi import slopes as alibi_slopes
from spec.position.rope import RoPE
from spec.position.rope_alibi import harmonic_slopes

BIAS_KINDS = ("none", "full", "per_head", "per_key", "neg_inf")
MASK_KINDS = ("none", "random", "empty_rows", "per_key")
ROPE_KINDS = ("none", "rotate_half", "interleaved")
ALIBI_KINDS = ("none", "linear", "harmonic_number", "harmonic_prior")


@dataclass(frozen=True)
class AttentionProblem:
    """One attention problem: everything needed to build its inputs and options."""

    B: int
    H: int
    G: int
    T: int
    S: int
    D: int
    E: int
    causal: bool = False
    bias: str = "none"
    """none | full (B,H,T,S) | per_head (1,H,T,S) | per_key (B,1,1,S) | neg_inf (full, some -inf)."""
    mask: str = "none"
    """none | random (B,H,T,S) | empty_rows (B,1,T,S) with whole rows False | per_key (B,1,1,S)."""
    logit: float = 1.0
    """Size of the logits: q is scaled so that scores are of this order (1e4 tests overflow)."""
    scale: float | None = None
    tile_t: int = 64
    tile_s: int = 64
    seed: int = 0
    rope: str = "none"
    """none | rotate_half | interleaved (D must be even)."""
    rope_base: float = 10000.0
    alibi: str = "none"
    """none | an alibi_form: linear (Press et al.'s slopes) or a harmonic form (slopes 1/h)."""

    def positions(self) -> dict:
        """The positional keywords of the attention functions for this problem."""
        out: dict = {}
        if self.rope != "none":
            out["rope"] = RoPE(base=self.rope_base, layout=self.rope)
        if self.alibi != "none":
            slopes = alibi_slopes(self.H) if self.alibi == "linear" else harmonic_slopes(self.H)
            out.update(alibi_slopes=slopes, alibi_form=self.alibi)
        return out

    def arrays(self, dtype) -> dict[str, np.ndarray | None]:
        """q, k, v, do, bias and mask in ``dtype`` (mask is bool)."""
        rng = np.random.default_rng(self.seed)
        B, H, G, T, S, D, E = self.B, self.H, self.G, self.T, self.S, self.D, self.E
        q = rng.standard_normal((B, H, T, D))
        k = rng.standard_normal((B, G, S, D))
        if self.logit != 1.0:
            # score ≈ scale·q·k with |q·k| ~ sqrt(D); make it ~ logit
            q = q * (self.logit / (np.sqrt(D) * (self.scale or D**-0.5)))
        v = rng.standard_normal((B, G, S, E))
        do = rng.standard_normal((B, H, T, E))
        bias = None
        if self.bias == "full":
            bias = rng.standard_normal((B, H, T, S))
        elif self.bias == "per_head":
            bias = rng.standard_normal((1, H, T, S))
        elif self.bias == "per_key":
            bias = rng.standard_normal((B, 1, 1, S))
        elif self.bias == "neg_inf":
            bias = np.where(rng.random((B, H, T, S)) < 0.3, -np.inf, rng.standard_normal((B, H, T, S)))
        mask = None
        if self.mask == "random":
            mask = rng.random((B, H, T, S)) < 0.7
        elif self.mask == "empty_rows":
            mask = np.broadcast_to(rng.random((B, 1, T, 1)) < 0.6, (B, 1, T, S)).copy()
        elif self.mask == "per_key":
            mask = rng.random((B, 1, 1, S)) < 0.6
        dtype = np.dtype(dtype)
        out = {"q": q, "k": k, "v": v, "do": do, "bias": bias}
        out = {n: (None if x is None else x.astype(dtype)) for n, x in out.items()}
        out["mask"] = mask
        return out

    def options(self, *, tiles: bool = True) -> dict:
        """Keyword options of the attention functions for this problem."""
        opts = {"causal": self.causal, "scale": self.scale, **self.positions()}
        if tiles:
            opts.update(tile_t=self.tile_t, tile_s=self.tile_s)
        return opts


def _near_tile(draw, tile: int, top: int) -> int:
    edges = [n for n in (1, tile - 1, tile, tile + 1, 2 * tile + 1) if 1 <= n <= top]
    return draw(st.one_of(st.sampled_from(edges), st.integers(1, top)))


@st.composite
def attention_problems(
    draw,
    *,
    max_len: int = 40,
    max_batch: int = 2,
    max_width: int = 24,
    positions: bool = False,
) -> AttentionProblem:
    """Problems of up to ``max_len`` positions, biased to the tile edges.

    With ``positions`` some problems also carry RoPE (either layout, the usual base or a
    small one that turns even nearby positions by large angles) and an ALiBi form.
    """
    tile_t = draw(st.sampled_from([1, 2, 3, 4, 7, 8, 16, 64]))
    tile_s = draw(st.sampled_from([1, 2, 3, 5, 8, 16, 64]))
    T = _near_tile(draw, min(tile_t, max_len), max_len)
    S = _near_tile(draw, min(tile_s, max_len), max_len)
    G = draw(st.sampled_from([1, 2]))
    H = G * draw(st.sampled_from([1, 2, 3]))
    widths = [w for w in (1, 3, 4, 8, 15, 16, 17, 24) if w <= max_width]
    D = draw(st.sampled_from(widths))
    rope, alibi = "none", "none"
    if positions:
        rope = draw(st.sampled_from(ROPE_KINDS))
        alibi = draw(st.sampled_from(ALIBI_KINDS))
        if rope != "none" and D % 2:
            D += 1  # RoPE rotates pairs
    return AttentionProblem(
        B=draw(st.integers(1, max_batch)),
        H=H,
        G=G,
        T=T,
        S=S,
        D=D,
        E=draw(st.sampled_from(widths)),
        causal=draw(st.booleans()),
        bias=draw(st.sampled_from(BIAS_KINDS)),
        mask=draw(st.sampled_from(MASK_KINDS)),
        logit=draw(st.sampled_from([1.0, 1.0, 1.0, 30.0, 1e4])),
        scale=draw(st.sampled_from([None, None, 0.5])),
        tile_t=tile_t,
        tile_s=tile_s,
        seed=draw(st.integers(0, 2**32 - 1)),
        rope=rope,
        rope_base=draw(st.sampled_from([10000.0, 50.0])) if rope != "none" else 10000.0,
        alibi=alibi,
    )


# Edge cases every property test pins with @example (DESIGN.md, "Tests").
EDGE_PROBLEMS = (
    AttentionProblem(B=1, H=1, G=1, T=1, S=1, D=1, E=1),
    AttentionProblem(B=1, H=2, G=1, T=1, S=9, D=3, E=5, causal=True, tile_s=4),
    AttentionProblem(B=1, H=2, G=2, T=9, S=4, D=4, E=3, causal=True, tile_t=4, tile_s=2),
    AttentionProblem(B=2, H=4, G=2, T=6, S=11, D=8, E=8, causal=True, tile_t=4, tile_s=4),
    AttentionProblem(B=1, H=2, G=1, T=7, S=7, D=5, E=4, mask="empty_rows", tile_t=3, tile_s=3),
    AttentionProblem(B=1, H=2, G=2, T=8, S=8, D=4, E=4, bias="neg_inf", tile_t=3, tile_s=5),
    AttentionProblem(B=1, H=1, G=1, T=5, S=13, D=8, E=8, logit=1e4, tile_t=2, tile_s=4),
)

# Positional edge cases: T > S (negative query positions), logits of 30 with every form,
# interleaved pairs with a base that wraps angles, masks on top of the distance bias.
POSITION_EDGE_PROBLEMS = (
    AttentionProblem(B=1, H=2, G=1, T=9, S=4, D=4, E=3, causal=True, tile_t=4, tile_s=2,
                     rope="rotate_half", alibi="linear"),
    AttentionProblem(B=1, H=3, G=1, T=6, S=17, D=8, E=5, logit=30.0, tile_t=4, tile_s=5,
                     rope="interleaved", rope_base=50.0, alibi="harmonic_number"),
    AttentionProblem(B=2, H=4, G=2, T=7, S=7, D=6, E=4, causal=True, mask="empty_rows",
                     bias="per_head", tile_t=3, tile_s=3, alibi="harmonic_prior"),
    AttentionProblem(B=1, H=2, G=2, T=1, S=12, D=2, E=2, causal=True, rope="interleaved"),
)


def with_edge_examples(test, *, positions: bool = False):
    """Pin every problem of EDGE_PROBLEMS (and POSITION_EDGE_PROBLEMS with ``positions``)
    on a hypothesis test taking ``problem``."""
    for p in EDGE_PROBLEMS + (POSITION_EDGE_PROBLEMS if positions else ()):
        test = example(problem=p)(test)
    return test


def with_position_edge_examples(test):
    return with_edge_examples(test, positions=True)


# ---------------------------------------------------------------- packed sequences


@dataclass(frozen=True)
class VarlenProblem:
    """Packed variable-length attention: per-sequence query and key lengths (0 allowed)
    and the options every sequence shares."""

    lengths_q: tuple[int, ...]
    lengths_k: tuple[int, ...]
    H: int
    G: int
    D: int
    E: int
    causal: bool = False
    logit: float = 1.0
    scale: float | None = None
    tile_t: int = 64
    tile_s: int = 64
    seed: int = 0
    rope: str = "none"
    rope_base: float = 10000.0
    alibi: str = "none"

    def positions(self) -> dict:
        as_problem = AttentionProblem(B=1, H=self.H, G=self.G, T=1, S=1, D=self.D, E=self.E,
                                      rope=self.rope, rope_base=self.rope_base, alibi=self.alibi)
        return as_problem.positions()

    def cu_seqlens(self) -> tuple[np.ndarray, np.ndarray]:
        """int32 offsets, as FlashAttention takes them."""
        return (np.concatenate([[0], np.cumsum(self.lengths_q)]).astype(np.int32),
                np.concatenate([[0], np.cumsum(self.lengths_k)]).astype(np.int32))

    def arrays(self, dtype) -> dict[str, np.ndarray]:
        """Packed q_THD, k_SGD, v_SGE in ``dtype``."""
        rng = np.random.default_rng(self.seed)
        T, S = sum(self.lengths_q), sum(self.lengths_k)
        q = rng.standard_normal((T, self.H, self.D))
        if self.logit != 1.0:
            q = q * (self.logit / (np.sqrt(self.D) * (self.scale or self.D**-0.5)))
        k = rng.standard_normal((S, self.G, self.D))
        v = rng.standard_normal((S, self.G, self.E))
        return {"q": q.astype(dtype), "k": k.astype(dtype), "v": v.astype(dtype)}

    def options(self) -> dict:
        return {"causal": self.causal, "scale": self.scale, "tile_t": self.tile_t,
                "tile_s": self.tile_s, **self.positions()}


@st.composite
def varlen_problems(draw, *, max_seqs: int = 4, max_len: int = 30) -> VarlenProblem:
    """Up to ``max_seqs`` sequences, some empty, lengths biased to tile edges."""
    tile_t = draw(st.sampled_from([1, 3, 8, 16, 64]))
    tile_s = draw(st.sampled_from([1, 4, 8, 16, 64]))
    n = draw(st.integers(1, max_seqs))
    lengths = st.one_of(st.sampled_from([0, 1, tile_t + 1, max_len]), st.integers(0, max_len))
    lengths_q = [draw(lengths) for _ in range(n)]
    lengths_k = [draw(lengths) for _ in range(n)]
    b = draw(st.integers(0, n - 1))  # at least one sequence with queries and keys
    lengths_q[b], lengths_k[b] = max(lengths_q[b], 1), max(lengths_k[b], 1)
    G = draw(st.sampled_from([1, 2]))
    D = draw(st.sampled_from([2, 4, 8, 16, 24]))
    E = draw(st.sampled_from([1, 3, 8, 17]))
    rope = draw(st.sampled_from(ROPE_KINDS))
    return VarlenProblem(
        lengths_q=tuple(lengths_q), lengths_k=tuple(lengths_k),
        H=G * draw(st.sampled_from([1, 2, 3])), G=G, D=D, E=E,
        causal=draw(st.booleans()),
        logit=draw(st.sampled_from([1.0, 1.0, 30.0])),
        scale=draw(st.sampled_from([None, 0.5])),
        tile_t=tile_t, tile_s=tile_s,
        seed=draw(st.integers(0, 2**32 - 1)),
        rope=rope,
        rope_base=draw(st.sampled_from([10000.0, 50.0])),
        alibi=draw(st.sampled_from(ALIBI_KINDS)),
    )


VARLEN_EDGE_PROBLEMS = (
    VarlenProblem(lengths_q=(1,), lengths_k=(1,), H=1, G=1, D=2, E=1),
    # an empty sequence on each side, a decoding step (T_b = 1), and T_b > S_b under causal
    VarlenProblem(lengths_q=(0, 3, 1, 9), lengths_k=(4, 0, 12, 5), H=2, G=1, D=4, E=3, causal=True,
                  tile_t=4, tile_s=4, rope="rotate_half", alibi="linear"),
    VarlenProblem(lengths_q=(17, 5), lengths_k=(17, 5), H=4, G=2, D=8, E=8, logit=30.0,
                  tile_t=8, tile_s=8, rope="interleaved", rope_base=50.0, alibi="harmonic_prior"),
)


def with_varlen_edge_examples(test):
    for p in VARLEN_EDGE_PROBLEMS:
        test = example(problem=p)(test)
    return test


# ---------------------------------------------------------------- block-sparse layouts

PATTERNS = ("random", "all", "per_head", "empty_rows", "sliding")


@dataclass(frozen=True)
class BlockSparseProblem:
    """Attention over a block layout: shapes, block size, the pattern and its options."""

    B: int
    H: int
    G: int
    T: int
    S: int
    D: int
    E: int
    block_size: int
    causal: bool = True
    pattern: str = "random"
    """random (shared) | all (every tile, or every causal one) | per_head (one per batch and
    head) | empty_rows (some query blocks keep nothing) | sliding (the two nearest key blocks)."""
    block_bias: bool = False
    logit: float = 1.0
    scale: float | None = None
    seed: int = 0

    def arrays(self, dtype) -> dict[str, np.ndarray]:
        """q, k, v, do in ``dtype``, as :meth:`AttentionProblem.arrays` makes them."""
        x = AttentionProblem(B=self.B, H=self.H, G=self.G, T=self.T, S=self.S, D=self.D,
                             E=self.E, logit=self.logit, scale=self.scale, seed=self.seed).arrays(dtype)
        return {n: x[n] for n in ("q", "k", "v", "do")}

    def keep(self) -> np.ndarray:
        """The block mask: keep_NN, or keep_BHNN for ``per_head``; never a tile wholly in
        the causal future."""
        from spec.attention.block_sparse import causal_blocks

        rng = np.random.default_rng(self.seed + 1)
        C = self.block_size
        Nq, Nk = -(-self.T // C), -(-self.S // C)
        allowed_NN = causal_blocks(self.T, self.S, C) if self.causal else np.ones((Nq, Nk), np.bool_)
        if self.pattern == "all":
            return allowed_NN
        if self.pattern == "sliding":
            # the two key blocks nearest each query block's last query (bottom-right)
            last_N1 = (np.minimum((np.arange(Nq) + 1) * C, self.T)[:, None] - 1 + self.S - self.T) // C
            delta_NN = last_N1 - np.arange(Nk)[None, :]
            return allowed_NN & (delta_NN >= 0) & (delta_NN < 2)
        shape = (self.B, self.H, Nq, Nk) if self.pattern == "per_head" else (Nq, Nk)
        keep = allowed_NN & (rng.random(shape) < 0.5)
        if self.pattern == "empty_rows":
            keep &= rng.random((Nq, 1)) < 0.5
        return keep

    def layout(self):
        from spec.attention.block_sparse import block_layout

        return block_layout(self.keep(), self.block_size)

    def bias_of(self, layout, dtype) -> np.ndarray | None:
        """One finite value per kept tile (an importance correction is such a bias)."""
        if not self.block_bias:
            return None
        rng = np.random.default_rng(self.seed + 2)
        return rng.uniform(0.0, 3.0, layout.n_kept).astype(dtype)

    def options(self) -> dict:
        return {"causal": self.causal, "scale": self.scale}


@st.composite
def block_sparse_problems(draw, *, max_len: int = 40) -> BlockSparseProblem:
    """Block sizes 1 .. 16 with lengths around block edges; GQA; causal or not."""
    C = draw(st.sampled_from([1, 3, 4, 8, 16]))
    T = _near_tile(draw, C, max_len)
    S = draw(st.one_of(st.just(T), st.integers(1, max_len)))
    G = draw(st.sampled_from([1, 2]))
    return BlockSparseProblem(
        B=draw(st.integers(1, 2)), H=G * draw(st.sampled_from([1, 2])), G=G, T=T, S=S,
        D=draw(st.sampled_from([1, 4, 8, 17])), E=draw(st.sampled_from([1, 3, 8])),
        block_size=C, causal=draw(st.booleans()), pattern=draw(st.sampled_from(PATTERNS)),
        block_bias=draw(st.booleans()), logit=draw(st.sampled_from([1.0, 1.0, 30.0])),
        scale=draw(st.sampled_from([None, 0.5])), seed=draw(st.integers(0, 2**32 - 1)),
    )


BLOCK_SPARSE_EDGE_PROBLEMS = (
    BlockSparseProblem(B=1, H=1, G=1, T=1, S=1, D=1, E=1, block_size=1, pattern="all"),
    # short last blocks, T != S under causal, a pattern per head with GQA
    BlockSparseProblem(B=2, H=4, G=2, T=17, S=21, D=8, E=3, block_size=8, pattern="per_head",
                       block_bias=True),
    BlockSparseProblem(B=1, H=2, G=1, T=33, S=33, D=16, E=8, block_size=16, pattern="empty_rows",
                       logit=30.0),
    BlockSparseProblem(B=1, H=1, G=1, T=5, S=12, D=4, E=4, block_size=4, causal=False,
                       pattern="sliding"),
)


def with_block_sparse_edge_examples(test):
    for p in BLOCK_SPARSE_EDGE_PROBLEMS:
        test = example(problem=p)(test)
    return test


# ---------------------------------------------------------------- row softmax

SOFTMAX_REGIMES = ("normal", "masked", "empty_rows", "nan_row")


@dataclass(frozen=True)
class SoftmaxProblem:
    """One score matrix x_TS for the row softmax: shape, regime, size of scores, seed."""

    T: int
    S: int
    regime: str = "normal"
    """normal | masked (30% -inf) | empty_rows (at least one row all -inf) | nan_row (one NaN)."""
    logit: float = 4.0
    """Standard deviation of the scores (1e4 tests overflow; capped to float16's range)."""
    seed: int = 0

    def x(self, dtype) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        x = np.clip(rng.standard_normal((self.T, self.S)) * self.logit, -6e4, 6e4)
        if self.regime == "masked":
            x[rng.random((self.T, self.S)) < 0.3] = -np.inf
        elif self.regime == "empty_rows":
            empty = rng.random(self.T) < 0.5
            empty[rng.integers(self.T)] = True
            x[empty] = -np.inf
        elif self.regime == "nan_row":
            x[rng.integers(self.T), rng.integers(self.S)] = np.nan
        return x.astype(dtype)


# Row lengths around a warp (32) and a v2 block (128 threads), where strided loops and
# merges go wrong; row counts around v1's 4 rows per block.
_SOFTMAX_S_EDGES = (1, 2, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 257)
_SOFTMAX_T_EDGES = (1, 2, 3, 4, 5, 8, 9)


@st.composite
def softmax_problems(draw, *, max_t: int = 12, max_s: int = 300) -> SoftmaxProblem:
    return SoftmaxProblem(
        T=draw(st.one_of(st.sampled_from(_SOFTMAX_T_EDGES), st.integers(1, max_t))),
        S=draw(st.one_of(st.sampled_from(_SOFTMAX_S_EDGES), st.integers(1, max_s))),
        regime=draw(st.sampled_from(SOFTMAX_REGIMES)),
        logit=draw(st.sampled_from([1.0, 4.0, 4.0, 30.0, 1e4])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


SOFTMAX_EDGE_PROBLEMS = (
    SoftmaxProblem(T=1, S=1),
    SoftmaxProblem(T=1, S=1, regime="empty_rows"),
    SoftmaxProblem(T=5, S=33, regime="empty_rows", seed=2),
    SoftmaxProblem(T=3, S=129, regime="nan_row"),
    SoftmaxProblem(T=4, S=200, logit=1e4),
    SoftmaxProblem(T=9, S=257, regime="masked", logit=30.0),
)


def with_softmax_edge_examples(test):
    """Pin every problem of SOFTMAX_EDGE_PROBLEMS on a hypothesis test taking ``problem``."""
    for p in SOFTMAX_EDGE_PROBLEMS:
        test = example(problem=p)(test)
    return test


# ------------------------------------------------------------------ tokenizers


def word_tables(n_symbols: int, max_len: int, max_words: int):
    """BPE word tables {word (tuple of int symbols): count}: few symbols, so that pairs
    repeat, runs overlap ("aaaa", "abab") and equal counts (ties) are common."""
    return st.dictionaries(st.lists(st.integers(0, n_symbols - 1), min_size=1, max_size=max_len).map(tuple),
                           st.integers(1, 5), max_size=max_words)


# ----------------------------------------------------------- in-context read-out

READOUT_ACTIVATIONS = ("softmax", "linear")


@dataclass(frozen=True)
class ReadoutProblem:
    """One batch of the in-context read-out (spec.attention.readout): sizes, options, seed.

    Tokens and queries are N(0, 1), the queries' last entry 0 as in regression prompts
    unless ``query_label``; key–query entries are N(0, kq_std²) (3 makes the softmax
    peaked), value rows and targets N(0, 1).
    """

    B: int
    S: int
    D: int
    H: int
    activation: str = "softmax"
    scale: float | None = None
    norm: float | None = None
    kq_std: float = 0.5
    query_label: bool = False
    seed: int = 0

    def arrays(self, dtype):
        """(z_BSD, zq_BD, y_B, kq_HDD, ov_HD) in ``dtype``."""
        rng = np.random.default_rng(self.seed)
        z = rng.standard_normal((self.B, self.S, self.D))
        zq = rng.standard_normal((self.B, self.D))
        if not self.query_label:
            zq[:, -1] = 0.0
        y = rng.standard_normal(self.B)
        kq = self.kq_std * rng.standard_normal((self.H, self.D, self.D))
        ov = rng.standard_normal((self.H, self.D))
        return tuple(a.astype(dtype) for a in (z, zq, y, kq, ov))

    @property
    def options(self) -> dict:
        out = {"activation": self.activation, "scale": self.scale}
        if self.activation == "linear":
            out["norm"] = self.norm
        return out


@st.composite
def readout_problems(draw, *, max_b: int = 9, max_s: int = 140, max_h: int = 8) -> ReadoutProblem:
    activation = draw(st.sampled_from(READOUT_ACTIVATIONS))
    return ReadoutProblem(
        B=draw(st.integers(1, max_b)),
        S=draw(st.one_of(st.sampled_from([1, 31, 32, 33, 40, 65, 129]), st.integers(1, max_s))),
        D=draw(st.sampled_from([1, 2, 6, 6, 6, 11])),
        H=draw(st.integers(1, max_h)),
        activation=activation,
        scale=draw(st.sampled_from([None, None, 0.3, 1.0])),
        norm=draw(st.sampled_from([None, 40.0])) if activation == "linear" else None,
        kq_std=draw(st.sampled_from([0.1, 0.5, 3.0])),
        query_label=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


READOUT_EDGE_PROBLEMS = (
    ReadoutProblem(B=1, S=1, D=6, H=1),
    ReadoutProblem(B=1, S=1, D=1, H=1, activation="linear"),
    ReadoutProblem(B=256, S=40, D=6, H=8, seed=1),              # the paper's training step
    ReadoutProblem(B=3, S=100, D=6, H=2, activation="linear", norm=40.0, seed=2),
    ReadoutProblem(B=4, S=129, D=11, H=3, kq_std=3.0, seed=3),  # peaked softmax rows
)


def with_readout_edge_examples(test):
    """Pin every problem of READOUT_EDGE_PROBLEMS on a hypothesis test taking ``problem``."""
    for p in READOUT_EDGE_PROBLEMS:
        test = example(problem=p)(test)
    return test
