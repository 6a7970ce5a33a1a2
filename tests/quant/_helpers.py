"""Helpers shared by the tests of dfq/quant (test_transform, test_calibrate, test_quantizer)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from dfq.config import QuantConfig
from dfq.quant.calibrate import calibrate
from dfq.quant.transform import quantize_


def _images(model: nn.Module, n: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, *model.patch_embed.img_size)


def _calibrated(model: nn.Module, config: QuantConfig, x: torch.Tensor) -> nn.Module:
    q = quantize_(copy.deepcopy(model), config)
    return calibrate(q, lambda m: m(x))
