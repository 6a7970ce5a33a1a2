"""The pure pieces of distillation against hand-computed or float64 values: the KD loss, LSQ's scale
gradient, learned quantizer ranges, the schedule, the config's validation, augmentation, the curve."""

from __future__ import annotations

import math

import pytest
import torch

from dfq.config import preset
from dfq.distill.augment import flip_sparse, mix, resized_crop_flip
from dfq.distill.config import DistillConfig, qat_defaults
from dfq.distill.curve import plot_curve
from dfq.distill.inputs import InputSpace, convert
from dfq.distill.pool import Pool
from dfq.losses import kd_loss
from dfq.numerics import fake_quantize, fake_quantize_learned
from dfq.quant.quantizer import FakeQuantizer, Role


def test_kd_loss_is_t_squared_kl_in_float64() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    for T in (1.0, 4.0, 20.0):
        p = torch.softmax(t.double() / T, 1)
        ref = (p * (p.log() - torch.log_softmax(s.double() / T, 1))).sum(1).mean() * T * T
        assert float(kd_loss(s, t, T)) == pytest.approx(float(ref), rel=1e-5, abs=1e-7)
    with pytest.raises(ValueError):
        kd_loss(s, t, 0.0)


def test_kd_loss_gradient_reaches_only_the_student() -> None:
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    kd_loss(s, t, 2.0).backward()
    assert s.grad is not None and t.grad is None
    # the large-T limit of T²·KL is the logit matching (Δ - mean Δ)² / 2C, checked in float64
    s64, t64 = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64), torch.tensor([[0.0, 1.0, -2.0]], dtype=torch.float64)
    d = t64 - s64
    limit = float(((d - d.mean()) ** 2).sum() / (2 * 3))
    assert float(kd_loss(s64, t64, 50.0)) == pytest.approx(limit, rel=2e-2)


def test_learned_fake_quantize_matches_the_fixed_one_and_lsq_by_hand() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, generator=g) * 3
    s, z = torch.tensor(0.37), torch.tensor(0.0)
    assert torch.equal(fake_quantize_learned(x, s, z, -8, 7), fake_quantize(x, s, z, -8, 7))
    xs = x.clone().requires_grad_(True)
    ss = s.clone().requires_grad_(True)
    fake_quantize_learned(xs, ss, z, -8, 7, grad_scale=0.5).sum().backward()
    v = x / s
    inside = (v >= -8) & (v <= 7)
    expected_ds = torch.where(v < -8, -8.0, torch.where(v > 7, 7.0, torch.round(v) - v)).sum() * 0.5
    assert float(ss.grad) == pytest.approx(float(expected_ds), rel=1e-5)
    assert torch.equal(xs.grad, inside.float())


def test_learn_range_keeps_keys_values_and_outputs() -> None:
    q = FakeQuantizer(preset("w4a8").weight, axis=0, site="weight", role=Role.WEIGHT)
    w = torch.randn(6, 10)
    q.calibrate_from(w)
    before = q(w)
    amax = torch.maximum(q.lo.abs(), q.hi.abs())
    q.learn_range()
    assert q.is_learned and {n for n, _ in q.named_parameters()} == {"lo", "hi"}
    assert torch.equal(q.hi.detach(), amax) and torch.equal(q.lo.detach(), -amax)
    assert torch.equal(q(w), before)
    out = q(w.clone().requires_grad_(True))
    out.square().sum().backward()
    assert q.hi.grad is not None and bool(q.hi.grad.abs().sum() > 0)
    state = q.state_dict()
    q.learn_range(False)
    assert not q.is_learned and list(q.parameters()) == [] and set(q.state_dict()) == set(state)
    fresh = FakeQuantizer(preset("w4a8").weight, axis=0, site="weight", role=Role.WEIGHT)
    fresh.load_state_dict(state)
    assert torch.equal(fresh(w), before)


def test_cosine_schedule_and_validation() -> None:
    c = DistillConfig(steps=4)
    assert [c.lr_at(s) for s in range(4)] == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                                            0.5 * (1 + math.cos(3 * math.pi / 4))])  # fmt: skip
    assert DistillConfig(steps=3, schedule="constant").lr_at(2) == 1.0
    for bad in ({"steps": 0}, {"lr": -1.0}, {"optimizer": "adam"}, {"ema": 1.0}, {"crop_scale": (0.5, 0.2)},
                {"weight_ranges": "lsq"}, {"warmup_steps": 5, "steps": 5}, {"temperature": 0.0}):  # fmt: skip
        with pytest.raises(ValueError):
            DistillConfig(**bad)
    assert DistillConfig.from_dict(qat_defaults(steps=7).to_dict()) == qat_defaults(steps=7)
    with pytest.raises(ValueError, match="unknown"):
        DistillConfig.from_dict({"stepz": 3})


def test_crop_flip_is_seeded_and_keeps_a_constant_image() -> None:
    x = torch.full((4, 3, 16, 16), 0.7)
    a = resized_crop_flip(x, torch.Generator().manual_seed(3))
    assert torch.allclose(a, x)  # resampling a constant gives the constant
    y = torch.randn(4, 3, 16, 16)
    assert torch.equal(resized_crop_flip(y, torch.Generator().manual_seed(3)),
                       resized_crop_flip(y, torch.Generator().manual_seed(3)))  # fmt: skip
    z, mixed = mix(y, torch.Generator().manual_seed(0), 0.0)
    assert z is y and not mixed


def test_flip_sparse_moves_the_kept_patches_with_the_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 8, 12)  # a 2 x 3 grid of 4-px patches
    keep = torch.tensor([[0, 1, 5], [0, 2, 6], [0, 3, 4]])
    y, k = flip_sparse(x, keep, g, 1.0, (2, 3, 4))

    def patch(img: torch.Tensor, pid: int) -> torch.Tensor:
        r, c = divmod(pid - 1, 3)
        return img[:, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4]

    for i in range(3):
        for a, b in zip(keep[i, 1:].tolist(), k[i, 1:].tolist(), strict=True):
            assert torch.equal(patch(y[i], b), patch(x[i], a).flip(-1))


def test_convert_between_input_spaces_round_trips() -> None:
    a = InputSpace((3, 8, 8), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    b = InputSpace((3, 8, 8), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(convert(convert(x, a, b), b, a), x, atol=1e-5)
    pixel = x * torch.tensor(a.std).view(1, 3, 1, 1) + torch.tensor(a.mean).view(1, 3, 1, 1)
    assert torch.allclose(convert(x, a, b), (pixel - 0.5) / 0.5, atol=1e-6)
    c = InputSpace((3, 4, 4), b.mean, b.std)
    assert convert(x, a, c).shape == (2, 3, 4, 4)


def test_pool_refuses_mixed_sparsity_and_samples_reproducibly() -> None:
    from dfq.data import CalibrationSet
    from dfq.errors import DfqError

    p = Pool()
    p.add(CalibrationSet(torch.randn(4, 3, 8, 8), keep_index=torch.tensor([[0, 1]] * 4)))
    with pytest.raises(DfqError):
        p.add(CalibrationSet(torch.randn(2, 3, 8, 8)))
    a = p.sample(6, torch.Generator().manual_seed(1))
    b = p.sample(6, torch.Generator().manual_seed(1))
    assert torch.equal(a.images, b.images) and a.keep.shape == (6, 2) and bool((a.labels == -1).all())


def test_curve_plot_has_a_panel_per_series() -> None:
    curve = [{"step": 0, "loss": None, "kl": 0.3, "top1": 0.5, "agreement": 0.6},
             {"step": 5, "loss": 1.0, "kl": 0.2, "top1": 0.6, "agreement": 0.7}]  # fmt: skip
    assert plot_curve(curve).size == (720, 36 + 3 * 180)
    assert plot_curve([{"step": 0, "loss": 1.0}]).size == (720, 36 + 180)
