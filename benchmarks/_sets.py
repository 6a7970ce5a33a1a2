"""A benchmark's synthetic set: loaded when it exists, else made by ``dfq invert``'s job (resumable); its first images."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from dfq.data import CalibrationSet
from dfq.jobs import InvertRequest, run_invert
from dfq.sets import select_images


def synthetic_set(set_dir: Path, model: nn.Module, name: str, cfg: dict, method: str, num_images: int,
                  settings: Sequence[str] = (), seed: int = 0, assets: Path | None = None) -> CalibrationSet:  # fmt: skip
    """The set at ``set_dir``; when missing, inverted from the caller-built ``model`` (in its input space
    ``cfg``) and continued from ``SET.ckpt`` when an earlier run was interrupted. A timm model with shared
    weights (:data:`_assets.TIMM_WEIGHTS`, given ``assets``) is inverted from its name and checkpoint
    instead, as ``dfq invert --checkpoint`` does, so the set records the weights it came from."""
    from _assets import TIMM_WEIGHTS

    if (set_dir / "calibration.json").exists():
        return CalibrationSet.load(set_dir)
    common = dict(out=str(set_dir), method=method, model=name, num_images=num_images, settings=tuple(settings),
                  device="cpu", resume=Path(f"{set_dir}.ckpt").exists(), seed=seed)  # fmt: skip
    if assets is not None and name in TIMM_WEIGHTS:
        return run_invert(InvertRequest(**common, checkpoint=str(assets / TIMM_WEIGHTS[name]), pretrained=False))
    request = InvertRequest(**common, data_overrides={"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])})
    return run_invert(request, model=model)


def first_images(calib: CalibrationSet, n: int) -> CalibrationSet:
    """The first ``n`` images of a set (all when it holds fewer), with their labels and kept tokens."""
    return select_images(calib, torch.arange(min(n, len(calib))))


def add_set_options(ap: argparse.ArgumentParser, model: str, method: str, num_images: int, calib_images: int) -> None:
    """The options every QAT/reconstruction benchmark shares: assets, model, scheme and its synthetic set."""
    from _assets import default_assets

    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--model", default=model, choices=["mobilenet_v1_025", "deit_tiny"])
    ap.add_argument("--scheme", default="w4a8", choices=["w4a8", "w8a8"])
    ap.add_argument("--method", default=method, help="inversion method of the set (when it is made here)")
    ap.add_argument("--num-images", type=int, default=num_images, help="images of the set (when it is made here)")
    ap.add_argument("--set", dest="settings", action="append", default=[], help="inversion KEY=VALUE")
    ap.add_argument("--set-dir", type=Path, default=None, help="the synthetic set (made here when missing)")
    ap.add_argument("--calib-images", type=int, default=calib_images, help="calibrate on the set's first N images")


def set_from_args(args: argparse.Namespace, model: nn.Module, cfg: dict) -> tuple[CalibrationSet, Path]:
    """The set the :func:`add_set_options` options name (``--set-dir``, default ``OUT/set``), made when missing;
    ``OUT`` is created."""
    set_dir = args.set_dir or args.out / "set"
    args.out.mkdir(parents=True, exist_ok=True)
    calib = synthetic_set(set_dir, model, args.model, cfg, args.method, args.num_images, args.settings,
                          assets=args.assets)  # fmt: skip
    return calib, set_dir
