"""Fake-quant core: observer placement, numerics against float64 hand math, calibration mode, CNN path."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import timm
import torch
from timm.layers import Conv2dSame
from torch import nn

import dfq
from dfq.config import PAPER_VIT_SITES, TRT_VIT_SITES, QuantConfig, QuantSpec, preset
from dfq.quant.calibrate import activation_quantizers, calibrate, calibration_mode, quantizers_off
from dfq.quant.modules import QuantLayer, quantizers
from dfq.quant.quantizer import FakeQuantizer, Role
from dfq.quant.transform import quantize_
from dfq.vit import forward_tokens


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False).eval()


def _images(model: nn.Module, n: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, *model.patch_embed.img_size)


def _calibrated(model: nn.Module, config: QuantConfig, x: torch.Tensor) -> nn.Module:
    q = quantize_(copy.deepcopy(model), config)
    return calibrate(q, lambda m: m(x))


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


def test_quant_linear_matches_float64_hand_math():
    torch.manual_seed(1)
    lin = nn.Linear(16, 5)
    x = torch.randn(4, 16) * 3
    cfg = QuantConfig(weight=QuantSpec(num_bits=4, per_channel=True), act=QuantSpec(num_bits=8))
    layer = QuantLayer(lin, FakeQuantizer(cfg.weight, axis=0, site="weight", role=Role.WEIGHT), FakeQuantizer(cfg.act, site="fc1_in"))
    with calibration_mode(layer):
        layer(x)
    y = layer(x)

    # independent reference in float64
    xd, wd, bd = x.double(), lin.weight.detach().double(), lin.bias.detach().double()
    sa = xd.abs().max() / 127
    xq = torch.clamp(torch.round(xd / sa), -128, 127) * sa
    sw = wd.abs().amax(dim=1, keepdim=True) / 7
    wq = torch.clamp(torch.round(wd / sw), -8, 7) * sw
    ref = xq @ wq.T + bd
    torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=1e-5)


def test_paper_activation_numerics_are_asymmetric_uint8():
    spec = QuantSpec(num_bits=8, symmetric=False)
    fq = FakeQuantizer(spec, site="x")
    x = torch.cat([torch.tensor([-1.0, 3.0]), torch.rand(200) * 4 - 1])  # range exactly [-1, 3]
    with calibration_mode(nn.Sequential(fq)):
        fq(x)
    scale = 4.0 / 255
    zp = round(1.0 / scale)
    ref = (torch.clamp(torch.round(x.double() / scale) + zp, 0, 255) - zp) * scale
    torch.testing.assert_close(fq(x).double(), ref, atol=1e-6, rtol=0)


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


def test_calibrated_range_is_the_observed_minmax(vit):
    x = _images(vit)
    seen: list[torch.Tensor] = []
    h = vit.blocks[1].mlp.fc2.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach()))
    with torch.no_grad():
        vit(x[:4])
        vit(x[4:])
    h.remove()
    q = quantize_(copy.deepcopy(vit), preset("w8a8"))
    calibrate(q, lambda m: (m(x[:4]), m(x[4:])))
    amax = torch.cat([s.flatten() for s in seen]).abs().max()
    fq = q.blocks[1].mlp.fc2.input_quantizer
    assert torch.equal(fq.hi, amax) and torch.equal(fq.lo, -amax)


def test_calibration_mode_restores_state_when_the_loop_raises(vit):
    x = _images(vit)
    q = _calibrated(vit, preset("w8a8"), x)
    before = {n: b.clone() for n, b in q.named_buffers()}

    def bad_loop(m: nn.Module) -> None:
        m(torch.randn_like(x) * 100)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate(q, bad_loop)
    assert all(a.mode == "quantize" for a in activation_quantizers(q))
    for n, b in q.named_buffers():
        assert torch.equal(b, before[n]), n


def test_uncalibrated_model_refuses_to_run(vit):
    q = quantize_(copy.deepcopy(vit), preset("w8a8"))
    with pytest.raises(RuntimeError, match="not calibrated"):
        q(_images(vit, 1))
    with pytest.raises(ValueError, match="already quantized"):
        quantize_(q, preset("w8a8"))


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


def test_config_round_trip_and_validation():
    for cfg in dfq.presets.values():
        assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown activation site"):
        QuantConfig(act_sites=frozenset({"nope"}))
    with pytest.raises(ValueError, match="exclude each other"):
        QuantConfig(act_sites=frozenset({"qkv_out", "q"}))
    with pytest.raises(ValueError, match="unknown QuantConfig key"):
        QuantConfig.from_dict({**preset("w8a8").to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="num_bits"):
        QuantSpec(num_bits=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset("w8a8").name = "x"  # type: ignore[misc]
    assert preset("w8a8").trt_compatible and not preset("w8a8", "paper").trt_compatible


def test_bias_correction_removes_the_expected_output_shift():
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 4, 3, padding=0, groups=4, bias=False)
    conv.weight.data = torch.randn(4, 1, 3, 3) * 3
    x = torch.rand(16, 4, 32, 32) * 0.2 + torch.tensor([2.8, 0.0, 1.0, 5.0]).view(1, 4, 1, 1)  # large input means
    spec = QuantSpec(num_bits=4, per_channel=True)
    plain = QuantLayer(conv, FakeQuantizer(spec, axis=0, site="weight", role=Role.WEIGHT))
    corrected = QuantLayer(conv, FakeQuantizer(spec, axis=0, site="weight", role=Role.WEIGHT), bias_correction=True)
    calibrate(corrected, lambda m: m(x))  # no activation quantizers: weight error + input means only
    with torch.no_grad():
        ref = conv(x).double().mean(dim=(0, 2, 3))
        shift_plain = plain(x).double().mean(dim=(0, 2, 3)) - ref
        shift_corr = corrected(x).double().mean(dim=(0, 2, 3)) - ref
    # hand math: dW summed over the kernel times the channel mean of the input
    dw = (plain.quantized_weight() - conv.weight).detach().double().sum(dim=(1, 2, 3))
    torch.testing.assert_close(corrected.bias_correction.double(), dw * x.double().mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    assert shift_corr.abs().max() < 0.05 * shift_plain.abs().max()
    assert (corrected.bias_correction != 0).all()


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
