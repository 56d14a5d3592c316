"""The trained model: H full-width heads with separate Q, K, V, O, and Adam.

The paper's code (notes 2.3) trains ``q_proj``, ``k_proj``, ``v_proj`` (each
Linear(d+1 → H(d+1), no bias)) and ``o_proj`` (Linear(H(d+1) → 1, no bias)). Head h's
rows of those weights are Q_h, K_h, V_h ∈ R^{D×D} and O_h ∈ R^D (D = d + 1); the read-out
sees only the products KQ_h = K_hᵀ Q_h and ov_h = V_hᵀ O_h (``spec.attention.readout``),
so a step is: merge, the read-out's loss and merged gradients (spec or a backend),
then the chain rule back to Q, K, V, O::

    ∂Q_h = K_h ∂KQ_h,   ∂K_h = Q_h ∂KQ_hᵀ,   ∂V_h = O_h ∂ov_hᵀ,   ∂O_h = V_h ∂ov_h

Training the factors, not the products, matters: the products' gradient flow is not
the factors' (the factors' updates are scaled by the other factor), and the paper's
patterns are those of the factors' training.

Initialisation is PyTorch's default for ``Linear`` (Kaiming uniform with a = √5):
U(−1/√fan_in, 1/√fan_in), fan_in = D for Q, K, V and H·D for O. Adam is PyTorch's
(Kingma & Ba 2015 with bias correction; no weight decay).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Params(NamedTuple):
    """The model's weights (or gradients of the same shapes)."""

    q_HDD: np.ndarray
    k_HDD: np.ndarray
    v_HDD: np.ndarray
    o_HD: np.ndarray


def init_params(H: int, D: int, rng: np.random.Generator) -> Params:
    """PyTorch's default Linear initialisation: U(±1/√fan_in) for every weight."""
    qkv = [rng.uniform(-1, 1, (H, D, D)) / math.sqrt(D) for _ in range(3)]
    return Params(*qkv, rng.uniform(-1, 1, (H, D)) / math.sqrt(H * D))


def merge(p: Params) -> tuple[np.ndarray, np.ndarray]:
    """(KQ_HDD, ov_HD): KQ_h = K_hᵀ Q_h, ov_h = V_hᵀ O_h."""
    return np.einsum("HIA,HIB->HAB", p.k_HDD, p.q_HDD), np.einsum("HIA,HI->HA", p.v_HDD, p.o_HD)


def unmerge(p: Params, dkq_HDD: np.ndarray, dov_HD: np.ndarray) -> Params:
    """The chain rule from the merged gradients to Q, K, V, O (module docstring)."""
    return Params(
        np.einsum("HIA,HAB->HIB", p.k_HDD, dkq_HDD),
        np.einsum("HIB,HAB->HIA", p.q_HDD, dkq_HDD),
        np.einsum("HI,HA->HIA", p.o_HD, dov_HD),
        np.einsum("HIA,HA->HI", p.v_HDD, dov_HD),
    )


def loss_and_grads(p: Params, z_BSD, zq_BD, y_B, readout_mse: Callable, **readout) -> tuple[float, Params, np.ndarray]:
    """(loss, gradient of the loss w.r.t. Q, K, V, O, ŷ) through ``readout_mse`` (the
    spec's or a backend's; ``readout`` are its keywords: activation, scale, norm)."""
    kq_HDD, ov_HD = merge(p)
    out = readout_mse(z_BSD, zq_BD, y_B, kq_HDD, ov_HD, **readout)
    return out.loss, unmerge(p, out.dkq_HDD, out.dov_HD), out.yhat_B


@dataclass
class Adam:
    """PyTorch's Adam on a Params: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g²,
    p ← p − lr · (m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε)."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    t: int = 0
    m: Params | None = None
    v: Params | None = None

    def step(self, p: Params, g: Params) -> Params:
        if self.m is None:
            self.m = Params(*(np.zeros_like(x) for x in p))
            self.v = Params(*(np.zeros_like(x) for x in p))
        self.t += 1
        c1, c2 = 1.0 - self.beta1**self.t, 1.0 - self.beta2**self.t
        out = []
        for x, gx, m, v in zip(p, g, self.m, self.v):
            m *= self.beta1
            m += (1.0 - self.beta1) * gx
            v *= self.beta2
            v += (1.0 - self.beta2) * gx * gx
            out.append(x - (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps))
        return Params(*out)
