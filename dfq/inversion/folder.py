"""Real images from a folder as a calibration source: the baseline every inversion is measured against.

Registered as ``folder`` beside the inversion methods, so real and synthetic calibration sets come
from one code path with one provenance format: ``dfq calibrate --calib-folder DIR`` uses it, and
``dfq invert --method folder --set path=DIR`` writes a reusable set (lossless tensors + manifest)
exactly like the inversions do. The images get the caller's data config (the model's evaluation
preprocessing, :func:`dfq.models.data_config`, with the caller's overrides), and on top of it the
config's own overrides for models whose weights expect other statistics (e.g.
``mean=0.5,0.5,0.5 std=0.5,0.5,0.5`` for the Keras MobileNet).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfq.data import CalibrationSet, load_image_tensor
from dfq.errors import DfqError
from dfq.inversion.registry import register_inverter
from dfq.models import check_preprocessing

__all__ = ["FolderConfig", "folder_images", "PREPROCESSING_KEYS"]

PREPROCESSING_KEYS = ("mean", "std", "crop_pct", "interpolation", "crop_mode")
"""The data-config entries a :class:`FolderConfig` can override."""


@dataclass(frozen=True)
class FolderConfig:
    """A seeded subset of an image folder, preprocessed for the model.

    Attributes:
        path: the folder (searched recursively for images).
        num_images: how many images (all of them, with a warning, if the folder holds fewer).
        seed: seed of the subset draw.
        mean, std: per-channel normalization replacing the model's (None: the model's own).
        crop_pct: center-crop fraction replacing the model's (None: the model's own).
        interpolation: resize interpolation replacing the model's (None: the model's own).
        crop_mode: ``center`` | ``squash`` | ``border`` replacing the model's (None: the model's own).
    """

    path: str = ""
    num_images: int = 32
    seed: int = 0
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    crop_mode: str | None = None

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("the folder source needs path=DIR")
        if self.num_images < 1:
            raise ValueError("num_images must be >= 1")
        check_preprocessing(self.preprocessing())  # here, not as a KeyError once the model is loaded

    def preprocessing(self) -> dict[str, object]:
        """The data-config overrides this config sets."""
        return {k: getattr(self, k) for k in PREPROCESSING_KEYS if getattr(self, k) is not None}


@register_inverter("folder", FolderConfig, families=("vit", "cnn", "other"))
def folder_images(
    model: nn.Module,
    config: FolderConfig,
    *,
    data_cfg: dict[str, Any],
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CalibrationSet:
    """Load ``config.num_images`` images of ``config.path`` in the model's input space (no labels).

    ``data_cfg`` is the model's data config (:func:`dfq.models.data_config`); the preprocessing
    fields the config sets replace its entries.
    """
    from dfq.models import eval_transform

    if not Path(config.path).is_dir():
        raise DfqError(f"calibration folder {config.path} is not a directory")
    cfg = {**data_cfg, **config.preprocessing()}
    images = load_image_tensor(config.path, eval_transform(cfg), config.num_images, seed=config.seed)
    return CalibrationSet(
        images=images,
        labels=None,
        keep_index=None,
        provenance={"method": "folder", "folder": str(config.path), "seed": config.seed, **config.preprocessing()},
    )
