"""The student under ``torchrun``: wrapped in ``DistributedDataParallel`` for the training step.

Each rank draws its own batches (its own seed, :func:`dfq.distributed.rank_seed`) and DDP averages the
gradients over the ranks in the backward, so every rank takes the same optimizer step: a step trains on
``world_size × batch_size`` images. The wrapper carries the kept-token index too (sparse ViT batches go
through :func:`dfq.vit.forward_tokens`, not the student's ``forward``), so sparse and dense steps both
pass DDP's forward. The student module itself stays the one the loop evaluates, checkpoints and returns.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from dfq import distributed
from dfq.distill.step import Models, forward

__all__ = ["data_parallel"]


class _StudentStep(nn.Module):
    """The student's logits on a batch, with or without a kept-token index (what DDP wraps)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, images: Tensor, keep: Tensor | None = None) -> Tensor:
        return forward(self.student, images, keep)


def data_parallel(models: Models, device: str) -> Models:
    """``models`` whose training step runs the student through DDP (unchanged in one process).

    A collective (DDP broadcasts rank 0's parameters and buffers): every rank calls it at the same point.
    ``static_graph``: the parameters a step uses are the same at every step, so parameters no step
    reaches (a frozen part, an unused head) need no extra graph walk.
    """
    if distributed.world_size() == 1:
        return models
    from torch.nn.parallel import DistributedDataParallel

    distributed.barrier()  # ranks arrive at different times; DDP's broadcast should not wait under its own timeout
    cuda = device.split(":")[0] == "cuda"
    ddp = DistributedDataParallel(_StudentStep(models.student), device_ids=[distributed.local_rank()] if cuda else None,
                                  static_graph=True)  # fmt: skip
    return dataclasses.replace(models, student_forward=ddp)
