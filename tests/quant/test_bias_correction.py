"""dfq.quant.bias_correction: the correction removes the expected output shift (hand math)."""

from __future__ import annotations

import torch
from torch import nn

from dfq.config import QuantSpec
from dfq.quant.calibrate import calibrate
from dfq.quant.modules import QuantLayer
from dfq.quant.quantizer import FakeQuantizer, Role


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
