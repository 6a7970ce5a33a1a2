"""Fixtures shared by the tests of dfq/quant."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False).eval()
