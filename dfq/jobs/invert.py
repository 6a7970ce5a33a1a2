"""``dfq invert`` as one call: a model -> a calibration set on disk, with its manifest and preview.

The output directory holds the set (lossless float tensors, labels, kept-token index),
``calibration.json`` whose provenance is the manifest (:func:`dfq.jobs.sources.resolve_source`) and
``preview.png``. It appears only when complete. Methods that checkpoint write ``OUT.ckpt`` beside
the output (``--set checkpoint_path=...`` elsewhere); ``resume`` continues it, and it is removed
once the set is written.

Under ``torchrun --nproc-per-node N -m dfq invert ...`` the N processes share the batches
(:mod:`dfq.inversion._shards`); rank 0 alone holds ``OUT.lock`` and writes the merged set, whose
provenance records the world size and each rank's batches; each rank checkpoints to ``OUT.ckpt.rankR``.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from dfq import distributed
from dfq.data import CalibrationSet
from dfq.devices import check_device
from dfq.jobs.model import load_job_model
from dfq.jobs.sources import CalibrationSource, plan_source, resolve_source

__all__ = ["InvertRequest", "run_invert"]


@dataclass(frozen=True)
class InvertRequest:
    """Everything ``dfq invert`` needs.

    Attributes:
        out: the set directory to create.
        method: inversion method (registry name).
        model, checkpoint, pretrained: the float model (timm name or alias, local weights, hub weights).
        num_images, seed: size and seed of the set.
        settings: ``KEY=VALUE`` fields of the method's config.
        options: typed fields of the method's config (Python API).
        device: ``cpu`` | ``cuda`` (None: cuda when available).
        resume: continue an interrupted run from its checkpoint.
        overwrite: replace an existing set or run directory (never anything else).
        progress: progress bars.
        data_overrides: preprocessing overrides (``mean``, ``std``, ...), for models whose weights
            expect other statistics than timm's defaults.
    """

    out: str
    method: str
    model: str | None = None
    checkpoint: str | None = None
    pretrained: bool = True
    num_images: int = 32
    seed: int = 0
    settings: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    data_overrides: dict[str, Any] = field(default_factory=dict)


def run_invert(request: InvertRequest, model: nn.Module | None = None) -> CalibrationSet:
    """Invert a model into a calibration set and write it to ``request.out``.

    Args:
        request: the job.
        model: the float model when it is not a timm name.

    Raises:
        DfqError: bad input (unknown method or setting, existing output, checkpoint conflicts, ...).
    """
    from dfq.runs import claim_output

    device = check_device(request.device)
    with distributed.session(device), ExitStack() as held:
        with distributed.agree():  # rank 0 holds OUT; a refusal stops every rank
            if distributed.is_main():
                held.enter_context(claim_output(request.out, request.overwrite))  # before hours of inversion
        return _invert(request, model, distributed.device(device))


def _invert(request: InvertRequest, model: nn.Module | None, device: str) -> CalibrationSet:
    from dfq.preview import model_patch_size, save_preview
    from dfq.runs import run_directory

    with distributed.agree():
        source = CalibrationSource.inversion(request.method, *request.settings, **request.options)
        plan = plan_source(source, num_images=request.num_images, seed=request.seed, resume=request.resume,
                           checkpoint_path=f"{request.out.rstrip('/')}.ckpt")  # fmt: skip
        job_model = load_job_model(
            request.model, request.checkpoint, request.pretrained, device, model, request.data_overrides
        )
    progress = request.progress and distributed.is_main()
    calib, ckpt = resolved = resolve_source(plan, job_model, device=device, progress=progress)
    cfg = job_model.data_cfg
    with distributed.agree():  # the ranks keep their checkpoints unless rank 0 wrote the set
        if distributed.is_main():
            with run_directory(request.out, overwrite=request.overwrite) as tmp:
                calib.save(tmp)
                save_preview(calib, tmp / "preview.png", cfg["mean"], cfg["std"], patch=model_patch_size(job_model.module))
    resolved.done()  # the set is on disk: this run's checkpoint has served
    return calib
