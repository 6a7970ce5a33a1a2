"""Per-layer sensitivity and the mixed-precision choice, against KL computed by hand in float64."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import timm
import torch

import dfq
from dfq.config import QuantConfig, QuantSpec, preset
from dfq.quant.modules import quantizers
from dfq.quant.quantizer import Role
from dfq.quant.sensitivity import Sensitivity, average_weight_bits, choose_widths, sensitivity


@pytest.fixture(scope="module")
def calibrated():
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False).eval()
    size = model.default_cfg["input_size"][1:]
    calib, held = torch.randn(6, 3, *size), torch.randn(5, 3, *size)
    q = dfq.quantize_(copy.deepcopy(model), preset("w4a8"))
    dfq.calibrate(q, lambda m: m(calib))
    return model, q, held


def _kl64(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    p = torch.softmax(p_logits.double(), 1)
    return float((p * (p.log() - torch.log_softmax(q_logits.double(), 1))).sum(1).mean())


def _logits_with(q: torch.nn.Module, x: torch.Tensor, on: set[int]) -> torch.Tensor:
    """Logits of a copy of ``q`` with only the quantizers at positions ``on`` (of quantizers()) quantizing."""
    m = copy.deepcopy(q)
    for i, fq in enumerate(quantizers(m)):
        fq.mode = "quantize" if i in on else "off"
    with torch.no_grad():
        return m(x)


def test_rows_match_kl_computed_by_hand(calibrated):
    fp, q, held = calibrated
    with torch.no_grad():
        ref = fp(held)
    baseline, rows = sensitivity(q, held, kinds=("weight", "act"), batch_size=2, progress=False)
    every = quantizers(q)
    assert baseline == pytest.approx(_kl64(ref, _logits_with(q, held, set(range(len(every))))), rel=1e-4, abs=1e-9)
    named = dict(q.named_modules())
    weights = [r for r in rows if r.kind == "weight"]
    acts = [r for r in rows if r.kind == "act"]
    assert len(weights) == 26 and len(weights) + len(acts) == len(every)  # 6 blocks x 4 + patch embed + head
    for r in (weights[0], weights[7], weights[-1], acts[0], acts[len(acts) // 2]):
        fq = named[r.name].weight_quantizer if r.kind == "weight" else named[r.name]
        i = next(k for k, o in enumerate(every) if o is fq)
        assert r.alone_kl == pytest.approx(_kl64(ref, _logits_with(q, held, {i})), rel=1e-4, abs=1e-9)
        drop = set(range(len(every))) - {i}
        assert r.drop_kl == pytest.approx(_kl64(ref, _logits_with(q, held, drop)), rel=1e-4, abs=1e-9)
        assert r.bits == (4 if r.kind == "weight" else 8)
    assert weights[0].name == "patch_embed.proj" and weights[0].numel == named["patch_embed.proj"].layer.weight.numel()
    assert all(fq.mode == "quantize" for fq in every)  # the model is left as it was found


def test_reference_logits_and_bad_input(calibrated):
    fp, q, held = calibrated
    with torch.no_grad():
        ref = fp(held)
    b1, r1 = sensitivity(q, held, progress=False)
    b2, r2 = sensitivity(q, held, reference_logits=ref, progress=False)
    assert b1 == pytest.approx(b2, rel=1e-5) and [r.name for r in r1] == [r.name for r in r2]
    assert all(r.kind == "weight" for r in r1)
    with pytest.raises(ValueError, match="kinds"):
        sensitivity(q, held, kinds=("bias",), progress=False)
    with pytest.raises(ValueError, match="at least one image"):
        sensitivity(q, held[:0], progress=False)
    plain = dfq.quantize_(copy.deepcopy(fp), dataclasses.replace(preset("w8a8"), act_sites=frozenset()))
    for fq in quantizers(plain):
        assert fq.role is Role.WEIGHT
    with pytest.raises(ValueError, match="nothing to measure"):
        sensitivity(plain, held, kinds=("act",), progress=False)


def _row(name: str, numel: int, drop: float) -> Sensitivity:
    return Sensitivity(name, "weight", "weight", 4, numel, 0.0, drop)


def test_choose_widths_is_greedy_on_saving_per_bit_within_the_budget():
    rows = [_row("a", 100, 0.9), _row("b", 300, 0.5), _row("c", 100, 0.7), _row("d", 500, 1.2)]
    # savings 0.1, 0.5, 0.3, -0.2 over baseline 1.0; per added bit 0.1/400, 0.5/1200, 0.3/400, none
    widths = choose_widths(rows, 4.0 + 4 * 400 / 1000, 1.0)  # room for 400 weights at 8 bits
    assert widths == {"a": 4, "b": 8, "c": 8, "d": 4}  # c (0.00075/bit), b (0.00042) fills the rest, a (0.00025) no longer fits
    assert average_weight_bits({r.name: r.numel for r in rows}, widths) == pytest.approx(5.6)
    assert choose_widths(rows, 8.0, 1.0) == {"a": 8, "b": 8, "c": 8, "d": 4}  # d saves nothing: stays
    assert choose_widths(rows, 4.0, 1.0) == {"a": 4, "b": 4, "c": 4, "d": 4}
    with pytest.raises(ValueError, match="below"):
        choose_widths(rows, 3.5, 1.0)
    # alone_kl a 0.05, b 0.3, c 0.2; KL saved when dropped a 0.1, b 0.5, c 0.3 (baseline 1.0); 500 weights
    three = [Sensitivity("a", "weight", "weight", 4, 100, 0.05, 0.9), Sensitivity("b", "weight", "weight", 4, 300, 0.3, 0.5),
             Sensitivity("c", "weight", "weight", 4, 100, 0.2, 0.7)]  # fmt: skip
    assert choose_widths(three, 7.2, 1.0, by="alone") == {"a": 4, "b": 8, "c": 8}  # c 5e-4/bit, b 2.5e-4, a 1.25e-4
    assert choose_widths(three, 6.4, 1.0, by="alone", per_bit=False) == {"a": 4, "b": 8, "c": 4}  # b fills 1200 bits
    assert choose_widths(three, 6.4, 1.0, by="drop", per_bit=False) == {"a": 4, "b": 8, "c": 4}  # b saves most
    assert choose_widths(three, 6.4, 1.0) == {"a": 8, "b": 4, "c": 8}  # c 7.5e-4/bit, b 4.2e-4 no room, a 2.5e-4
    with pytest.raises(ValueError, match="drop or alone"):
        choose_widths(three, 5.0, 1.0, by="both")


def test_layer_weight_bits_in_config_and_model():
    base = preset("w4a8")
    cfg = dataclasses.replace(base, layer_weight_bits={"head": 8, "blocks.1.mlp.fc2": 8})
    assert cfg.layer_weight_bits == (("blocks.1.mlp.fc2", 8), ("head", 8))
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["layer_weight_bits"]  # recipes written before the field still load
    assert QuantConfig.from_dict(old).layer_weight_bits == ()
    q = dfq.quantize_(timm.create_model("test_vit", pretrained=False), cfg)
    bits = {n: m.weight_quantizer.spec.num_bits for n, m in q.named_modules() if hasattr(m, "weight_quantizer")}
    assert bits["head"] == 8 and bits["blocks.1.mlp.fc2"] == 8 and bits["blocks.1.mlp.fc1"] == 4
    assert sum(b == 8 for b in bits.values()) == 2
    w = q.head.weight_quantizer(q.head.layer.weight)
    assert len(torch.unique(w[0])) > 16  # an 8-bit grid, not a 4-bit one
    with pytest.raises(ValueError, match="not quantized in this model: nope"):
        dfq.quantize_(timm.create_model("test_vit", pretrained=False), dataclasses.replace(base, layer_weight_bits={"nope": 8}))
    with pytest.raises(ValueError, match="num_bits"):
        dataclasses.replace(base, layer_weight_bits={"head": 1})
    assert QuantSpec(num_bits=4).num_bits == 4


def test_cnn_mixed_precision_end_to_end():
    """On a BatchNorm CNN: sensitivity, a plan within the budget, and the planned model at its widths."""
    torch.manual_seed(0)
    fp = timm.create_model("test_resnet", pretrained=False).eval()
    calib, held = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64)
    q = dfq.calibrate(dfq.quantize_(copy.deepcopy(fp), preset("w4a8")), lambda m: m(calib))
    baseline, rows = sensitivity(q, held, progress=False)
    widths = choose_widths(rows, 5.0, baseline)
    numels = {r.name: r.numel for r in rows}
    assert 4.0 < average_weight_bits(numels, widths) <= 5.0 and set(widths.values()) == {4, 8}
    cfg = dataclasses.replace(preset("w4a8"), layer_weight_bits={k: 8 for k, b in widths.items() if b == 8})
    mixed = dfq.calibrate(dfq.quantize_(copy.deepcopy(fp), cfg), lambda m: m(calib))
    named = dict(mixed.named_modules())
    assert all(named[k].weight_quantizer.spec.num_bits == b for k, b in widths.items())
    with torch.no_grad():
        ref = fp(held)
        kl_mixed, kl_uniform = _kl64(ref, mixed(held)), _kl64(ref, q(held))
    assert kl_mixed < kl_uniform  # the promoted layers were the ones that mattered on these images
