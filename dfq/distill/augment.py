"""Batch augmentation of training images in model-input space, drawn from one seeded generator.

* :func:`resized_crop_flip`: a random resized crop (area fraction and aspect ratio drawn per image,
  as torchvision's ``RandomResizedCrop`` draws them) and a horizontal flip, both as one affine
  resampling of the batch (``affine_grid`` + bilinear ``grid_sample``), so the batch is augmented in
  one call and the draw depends only on the generator;
* :func:`flip_sparse`: for sparse (SMI) images, only the flip, with the kept-token ids mirrored
  (:func:`dfq.inversion.smi.remap_index`): a crop would move patches off the token grid;
* :func:`mix`: mixup of each image with a shuffled partner (weight from U(0, 1) = Beta(1, 1)); the
  teacher is run on the mixed images, so its targets stay consistent with the student's input
  (Beyer et al., "Knowledge distillation: a good teacher is patient and consistent", CVPR 2022).

Images are normalized ``(B, C, H, W)`` tensors; interpolation is linear, so normalizing before or
after the resampling gives the same result.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resized_crop_flip", "flip_sparse", "mix"]


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


def flip_sparse(
    images: Tensor, keep_index: Tensor, generator: torch.Generator, flip: float, grid: tuple[int, int, int]
) -> tuple[Tensor, Tensor]:
    """Flip each sparse image with probability ``flip`` and mirror its kept-token ids.

    Args:
        images: ``(B, C, H, W)``.
        keep_index: ``(B, k)`` absolute token ids (0 = CLS).
        generator: the draw.
        flip: probability per image.
        grid: ``(grid_h, grid_w, patch)`` of the ViT.

    >>> g = torch.Generator().manual_seed(0)
    >>> x, keep = torch.zeros(1, 3, 2, 4), torch.tensor([[0, 1]])  # a 1 x 2 grid of 2-px patches
    >>> x[..., :2, :2] = 1.0  # the kept patch 1 (left) holds the content
    >>> y, k = flip_sparse(x, keep, g, 1.0, (1, 2, 2))
    >>> k.tolist(), y[0, 0, 0].tolist()
    ([[0, 2]], [0.0, 0.0, 1.0, 1.0])
    """
    from dfq.inversion.smi import remap_index

    mirrored = torch.rand(images.shape[0], generator=generator) < flip
    if not bool(mirrored.any()):
        return images, keep_index
    m = mirrored.to(images.device)
    images = torch.where(m.view(-1, 1, 1, 1), images.flip(-1), images)
    grid_h, grid_w, patch = grid
    flipped = remap_index(keep_index, 0, 0, True, grid_h, grid_w, patch)
    return images, torch.where(m.view(-1, 1), flipped, keep_index)


def mix(images: Tensor, generator: torch.Generator, probability: float) -> tuple[Tensor, bool]:
    """With probability ``probability``, mix every image with a shuffled partner of the batch.

    Returns:
        ``(images, mixed)``.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    >>> y, mixed = mix(x, g, 1.0)
    >>> mixed, bool(((y >= 0) & (y <= 1)).all())
    (True, True)
    """
    if probability <= 0 or float(torch.rand(1, generator=generator)) >= probability:
        return images, False
    n = images.shape[0]
    perm = torch.randperm(n, generator=generator).to(images.device)
    lam = torch.rand(n, generator=generator).to(images.device, images.dtype).view(-1, 1, 1, 1)
    return lam * images + (1 - lam) * images[perm], True
