"""FP8 (E4M3) through the one FakeQuantizer: the ``w8a8-fp8`` preset, ``QuantSpec.format`` and its rules.

References are torch's own ``float8_e4m3fn`` cast on ``x / (amax / 448)``, with the ranges taken
directly from the tensors (not from our calibrators).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from dfq.config import QuantConfig, QuantSpec, preset
from dfq.quant.calibrate import activation_quantizers, calibration_mode
from dfq.quant.modules import QuantLayer
from dfq.quant.quantizer import FakeQuantizer, Role
from tests.quant._helpers import _calibrated, _images


def _ref(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    s = amax.float() / 448.0
    return torch.clamp(x / s, -448.0, 448.0).to(torch.float8_e4m3fn).float() * s


def test_activation_quantizer_is_per_tensor_e4m3_with_amax_over_448():
    fq = FakeQuantizer(preset("w8a8", "fp8").act, site="x")
    x = torch.randn(4, 50) * 3
    with calibration_mode(nn.Sequential(fq)):
        fq(x)
    y = torch.randn(4, 50) * 4  # partly beyond the calibrated range: saturates at amax
    assert torch.equal(fq(y), _ref(y, x.abs().max()))
    scale, zp, qmin, qmax = fq.qparams()
    assert float(scale) == pytest.approx(float(x.abs().max()) / 448) and float(zp) == 0.0
    assert (qmin, qmax) == (-448, 448) and "e4m3" in repr(fq)


def test_fp8_preset_quantizes_weights_per_output_channel_at_the_int8_sites(vit):
    cfg = preset("w8a8", "fp8")
    assert cfg.act_sites == preset("w8a8").act_sites and cfg.trt_compatible
    x = _images(vit, 4)
    q = _calibrated(vit, cfg, x)
    layers = [m for m in q.modules() if isinstance(m, QuantLayer)]
    assert layers
    for ql in layers:
        w = ql.layer.weight.detach()
        amax = w.abs().flatten(1).amax(1).reshape(-1, *([1] * (w.dim() - 1)))
        assert torch.equal(ql.quantized_weight(), _ref(w, amax))
        assert ql.weight_quantizer.role is Role.WEIGHT and ql.weight_quantizer.spec.format == "e4m3"
    acts = activation_quantizers(q)
    assert {a.site for a in acts} >= {"qkv_in", "q", "k", "v", "softmax", "fc2_in"}
    assert all(a.spec.format == "e4m3" and a.axis is None for a in acts)
    with torch.no_grad():
        assert torch.isfinite(q(x)).all()


def test_format_round_trips_and_int_recipes_stay_as_written():
    cfg = preset("w8a8", "fp8")
    d = cfg.to_dict()
    assert d["act"]["format"] == "e4m3" and d["weight"]["format"] == "e4m3"
    assert QuantConfig.from_dict(d) == cfg
    assert "format" not in preset("w8a8").to_dict()["act"]  # older INT recipes: no new key
    assert QuantSpec.from_dict(QuantSpec().to_dict()).format == "int"


@pytest.mark.parametrize(
    "changes",
    [
        {"num_bits": 4},
        {"symmetric": False},
        {"calibrator": "mse"},
        {"calibrator": "entropy"},
        {"format": "e5m2"},
    ],
)
def test_e4m3_spec_refuses_what_it_cannot_be(changes):
    with pytest.raises(ValueError):
        dataclasses.replace(preset("w8a8", "fp8").act, **changes)


def test_fp8_refuses_grid_searching_site_calibrators_and_learned_ranges():
    cfg = preset("w8a8", "fp8")
    with pytest.raises(ValueError, match="integer grid"):
        dataclasses.replace(cfg, site_calibrators=(("softmax", "mse"),))
    assert dataclasses.replace(cfg.act, calibrator="percentile").calibrator == "percentile"
    fq = FakeQuantizer(cfg.act, site="x")
    fq.load_range(torch.tensor(-1.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match="integer grids"):
        fq.learn_range(True)
