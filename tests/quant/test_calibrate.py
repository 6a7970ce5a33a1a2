"""dfq.quant.calibrate: the calibrated range is the observed one, calibration_mode restores the state when
the loop raises, and non-finite ranges are refused."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

import dfq
from dfq.config import preset
from dfq.errors import DfqError
from dfq.quant.calibrate import activation_quantizers, calibrate
from dfq.quant.transform import quantize_
from tests.quant._helpers import _calibrated, _images


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


def test_calibration_refuses_nonfinite_ranges() -> None:
    """Finite weights, but activations that overflow: the range must not silently become inf."""
    model = dfq.quantize_(dfq.load_model("test_vit", pretrained=False), dfq.presets["w8a8"])
    images = torch.randn(2, 3, 160, 160)
    images[0, 0, 0, 0] = float("inf")
    with pytest.raises(DfqError, match="inf or NaN"):  # the softmax site's histogram sees the NaN first
        dfq.calibrate(model, lambda m: m(images))
    minmax = dfq.quantize_(dfq.load_model("test_vit", pretrained=False), dataclasses.replace(dfq.presets["w8a8"], site_calibrators=()))
    with pytest.raises(DfqError, match="NaN or infinite range"):  # min/max of inf is inf: caught at the end
        dfq.calibrate(minmax, lambda m: m(images))
