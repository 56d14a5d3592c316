"""One query reads a scalar out of a prompt through H full-width attention heads.

This is the model of in-context linear regression in He, Pan, Chen and Yang (2025),
"In-Context Linear Regression Demystified" (shared/papers/notes.md, section 2.3): a
prompt of S example tokens z_s ∈ R^D (for regression, z_s = [x_s; y_s] and D = d + 1)
and a query token z_q (= [x_q; 0]); every head h compares the query with each example
through a merged key–query matrix KQ_h = K_hᵀ Q_h and reads each example through a
merged output–value row ov_h = V_hᵀ O_h. The query attends to the S examples only (not
to itself), there is no positional encoding, and the single output is the prediction
ŷ of the query's label. Training the unmerged Q, K, V, O is the theory's business
(``theory.icl_regression.model``); the chain rule from the merged gradients to them
is four small matrix products, so every backend works on the merged form.

Math (per prompt b and head h)::

    s_hs = scale · z_sᵀ KQ_h z_q                        score of example s
    a_hs = softmax_s(s_hs)                               "softmax" (the paper's model)
         = s_hs / norm                                   "linear" (the paper's LinTF)
    v_hs = ov_h · z_s                                    value of example s
    ŷ    = Σ_h Σ_s a_hs v_hs

and the loss of a batch is the mean squared error (1/B) Σ_b (ŷ_b − y_b)². Its gradient,
written by hand (:func:`readout_backward`), with ∂ŷ_b = 2(ŷ_b − y_b)/B::

    ∂ov_h   = Σ_b ∂ŷ_b Σ_s a_hs z_s
    ∂a_hs   = ∂ŷ_b v_hs
    ∂s_hs   = a_hs (∂a_hs − Σ_s' a_hs' ∂a_hs')           softmax
            = ∂a_hs / norm                               linear
    ∂KQ_h   = scale · Σ_b (Σ_s ∂s_hs z_s) z_qᵀ

Readings where the paper's code decides and the paper does not say (notes 2.3, 2.7d):
the softmax scale is 1/√D (the code's 1/√(d+1)); the linear model's scores are not
scaled (``scale`` 1) and are divided by a fixed ``norm``, which the code hard-codes to
the training prompt length, so a linear model evaluated at another length keeps its
training normaliser; ``norm=None`` divides by the prompt's own length S instead.

Shapes: z_BSD (examples), zq_BD (queries), kq_HDD, ov_HD, y_B.

Numerics: computes in the dtype it is given (float16 to longdouble); the softmax
subtracts the row maximum first, so finite scores never overflow. Every reduction is
over S, D or B in NumPy's order (einsum); backends may sum in another order and are
held to spec.tolerance.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from spec.attention.checks import FLOAT_DTYPES, check_scale

ACTIVATIONS = ("softmax", "linear")


class Readout(NamedTuple):
    """The prediction and the intermediates the backward pass reads."""

    yhat_B: np.ndarray
    a_BHS: np.ndarray
    """Attention weights of each head over the examples (softmax rows sum to 1)."""
    v_BHS: np.ndarray
    """Values ov_h · z_s."""


class ReadoutGrad(NamedTuple):
    """Gradients of a scalar loss with respect to the merged weights."""

    dkq_HDD: np.ndarray
    dov_HD: np.ndarray


class ReadoutMSE(NamedTuple):
    """The mean squared error of a batch, its gradient and the predictions."""

    loss: float
    dkq_HDD: np.ndarray
    dov_HD: np.ndarray
    yhat_B: np.ndarray


def _check_float_array(name: str, x, letters: str) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(x).__name__}")
    if x.ndim != len(letters):
        raise ValueError(f"{name}: expected {len(letters)} dimensions ({letters}), got shape {x.shape}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float16, float32, float64 or longdouble, got {x.dtype}")


def check_readout_inputs(z_BSD, zq_BD, kq_HDD, ov_HD, *, activation, scale, norm):
    """Validate the model's inputs; return (scale, norm) resolved to Python floats.

    Rules: z_BSD is (B, S, D) with S ≥ 1 and D ≥ 1, zq_BD (B, D), kq_HDD (H, D, D) with
    H ≥ 1, ov_HD (H, D), all of one float dtype; ``activation`` is one of
    :data:`ACTIVATIONS`; ``scale`` defaults to 1/√D for softmax and 1 for linear;
    ``norm`` (linear only) is a positive finite number, None meaning S.
    """
    for name, x, letters in (("z_BSD", z_BSD, "BSD"), ("zq_BD", zq_BD, "BD"),
                             ("kq_HDD", kq_HDD, "HDD"), ("ov_HD", ov_HD, "HD")):
        _check_float_array(name, x, letters)
    B, S, D = z_BSD.shape
    H = kq_HDD.shape[0]
    if S < 1 or D < 1:
        raise ValueError(f"z_BSD: expected at least one example (S ≥ 1) of width D ≥ 1, got shape {z_BSD.shape}")
    if H < 1:
        raise ValueError(f"kq_HDD: expected at least one head, got shape {kq_HDD.shape}")
    for name, x, want in (("zq_BD", zq_BD, (B, D)), ("kq_HDD", kq_HDD, (H, D, D)), ("ov_HD", ov_HD, (H, D))):
        if x.shape != want:
            raise ValueError(f"{name}: expected shape {want} (from z_BSD {z_BSD.shape} and kq_HDD), got {x.shape}")
    dtypes = {x.dtype for x in (z_BSD, zq_BD, kq_HDD, ov_HD)}
    if len(dtypes) != 1:
        raise TypeError(f"z_BSD, zq_BD, kq_HDD, ov_HD: expected one dtype, got "
                        f"{z_BSD.dtype}, {zq_BD.dtype}, {kq_HDD.dtype}, {ov_HD.dtype}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    if activation == "softmax":
        if norm is not None:
            raise ValueError("norm: only the linear activation takes a normaliser; softmax normalises itself")
        return check_scale(scale, D), 1.0
    scale = 1.0 if scale is None else check_scale(scale, D)
    if norm is None:
        return scale, float(S)
    if isinstance(norm, (bool, np.bool_)) or not isinstance(norm, (int, float, np.integer, np.floating)):
        raise TypeError(f"norm: expected a real number or None, got {type(norm).__name__}")
    norm = float(norm)
    if not (math.isfinite(norm) and norm > 0):
        raise ValueError(f"norm: expected a positive finite number, got {norm}")
    return scale, norm


def check_targets(y_B, B: int, dtype) -> None:
    """``y_B`` is a (B,) array of the inputs' dtype, and B ≥ 1 (a mean needs a term)."""
    _check_float_array("y_B", y_B, "B")
    if y_B.shape != (B,) or B < 1:
        raise ValueError(f"y_B: expected shape ({B},) with B ≥ 1 (from z_BSD), got {y_B.shape}")
    if y_B.dtype != dtype:
        raise TypeError(f"y_B: expected dtype {dtype} (that of z_BSD), got {y_B.dtype}")


def readout_forward(z_BSD, zq_BD, kq_HDD, ov_HD, *, activation: str = "softmax",
                    scale: float | None = None, norm: float | None = None) -> Readout:
    """ŷ_b = Σ_h Σ_s a_hs (ov_h · z_s) with a_h = softmax(scale · z_sᵀ KQ_h z_q) (module docstring)."""
    scale, norm = check_readout_inputs(z_BSD, zq_BD, kq_HDD, ov_HD, activation=activation,
                                       scale=scale, norm=norm)
    return _forward(z_BSD, zq_BD, kq_HDD, ov_HD, activation, scale, norm)


def readout_backward(z_BSD, zq_BD, kq_HDD, ov_HD, dyhat_B, *, activation: str = "softmax",
                     scale: float | None = None, norm: float | None = None) -> ReadoutGrad:
    """∂loss/∂KQ and ∂loss/∂ov from ∂loss/∂ŷ (``dyhat_B``), by hand (module docstring)."""
    scale, norm = check_readout_inputs(z_BSD, zq_BD, kq_HDD, ov_HD, activation=activation,
                                       scale=scale, norm=norm)
    check_targets(dyhat_B, z_BSD.shape[0], z_BSD.dtype)
    fwd = _forward(z_BSD, zq_BD, kq_HDD, ov_HD, activation, scale, norm)
    return _backward(z_BSD, zq_BD, fwd, dyhat_B, activation, scale, norm)


def readout_mse(z_BSD, zq_BD, y_B, kq_HDD, ov_HD, *, activation: str = "softmax",
                scale: float | None = None, norm: float | None = None) -> ReadoutMSE:
    """The batch's mean squared error (1/B) Σ (ŷ_b − y_b)², its gradient with respect to
    KQ and ov, and ŷ: the step the training loop calls (module docstring)."""
    scale, norm = check_readout_inputs(z_BSD, zq_BD, kq_HDD, ov_HD, activation=activation,
                                       scale=scale, norm=norm)
    check_targets(y_B, z_BSD.shape[0], z_BSD.dtype)
    fwd = _forward(z_BSD, zq_BD, kq_HDD, ov_HD, activation, scale, norm)
    r_B = fwd.yhat_B - y_B
    # ∂ŷ_b = 2 (ŷ_b − y_b) / B
    dyhat_B = (2 * r_B / z_BSD.dtype.type(y_B.shape[0])).astype(z_BSD.dtype)
    grad = _backward(z_BSD, zq_BD, fwd, dyhat_B, activation, scale, norm)
    return ReadoutMSE(float(np.mean(r_B * r_B)), grad.dkq_HDD, grad.dov_HD, fwd.yhat_B)


def _forward(z_BSD, zq_BD, kq_HDD, ov_HD, activation: str, scale: float, norm: float) -> Readout:
    """The forward pass on checked inputs, with ``scale`` and ``norm`` resolved."""
    dtype = z_BSD.dtype.type
    # s_hs = scale · z_sᵀ (KQ_h z_q)
    u_BHD = np.einsum("HDE,BE->BHD", kq_HDD, zq_BD)
    s_BHS = dtype(scale) * np.einsum("BSD,BHD->BHS", z_BSD, u_BHD)
    if activation == "softmax":
        # a = exp(s - max s) / Σ exp(s - max s)
        e_BHS = np.exp(s_BHS - s_BHS.max(axis=-1, keepdims=True))
        a_BHS = e_BHS / e_BHS.sum(axis=-1, keepdims=True)
    else:
        # a = s / norm
        a_BHS = s_BHS / dtype(norm)
    # v_hs = ov_h · z_s; ŷ = Σ_h Σ_s a_hs v_hs
    v_BHS = np.einsum("HD,BSD->BHS", ov_HD, z_BSD)
    yhat_B = np.einsum("BHS,BHS->B", a_BHS, v_BHS)
    return Readout(yhat_B, a_BHS, v_BHS)


def _backward(z_BSD, zq_BD, fwd: Readout, dyhat_B, activation: str, scale: float, norm: float) -> ReadoutGrad:
    """The backward pass from the forward's intermediates (module docstring)."""
    dtype = z_BSD.dtype.type
    # ∂ov_h = Σ_b ∂ŷ_b Σ_s a_hs z_s
    dov_HD = np.einsum("B,BHS,BSD->HD", dyhat_B, fwd.a_BHS, z_BSD)
    # ∂a_hs = ∂ŷ_b v_hs
    da_BHS = dyhat_B[:, None, None] * fwd.v_BHS
    if activation == "softmax":
        # ∂s = a (∂a − Σ_s a ∂a)
        ds_BHS = fwd.a_BHS * (da_BHS - np.einsum("BHS,BHS->BH", fwd.a_BHS, da_BHS)[..., None])
    else:
        # ∂s = ∂a / norm
        ds_BHS = da_BHS / dtype(norm)
    # ∂KQ_h = scale · Σ_b (Σ_s ∂s_hs z_s) z_qᵀ
    dkq_HDD = dtype(scale) * np.einsum("BHS,BSD,BE->HDE", ds_BHS, z_BSD, zq_BD)
    return ReadoutGrad(dkq_HDD, dov_HD)


def rounding_baselines(z_BSD, zq_BD, y_B, kq_HDD, ov_HD, *, rng: np.random.Generator, count: int,
                       activation: str = "softmax", scale: float | None = None,
                       norm: float | None = None) -> list[tuple]:
    """The spec in the inputs' dtype on the problem and on ``count`` copies with the
    prompts, examples, token coordinates and heads permuted (B, S, D, H; drawn from
    ``rng``), each result permuted back: the read-out is exactly equivariant under those
    permutations, so the results differ only in the order of their sums. They are the
    baselines of :func:`spec.tolerance.compare` for a backend that sums in another
    order (several orders measure what the dtype costs better than one order's luck).

    ``y_B=None``: results of :func:`readout_forward`, (ŷ, a, v); else of
    :func:`readout_mse`, (loss as a 0-d array of the dtype, ∂KQ, ∂ov, ŷ).
    """
    B, S, D = z_BSD.shape
    H = kq_HDD.shape[0]
    options = {"activation": activation, "scale": scale, "norm": norm}
    out = []
    for n in range(count + 1):
        perms = ((np.arange(B), np.arange(S), np.arange(D), np.arange(H)) if n == 0 else
                 (rng.permutation(B), rng.permutation(S), rng.permutation(D), rng.permutation(H)))
        b, s, d, h = perms
        ib, is_, id_, ih = (np.argsort(p) for p in perms)
        # contiguous copies: einsum's order depends on the strides, and the first copy
        # (no permutation) must be the spec exactly as a caller runs it
        z, zq, kq, ov = (np.ascontiguousarray(x) for x in (
            z_BSD[b][:, s][:, :, d], zq_BD[b][:, d], kq_HDD[h][:, d][:, :, d], ov_HD[h][:, d]))
        if y_B is None:
            yhat, a, v = readout_forward(z, zq, kq, ov, **options)
            out.append((yhat[ib], a[ib][:, ih][:, :, is_], v[ib][:, ih][:, :, is_]))
        else:
            loss, dkq, dov, yhat = readout_mse(z, zq, np.ascontiguousarray(y_B[b]), kq, ov, **options)
            out.append((np.asarray(loss, z_BSD.dtype), dkq[ih][:, id_][:, :, id_], dov[ih][:, id_], yhat[ib]))
    return out
