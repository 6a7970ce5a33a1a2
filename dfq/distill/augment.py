"""Batch augmentation of training images in model-input space, drawn from one seeded generator.

* :func:`resized_crop_flip` (from :mod:`dfq.augment`): a random resized crop (area fraction and aspect ratio drawn per image,
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

import torch
from torch import Tensor

from dfq.augment import resized_crop_flip

__all__ = ["resized_crop_flip", "flip_sparse", "mix"]


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
