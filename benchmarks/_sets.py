"""A benchmark's synthetic set: loaded when it exists, else made by ``dfq invert``'s job (resumable); its first images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from dfq.data import CalibrationSet
from dfq.jobs import InvertRequest, run_invert
from dfq.sets import select_images


def synthetic_set(set_dir: Path, model: nn.Module, name: str, cfg: dict, method: str, num_images: int,
                  settings: Sequence[str] = (), seed: int = 0) -> CalibrationSet:  # fmt: skip
    """The set at ``set_dir``; when missing, inverted from the caller-built ``model`` (in its input space
    ``cfg``) and continued from ``SET.ckpt`` when an earlier run was interrupted."""
    if (set_dir / "calibration.json").exists():
        return CalibrationSet.load(set_dir)
    request = InvertRequest(out=str(set_dir), method=method, model=name, num_images=num_images, settings=tuple(settings),
                            device="cpu", resume=Path(f"{set_dir}.ckpt").exists(), seed=seed,
                            data_overrides={"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])})  # fmt: skip
    return run_invert(request, model=model)


def first_images(calib: CalibrationSet, n: int) -> CalibrationSet:
    """The first ``n`` images of a set (all when it holds fewer), with their labels and kept tokens."""
    return select_images(calib, torch.arange(min(n, len(calib))))
