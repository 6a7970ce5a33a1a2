"""``dfq invert`` as one API call: model -> inverted calibration set on disk with its manifest.

The output directory holds the calibration set (lossless float tensors, labels, kept-token index),
``calibration.json`` whose provenance is the manifest (model name and checkpoint hash, method and
full config, seed, input size and normalization, library versions, timings) and ``preview.png``.
It appears only when complete. Long inversions that support it checkpoint to ``OUT.ckpt`` beside the
output (``--resume`` continues from there).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.inversion.overrides import parse_overrides
from dfq.inversion.registry import check_family, get_inverter

__all__ = ["InversionJob", "run_inversion", "model_manifest", "check_set_matches"]


@dataclass(frozen=True)
class InversionJob:
    """Everything ``dfq invert`` needs (see :func:`run_inversion`)."""

    out: str
    method: str
    model: str | None = None
    checkpoint: str | None = None
    pretrained: bool = True
    num_images: int = 32
    seed: int = 0
    settings: tuple[str, ...] = ()  # KEY=VALUE overrides of the method's config
    device: str = "cpu"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    data_overrides: dict[str, Any] = field(default_factory=dict)


def model_manifest(name: str | None, checkpoint: str | None, model: nn.Module, cfg: dict[str, Any]) -> dict[str, Any]:
    """Identity of the model a set was made from (checked when the set is reused)."""
    from dfq.checkpoints import checkpoint_sha256

    return {
        "name": name,
        "class": type(model).__name__,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": checkpoint_sha256(checkpoint) if checkpoint else None,
        "input_size": list(cfg["input_size"]),
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
    }


def check_set_matches(calib: CalibrationSet, manifest: dict[str, Any], where: str) -> None:
    """Refuse a calibration set made for another model or resolution.

    Raises:
        DfqError: input size, normalization or model identity differ.
    """
    made = calib.provenance.get("model") or {}
    size = list(calib.images.shape[1:])
    if size != list(manifest["input_size"]):
        raise DfqError(f"calibration set {where} has images of size {size}, the model expects {manifest['input_size']}")
    for key in ("mean", "std"):
        if made.get(key) is not None and [round(v, 6) for v in made[key]] != [round(v, 6) for v in manifest[key]]:
            raise DfqError(f"calibration set {where} was made with {key} {made[key]}, this model uses {manifest[key]}")
    mine, theirs = manifest.get("checkpoint_sha256"), made.get("checkpoint_sha256")
    if mine and theirs and mine != theirs:
        raise DfqError(f"calibration set {where} was made from another checkpoint ({made.get('checkpoint')})")
    if made.get("name") and manifest.get("name") and made["name"] != manifest["name"] and not (mine and mine == theirs):
        raise DfqError(f"calibration set {where} was made for model {made['name']}, not {manifest['name']}")


def run_inversion(job: InversionJob, model: nn.Module | None = None) -> CalibrationSet:
    """Invert a model into a calibration set and write it to ``job.out``.

    Args:
        job: the job description.
        model: the float model when it is not a timm name.

    Raises:
        DfqError: bad input (unknown method or setting, existing output, checkpoint conflicts, ...).
    """
    from dfq.models import data_config, load_model, model_family
    from dfq.preview import model_patch_size, save_preview
    from dfq.runs import check_output, run_directory, versions

    entry = get_inverter(job.method)
    if job.num_images < 1:
        raise DfqError("--num-images must be at least 1")
    settings = parse_overrides(entry.config_cls, job.settings)
    ckpt: Path | None = None  # this run's checkpoint file, removed once the set is written
    if "checkpoint_path" in {f.name for f in dataclasses.fields(entry.config_cls)}:
        # --set checkpoint_path=... wins over OUT.ckpt; --set checkpoint_path=none turns checkpointing off
        path = settings.setdefault("checkpoint_path", f"{job.out.rstrip('/')}.ckpt")
        if path is not None and (not str(path).strip() or Path(path).is_dir()):
            raise DfqError(f"checkpoint_path {path!r} must name a file (or be none)")
        ckpt = Path(path) if path is not None else None
        if ckpt is not None and ckpt.exists() and not job.resume:
            raise DfqError(f"{ckpt} holds an interrupted run: pass --resume to continue it, or delete it")
    elif job.resume:
        raise DfqError(f"inversion {job.method!r} does not checkpoint; --resume is not available for it")
    check_output(job.out, job.overwrite)  # before hours of inversion, not after

    if model is None:
        if job.model is None:
            raise DfqError("give --model NAME (or pass the float model to run_inversion)")
        model = load_model(job.model, checkpoint=job.checkpoint, pretrained=job.pretrained)
    model = model.to(job.device).eval()
    check_family(entry, model, model_family(model))
    cfg = data_config(model, **job.data_overrides)
    try:
        config = entry.make_config(num_images=job.num_images, seed=job.seed, **settings)
    except (TypeError, ValueError) as e:
        raise DfqError(f"invalid {job.method} settings: {e}") from None

    t0 = time.perf_counter()
    calib = entry.fn(model, config, input_size=tuple(cfg["input_size"]), device=job.device, progress=job.progress)
    seconds = round(time.perf_counter() - t0, 2)
    provenance = {
        **calib.provenance,
        "method": job.method,
        "config": _jsonable(dataclasses.asdict(config)),
        "seed": job.seed,
        "model": model_manifest(job.model, job.checkpoint, model, cfg),
        "versions": versions(),
        "seconds": seconds,
        "device": job.device,
    }
    calib = dataclasses.replace(calib, provenance=provenance)
    patch = model_patch_size(model)
    with run_directory(job.out, overwrite=job.overwrite) as tmp:
        calib.save(tmp)
        save_preview(calib, tmp / "preview.png", cfg["mean"], cfg["std"], patch=patch)
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()
    return calib


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value
