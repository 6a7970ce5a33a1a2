"""Teacher and student that see images differently: the input conversion, and the evaluation data.

A calibration set lives in the input space of the model that made it (the teacher): normalized with
its mean/std at its resolution. A student with another preprocessing (another mean/std, another size)
gets the same pixels converted: de-normalize, resize (bilinear, antialiased), normalize again
(:class:`InputSpace`, :func:`convert`). :class:`EvalData` holds evaluation images in the student's
space with their labels and the teacher's logits, computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfq.evaluation import batched_logits

__all__ = ["InputSpace", "convert", "EvalData"]


@dataclass(frozen=True)
class InputSpace:
    """What a model's input tensor means: ``(C, H, W)`` and the per-channel mean/std it was normalized with."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, data_cfg: dict[str, Any]) -> InputSpace:
        """From a data config (:func:`dfq.models.data_config`)."""
        return cls(tuple(int(v) for v in data_cfg["input_size"]), tuple(float(v) for v in data_cfg["mean"]),
                   tuple(float(v) for v in data_cfg["std"]))  # fmt: skip

    def to_dict(self) -> dict[str, list]:
        return {"input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std)}


def _col(values: Sequence[float], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def convert(x: Tensor, src: InputSpace, dst: InputSpace) -> Tensor:
    """Images normalized for ``src`` → the same pixels normalized (and resized) for ``dst``.

    >>> a = InputSpace((3, 2, 2), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    >>> b = InputSpace((3, 2, 2), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    >>> convert(torch.zeros(1, 3, 2, 2), a, b).unique().tolist()  # 0 in a is pixel 0.5
    [0.5]
    """
    if src == dst:
        return x
    if src.input_size[0] != dst.input_size[0]:
        raise ValueError(f"cannot convert {src.input_size[0]}-channel images to {dst.input_size[0]} channels")
    pixels = x * _col(src.std, x) + _col(src.mean, x)
    if tuple(x.shape[-2:]) != tuple(dst.input_size[1:]):
        pixels = F.interpolate(pixels, size=dst.input_size[1:], mode="bilinear", align_corners=False, antialias=True)
    return (pixels - _col(dst.mean, x)) / _col(dst.std, x)


@dataclass(frozen=True, eq=False)
class EvalData:
    """Evaluation images in the student's input space, their labels (-1: unlabelled) and the
    teacher's logits on the same images (in the teacher's space).

    Build with :meth:`from_tensors` (computes the teacher's logits) or directly when they are known.
    """

    images: Tensor
    labels: Tensor
    teacher_logits: Tensor
    batch_size: int = 100

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if n == 0:
            raise ValueError("evaluation data holds no images")
        if self.labels.shape != (n,) or self.teacher_logits.shape[0] != n:
            raise ValueError(
                f"evaluation data: {n} images, {tuple(self.labels.shape)} labels, "
                f"{tuple(self.teacher_logits.shape)} teacher logits"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def from_tensors(
        cls,
        images: Tensor,
        labels: Tensor | None,
        teacher: nn.Module,
        teacher_images: Tensor | None = None,
        batch_size: int = 100,
    ) -> EvalData:
        """Run the teacher once over ``teacher_images`` (default: ``images``, same space).

        Args:
            images: ``(N, C, H, W)`` in the student's input space.
            labels: ``(N,)`` class ids, -1 or None where unknown.
            teacher: the teacher (eval mode for the call).
            teacher_images: the same images in the teacher's space, when it differs.
            batch_size: evaluation batch size.
        """
        ref = batched_logits(teacher, images if teacher_images is None else teacher_images, batch_size)
        lab = torch.full((images.shape[0],), -1, dtype=torch.int64) if labels is None else labels.long().cpu()
        return cls(images.cpu(), lab, ref, batch_size)
