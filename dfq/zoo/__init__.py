"""Model architectures that timm does not ship, built in plain torch with timm-like attributes.

``dfq.models.data_config`` reads ``model.pretrained_cfg`` (timm's convention), so every model here
carries one with its own input size and normalization.
"""

from __future__ import annotations

from dfq.zoo.cifar_resnet import CifarResNet, cifar_resnet, load_cifar_resnet

__all__ = ["CifarResNet", "cifar_resnet", "load_cifar_resnet"]
