"""``preview.png``: a grid of calibration images, stopped (pruned) patches blacked out.

Images are stored in model-input (normalized) space; the preview undoes the normalization and, for
sparse ViT inversions, paints every patch that is not in the image's kept-token index black, so a
person can see at a glance whether the foreground survived.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from dfq.atomic import atomic_write
from dfq.data import CalibrationSet

__all__ = ["denormalize", "mask_stopped_patches", "masked_preview", "save_preview", "model_patch_size"]


def model_patch_size(model: torch.nn.Module) -> int | None:
    """Patch side of a ViT (``patch_embed.patch_size``), None for other models."""
    size = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    return None if size is None else int(size[0] if isinstance(size, tuple | list) else size)


def denormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Model-input images back to [0, 1] pixels (on the images' device).

    >>> denormalize(torch.tensor([-2.0, 0.0, 2.0]).view(1, 3, 1, 1), (0.5,) * 3, (0.5,) * 3).flatten().tolist()
    [0.0, 0.5, 1.0]
    """
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images * s + m).clamp(0, 1)


def mask_stopped_patches(pixels: Tensor, keep_index: Tensor, patch: int) -> Tensor:
    """Zero every patch whose token id (1 + raster index) is not kept; CLS (id 0) is ignored.

    Pixels outside the patch grid (a side that is not a multiple of ``patch``) are zeroed too.

    >>> px = torch.ones(1, 3, 4, 4)
    >>> mask_stopped_patches(px, torch.tensor([[0, 2, 3]]), 2)[0, 0]
    tensor([[0., 0., 1., 1.],
            [0., 0., 1., 1.],
            [1., 1., 0., 0.],
            [1., 1., 0., 0.]])
    """
    n, _, h, w = pixels.shape
    gh, gw = h // patch, w // patch
    keep = torch.zeros(n, gh * gw + 1, dtype=pixels.dtype, device=pixels.device)
    keep.scatter_(1, keep_index.to(pixels.device), 1.0)
    grid = keep[:, 1:].view(n, 1, gh, gw)
    mask = grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    out = torch.zeros_like(pixels)
    out[:, :, : gh * patch, : gw * patch] = pixels[:, :, : gh * patch, : gw * patch] * mask
    return out


def masked_preview(
    images: Tensor, keep_index: Tensor | None, mean: Sequence[float], std: Sequence[float], patch: int | None
) -> Tensor:
    """Model-input images as ``[0, 1]`` pixels with the stopped patches black (SMI's kept-token index).

    Args:
        images: ``(B, C, H, W)`` in normalized space.
        keep_index: int64 ``(B, k)`` kept absolute token ids (0 = CLS), or None (nothing masked).
        mean, std: the model's normalization.
        patch: patch side in pixels (None: nothing masked).

    >>> masked_preview(torch.zeros(1, 3, 2, 4), torch.tensor([[0, 2]]), (0.5,) * 3, (0.5,) * 3, 2)[0, 0]
    tensor([[0.0000, 0.0000, 0.5000, 0.5000],
            [0.0000, 0.0000, 0.5000, 0.5000]])
    """
    pixels = denormalize(images, mean, std)
    if keep_index is None or not patch:
        return pixels
    return mask_stopped_patches(pixels, keep_index, patch)


def save_preview(
    calib: CalibrationSet,
    path: str | Path,
    mean: Sequence[float],
    std: Sequence[float],
    patch: int | None = None,
    max_images: int = 32,
) -> Path:
    """Write a PNG grid of up to ``max_images`` images (stopped patches black) atomically."""
    images = calib.images[:max_images].detach().float().cpu()
    keep = calib.keep_index[:max_images] if calib.keep_index is not None else None
    pixels = masked_preview(images, keep, mean, std, patch)
    n, _, h, w = pixels.shape
    cols = min(8, n)
    rows = math.ceil(n / cols)
    canvas = torch.zeros(3, rows * (h + 2), cols * (w + 2))
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[:, r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = pixels[i]
    array = (canvas.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
