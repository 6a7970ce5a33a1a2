"""dfq.rounding against hand-computed values and a float64 reference."""

from __future__ import annotations

import torch

from dfq.numerics import fake_quantize
from dfq.rounding import (
    GAMMA,
    ZETA,
    beta_at,
    init_rounding,
    rectified_sigmoid,
    rounded_weight,
    rounding_penalty,
)


def test_rectified_sigmoid_is_the_stretched_clamped_sigmoid() -> None:
    v = torch.linspace(-6, 6, 101, dtype=torch.float64)
    expected = (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)
    assert torch.equal(rectified_sigmoid(v), expected)
    assert rectified_sigmoid(torch.tensor(-3.0)) == 0 and rectified_sigmoid(torch.tensor(3.0)) == 1  # reached at finite v


def test_soft_weight_starts_at_the_float_weight_per_channel() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=g, dtype=torch.float64) * 0.1
    scale = w.abs().amax(1) / 7
    v = init_rounding(w, scale, axis=0)
    soft = rounded_weight(w, v, scale, torch.zeros(6, dtype=torch.float64), -8, 7, axis=0)
    assert torch.allclose(soft, w, atol=1e-9)  # inside the range: no rounding error at the start


def test_hard_rounding_is_nearest_at_init_and_stays_on_the_grid() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 8, generator=g) * 0.05
    scale = w.abs().amax(1) / 7
    z = torch.zeros(4)
    v = init_rounding(w, scale, axis=0)
    hard = rounded_weight(w, v, scale, z, -8, 7, axis=0, hard=True)
    nearest = fake_quantize(w, scale, z, -8, 7, axis=0)
    frac = (w / scale[:, None]) - torch.floor(w / scale[:, None])
    decided = (frac - 0.5).abs() > 1e-4  # away from the tie, where round-half-even and v >= 0 may differ
    assert torch.equal(hard[decided], nearest[decided])
    v = torch.randn(4, 8, generator=g) * 3  # any choice: an up/down rounding of w, within [qmin, qmax]
    hard = rounded_weight(w, v, scale, z, -8, 7, axis=0, hard=True)
    codes = hard / scale[:, None]
    assert torch.allclose(codes, codes.round(), atol=1e-5) and codes.min() >= -8 and codes.max() <= 7
    assert ((hard - w).abs() <= scale[:, None] * (1 + 1e-6)).all()
    assert torch.equal(fake_quantize(hard, scale, z, -8, 7, axis=0), hard)  # re-quantizing changes nothing


def test_soft_weight_gradient_reaches_only_the_rounding_variables() -> None:
    w = torch.tensor([0.26, 0.4], requires_grad=True)
    v = init_rounding(w.detach(), torch.tensor(0.5)).requires_grad_(True)
    rounded_weight(w, v, torch.tensor(0.5), torch.tensor(0.0), -8, 7).sum().backward()
    assert w.grad is None
    # d/dv of s*h(v) = s*(ζ-γ)*σ'(v) where h is inside (0, 1)
    sig = torch.sigmoid(v.detach())
    assert torch.allclose(v.grad, 0.5 * (ZETA - GAMMA) * sig * (1 - sig))


def test_penalty_and_schedule() -> None:
    v = torch.tensor([0.0, 100.0, -100.0])
    assert float(rounding_penalty(v, 2.0)) == 1.0  # only the undecided one counts
    h = float(rectified_sigmoid(torch.tensor(0.7)))
    assert abs(float(rounding_penalty(torch.tensor([0.7]), 3.0)) - (1 - abs(2 * h - 1) ** 3)) < 1e-6
    assert beta_at(0.0) is None and beta_at(0.19) is None
    assert beta_at(0.2) == 20.0 and beta_at(1.0) == 2.0 and abs(beta_at(0.6) - 11.0) < 1e-9
    assert beta_at(0.5, warmup=0.0, start=10.0, end=0.0) == 5.0
