"""Benchmark: Numba block-sparse attention with PrFlashAttention masks against dense (CPU).

Run as a script (never collected by pytest: no test_* names):

    python bench/prflash.py --threads 2          # T=S=8192, B=1, H=8, D=E=64, float32
    python bench/prflash.py --quick              # T=S=1024, a smoke run of a few seconds

For kept fractions of about 100%, 50%, 25%, 12.5% and 6% of the causal blocks it
draws one PrFlashAttention round per head: ``harmonic_probs`` (window 1, no sink) with
the per-row budget that makes the expected kept fraction the target
(``spec.attention.prflash.budget_for_fraction``), sampled by ``sample_keep``
with ``batch=(B, H)``; the actual fraction is ``spec.attention.prflash.kept_fraction``
(at least the diagonal's 2/(n + 1) for n blocks: 11.8% at n = 16, the --quick size).
It then times, in one process with the same thread count, causal and block_size 64:

* ``prflash_forward`` of :mod:`backends.cpu.block_sparse` (the whole call: the CSR
  layout of the mask, validation, the kernel),
* the dense Numba forward ``backends.cpu.attention.flash_forward(causal=True)``
  (tiles of 64, the anchor of the speed-up),
* PyTorch ``scaled_dot_product_attention(is_causal=True)`` on the CPU,

and the backward of all three at a few fractions (``--backward``; torch's backward is
its forward + backward through autograd minus its forward). Each time is the best of
``--rounds`` rounds after one warm-up call each; a round calls every configuration
once in turn, so a slow spell of the machine falls on all of them alike. Numba's
calls run in one block and torch's in another (two thread pools spinning against
each other would distort both).
Before timing, the block-sparse forward with every causal block kept is checked to
equal the dense Numba forward bit for bit, and the dense forward to agree with torch.

The issue's target: at 25% kept, the block-sparse forward at least 3x faster than the
dense Numba forward at T = S = 8192.
"""

from __future__ import annotations

import _path  # first: takes bench/ off sys.path, where tokenize.py shadows the standard library's

_path.use_repository()

import argparse
import os
import platform
import sys
import time

import numpy as np


def best_ms(fns: dict, rounds: int) -> dict:
    """Best time (ms) of each function over ``rounds`` rounds; a round calls every
    function once, in turn, so that a slow spell of the machine (other processes)
    falls on all of them alike. One warm-up call each first (compilation)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: min(ts) * 1e3 for name, ts in times.items()}


def run(T: int, threads: int, rounds: int, fractions, backward_fractions, seed: int = 0):
    import numba
    import torch
    import torch.nn.functional as F

    from backends.cpu import attention as dense
    from backends.cpu import block_sparse as sparse
    from spec.attention import prflash

    numba.set_num_threads(threads)
    torch.set_num_threads(threads)
    B, H, D, C = 1, 8, 64, 64
    n = -(-T // C)
    rng = np.random.default_rng(seed)
    q, k, v, do = (rng.standard_normal((B, H, T, D), dtype=np.float32) for _ in range(4))

    masks = []
    for f in fractions:
        # below the diagonal's 2/(n + 1) no budget reaches the target: take the diagonal
        budget = prflash.budget_for_fraction(n, max(f, 2 / (n + 1)))
        keep = prflash.sample_keep(prflash.harmonic_probs(n, budget), rng, batch=(B, H))
        masks.append((f, budget, keep))

    # what is timed computes the same thing
    full = np.broadcast_to(np.tril(np.ones((n, n), np.bool_)), (B, H, n, n)).copy()
    o_dense = dense.flash_forward(q, k, v, causal=True)
    o_full = sparse.prflash_forward(q, k, v, full, block_size=C)
    if not all(np.array_equal(a, b) for a, b in zip(o_dense, o_full)):
        raise RuntimeError("block-sparse forward with every block kept differs from the dense forward")
    tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
    tdo = torch.from_numpy(do)
    with torch.no_grad():
        ref = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True).numpy()
    diff = float(np.abs(o_dense.o_BHTE - ref).max())
    if not diff < 1e-3:
        raise RuntimeError(f"numba and torch outputs differ by {diff}")

    # Numba block: every configuration once per round
    numba_fns = {"dense_fwd": lambda: dense.flash_forward(q, k, v, causal=True)}
    if backward_fractions:
        numba_fns["dense_bwd"] = lambda: dense.flash_backward(q, k, v, *o_dense, do, causal=True)
    rows = []
    for f, budget, keep in masks:
        rows.append({"target": f, "budget": budget, "kept": prflash.kept_fraction(keep),
                     "tiles": int(keep.sum())})
        numba_fns[f"{f} fwd"] = lambda keep=keep: sparse.prflash_forward(q, k, v, keep, block_size=C)
        if f in backward_fractions:
            o = sparse.prflash_forward(q, k, v, keep, block_size=C)
            numba_fns[f"{f} bwd"] = lambda keep=keep, o=o: sparse.prflash_backward(
                q, k, v, *o, do, keep, block_size=C)
    res = best_ms(numba_fns, rounds)
    for row in rows:
        for kind in ("fwd", "bwd"):
            if f"{row['target']} {kind}" in res:
                row[kind] = res[f"{row['target']} {kind}"]

    # torch block
    def torch_fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)

    def torch_fwd_bwd():
        o = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
        o.backward(tdo)
        tq.grad = tk.grad = tv.grad = None

    torch_fns = {"torch_fwd": torch_fwd}
    if backward_fractions:
        torch_fns["torch_fwd_bwd"] = torch_fwd_bwd
    res.update(best_ms(torch_fns, rounds))
    if backward_fractions:
        res["torch_bwd"] = max(res["torch_fwd_bwd"] - res["torch_fwd"], 1e-9)
    return res, rows


def format_table(res: dict, rows: list[dict], passes=("fwd", "bwd")) -> str:
    head = ("| pass | target kept | kept (actual) | kept tiles | budget (blocks/row) "
            "| block-sparse ms | dense numba ms | torch SDPA ms | speed-up vs dense numba "
            "| speed-up vs torch |")
    lines = [head, "|" + "---|" * 10]
    for kind in passes:
        for r in rows:
            if kind not in r:
                continue
            ms = r[kind]
            dn, tt = res[f"dense_{kind}"], res[f"torch_{kind}"]
            lines.append(
                f"| {kind} | {100 * r['target']:.1f}% | {100 * r['kept']:.1f}% | {r['tiles']} "
                f"| {r['budget']:.2f} | {ms:.1f} | {dn:.1f} | {tt:.1f} | {dn / ms:.2f}x "
                f"| {tt / ms:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=S=1024, a smoke run")
    parser.add_argument("-T", type=int, default=None, help="T = S (default 8192, 1024 with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="numba = torch threads")
    parser.add_argument("--rounds", type=int, default=None, help="best of this many calls")
    parser.add_argument("--backward", type=str, default="1,0.25,0.0625",
                        help="target fractions at which to time the backward too ('' for none)")
    args = parser.parse_args(argv)
    import numba

    try:
        import torch
    except ImportError:
        print("bench/prflash.py compares against PyTorch's scaled_dot_product_attention, and "
              "PyTorch is not installed here: install it (a CPU build is enough) and run this "
              "again", file=sys.stderr)
        return 2

    T = args.T or (1024 if args.quick else 8192)
    rounds = args.rounds or (3 if args.quick else 5)
    fractions = (1.0, 0.5, 0.25, 0.125, 0.0625)
    backward = tuple(float(x) for x in args.backward.split(",") if x.strip())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"numpy {np.__version__}, numba {numba.__version__}, torch {torch.__version__}")
    print(f"threads: numba = torch = {args.threads}; B=1, H=8, T=S={T}, D=E=64, float32, "
          f"causal, block_size 64; best of {rounds} rounds after one warm-up")
    print("pattern: harmonic_probs(n, budget), one sample_keep mask per head; block-sparse = "
          "backends.cpu.block_sparse.prflash_forward / prflash_backward (whole call)")
    t = time.perf_counter()
    res, rows = run(T, args.threads, rounds, fractions, backward)
    print(format_table(res, rows))
    print(f"({time.perf_counter() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
