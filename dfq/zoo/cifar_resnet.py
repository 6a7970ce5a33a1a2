"""The standard CIFAR ResNet-20/32/44/56/110 (He et al., 2016, §4.2) with option-A shortcuts.

Three stages of ``n = (depth - 2) / 6`` BasicBlocks with 16/32/64 channels, stride 2 at the first
block of stages 2 and 3, parameter-free "option A" shortcuts (stride-2 subsampling and zero-padding
of the new channels), global average pooling and a linear 64 → ``num_classes`` classifier. Parameter
names follow akamaster/pytorch_resnet_cifar10 (``conv1, bn1, layer1.0.conv1, …, linear``), so its
checkpoints load strictly with :func:`load_cifar_resnet`. The model carries a timm-like
``pretrained_cfg`` (32×32 input, ``crop_pct`` 1.0) for ``dfq.models.data_config`` whose mean/std are
the ones those checkpoints were trained with: akamaster's ``trainer.py`` normalizes CIFAR-10 with the
*ImageNet* statistics (:data:`TRAINING_MEAN`/:data:`TRAINING_STD`). With them the shared ResNet-20/56
weights score 91.73% / 93.26% on the 846 lossless test images, the assets README's figures; with
the CIFAR-10 statistics (:data:`CIFAR10_MEAN`/:data:`CIFAR10_STD`) 91.25% / 93.85%.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "TRAINING_MEAN", "TRAINING_STD", "BasicBlock", "CifarResNet", "cifar_resnet", "load_cifar_resnet"]

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
TRAINING_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)  # akamaster trainer.py
TRAINING_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEPTHS: tuple[int, ...] = (20, 32, 44, 56, 110)


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity or option-A (zero-padding) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad = planes - in_planes  # channels added by the shortcut (split evenly on both sides)

    def shortcut(self, x: Tensor) -> Tensor:
        """Identity, or option A: subsample by ``stride`` and zero-pad the channels."""
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet: 3×3 stem (16 ch) → 3 stages of BasicBlocks → global average pool → linear.

    Args:
        depth: 6n + 2 (20, 32, 44, 56, 110, …).
        num_classes: Classifier outputs.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (e.g. {DEPTHS}), got {depth}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        n = (depth - 2) // 6
        self.depth = depth
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, stride=1)
        self.layer2 = self._stage(16, 32, n, stride=2)
        self.layer3 = self._stage(32, 64, n, stride=2)
        self.linear = nn.Linear(64, num_classes)
        self.num_features = 64
        self.pretrained_cfg: dict[str, Any] = {
            "architecture": f"cifar_resnet{depth}",
            "input_size": (3, 32, 32),
            "interpolation": "bilinear",
            "mean": TRAINING_MEAN,
            "std": TRAINING_STD,
            "crop_pct": 1.0,
            "crop_mode": "center",
            "num_classes": num_classes,
        }
        self.default_cfg = self.pretrained_cfg
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def get_classifier(self) -> nn.Module:
        """The final linear layer (timm convention)."""
        return self.linear

    def forward_features(self, x: Tensor) -> Tensor:
        """Stem and the three stages: ``(B, 64, H/4, W/4)``."""
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool and (unless ``pre_logits``) the classifier."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.linear(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def cifar_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    """A randomly initialised CIFAR ResNet of ``depth`` (20, 32, 44, 56, 110), in eval mode.

    Example:
        >>> model = cifar_resnet(20)
        >>> tuple(model(torch.zeros(1, 3, 32, 32)).shape)
        (1, 10)
    """
    return CifarResNet(depth, num_classes).eval()


def load_cifar_resnet(path: str | Path, depth: int, num_classes: int = 10) -> CifarResNet:
    """A CIFAR ResNet filled strictly from an akamaster-style checkpoint, in eval mode.

    ``{'state_dict': …}`` wrappers and the ``module.`` prefix are handled by
    :func:`dfq.checkpoints.load_checkpoint_state`. Those checkpoints predate BatchNorm's
    ``num_batches_tracked`` buffer, so a missing one is filled with 0 (what PyTorch itself does for old
    checkpoints); every other key must match by name and shape.

    Args:
        path: Checkpoint file (e.g. ``cifar10_resnet20-12fca82f.th``).
        depth: Network depth the checkpoint was trained with.
        num_classes: Classifier outputs.

    Raises:
        DfqError: Missing/corrupt file, or keys/shapes that do not fit the architecture.
    """
    from dfq.checkpoints import load_checkpoint_state, load_state_into

    model = CifarResNet(depth, num_classes)
    state = dict(load_checkpoint_state(path))
    for key, value in model.state_dict().items():
        if (
            key.endswith(".num_batches_tracked")
            and key not in state
            and key[: -len("num_batches_tracked")] + "running_mean" in state
        ):
            state[key] = torch.zeros_like(value)
    load_state_into(model, state, strict=True, source=str(path))
    return model.eval()
