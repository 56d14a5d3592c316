"""Training-step time of the in-context regression model: ours against PyTorch (CPU).

One step is what ``theory.icl_regression.experiment.run`` does 5×10⁵ times in the paper's
setting: draw 256 fresh prompts (d = 5, L = 40, σ² = 0.1), run the H-head softmax model
forward and backward, take one Adam step (lr 1e-3). Timed, for H ∈ {1, 2, 4, 8}:

* ``numba``: the experiment's own loop body with the Numba read-out
  (``backends.cpu.readout.readout_mse``), float64;
* ``spec``: the same with the NumPy spec's read-out;
* ``torch``: the model as the paper's code writes it (``q_proj``, ``k_proj``, ``v_proj``:
  Linear(d+1 → H(d+1)), ``o_proj``: Linear(H(d+1) → 1), no biases; softmax over the
  examples scaled by 1/√(d+1); ``nn.MSELoss``; ``torch.optim.Adam``), data drawn with
  ``torch.randn``, in float32 (the paper's dtype) and float64.

Every implementation runs ``--warmup`` steps, then ``--steps`` timed steps; the figure is
the mean time per step. Before timing, the script checks that torch's loss and gradients
equal ours on one batch (float64), so that the table never compares different models.
The "5×10⁵ steps" column is the mean step time times 5×10⁵: the projected wall time of
one paper run. Threads: ``--threads`` for Numba and torch alike (the recorded training
runs used one thread per run, two runs side by side).

    python bench/icl_regression.py [--threads 1] [--steps 2000] [--quick]
"""

from __future__ import annotations

import _path  # first: takes bench/ off sys.path, where tokenize.py shadows the standard library's

_path.use_repository()

import argparse
import math
import os
import platform
import sys
import time

import numpy as np

D_IN, L, BATCH, SIGMA2, LR = 5, 40, 256, 0.1, 1e-3
HEADS = (1, 2, 4, 8)
PAPER_STEPS = 500_000


def ours(H: int, backend: str, seed: int = 0):
    """A step function of the experiment's loop (``experiment.train_step``: data, read-out
    step, chain rule, Adam) in the paper's setting."""
    from backends import registry
    from theory.icl_regression.experiment import Config, train_step
    from theory.icl_regression.model import Adam, init_params

    cfg = Config.paper(heads=H, backend=backend)
    assert (cfg.d, cfg.L, cfg.batch, cfg.sigma2, cfg.lr) == (D_IN, L, BATCH, SIGMA2, LR)
    rng = np.random.default_rng(seed)
    step_fn = registry.get("attention.readout_mse", backend)
    state = {"p": init_params(H, D_IN + 1, rng), "adam": Adam(lr=cfg.lr)}

    def step():
        state["p"], loss = train_step(cfg, state["p"], state["adam"], rng, step_fn)
        return loss

    return step


def torch_model(H: int, dtype):
    import torch

    D = D_IN + 1

    class Readout(torch.nn.Module):
        """The paper's one-layer H-head model (src/models.py, as notes 2.3 describes it)."""

        def __init__(self):
            super().__init__()
            self.q = torch.nn.Linear(D, H * D, bias=False, dtype=dtype)
            self.k = torch.nn.Linear(D, H * D, bias=False, dtype=dtype)
            self.v = torch.nn.Linear(D, H * D, bias=False, dtype=dtype)
            self.o = torch.nn.Linear(H * D, 1, bias=False, dtype=dtype)

        def forward(self, z, zq):                      # z (B, L, D), zq (B, D)
            B = z.shape[0]
            q = self.q(zq).view(B, H, 1, D)
            k = self.k(z).view(B, L, H, D).transpose(1, 2)
            v = self.v(z).view(B, L, H, D).transpose(1, 2)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D), dim=-1)   # (B, H, 1, L)
            return self.o((a @ v).reshape(B, H * D)).squeeze(-1)

    return Readout()


def torch_step(H: int, dtype, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    model = torch_model(H, dtype)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.MSELoss()

    def step():
        x = torch.randn(BATCH, L + 1, D_IN, dtype=dtype)
        beta = torch.randn(BATCH, D_IN, dtype=dtype) / math.sqrt(D_IN)
        y = torch.einsum("bld,bd->bl", x, beta) + math.sqrt(SIGMA2) * torch.randn(BATCH, L + 1, dtype=dtype)
        z = torch.cat([x[:, :L], y[:, :L, None]], -1)
        zq = torch.cat([x[:, L], torch.zeros(BATCH, 1, dtype=dtype)], -1)
        loss = loss_fn(model(z, zq), y[:, L])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss)

    return step


def check_agreement(H: int = 4) -> float:
    """Largest relative difference between torch's and our float64 loss and Q, K, V, O
    gradients on one batch with the same weights."""
    import torch

    from backends.cpu.readout import readout_mse
    from theory.icl_regression import data
    from theory.icl_regression.model import Params, loss_and_grads

    D = D_IN + 1
    model = torch_model(H, torch.float64)
    pr = data.sample_prompts(BATCH, L, D_IN, np.random.default_rng(1))
    z, zq = data.embed(pr.X_BLD, pr.y_BL, pr.xq_BD)
    loss_t = torch.nn.functional.mse_loss(model(torch.from_numpy(z), torch.from_numpy(zq)), torch.from_numpy(pr.yq_B))
    loss_t.backward()
    # torch's Linear weight (H·D, D): rows h·D .. h·D + D − 1 are head h's Q_h (z → q)
    p = Params(*(m.weight.detach().numpy().reshape(H, D, D).copy() for m in (model.q, model.k, model.v)),
               model.o.weight.detach().numpy().reshape(H, D).copy())
    loss, g, _ = loss_and_grads(p, z, zq, pr.yq_B, readout_mse)
    worst = abs(loss - float(loss_t.detach())) / abs(loss)
    for ours_g, m in zip(g, (model.q, model.k, model.v, model.o)):
        theirs = m.weight.grad.numpy().reshape(ours_g.shape)
        worst = max(worst, float(np.max(np.abs(ours_g - theirs)) / np.max(np.abs(theirs))))
    return worst


def timed(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--no-spec", action="store_true", help="skip the (slow) NumPy spec rows")
    parser.add_argument("--quick", action="store_true", help="200 steps after 20, no spec rows")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.no_spec = 200, 20, True
    import numba

    numba.set_num_threads(args.threads)
    try:
        import torch
    except ImportError:
        sys.exit("bench/icl_regression.py needs PyTorch (CPU): pip install torch==2.13.0")
    torch.set_num_threads(args.threads)
    diff = check_agreement()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads={args.threads}, "
          f"numpy {np.__version__}, numba {numba.__version__}, torch {torch.__version__}")
    print(f"# torch vs ours (float64, H=4): largest relative difference of loss and gradients {diff:.1e}")
    if diff > 1e-10:
        sys.exit("torch and ours disagree: not timing")
    print("| H | impl | dtype | ms/step | time numba/impl | 5×10⁵ steps |")
    print("|---|---|---|---|---|---|")
    for H in HEADS:
        base = timed(ours(H, "cpu"), args.warmup, args.steps)
        rows = [("numba", "float64", base)]
        if not args.no_spec:
            rows.append(("spec", "float64", timed(ours(H, "spec"), args.warmup // 4, args.steps // 10)))
        for dtype in (torch.float32, torch.float64):
            rows.append(("torch", str(dtype).split(".")[1], timed(torch_step(H, dtype), args.warmup, args.steps)))
        for name, dtype, sec in rows:
            print(f"| {H} | {name} | {dtype} | {sec * 1e3:.3f} | {base / sec:.2f} | "
                  f"{sec * PAPER_STEPS / 60:.1f} min |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
