"""The BatchNorm CNN shared by the inversion tests (test_registry, test_deepinversion): timm ``test_resnet``
with running statistics far from (0, 1), its data config at 64 px, and the settings that make every
registered CNN inverter run a handful of iterations."""

from __future__ import annotations

import dataclasses

import timm
import torch
from torch import nn

from dfq.inversion import get_inverter
from dfq.models import data_config

SMALL = 64


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10).eval()
    with torch.no_grad():  # running statistics far from (0, 1) so the BN term is informative
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _small_cfg(model: nn.Module, **overrides: object) -> dict:
    """The data config a caller computes once for the inverters: the model's own at SMALL pixels."""
    return data_config(model, input_size=SMALL, **overrides)


def _small_kwargs(name: str) -> dict:
    names = {f.name for f in dataclasses.fields(get_inverter(name).config_cls)}
    wanted = {
        "num_images": 2,
        "batch_size": 2,
        "iterations": 3,
        "log_every": 1,
        # generator-based methods (CMI): shrink the generator, head and memory bank too
        "nz": 16,
        "ngf": 8,
        "head_dim": 16,
        "bank_size": 64,
        "n_neg": 8,
    }
    return {k: v for k, v in wanted.items() if k in names}
