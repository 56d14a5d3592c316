"""The in-context regression read-out (H full-width heads, one query) on the CPU, with Numba.

Mirrors :func:`spec.attention.readout.readout_forward` and
:func:`spec.attention.readout.readout_mse` (same signatures, same NamedTuples). One
prompt per loop iteration, in parallel over the batch: the prompt's heads are run
forward, their predictions summed, and the same iteration runs the backward pass with
∂ŷ_b = 2(ŷ_b − y_b)/B, since ∂ŷ_b needs only that prompt. It writes two per-prompt rows
per head, g·Σ_s a_s z_s (this prompt's ∂ov_h) and g·scale·Σ_s ∂s_s z_s (its ∂KQ_h before
the outer product with z_q), and the host sums them over the batch in a fixed order: the
result does not depend on the thread count, and no thread shares an accumulator.

Arithmetic is float64 whatever the input dtype (float32 inputs give float32 results
closer to the float64 spec than the float32 spec is, which spec.tolerance accepts).
The training step of ``theory.icl_regression`` is this function: at the paper's size
(d = 5, L = 40, batch 256) it is a few hundred thousand multiply-adds and
2·H·L·256 exponentials per step.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from backends.cpu._alloc import contiguous, poisoned_empty
from spec.attention.readout import (
    Readout,
    ReadoutMSE,
    check_readout_inputs,
    check_targets,
)

_SUPPORTED = (np.dtype(np.float32), np.dtype(np.float64))


@njit(cache=True, inline="always")
def _head_forward(z_SD, zq_D, kq_DD, ov_D, softmax, scale, norm, a_S, v_S):
    """Fill a_S (attention weights) and v_S (values) of one head; return Σ_s a_s v_s."""
    S, D = z_SD.shape
    # u = KQ z_q, so that s_s = scale · z_s · u
    u_D = np.zeros(D)
    for i in range(D):
        for j in range(D):
            u_D[i] += kq_DD[i, j] * zq_D[j]
    smax = -np.inf
    for s in range(S):
        dot, val = 0.0, 0.0
        for i in range(D):
            dot += z_SD[s, i] * u_D[i]
            val += z_SD[s, i] * ov_D[i]
        a_S[s] = scale * dot
        v_S[s] = val
        smax = max(smax, a_S[s])
    if softmax:
        # a = exp(s - max s) / Σ exp(s - max s)
        total = 0.0
        for s in range(S):
            a_S[s] = math.exp(a_S[s] - smax)
            total += a_S[s]
        for s in range(S):
            a_S[s] /= total
    else:
        for s in range(S):
            a_S[s] /= norm
    out = 0.0
    for s in range(S):
        out += a_S[s] * v_S[s]
    return out


@njit(cache=True, parallel=True)
def _forward(z_BSD, zq_BD, kq_HDD, ov_HD, softmax, scale, norm, yhat_B, a_BHS, v_BHS):
    B, H = z_BSD.shape[0], kq_HDD.shape[0]
    for b in prange(B):
        total = 0.0
        for h in range(H):
            total += _head_forward(z_BSD[b], zq_BD[b], kq_HDD[h], ov_HD[h], softmax, scale, norm,
                                   a_BHS[b, h], v_BHS[b, h])
        yhat_B[b] = total


@njit(cache=True, parallel=True)
def _mse_rows(z_BSD, zq_BD, y_B, kq_HDD, ov_HD, softmax, scale, norm, yhat_B, gw_BHD, gr_BHD):
    """Per prompt: ŷ, g·Σ_s a_s z_s and g·scale·Σ_s ∂s_s z_s per head (g = 2(ŷ − y)/B)."""
    B, S, D = z_BSD.shape
    H = kq_HDD.shape[0]
    for b in prange(B):
        z_SD = z_BSD[b]
        a_HS = np.empty((H, S))
        v_HS = np.empty((H, S))
        out_H = np.empty(H)
        total = 0.0
        for h in range(H):
            out_H[h] = _head_forward(z_SD, zq_BD[b], kq_HDD[h], ov_HD[h], softmax, scale, norm,
                                     a_HS[h], v_HS[h])
            total += out_H[h]
        yhat_B[b] = total
        # ∂ŷ_b = 2 (ŷ_b − y_b) / B
        g = 2.0 * (total - y_B[b]) / B
        for h in range(H):
            for i in range(D):
                gw_BHD[b, h, i] = 0.0
                gr_BHD[b, h, i] = 0.0
            for s in range(S):
                # ∂s_s = g a_s (v_s − out_h) (softmax) or g v_s / norm (linear)
                if softmax:
                    ds = a_HS[h, s] * (v_HS[h, s] - out_H[h])
                else:
                    ds = v_HS[h, s] / norm
                for i in range(D):
                    gw_BHD[b, h, i] += a_HS[h, s] * z_SD[s, i]
                    gr_BHD[b, h, i] += ds * z_SD[s, i]
            for i in range(D):
                gw_BHD[b, h, i] *= g
                gr_BHD[b, h, i] *= g * scale


def _inputs(z_BSD, zq_BD, kq_HDD, ov_HD, activation, scale, norm):
    scale, norm = check_readout_inputs(z_BSD, zq_BD, kq_HDD, ov_HD, activation=activation,
                                       scale=scale, norm=norm)
    if z_BSD.dtype not in _SUPPORTED:
        raise TypeError(f"z_BSD: the cpu read-out takes float32 or float64, got {z_BSD.dtype}")
    arrays = tuple(contiguous(x) for x in (z_BSD, zq_BD, kq_HDD, ov_HD))
    return arrays, activation == "softmax", scale, norm


def readout_forward(z_BSD, zq_BD, kq_HDD, ov_HD, *, activation: str = "softmax",
                    scale: float | None = None, norm: float | None = None) -> Readout:
    """:func:`spec.attention.readout.readout_forward`, compiled and parallel over the batch."""
    arrays, softmax, scale, norm = _inputs(z_BSD, zq_BD, kq_HDD, ov_HD, activation, scale, norm)
    B, S, _ = z_BSD.shape
    H = kq_HDD.shape[0]
    yhat_B = poisoned_empty((B,), np.float64)
    a_BHS, v_BHS = poisoned_empty((B, H, S), np.float64), poisoned_empty((B, H, S), np.float64)
    _forward(*arrays, softmax, scale, norm, yhat_B, a_BHS, v_BHS)
    return Readout(*(x.astype(z_BSD.dtype, copy=False) for x in (yhat_B, a_BHS, v_BHS)))


def readout_mse(z_BSD, zq_BD, y_B, kq_HDD, ov_HD, *, activation: str = "softmax",
                scale: float | None = None, norm: float | None = None) -> ReadoutMSE:
    """:func:`spec.attention.readout.readout_mse`, compiled: one pass per prompt for the
    forward and backward, then the batch sums on the host in a fixed order."""
    arrays, softmax, scale, norm = _inputs(z_BSD, zq_BD, kq_HDD, ov_HD, activation, scale, norm)
    check_targets(y_B, z_BSD.shape[0], z_BSD.dtype)
    B, _, D = z_BSD.shape
    H = kq_HDD.shape[0]
    yhat_B = poisoned_empty((B,), np.float64)
    gw_BHD, gr_BHD = poisoned_empty((B, H, D), np.float64), poisoned_empty((B, H, D), np.float64)
    z, zq, kq, ov = arrays
    _mse_rows(z, zq, contiguous(y_B), kq, ov, softmax, scale, norm, yhat_B, gw_BHD, gr_BHD)
    r_B = yhat_B - y_B
    dkq_HDD = np.einsum("BHD,BE->HDE", gr_BHD, zq)
    dov_HD = gw_BHD.sum(axis=0)
    dtype = z_BSD.dtype
    return ReadoutMSE(float(np.mean(r_B * r_B)), dkq_HDD.astype(dtype, copy=False),
                      dov_HD.astype(dtype, copy=False), yhat_B.astype(dtype, copy=False))
