"""dfq.quant.transform (``quantize_``): observer placement (TensorRT and paper), every preset dense and
sparse, what may stay float, the CNN path, per-site calibrators, bias correction by model family, and
non-finite weights refused."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import timm
import torch
from timm.layers import Conv2dSame
from torch import nn

import dfq
from dfq.config import PAPER_VIT_SITES, TRT_VIT_SITES, QuantConfig, preset
from dfq.errors import DfqError
from dfq.quant.calibrate import activation_quantizers, calibrate, quantizers_off
from dfq.quant.modules import QuantLayer, quantizers
from dfq.quant.quantizer import FakeQuantizer, Role
from dfq.quant.transform import quantize_
from dfq.vit import forward_tokens
from tests.quant._helpers import _calibrated, _images


def _placement(model: nn.Module) -> set[tuple[str, str]]:
    """(owner path, site) of every activation quantizer, with block indices collapsed to '*'."""
    out = set()
    for name, mod in model.named_modules(remove_duplicate=False):
        if isinstance(mod, FakeQuantizer) and mod.role is Role.ACTIVATION:
            parts = ["*" if p.isdigit() and i == 1 else p for i, p in enumerate(name.split("."))]
            out.add((".".join(parts), mod.site))
    return out


def test_trt_placement_is_the_documented_list(vit):
    q = quantize_(copy.deepcopy(vit), preset("w8a8"))
    assert _placement(q) == {
        ("patch_embed.proj.input_quantizer", "image"),
        ("blocks.*.attn.qkv.input_quantizer", "qkv_in"),
        ("blocks.*.attn.matmul_qk.a_quantizer", "q"),
        ("blocks.*.attn.matmul_qk.b_quantizer", "k"),
        ("blocks.*.attn.matmul_av.a_quantizer", "softmax"),
        ("blocks.*.attn.matmul_av.b_quantizer", "v"),
        ("blocks.*.attn.proj.input_quantizer", "proj_in"),
        ("blocks.*.mlp.fc1.input_quantizer", "fc1_in"),
        ("blocks.*.mlp.fc2.input_quantizer", "fc2_in"),
        ("head.input_quantizer", "head_in"),
    }
    assert {s for _, s in _placement(q)} == set(TRT_VIT_SITES)
    depth = len(vit.blocks)
    assert len(activation_quantizers(q)) == 2 + 8 * depth
    # every Linear/Conv weight is quantized per output channel
    layers = [m for m in q.modules() if isinstance(m, QuantLayer)]
    assert len(layers) == 2 + 4 * depth
    assert all(m.weight_quantizer.axis == 0 and m.weight_quantizer.lo.shape == (m.weight.shape[0],) for m in layers)


def test_paper_placement_matches_psaq_observer_list(vit):
    q = quantize_(copy.deepcopy(vit), preset("w8a8", "paper"))
    sites = {s for _, s in _placement(q)}
    assert sites == set(PAPER_VIT_SITES)
    names = {n for n, _ in _placement(q)}
    assert "parametrizations.pos_embed.original" not in names  # the parametrization holds a module, not a tensor
    assert ("parametrizations.pos_embed.0", "pos_embed") in _placement(q)
    assert ("parametrizations.cls_token.0", "cls_concat") in _placement(q)
    assert ("patch_embed.norm.2", "cls_concat") in _placement(q)  # same module: one shared range
    assert q.parametrizations.cls_token[0] is q.patch_embed.norm[2]
    assert ("blocks.*.residual1", "residual") in _placement(q)
    assert ("head.output_quantizer", "logits") in _placement(q)
    # paper numerics: asymmetric activations, (2^b-1)/2 weight divisor
    acts = activation_quantizers(q)
    assert all(not a.spec.symmetric for a in acts)
    assert q.head.weight_quantizer.spec.paper_scale


@pytest.mark.parametrize("name", sorted(dfq.presets))
def test_every_preset_runs_dense_and_sparse(vit, name):
    x = _images(vit)
    q = _calibrated(vit, dfq.presets[name], x)
    with torch.no_grad():
        ref, out = vit(x), q(x)
        torch.testing.assert_close(forward_tokens(q, x), out, atol=1e-4, rtol=1e-4)
        with quantizers_off(q):
            torch.testing.assert_close(q(x), ref, atol=1e-5, rtol=1e-5)
    assert not torch.equal(out, ref)  # quantization changes the output ...
    assert torch.isfinite(out).all()
    if name == "w8a8":  # ... but 8-bit symmetric stays close on the calibration images
        rel = (out - ref).norm() / ref.norm()
        assert rel < 0.1


def test_head_and_matmuls_can_stay_float(vit):
    cfg = dataclasses.replace(
        preset("w8a8"), quantize_head=False, act_sites=TRT_VIT_SITES - {"q", "k", "v", "softmax"}
    )
    q = quantize_(copy.deepcopy(vit), cfg)
    assert isinstance(q.head, nn.Linear)
    assert all(b.attn.fused for b in q.blocks)


class _SameConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = Conv2dSame(3, 8, 3, stride=2)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(torch.relu(self.bn(self.conv(x))))
        return self.fc(x.mean((2, 3)))


def test_cnn_path_keeps_subclass_padding_and_quantizes_weights():
    torch.manual_seed(0)
    net = _SameConvNet().eval()
    x = torch.rand(2, 3, 15, 15)
    q = quantize_(copy.deepcopy(net), preset("w8a8"))
    assert all(isinstance(getattr(q, n), QuantLayer) for n in ("conv", "dw", "fc"))
    calibrate(q, lambda m: m(x))
    with torch.no_grad(), quantizers_off(q):
        torch.testing.assert_close(q(x), net(x))  # 'same' padding kept (Conv2dSame's own forward)
    # the conv's weight quantization matches hand math (per-channel symmetric, /127)
    w = net.conv.weight.detach().double()
    s = w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    torch.testing.assert_close(q.conv.quantized_weight().double(), torch.round(w / s) * s, atol=1e-7, rtol=0)
    assert len(quantizers(q)) == 6  # 3 weights + 3 inputs


def test_site_calibrator_overrides_reach_the_quantizers(vit):
    q = quantize_(copy.deepcopy(vit), preset("w8a8"))
    softmax = q.blocks[0].attn.matmul_av.a_quantizer
    assert softmax.site == "softmax" and softmax.spec.calibrator == "mse"
    assert q.blocks[0].attn.matmul_av.b_quantizer.spec.calibrator == "minmax"
    cfg = dataclasses.replace(preset("w8a8"), site_calibrators=(("softmax", "minmax"), ("fc2_in", "percentile")))
    q = quantize_(copy.deepcopy(vit), cfg)
    assert q.blocks[0].attn.matmul_av.a_quantizer.spec.calibrator == "minmax"
    assert q.blocks[0].mlp.fc2.input_quantizer.spec.calibrator == "percentile"
    with pytest.raises(ValueError, match="unknown site"):
        QuantConfig(site_calibrators=(("nope", "mse"),))


def test_bias_correction_reaches_the_layers(vit):
    def corrected(model: nn.Module, mode: str) -> set[bool]:
        q = quantize_(copy.deepcopy(model), dataclasses.replace(preset("w8a8"), bias_correction=mode))
        return {m.bias_correction is not None for m in q.modules() if isinstance(m, QuantLayer)}

    resnet = timm.create_model("test_resnet", pretrained=False).eval()
    assert corrected(resnet, "auto") == {True} and corrected(resnet, "off") == {False}
    assert corrected(vit, "auto") == {False} and corrected(vit, "on") == {True}


def test_quantize_refuses_a_model_with_nonfinite_weights() -> None:
    model = dfq.load_model("test_vit", pretrained=False)
    with torch.no_grad():
        model.blocks[1].attn.proj.weight[3, 2] = float("nan")
    with pytest.raises(DfqError, match="blocks.1.attn.proj.weight"):
        dfq.quantize_(model, dfq.presets["w8a8"])
