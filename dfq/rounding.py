"""Pure math of learned weight rounding (AdaRound: Nagel et al., ICML 2020; used per block by BRECQ and QDrop).

Each weight chooses between rounding down and rounding up. A free parameter ``v`` per weight sets the
choice through the *rectified sigmoid* ``h(v) = clamp(sigmoid(v)·(ζ - γ) + γ, 0, 1)`` with the paper's
stretch ``ζ = 1.1``, ``γ = -0.1`` (so ``h`` reaches exactly 0 and 1 at finite ``v``):

* soft weight: ``s · (clamp(floor(w/s) + h(v) + zp, qmin, qmax) - zp)`` (differentiable in ``v``);
* hard weight: the same with ``h`` replaced by ``v ≥ 0`` (``h(v) ≥ 1/2``), an ordinary grid value;
* regulariser: ``Σ 1 - |2h(v) - 1|^β``, 0 only when every ``h`` is 0 or 1; its exponent ``β`` is annealed
  from 20 (flat, the reconstruction decides) to 2 (every ``h`` pushed to a bound).

``v`` starts where the soft weight equals the float weight (``h(v) = frac(w/s)``), so reconstruction
begins from the unrounded layer. Functions only: the state (``v``, the schedule) lives in
:mod:`dfq.quant.reconstruct`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dfq.numerics import _shape_for as _shape  # the per-channel broadcast of scales, one definition

__all__ = ["ZETA", "GAMMA", "rectified_sigmoid", "init_rounding", "rounded_weight", "rounding_penalty", "beta_at"]

ZETA = 1.1
GAMMA = -0.1


def rectified_sigmoid(v: Tensor) -> Tensor:
    """``clamp(sigmoid(v)·(ζ - γ) + γ, 0, 1)``.

    >>> rectified_sigmoid(torch.tensor([-20.0, 0.0, 20.0]))
    tensor([0.0000, 0.5000, 1.0000])
    """
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def init_rounding(w: Tensor, scale: Tensor, axis: int | None = None) -> Tensor:
    """The ``v`` with ``h(v) = w/s - floor(w/s)``: the soft weight starts equal to ``w`` (inside the range).

    >>> v = init_rounding(torch.tensor([0.26, 0.4]), torch.tensor(0.5))
    >>> rectified_sigmoid(v)
    tensor([0.5200, 0.8000])
    """
    s = _shape(scale, w, axis)
    frac = w / s - torch.floor(w / s)
    p = ((frac - GAMMA) / (ZETA - GAMMA)).clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))


def rounded_weight(
    w: Tensor, v: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None = None,
    hard: bool = False,
) -> Tensor:  # fmt: skip
    """The weight rounded by ``v``: soft (differentiable in ``v``; ``w``, scale, zero-point get no gradient) or hard.

    >>> w = torch.tensor([0.26, 0.4, 9.0]); s = torch.tensor(0.5); z = torch.tensor(0.0)
    >>> v = init_rounding(w, s)
    >>> rounded_weight(w, v, s, z, -8, 7)  # soft at init: w itself, the last clipped to 7·s
    tensor([0.2600, 0.4000, 3.5000])
    >>> rounded_weight(w, v, s, z, -8, 7, hard=True)  # 0.52 and 0.8 round up
    tensor([0.5000, 0.5000, 3.5000])
    """
    s = _shape(scale, w, axis).detach()
    zp = _shape(zero_point, w, axis).detach()
    base = torch.floor(w.detach() / s)
    up = (v >= 0).to(w.dtype) if hard else rectified_sigmoid(v)
    return (torch.clamp(base + up + zp, qmin, qmax) - zp) * s


def rounding_penalty(v: Tensor, beta: float) -> Tensor:
    """``Σ 1 - |2h(v) - 1|^β``: how far the rounding variables are from a hard choice.

    >>> float(rounding_penalty(torch.tensor([-20.0, 20.0]), 2.0)), float(rounding_penalty(torch.tensor([0.0]), 2.0))
    (0.0, 1.0)
    """
    return (1 - (2 * rectified_sigmoid(v) - 1).abs().pow(beta)).sum()


def beta_at(progress: float, warmup: float = 0.2, start: float = 20.0, end: float = 2.0) -> float | None:
    """The annealed exponent at ``progress`` ∈ [0, 1] of a reconstruction; None during the warm-up
    (no rounding penalty yet). Linear from ``start`` to ``end`` after the warm-up, as in AdaRound/BRECQ.

    >>> beta_at(0.1), beta_at(0.2), round(beta_at(0.6), 6), beta_at(1.0)
    (None, 20.0, 11.0, 2.0)
    """
    if progress < warmup:
        return None
    t = (progress - warmup) / max(1.0 - warmup, 1e-12)
    return start + (end - start) * min(1.0, t)
