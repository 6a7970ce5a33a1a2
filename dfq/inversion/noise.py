"""Gaussian-noise calibration baseline (PSAQ-ViT ``--mode 1``).

Images are drawn i.i.d. from N(mean, std^2) directly in model-input (normalized) space, the
reference setting: ``randn(B, 3, H, W)``. The papers report that min/max calibration on such noise
collapses a W8A8 DeiT to ~10% top-1 with their observer placement; see docs/quantization.md for
which placement choices cause that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dfq.data import CalibrationSet
from dfq.inversion.registry import register_inverter

__all__ = ["NoiseConfig", "noise_images"]


@dataclass(frozen=True)
class NoiseConfig:
    """Gaussian noise in normalized input space.

    Attributes:
        num_images: how many images.
        seed: RNG seed.
        mean: mean of every pixel (normalized space).
        std: standard deviation (normalized space).
    """

    num_images: int = 32
    seed: int = 0
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise ValueError("num_images must be >= 1")
        if self.std <= 0:
            raise ValueError("std must be > 0")


@register_inverter("noise", NoiseConfig, families=("vit", "cnn", "other"))
def noise_images(
    model: nn.Module,
    config: NoiseConfig,
    *,
    data_cfg: dict[str, Any],
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CalibrationSet:
    """Draw ``config.num_images`` Gaussian images of ``data_cfg["input_size"]`` (the model is not used)."""
    gen = torch.Generator().manual_seed(config.seed)
    images = torch.randn((config.num_images, *data_cfg["input_size"]), generator=gen) * config.std + config.mean
    return CalibrationSet(
        images=images,
        labels=None,
        keep_index=None,
        provenance={"method": "noise", "seed": config.seed, "mean": config.mean, "std": config.std},
    )
