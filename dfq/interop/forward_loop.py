"""The ModelOpt ``forward_loop`` over a dfq set (``modelopt.torch.quantization.quantize(model, cfg, loop)``).

ModelOpt's ``ForwardLoop`` is ``Callable[[nn.Module], None]``: it runs the model on the calibration
data while ModelOpt's quantizers collect ranges. This one needs no ModelOpt import.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dfq.data import CalibrationSet

__all__ = ["modelopt_forward_loop"]


def modelopt_forward_loop(
    calib: CalibrationSet, batch_size: int = 32, device: torch.device | str | None = None
) -> Callable[[nn.Module], None]:
    """A ModelOpt ``forward_loop``: runs ``model(images)`` once over every image of the set, in order.

    ``mtq.quantize(model, mtq.INT8_DEFAULT_CFG, modelopt_forward_loop(calib))``. The loop runs under
    ``torch.no_grad()`` and leaves the model's train/eval mode alone (call ``model.eval()`` first).
    A sparse (SMI) set is fed dense: the stopped patches as they are in the images.

    Args:
        calib: the calibration set (images in the model's normalized input space).
        batch_size: images per forward; the last batch holds the remainder.
        device: where the batches go; ``None``: the device of the model's first parameter. Images are
            cast to that parameter's floating dtype (e.g. a bf16 model gets bf16 images).

    Raises:
        ValueError: ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")

    def forward_loop(model: nn.Module) -> None:
        param = next((p for p in model.parameters() if p.is_floating_point()), None)
        target = torch.device(device) if device is not None else (param.device if param is not None else None)
        dtype = param.dtype if param is not None else torch.float32
        with torch.no_grad():
            for images in calib.image_batches(batch_size, target):
                model(images.to(dtype))

    return forward_loop
