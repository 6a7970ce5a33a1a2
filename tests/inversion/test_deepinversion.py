"""Tests for DeepInversion on BatchNorm CNNs (dfq.inversion.deepinversion), on timm ``test_resnet``.

The loss is compared with an independent computation of NVlabs' BN-statistics term (own hooks,
``torch.var``), and multi-resolution runs are checked for resume equivalence at the stage boundary.
"""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dfq.inversion.deepinversion as di
from dfq.errors import DfqError
from dfq.inversion import priors
from dfq.inversion.deepinversion import DeepInversionConfig, deepinversion, deepinversion_loss
from tests.inversion._cnn import SMALL, _resnet, _small_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


RESNET_SMALL = _small_cfg(_resnet())


def test_cnn_defaults_are_nvlabs() -> None:
    cnn = DeepInversionConfig().resolve("cnn")
    assert (cnn.iterations, cnn.betas, cnn.l2, cnn.bn, cnn.first_bn_multiplier) == (
        2000,
        (0.5, 0.9),
        1e-5,
        0.01,
        10.0,
    )
    assert DeepInversionConfig(multi_resolution=True).resolve("cnn").iterations == 3000
    assert DeepInversionConfig(bn=0.05, iterations=7).resolve("cnn").bn == 0.05  # explicit values win


def _independent_bn_term(model: nn.Module, x: Tensor, first: float) -> Tensor:
    inputs: list[tuple[nn.BatchNorm2d, Tensor]] = []
    handles = [
        m.register_forward_hook(lambda mod, inp, out: inputs.append((mod, inp[0])))
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    terms = []
    for mod, a in inputs:
        mean = a.mean(dim=(0, 2, 3))
        var = a.transpose(0, 1).reshape(a.shape[1], -1).var(dim=1, unbiased=False)
        terms.append((mod.running_mean - mean).norm() + (mod.running_var - var).norm())
    return first * terms[0] + sum(terms[1:])


def test_cnn_loss_matches_an_independent_computation() -> None:
    model = _resnet()
    cfg = DeepInversionConfig().resolve("cnn")
    x = torch.randn(2, 3, SMALL, SMALL)
    y = torch.tensor([3, 7])
    with torch.no_grad(), priors.BNStatistics(model, cfg.first_bn_multiplier) as bn:
        parts = deepinversion_loss(model, x, y, cfg, bn)
    with torch.no_grad():
        bn_ref = _independent_bn_term(model, x, 10.0)
        ce_ref = F.cross_entropy(model(x), y)
        d = [
            x[..., :, :-1] - x[..., :, 1:],
            x[..., :-1, :] - x[..., 1:, :],
            x[..., 1:, :-1] - x[..., :-1, 1:],
            x[..., :-1, :-1] - x[..., 1:, 1:],
        ]
        tv_ref = sum(t.pow(2).sum().sqrt() for t in d)
        l2_ref = x.flatten(1).norm(dim=1).mean()
    torch.testing.assert_close(parts["bn"], bn_ref)
    torch.testing.assert_close(parts["total"], ce_ref + 0.01 * bn_ref + 1e-4 * tv_ref + 1e-5 * l2_ref)
    assert bn_ref > _independent_bn_term(model, x, 1.0)  # the first layer really is weighted x10


def test_run_uses_the_bn_term_on_the_jittered_image(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict] = []
    real = di.deepinversion_loss

    def spy(model, x, labels, config, bn_stats=None, prior_input=None):  # noqa: ANN001, ANN202
        parts = real(model, x, labels, config, bn_stats, prior_input)
        seen.append({"bn": parts["bn"].detach(), "mult": bn_stats.first_multiplier, "same": prior_input is x})
        return parts

    monkeypatch.setattr(di, "deepinversion_loss", spy)
    model = _resnet()
    cs = deepinversion(
        model, DeepInversionConfig(num_images=2, batch_size=2, iterations=2), data_cfg=_small_cfg(model), progress=False
    )
    assert len(seen) == 2 and all(s["bn"] > 0 and s["mult"] == 10.0 and s["same"] for s in seen)
    assert cs.provenance["config"]["bn"] == 0.01 and cs.keep_index is None
    assert cs.provenance["best_loss"][0] <= cs.provenance["final_loss"][0]


def test_bad_combinations_raise() -> None:
    vit = timm.create_model("test_vit", pretrained=False, num_classes=10, img_size=SMALL).eval()
    with pytest.raises(DfqError, match="multi_resolution"):
        deepinversion(
            vit, DeepInversionConfig(multi_resolution=True, iterations=3), data_cfg=_small_cfg(vit), progress=False
        )
    with pytest.raises(DfqError, match="BatchNorm2d"):
        deepinversion(vit, DeepInversionConfig(bn=0.01, iterations=1), data_cfg=_small_cfg(vit), progress=False)
    with pytest.raises(ValueError):
        DeepInversionConfig(multi_resolution=True, iterations=2)


def test_multi_resolution_resume_at_the_stage_boundary(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = DeepInversionConfig(
        num_images=2, batch_size=2, iterations=6, multi_resolution=True, cosine_lr=True, checkpoint_every=2
    )
    reference = deepinversion(_resnet(), cfg, data_cfg=RESNET_SMALL, progress=False)

    shapes: list[int] = []
    real = di.deepinversion_loss

    def interrupting(model, x, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        shapes.append(x.shape[-1])
        if len(shapes) == 5:  # iteration 4: the first full-resolution step, with a fresh Adam
            raise KeyboardInterrupt
        return real(model, x, *args, **kwargs)

    monkeypatch.setattr(di, "deepinversion_loss", interrupting)
    ck = dataclasses.replace(cfg, checkpoint_path=str(tmp_path / "di.ckpt"))
    with pytest.raises(KeyboardInterrupt):
        deepinversion(_resnet(), ck, data_cfg=RESNET_SMALL, progress=False)
    assert shapes == [SMALL // 2] * 4 + [SMALL]  # 2/3 of the iterations at half resolution
    monkeypatch.setattr(di, "deepinversion_loss", real)
    resumed = deepinversion(_resnet(), ck, data_cfg=RESNET_SMALL, progress=False)
    assert resumed.provenance["resumed_from"] == [0, 4]
    assert torch.equal(resumed.images, reference.images)
