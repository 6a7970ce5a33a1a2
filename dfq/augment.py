"""Random resized crop and flip of a batch of images in model-input space, from one seeded generator.

Shared by distillation (:mod:`dfq.distill.augment`) and block reconstruction's augmented views
(:class:`dfq.quant.reconstruct.ReconstructConfig` ``views``). Images are normalized ``(B, C, H, W)``
tensors; the resampling is linear, so normalizing before or after it gives the same result.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resized_crop_flip", "with_views"]


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def resized_crop_flip(
    images: Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: float = 0.5,
) -> Tensor:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio``, resize it back to the
    full size and flip it left-right with probability ``flip``; one draw per image.

    Crops that would exceed the image are shrunk to fit (torchvision retries instead; the
    distribution differs only for extreme ratios). ``scale=(1, 1)`` and ``flip=0`` return the images.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    >>> torch.equal(resized_crop_flip(x, g, scale=(1, 1), ratio=(1, 1), flip=0.0), x)
    True
    >>> resized_crop_flip(x, g, scale=(1, 1), ratio=(1, 1), flip=1.0)[0, 0, 0].tolist()  # mirrored row
    [3.0, 2.0, 1.0, 0.0]
    """
    n = images.shape[0]
    area = _uniform(n, scale[0], scale[1], generator)
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator)
    aspect = log_r.exp()
    w = (area * aspect).sqrt().clamp(max=1.0)  # fractions of the side
    h = (area / aspect).sqrt().clamp(max=1.0)
    cx = (1 - w) * (2 * torch.rand(n, generator=generator) - 1)  # crop centre in [-1, 1] coordinates
    cy = (1 - h) * (2 * torch.rand(n, generator=generator) - 1)
    mirrored = torch.rand(n, generator=generator) < flip
    if bool((w == 1).all() and (h == 1).all()) and not bool(mirrored.any()):
        return images
    sign = torch.where(mirrored, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def with_views(images: Tensor, views: int, seed: int) -> Tensor:
    """``images`` followed by ``views`` augmented copies of them (random resized crop of 35-100% of the
    area, flip with probability 1/2), drawn from a generator seeded with ``seed``.

    >>> x = torch.rand(2, 3, 8, 8)
    >>> y = with_views(x, 2, 0)
    >>> y.shape[0], torch.equal(y[:2], x), torch.equal(y, with_views(x, 2, 0))
    (6, True, True)
    """
    if views == 0:
        return images
    g = torch.Generator().manual_seed(seed)
    copies = [resized_crop_flip(images.cpu(), g, scale=(0.35, 1.0)).to(images.device) for _ in range(views)]
    return torch.cat([images, *copies])
