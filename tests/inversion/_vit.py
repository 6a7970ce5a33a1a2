"""The ViTs shared by the inversion tests (test_registry, test_smi, test_pixels, test_bench): timm
``test_vit`` (160 px, 10x10 patches) and a 64-px one for direct calls, and the settings that make every
registered ViT inverter run a handful of iterations."""

from __future__ import annotations

import dataclasses

import timm
import torch
from torch import nn

from dfq.inversion import get_inverter

SIDE = 160  # test_vit's native size (what invert() uses): 10 x 10 patches of 16 px


SMALL = 64  # direct calls: 4 x 4 patches, fast


def _test_vit(img_size: int = SIDE) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False, num_classes=10, img_size=img_size).eval()


def _small_vit() -> nn.Module:
    return _test_vit(SMALL)


def _small_kwargs(name: str) -> dict:
    """Config overrides that make every registered inverter run a handful of iterations."""
    names = {f.name for f in dataclasses.fields(get_inverter(name).config_cls)}
    wanted = {"num_images": 2, "batch_size": 2, "iterations": 3, "schedule": ((1, 0.3),), "log_every": 1}
    return {k: v for k, v in wanted.items() if k in names}
