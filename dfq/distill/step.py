"""The one training step every loop shares, with its optimizer and the student's moving average.

:func:`train_step` runs the frozen teacher and the student on the same batch (only the kept tokens
of sparse ViT images when both are ViTs on one patch grid), takes ``T²·KL`` plus an optional
hard-label cross-entropy, and updates the student. It returns the loss as a tensor and never reads it
back to the host (the loop checks it every ``log_every`` steps). :func:`build_optimizer` puts learned
quantizer ranges in their own parameter group (their own rate, no weight decay); :class:`EMA` keeps
the exponential moving average of the student's state.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dfq.distill.config import DistillConfig
from dfq.distill.pool import Batch
from dfq.losses import cross_entropy, kd_loss

__all__ = ["Models", "train_step", "build_optimizer", "set_lr", "EMA", "forward"]


def forward(model: nn.Module, images: Tensor, keep: Tensor | None) -> Tensor:
    """The model's logits on ``images``; with ``keep``, only those tokens pass the blocks (:func:`dfq.vit.forward_tokens`)."""
    from dfq.vit import forward_kept

    return forward_kept(model, images, keep, validate=False)


@dataclass
class Models:
    """The pair a step trains: the frozen teacher, the student, and the student's input conversion.

    Attributes:
        teacher: frozen, eval mode.
        student: trained.
        student_input: teacher-space images → student-space images (None: same space).
        grid: ``(grid_h, grid_w, patch)`` when only the kept tokens of sparse batches go through both
            models (two CLS ViTs on one patch grid); None: dense forwards.
        student_forward: how a step runs the student, ``(images, keep) -> logits`` (None:
            :func:`forward` of ``student``; under torchrun the DDP wrapper, :mod:`dfq.distill.parallel`).
    """

    teacher: nn.Module
    student: nn.Module
    student_input: Callable[[Tensor], Tensor] | None = None
    grid: tuple[int, int, int] | None = None
    student_forward: Callable[[Tensor, Tensor | None], Tensor] | None = None


def train_step(
    models: Models,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    config: DistillConfig,
    mixed: bool = False,
) -> Tensor:
    """One optimizer step of the student towards the teacher on ``batch`` (already augmented).

    The cross-entropy (weight ``config.ce``) uses the batch's labels where they are known and the
    batch is not mixed, the teacher's argmax otherwise.

    Returns:
        The loss, a detached 0-dim tensor (no host synchronisation).
    """
    keep = batch.keep if models.grid is not None else None
    with torch.no_grad():
        t = forward(models.teacher, batch.images, keep)
    x = batch.images if models.student_input is None else models.student_input(batch.images)
    s = forward(models.student, x, keep) if models.student_forward is None else models.student_forward(x, keep)
    loss = kd_loss(s, t, config.temperature)
    if config.ce > 0:
        target = t.argmax(1)
        if not mixed:
            labels = batch.labels.to(target.device)
            target = torch.where(labels >= 0, labels, target)
        loss = loss + config.ce * cross_entropy(s, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.clip_grad is not None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, config.clip_grad)
    optimizer.step()
    return loss.detach()


def _is_range(name: str) -> bool:
    return name.endswith(".lo") or name.endswith(".hi") or name in ("lo", "hi")


def build_optimizer(student: nn.Module, config: DistillConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over the student's trainable parameters; learned quantizer ranges (``lo``/``hi``)
    form a second group at ``config.range_lr`` without weight decay. Each group remembers its
    ``base_lr`` for :func:`set_lr`.

    Raises:
        ValueError: the student has no trainable parameter.
    """
    named = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the student has no trainable parameter")
    weights = [p for n, p in named if not _is_range(n)]
    ranges = [p for n, p in named if _is_range(n)]
    range_lr = config.lr if config.range_lr is None else config.range_lr
    groups = []
    if weights:
        groups.append({"params": weights, "lr": config.lr, "base_lr": config.lr, "weight_decay": config.weight_decay})
    if ranges:
        groups.append({"params": ranges, "lr": range_lr, "base_lr": range_lr, "weight_decay": 0.0})
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's rate to ``base_lr * factor`` (the schedule is a function of the step: nothing to resume)."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


class EMA:
    """Exponential moving average of a module's state: ``ema ← d·ema + (1 - d)·current`` for floating
    tensors, a copy for the others (BatchNorm's counters).

    >>> m = nn.Linear(1, 1, bias=False); _ = m.weight.data.fill_(0.0)
    >>> ema = EMA(m, decay=0.5); _ = m.weight.data.fill_(1.0); ema.update(m)
    >>> float(ema.module.weight)
    0.5
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for ema, cur in zip(self.module.state_dict().values(), module.state_dict().values(), strict=True):
            if ema.is_floating_point():
                ema.lerp_(cur.detach(), 1.0 - self.decay)
            else:
                ema.copy_(cur)
