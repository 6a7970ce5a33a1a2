"""Pure image priors shared by the inverters (DeepInversion, SMI, CMI); losses between classifier
outputs live in :mod:`dfq.losses`.

* total variation: ``tv_l2`` (non-squared Frobenius norms of 4 difference tensors, summed; the
  DeepInversion/SMI convention, so the value scales with batch and resolution) and ``tv_l1`` (mean
  absolute differences over the 4 directions, the DataFree convention);
* ``l2_prior``: mean over images of each image's L2 norm (DeepInversion);
* :class:`BNStatistics`: forward hooks on every BatchNorm2d that compare the batch statistics of the
  BN *input* (mean and biased variance over N, H, W) with the running statistics, non-squared L2
  norms summed over layers, optional multiplier on the first BN (DeepInversion, ALGORITHMS.md §4);
* ``random_jitter_flip``: the roll + horizontal-flip augmentation of DeepInversion/SMI.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "tv_l2",
    "tv_l1",
    "l2_prior",
    "BNStatistics",
    "random_jitter_flip",
]


def _diffs(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Horizontal, vertical and the two diagonal neighbour differences of ``(B, C, H, W)`` images."""
    return (
        x[:, :, :, :-1] - x[:, :, :, 1:],
        x[:, :, :-1, :] - x[:, :, 1:, :],
        x[:, :, 1:, :-1] - x[:, :, :-1, 1:],
        x[:, :, :-1, :-1] - x[:, :, 1:, 1:],
    )


def tv_l2(x: Tensor) -> Tensor:
    """Sum of the (non-squared) Frobenius norms of the four difference tensors over the batch.

    >>> tv_l2(torch.tensor([[[[0.0, 3.0], [0.0, 3.0]]]]))  # |dx| = sqrt(18), dy = 0, diagonals 3 and 3
    tensor(10.2426)
    """
    return sum(torch.linalg.vector_norm(d) for d in _diffs(x))


def tv_l1(x: Tensor) -> Tensor:
    """Sum over the four directions of the mean absolute difference.

    >>> tv_l1(torch.tensor([[[[0.0, 3.0], [0.0, 3.0]]]]))
    tensor(9.)
    """
    return sum(d.abs().mean() for d in _diffs(x))


def l2_prior(x: Tensor) -> Tensor:
    """Mean over images of the L2 norm of each image.

    >>> l2_prior(torch.tensor([[[[3.0, 4.0]]], [[[0.0, 0.0]]]]))
    tensor(2.5000)
    """
    return torch.linalg.vector_norm(x.flatten(1), dim=1).mean()


class BNStatistics:
    """Collects, per BatchNorm2d, the distance between batch and running statistics of its input.

    Use as a context manager around forwards; ``loss()`` sums the layer terms of the last forward.

    Args:
        model: any module containing ``nn.BatchNorm2d`` layers (kept in eval mode by the caller).
        first_multiplier: weight of the first BN layer's term (10 in NVlabs' ImageNet code, 1 elsewhere).
    """

    def __init__(self, model: nn.Module, first_multiplier: float = 1.0) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.layers:
            raise ValueError("the model has no BatchNorm2d layer: the BN-statistics prior needs one")
        self.first_multiplier = first_multiplier
        self.terms: list[Tensor | None] = [None] * len(self.layers)
        self.input_means: list[Tensor | None] = [None] * len(self.layers)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, index: int):  # noqa: ANN202
        def hook(module: nn.BatchNorm2d, inputs: tuple[Tensor, ...], _output: Tensor) -> None:
            x = inputs[0]
            mean = x.mean(dim=(0, 2, 3))
            var = x.permute(1, 0, 2, 3).flatten(1).var(dim=1, unbiased=False)
            self.terms[index] = torch.linalg.vector_norm(module.running_mean - mean) + torch.linalg.vector_norm(
                module.running_var - var
            )
            self.input_means[index] = x.mean(dim=(2, 3))  # (N, C): per-instance channel means (CMI features)

        return hook

    def __enter__(self) -> BNStatistics:
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.layers)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def loss(self) -> Tensor:
        """Weighted sum of the per-layer terms of the last forward."""
        if any(t is None for t in self.terms):
            raise RuntimeError("BNStatistics.loss() before a forward through every BN layer")
        total = self.first_multiplier * self.terms[0]
        for t in self.terms[1:]:
            total = total + t
        return total

    def features(self) -> Tensor:
        """Concatenated per-instance channel means of every BN input of the last forward, ``(N, ΣC)``."""
        return torch.cat([f for f in self.input_means if f is not None], dim=1)


def random_jitter_flip(
    x: Tensor, max_shift: int, flip_p: float = 0.5, generator: torch.Generator | None = None
) -> tuple[Tensor, tuple[int, int, bool]]:
    """Roll ``x`` by independent integer offsets in ``[-max_shift, max_shift]`` (H and W), then flip.

    Returns:
        The augmented batch and ``(dy, dx, flipped)`` so callers can remap token indices.
    """
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=generator))
    flipped = bool(torch.rand((), generator=generator) < flip_p)
    out = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if flipped:
        out = torch.flip(out, dims=(3,))
    return out, (dy, dx, flipped)
