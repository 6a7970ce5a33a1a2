"""dfq.quant.modules: a quantized Linear against float64 hand math."""

from __future__ import annotations

import torch
from torch import nn

from dfq.config import QuantConfig, QuantSpec
from dfq.quant.calibrate import calibration_mode
from dfq.quant.modules import QuantLayer
from dfq.quant.quantizer import FakeQuantizer, Role


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
