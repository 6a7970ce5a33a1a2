"""The model a job works on, loaded once with its identity: one record, one checkpoint hash.

Every job (invert, calibrate, evaluate) starts from a :class:`JobModel`: the float module on its
device, the data config that reaches every step (the model's own preprocessing with the caller's
overrides applied once, here), and the identity record written into manifests and recipes and checked
when a calibration set is reused (:func:`check_set_matches`). :func:`check_sites` refuses a
quantization config none of whose activation sites exist in the model; :func:`check_batch_fits` a
working batch larger than the host memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from dfq.checkpoints import checkpoint_sha256
from dfq.config import CNN_SITES, VIT_SITES, QuantConfig
from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.models import data_config, is_cls_vit, load_model, model_family

__all__ = ["JobModel", "load_job_model", "check_set_matches", "check_sites", "check_batch_fits"]


@dataclass(frozen=True)
class JobModel:
    """A float model ready for a job.

    Attributes:
        module: the model, in eval mode, on the job's device.
        data_cfg: its data config (input size, mean/std, crop, interpolation), overrides applied.
        identity: ``name``, ``source`` (timm | python), ``family``, ``class``, ``checkpoint``,
            ``checkpoint_sha256``, ``pretrained``, ``input_size``, ``mean``, ``std``.
    """

    module: nn.Module
    data_cfg: dict[str, Any]
    identity: dict[str, Any]


def load_job_model(
    name: str | None,
    checkpoint: str | None = None,
    pretrained: bool = True,
    device: str = "cpu",
    module: nn.Module | None = None,
    data_overrides: dict[str, Any] | None = None,
) -> JobModel:
    """Load (or take) the float model, hash its checkpoint once, resolve its data config once.

    Args:
        name: timm name or alias (a label only when ``module`` is given).
        checkpoint: local weights file.
        pretrained: timm's weights when there is no checkpoint (off: seeded random init).
        device: where the model goes.
        module: a model built by the caller (Python API) instead of a timm name.
        data_overrides: preprocessing overrides (``mean``, ``std``, ``crop_pct``, ...).

    Raises:
        DfqError: no model named, unknown name, bad checkpoint, bad override.
    """
    source = "python" if module is not None else "timm"
    if module is None:
        if name is None:
            raise DfqError("give --model NAME (or pass the float model to the job)")
        module = load_model(name, checkpoint=checkpoint, pretrained=pretrained)
    module = module.to(device).eval()
    cfg = data_config(module, **(data_overrides or {}))
    identity = {
        "name": name,
        "source": source,
        "family": model_family(module),
        "class": type(module).__name__,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": checkpoint_sha256(checkpoint) if checkpoint else None,
        "pretrained": pretrained if checkpoint is None else None,
        "input_size": list(cfg["input_size"]),
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
    }
    return JobModel(module, cfg, identity)


def check_set_matches(calib: CalibrationSet, identity: dict[str, Any], where: str) -> None:
    """Refuse a calibration set made for another model, resolution or normalization.

    Raises:
        DfqError: input size, normalization or model identity differ.
    """
    made = calib.provenance.get("model") or {}
    size = list(calib.images.shape[1:])
    if size != list(identity["input_size"]):
        raise DfqError(f"calibration set {where} has images of size {size}, the model expects {identity['input_size']}")
    for key in ("mean", "std"):
        if made.get(key) is not None and [round(v, 6) for v in made[key]] != [round(v, 6) for v in identity[key]]:
            raise DfqError(f"calibration set {where} was made with {key} {made[key]}, this model uses {identity[key]}")
    mine, theirs = identity.get("checkpoint_sha256"), made.get("checkpoint_sha256")
    if mine and theirs and mine != theirs:
        raise DfqError(f"calibration set {where} was made from another checkpoint ({made.get('checkpoint')})")
    if made.get("name") and identity.get("name") and made["name"] != identity["name"] and not (mine and mine == theirs):
        raise DfqError(f"calibration set {where} was made for model {made['name']}, not {identity['name']}")


def check_sites(config: QuantConfig, module: nn.Module) -> None:
    """Refuse activation sites of which the model has none (``--sites q,k`` on a CNN): the run would
    quietly quantize no activation at all.

    A CLS-token ViT has :data:`dfq.config.VIT_SITES`, every other model :data:`dfq.config.CNN_SITES`
    (the placement of :func:`dfq.quantize_`). The presets enable sites of both, so only a config that
    shares none with the model is refused; an empty set (weights only) passes.

    Raises:
        DfqError: no enabled site exists in the model; the message lists the ones it has.
    """
    vit = is_cls_vit(module)
    own = VIT_SITES if vit else CNN_SITES
    if config.act_sites and not config.act_sites & set(own):
        kind = "a CLS-token ViT" if vit else "not a CLS-token ViT"
        raise DfqError(
            f"activation sites {','.join(sorted(config.act_sites))} do not exist in {type(module).__name__} "
            f"({kind}); its sites are {','.join(own)}"
        )


def check_batch_fits(batch_size: int, input_size: Any, flag: str = "--batch-size") -> None:
    """Refuse a batch of float32 images of ``input_size`` that alone needs more than the host memory
    available now (:func:`dfq.memory.available_memory`; nothing is checked where it is unknown), before
    any work: a training or timing batch of 10**12 images otherwise failed in an allocation, with a
    traceback. A lower bound (the batch's images only), so it never refuses a batch that would fit.

    Raises:
        DfqError: the batch cannot fit; the message names ``flag``.
    """
    from dfq.memory import available_memory, set_bytes

    need, free = set_bytes(batch_size, input_size), available_memory()
    if free is not None and need > free:
        shape = "x".join(str(int(d)) for d in input_size)
        raise DfqError(f"{flag} {batch_size}: one batch needs at least {need / 2**30:.1f} GiB of memory (float32, "
                       f"{shape} each), but {free / 2**30:.1f} GiB is available; lower {flag}")  # fmt: skip
