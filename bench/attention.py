"""Benchmark: Numba FlashAttention (backends.cpu.attention) against PyTorch SDPA on the CPU.

Run as a script (never collected by pytest: no test_* names):

    python bench/attention.py            # B=1, H=8, D=64, T=S in {512, 1024, 2048, 4096}
    python bench/attention.py --quick    # small sizes, a few seconds
    python bench/attention.py --threads 1

For each size, causal and not, float32, it times the Numba forward and backward and
torch.nn.functional.scaled_dot_product_attention forward and backward (autograd on
the same inputs) in the same process with the same thread count: one warm-up call,
then the median of several repeats. FLOPs are counted explicitly:

    forward  = 4 · B · H · D · (visible (t, s) pairs)      (two matmuls, 2 FLOPs per MAC;
               visible pairs = T·S, or Σ_t min(S, max(0, t + S - T + 1)) under causal)
    backward = 2.5 · forward                                (FlashAttention-2's count)

The anchor is this machine's float32 matmul rate (np.matmul of 2048² matrices), measured
in a subprocess with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, because those
variables (set on the project's machines) halve OpenBLAS's GEMM; the output says
whether they were set and that the anchor ran without them.
"""

from __future__ import annotations

import _path  # first: takes bench/ off sys.path, where tokenize.py shadows the standard library's

_path.use_repository()

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

_GEMM_SNIPPET = r"""
import time, numpy as np
n = 2048
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
times = []
for _ in range(7):
    t = time.perf_counter(); a @ b; times.append(time.perf_counter() - t)
print(2 * n**3 / min(times) / 1e9)
"""


def gemm_rate_gflops(threads: int) -> tuple[float, str]:
    """float32 GEMM GFLOP/s of this machine, measured with the OpenBLAS overrides unset."""
    env = dict(os.environ)
    was = {k: env.pop(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in env}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-c", _GEMM_SNIPPET], env=env,
                         capture_output=True, text=True, check=True)
    note = ("OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE were set here (" +
            ", ".join(f"{k}={v}" for k, v in was.items()) + "); unset for the GEMM anchor"
            if was else "OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE not set in this environment")
    return float(out.stdout.strip()), note


def visible_pairs(T: int, S: int, causal: bool) -> int:
    """Number of (query, key) pairs attended: T·S, or the bottom-right causal count."""
    if not causal:
        return T * S
    t = np.arange(T)
    return int(np.clip(t + S - T + 1, 0, S).sum())


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (and compilation on the first size)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def run(gemm: float, quick: bool = False, threads: int = 2, repeats: int | None = None) -> list[dict]:
    """Time every configuration; return one dict per (T, causal) with ms and GFLOP/s.

    ``gemm`` is the anchor rate (GFLOP/s) from :func:`gemm_rate_gflops`. Before timing a
    size, the Numba and torch forward outputs are compared, so that a table never
    compares two programs that compute different things.
    """
    import numba
    import torch
    import torch.nn.functional as F

    from backends.cpu.attention import flash_backward, flash_forward

    numba.set_num_threads(threads)
    torch.set_num_threads(threads)
    B, H, D = 1, 8, 64
    sizes = (128, 256) if quick else (512, 1024, 2048, 4096)
    repeats = repeats or (3 if quick else 5)
    rng = np.random.default_rng(0)
    rows = []
    for T in sizes:
        S = T
        q = rng.standard_normal((B, H, T, D), dtype=np.float32)
        k = rng.standard_normal((B, H, S, D), dtype=np.float32)
        v = rng.standard_normal((B, H, S, D), dtype=np.float32)
        do = rng.standard_normal((B, H, T, D), dtype=np.float32)
        for causal in (False, True):
            fwd_flops = 4 * B * H * D * visible_pairs(T, S, causal)
            bwd_flops = 2.5 * fwd_flops
            out = flash_forward(q, k, v, causal=causal)
            nb_fwd = _median_ms(lambda: flash_forward(q, k, v, causal=causal), repeats)
            nb_bwd = _median_ms(
                lambda: flash_backward(q, k, v, out.o_BHTE, out.lse_BHT, do, causal=causal),
                repeats)
            tq = torch.from_numpy(q).requires_grad_()
            tk = torch.from_numpy(k).requires_grad_()
            tv = torch.from_numpy(v).requires_grad_()
            tdo = torch.from_numpy(do)
            with torch.no_grad():
                ref = F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal).numpy()
            diff = float(np.abs(out.o_BHTE - ref).max())
            if not diff < 1e-3:  # float32 outputs of size ~1: any real disagreement is far larger
                raise RuntimeError(f"T={T} causal={causal}: numba and torch outputs differ by {diff}")

            def torch_fwd():
                with torch.no_grad():
                    F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)

            def torch_fwd_bwd():
                o = F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
                o.backward(tdo)
                tq.grad = tk.grad = tv.grad = None

            t_fwd = _median_ms(torch_fwd, repeats)
            # torch backward = (forward + backward through autograd) - forward alone
            t_bwd = max(_median_ms(torch_fwd_bwd, repeats) - t_fwd, 1e-9)
            rows.append(dict(
                B=B, H=H, T=T, S=S, D=D, causal=causal, threads=threads,
                fwd_flops=fwd_flops, bwd_flops=bwd_flops, gemm_gflops=gemm,
                numba_fwd_ms=nb_fwd, torch_fwd_ms=t_fwd,
                numba_bwd_ms=nb_bwd, torch_bwd_ms=t_bwd,
            ))
    return rows


def format_table(rows: list[dict]) -> str:
    """A markdown table: ms, GFLOP/s, numba/torch time ratio, % of the GEMM rate."""
    head = ("| T=S | causal | pass | numba ms | torch ms | numba GFLOP/s | torch GFLOP/s "
            "| time numba/torch | numba % GEMM | torch % GEMM |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        for kind in ("fwd", "bwd"):
            fl = r[f"{kind}_flops"]
            nb, tt = r[f"numba_{kind}_ms"], r[f"torch_{kind}_ms"]
            gn, gt = fl / nb / 1e6, fl / tt / 1e6
            lines.append(
                f"| {r['T']} | {'yes' if r['causal'] else 'no'} | {kind} | {nb:.1f} | {tt:.1f} "
                f"| {gn:.1f} | {gt:.1f} | {nb / tt:.2f} | {100 * gn / r['gemm_gflops']:.0f}% "
                f"| {100 * gt / r['gemm_gflops']:.0f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--threads", type=int, default=2, help="numba = torch threads")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    import numba

    try:
        import torch
    except ImportError:
        print("bench/attention.py compares against PyTorch's scaled_dot_product_attention, "
              "and PyTorch is not installed here: install it (a CPU build is enough) and "
              "run this again", file=sys.stderr)
        return 2

    gemm, note = gemm_rate_gflops(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"numpy {np.__version__}, numba {numba.__version__}, torch {torch.__version__}")
    print(f"threads: numba = torch = {args.threads}")
    print(f"float32 GEMM anchor: {gemm:.0f} GFLOP/s ({note})")
    rows = run(gemm, quick=args.quick, threads=args.threads, repeats=args.repeats)
    print("B=1, H=8, D=64, float32; median of repeats after one warm-up; "
          "FLOPs = 4·B·H·D·visible pairs (fwd), 2.5x that (bwd)")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
