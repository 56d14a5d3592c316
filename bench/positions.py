"""Benchmark: fused RoPE / ALiBi in the Numba FlashAttention forward, against plain attention,
a materialised ALiBi bias, and PyTorch SDPA on the CPU.

Run as a script (never collected by pytest: no test_* names):

    python bench/positions.py              # B=1, H=8, D=64, T=S=2048
    python bench/positions.py --quick      # T=S=512, a few seconds
    python bench/positions.py --threads 1

For causal and non-causal float32 attention it times, in the same process with the
same thread count:

    plain            backends.cpu.attention.flash_forward(q, k, v)
    alibi            ... alibi_slopes = ALiBi's slopes (fused: no T x S array)
    rope             ... rope = RoPE()    (fused: q, k rotated while tiles are copied)
    rope+alibi       ... **spec.position.rope_alibi.options(H)  (RoPE + harmonic slopes)
    bias (dense)     ... bias = spec.position.alibi.bias(...)[None], a (1, H, T, S) array
    torch plain      torch.nn.functional.scaled_dot_product_attention
    torch bias       ... attn_mask = the same (1, H, T, S) float bias (causal folded in as -inf)

Each configuration is called once to warm up (and compile), then the Numba ones are
timed in rounds (one call of each per round, in turn), then the torch ones likewise,
and the median per configuration is reported: slow drifts in the machine's load then
hit every configuration of a library alike, so the ratios to ``plain`` stay
meaningful on a shared machine. The dense bias is built
before timing (its construction is not counted: the favourable case for that path).

The issue's target: fused ALiBi and RoPE cost at most 10% more than plain attention
at T = S = 2048; the materialised bias costs more. Before timing, each positional
variant is checked against another route to the same numbers (fused ALiBi against
the dense bias, fused RoPE against pre-rotated inputs, ours against torch), so that
the table never compares programs that compute different things.
"""

from __future__ import annotations

import _path  # first: takes bench/ off sys.path, where tokenize.py shadows the standard library's

_path.use_repository()

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np


def _round_robin_ms(fns: dict, rounds: int) -> dict:
    """Median ms of each callable, timed one call per round in turn after one warm-up."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def _agree(name: str, a: np.ndarray, b: np.ndarray) -> None:
    # float32 outputs of size ~1: any real disagreement is far larger than 1e-3
    diff = float(np.abs(a - b).max())
    if not diff < 1e-3:
        raise RuntimeError(f"{name}: the two routes to the same output differ by {diff}")


def _configurations(q, k, v, causal: bool) -> tuple[dict, float]:
    """The timed callables of one (size, causal) case, and the ms it took to build the
    dense (1, H, T, S) bias (not timed with the calls)."""
    import torch
    import torch.nn.functional as F

    from backends.cpu.attention import flash_forward
    from spec.position.alibi import bias as alibi_bias
    from spec.position.alibi import slopes
    from spec.position.rope import RoPE
    from spec.position.rope_alibi import options

    H, T, S = q.shape[1], q.shape[2], k.shape[2]
    m_H = slopes(H)
    t = time.perf_counter()
    # causal: Press et al.'s -m (i - j) (future keys are masked); else the symmetric form
    dense_1HTS = alibi_bias(m_H.astype(np.float32), T, S, symmetric=not causal)[None]
    build_ms = (time.perf_counter() - t) * 1e3
    # SDPA takes no is_causal together with attn_mask: the causal mask is folded in
    future_TS = causal & (np.arange(S)[None, :] > np.arange(T)[:, None] + (S - T))
    tmask = torch.from_numpy(np.where(future_TS, np.float32(-np.inf), dense_1HTS))
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    return {
        "plain": lambda: flash_forward(q, k, v, causal=causal),
        "alibi": lambda: flash_forward(q, k, v, causal=causal, alibi_slopes=m_H),
        "rope": lambda: flash_forward(q, k, v, causal=causal, rope=RoPE()),
        "rope+alibi": lambda: flash_forward(q, k, v, causal=causal, **options(H)),
        "bias (dense)": lambda: flash_forward(q, k, v, causal=causal, bias=dense_1HTS),
        "torch plain": lambda: F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal),
        "torch bias": lambda: F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask),
    }, build_ms


def run(T: int, threads: int, rounds: int) -> list[dict]:
    """Time every configuration at B=1, H=8, D=64, T=S, causal and not; one dict per row."""
    import numba
    import torch

    from backends.cpu.attention import flash_forward
    from backends.cpu.rope import rope_qk

    numba.set_num_threads(threads)
    torch.set_num_threads(threads)
    B, H, D, S = 1, 8, 64, T
    rng = np.random.default_rng(0)
    q = rng.standard_normal((B, H, T, D), dtype=np.float32)
    k = rng.standard_normal((B, H, S, D), dtype=np.float32)
    v = rng.standard_normal((B, H, S, D), dtype=np.float32)
    rows = []
    for causal in (False, True):
        fns, build_ms = _configurations(q, k, v, causal)
        with torch.no_grad():
            _agree("alibi fused vs dense", fns["alibi"]().o_BHTE, fns["bias (dense)"]().o_BHTE)
            _agree("rope fused vs pre-rotated",
                   fns["rope"]().o_BHTE, flash_forward(*rope_qk(q, k), v, causal=causal).o_BHTE)
            _agree("numba vs torch", fns["plain"]().o_BHTE, fns["torch plain"]().numpy())
            _agree("numba bias vs torch bias", fns["bias (dense)"]().o_BHTE, fns["torch bias"]().numpy())
            # numba and torch each run their own OpenMP thread pool, whose idle threads
            # spin for a while after each parallel region: alternating the two would time
            # each against the other's spinning, so each library gets its own block
            ms = _round_robin_ms({n: f for n, f in fns.items() if not n.startswith("torch")}, rounds)
            ms |= _round_robin_ms({n: f for n, f in fns.items() if n.startswith("torch")}, rounds)
        rows.append({"T": T, "S": S, "causal": causal, "threads": threads,
                     "build_ms": build_ms, "ms": ms})
    return rows


def format_table(rows: list[dict]) -> str:
    """A markdown table: ms of each configuration and its ratio to plain Numba attention."""
    lines = ["| T=S | causal | configuration | ms | / numba plain | / torch plain |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        plain, tplain = r["ms"]["plain"], r["ms"]["torch plain"]
        for name, ms in r["ms"].items():
            lines.append(f"| {r['T']} | {'yes' if r['causal'] else 'no'} | {name} | {ms:.1f} "
                         f"| {ms / plain:.3f} | {ms / tplain:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=S=512 instead of 2048")
    parser.add_argument("--threads", type=int, default=2, help="numba = torch threads")
    parser.add_argument("--rounds", type=int, default=None, help="timed calls per configuration")
    args = parser.parse_args(argv)
    import numba

    try:
        import torch
    except ImportError:
        print("bench/positions.py compares against PyTorch's scaled_dot_product_attention, "
              "and PyTorch is not installed here: install it (a CPU build is enough) and "
              "run this again", file=sys.stderr)
        return 2

    T = 512 if args.quick else 2048
    rounds = args.rounds or (5 if args.quick else 11)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"numpy {np.__version__}, numba {numba.__version__}, torch {torch.__version__}")
    print(f"threads: numba = torch = {args.threads}; median of {rounds} round-robin rounds "
          f"after one warm-up")
    rows = run(T, args.threads, rounds)
    print("B=1, H=8, D=64, float32; dense (1,H,T,S) bias built in "
          + ", ".join(f"{r['build_ms']:.0f} ms ({'causal' if r['causal'] else 'symmetric'})"
                      for r in rows) + " (not timed)")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
