"""Fisher-weighted reconstruction: the weights against hand-computed gradients, and the option end to end."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import timm
import torch
import torch.nn.functional as F

from dfq.config import preset
from dfq.errors import DfqError
from dfq.quant.calibrate import calibrate, quantizers_off
from dfq.quant.fisher import fisher_weights, output_fisher
from dfq.quant.reconstruct import ReconstructConfig, reconstruct, reconstruction_units
from dfq.quant.transform import quantize_


def _calibrated_vit(n: int = 6) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    fp = timm.create_model("test_vit", pretrained=False, img_size=64).eval()
    x = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    q = calibrate(quantize_(copy.deepcopy(fp), preset("w4a8")), lambda m: m(x))
    return q, x


def test_fisher_weights_mix_squared_gradients_scaled_to_mean_one() -> None:
    g = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    w = fisher_weights(g, 1.0)
    assert torch.allclose(w, torch.tensor([[1.0, 4.0], [0.0, 9.0]]) / 3.5)  # g² / mean(g²), mean 14/4
    assert torch.allclose(fisher_weights(g, 0.25), 0.25 * w + 0.75)
    assert torch.equal(fisher_weights(g, 0.0), torch.ones(2, 2))
    assert torch.equal(fisher_weights(torch.zeros(3), 1.0), torch.ones(3))  # nothing depends on it: uniform
    with pytest.raises(ValueError):
        fisher_weights(g, 1.1)


def test_head_weights_are_the_kl_gradient_computed_by_hand() -> None:
    q, x = _calibrated_vit()
    w = output_fisher(q, ["head"], x, batch=4, mix=0.7)["head"]
    with torch.no_grad():
        logits = q(x).double()
        with quantizers_off(q):
            p_fp = F.softmax(q(x).double(), -1)
    grad = F.softmax(logits, -1) - p_fp  # d/dz KL(p_fp || softmax(z)) for one image
    g2 = grad.pow(2)
    expected = 0.7 * g2 / g2.mean() + 0.3
    assert w.dtype == torch.bfloat16 and w.shape == logits.shape
    assert torch.allclose(w.double(), expected, rtol=1e-2, atol=1e-3)


def test_patch_tokens_of_the_last_block_get_only_the_uniform_share() -> None:
    q, x = _calibrated_vit()
    assert q.global_pool == "token"  # the head reads the class token alone
    last = f"blocks.{len(q.blocks) - 1}"
    flags = [p.requires_grad for p in q.parameters()]
    w = output_fisher(q, [last, "blocks.0"], x, batch=3, mix=0.6)
    patches = w[last][:, 1:].float().unique()  # no gradient reaches them
    assert patches.numel() == 1 and float(patches) == pytest.approx(0.4, abs=2e-3)
    assert float(w[last][:, 0].float().mean()) > 1.0
    assert w["blocks.0"].float().std() > 0  # earlier blocks' tokens all matter, unequally
    assert [p.requires_grad for p in q.parameters()] == flags
    with pytest.raises(DfqError, match="no module"):
        output_fisher(q, ["blocks.99"], x, batch=3, mix=0.5)


def test_fisher_reconstruction_fits_what_the_prediction_reads() -> None:
    q, x = _calibrated_vit(8)
    plain = copy.deepcopy(q)
    cfg = ReconstructConfig(iters=60, batch_size=4)
    reconstruct(plain, x, cfg, progress=False)
    reports = reconstruct(q, x, dataclasses.replace(cfg, fisher=1.0), progress=False)
    assert [r.name for r in reports] == [n for n, _ in reconstruction_units(q)]
    assert sum(r.error_after for r in reports) < sum(r.error_before for r in reports)
    last = len(q.blocks) - 1
    # the last block's patch-token outputs carry no weight, so its rounding differs from the plain fit
    assert not torch.equal(q.blocks[last].mlp.fc2.layer.weight, plain.blocks[last].mlp.fc2.layer.weight)
