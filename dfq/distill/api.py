"""The Python API of distillation: a caller-built teacher and student, any architectures and preprocessing.

:func:`distill` trains a student (a fresh network from scratch, a pretrained one, a linear probe of
one, or the fake-quant model itself for data-free QAT) against a frozen teacher on a calibration set
(static loop) or on batches synthesized as it goes (alternating loop). :func:`linear_probe` turns a
network into SMI's probe: a new classifier, everything else frozen. The job layer (``dfq distill``)
builds on these; a pipeline can call them directly::

    from dfq.distill import DistillConfig, EvalData, distill
    result = distill(teacher, student, DistillConfig(steps=2000, temperature=20), calib=calibration_set,
                     eval_data=EvalData.from_tensors(images, labels, teacher))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfq.data import CalibrationSet
from dfq.distill.config import DistillConfig
from dfq.distill.inputs import EvalData, InputSpace, convert
from dfq.distill.loop import DistillResult, run_loop
from dfq.distill.pool import Pool, set_digest
from dfq.distill.qat import prepare_qat
from dfq.distill.step import Models
from dfq.distill.synth import Synthesizer
from dfq.errors import DfqError

__all__ = ["distill", "linear_probe", "sparse_grid"]


def sparse_grid(teacher: nn.Module, student: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """``(grid_h, grid_w, patch)`` when teacher and student are CLS ViTs on the same patch grid at
    ``input_size`` (kept tokens can go through both); None otherwise."""
    from dfq.models import is_cls_vit

    if not (is_cls_vit(teacher) and is_cls_vit(student)):
        return None
    from dfq.inversion.smi import patch_grid

    try:
        grids = {patch_grid(m, input_size) for m in (teacher, student)}
    except DfqError:
        return None
    return grids.pop() if len(grids) == 1 else None


def linear_probe(student: nn.Module, num_classes: int, seed: int = 0) -> nn.Module:
    """SMI's linear probe (ALGORITHMS.md §1.6): a freshly initialised classifier for ``num_classes``
    classes (seeded), every other parameter frozen. In place; returns ``student``.

    Raises:
        DfqError: the student has no ``reset_classifier``/``get_classifier`` (timm models have both).
    """
    if not (hasattr(student, "reset_classifier") and hasattr(student, "get_classifier")):
        raise DfqError(f"a linear probe needs a timm-style classifier (reset_classifier); {type(student).__name__} has none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student.reset_classifier(num_classes)
    device = next(iter(student.parameters())).device
    student.to(device)
    for p in student.parameters():
        p.requires_grad_(False)
    head = student.get_classifier()
    heads = head if isinstance(head, tuple | list) else (head,)
    for h in heads:
        for p in h.parameters():
            p.requires_grad_(True)
    return student


def distill(
    teacher: nn.Module,
    student: nn.Module,
    config: DistillConfig,
    *,
    calib: CalibrationSet | None = None,
    synthesizer: Synthesizer | None = None,
    eval_data: EvalData | None = None,
    teacher_space: InputSpace | None = None,
    student_space: InputSpace | None = None,
    qat: bool = False,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> DistillResult:
    """Train ``student`` against the frozen ``teacher`` on synthetic (or real) images only.

    Args:
        teacher: the float model (frozen and in eval mode for the call; its flags come back).
        student: the network to train, on ``device``. With ``qat``, a calibrated fake-quant model
            (``dfq.load(run)``, or ``dfq.quantize_`` + ``dfq.calibrate``); its ranges train per
            ``config.weight_ranges`` / ``config.act_ranges`` and are plain buffers again on return.
        config: the settings (:func:`dfq.distill.config.qat_defaults`, :func:`~dfq.distill.config.probe_defaults`).
        calib: the training images (static loop), in the teacher's input space.
        synthesizer: makes a batch every ``config.kd_steps`` steps (alternating loop); with ``calib`` too,
            the pool starts from ``calib``.
        eval_data: evaluation images in the student's space, labels and the teacher's logits.
        teacher_space, student_space: the two input spaces when they differ (the student's images are
            converted from the teacher's, :func:`dfq.distill.inputs.convert`).
        qat: the student is the teacher's fake-quant model.
        checkpoint: resumable state file; an existing one of the same run is resumed.
        device: where training runs (both models must be there).
        progress: progress bar.

    Returns:
        The :class:`~dfq.distill.loop.DistillResult` (final student, curve, best checkpoint).

    Raises:
        DfqError: no training data, a non-calibrated QAT student, a NaN loss, a checkpoint of another run.
    """
    if calib is None and synthesizer is None:
        raise DfqError("distillation needs training images: a calibration set or a synthesizer (alternating loop)")
    pool = Pool()
    if calib is not None:
        pool.add(calib)
    adapt = None
    if teacher_space is not None and student_space is not None and teacher_space != student_space:
        def adapt(x: torch.Tensor) -> torch.Tensor:
            return convert(x, teacher_space, student_space)
    size = tuple(calib.images.shape[1:]) if calib is not None else (teacher_space.input_size if teacher_space else None)
    grid = None
    if not config.dense and adapt is None and size is not None:
        grid = sparse_grid(teacher, student, size)  # type: ignore[arg-type]
    identity: dict[str, Any] = {
        "loop": "alternating" if synthesizer is not None else "static",
        "qat": qat,
        "data": set_digest(calib) if calib is not None else None,
        "synthesizer": synthesizer.describe() if synthesizer is not None else None,
    }
    plan = prepare_qat(student, config) if qat else None
    train_mode = config.student_train_mode if config.student_train_mode is not None else not qat
    from dfq.inversion._loop import frozen_eval

    with frozen_eval(teacher):
        result = run_loop(
            Models(teacher, student, adapt, grid), config, pool, synthesizer=synthesizer, eval_data=eval_data,
            checkpoint=checkpoint, identity=identity, before_step=plan.before_step if plan else None,
            train_mode=train_mode, device=device, progress=progress, desc="qat" if qat else "distill",
        )  # fmt: skip
    if plan is not None:
        plan.finish(result.student)
        if result.student is not student:
            plan.finish(student)
    result.extra.update(sparse=grid is not None and pool.sparse, loop=identity["loop"], qat=qat)
    return result
