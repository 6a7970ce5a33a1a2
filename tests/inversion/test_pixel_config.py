"""dfq.inversion.pixel_config: the validation and defaults that SMI and DeepInversion share
(``PixelInversionConfig``), with DeepInversion's ViT defaults."""

from __future__ import annotations

import pytest

from dfq.inversion.deepinversion import DeepInversionConfig
from dfq.inversion.smi import SMIConfig, kept_counts

pytestmark = pytest.mark.usefixtures("one_thread")


def test_config_validation_and_defaults() -> None:
    assert kept_counts(196, SMIConfig().schedule) == [196, 137, 95, 66, 46]
    assert SMIConfig(schedule=[[5, 0.5]], betas=[0.5, 0.9]).schedule == ((5, 0.5),)  # JSON lists accepted
    for bad in (
        {"num_images": 0},
        {"lr": 0.0},
        {"betas": (0.5, 1.0)},
        {"flip": 2.0},
        {"checkpoint_every": 0},
    ):
        with pytest.raises(ValueError):
            DeepInversionConfig(**bad)
    vit = DeepInversionConfig().resolve("vit")
    assert (vit.iterations, vit.betas, vit.l2, vit.bn, vit.lr, vit.tv_l2) == (
        4000,
        (0.5, 0.99),
        0.0,
        0.0,
        0.25,
        1e-4,
    )
