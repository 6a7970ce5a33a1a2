"""The real models and labelled images of ``../shared/assets`` (``DFQ_ASSETS``), for benchmark scripts.

Each loader returns ``(float model in eval mode, data config, images, labels)`` with the images already
preprocessed for that model, plus :func:`calibration_images` for the real-image calibration source. Running
models over those images and scoring them is the package's (:class:`dfq.quant.variants.VariantEvaluator`,
:func:`dfq.evaluation.batched_logits`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfq.checkpoints import load_checkpoint_state, load_state_into
from dfq.data import labelled_imagenet_folder, load_image_tensor, make_loader
from dfq.models import data_config, eval_transform, load_model

MODELS = ("deit_tiny", "mobilenet_v1_025", "resnet20", "resnet56")
Loaded = tuple[nn.Module, dict, torch.Tensor, torch.Tensor]


def default_assets() -> Path:
    return Path(
        os.environ.get("DFQ_ASSETS", Path(__file__).resolve().parents[1].parent / "shared" / "assets")
    )


def imagenet_val(assets: Path) -> Path:
    return assets / "data" / "imagenet-sample" / "val"


def _imagenet(model: nn.Module, cfg: dict, assets: Path, limit: int) -> Loaded:
    ds = labelled_imagenet_folder(imagenet_val(assets), eval_transform(cfg))
    ds = torch.utils.data.Subset(ds, range(min(limit, len(ds))))
    xs, ys = zip(*make_loader(ds, batch_size=100, num_workers=2), strict=True)
    return model, cfg, torch.cat(xs), torch.cat([torch.as_tensor(y) for y in ys])


def cifar(assets: Path, depth: int, limit: int) -> Loaded:
    """CIFAR-10 ResNet-20/56 and the first ``limit`` of the 846 lossless test images."""
    from dfq.zoo.cifar_resnet import load_cifar_resnet

    names = {20: "cifar10_resnet20-12fca82f.th", 56: "cifar10_resnet56-4bfd9763.th"}
    model = load_cifar_resnet(assets / "weights" / names[depth], depth).eval()
    cfg = data_config(model)
    data = np.load(assets / "data" / "cifar10" / "test_lossless_first846.npz")
    x = torch.from_numpy(data["x_test"][:limit]).float() / 255.0
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    return model, cfg, (x - mean) / std, torch.from_numpy(data["y_test_prefix"][:limit]).long()


def mobilenet_model(assets: Path) -> nn.Module:
    """The Keras MobileNet-v1 0.25 weights in timm's architecture (TF 'same' padding, BN eps 1e-3); not
    a timm pretrained tag, so the caller builds it. Its inputs are ``x/127.5 - 1`` (mean = std = 0.5)."""
    from timm.models.efficientnet import _gen_mobilenet_v1

    model = _gen_mobilenet_v1("mobilenetv1_100", 0.25, pad_type="same", bn_eps=1e-3)
    load_state_into(model, load_checkpoint_state(assets / "weights" / "mobilenet_v1_025_224.pth"))
    return model.eval()


def mobilenet(assets: Path, limit: int) -> Loaded:
    """MobileNet-v1 0.25 (:func:`mobilenet_model`) and the ImageNet sample."""
    model = mobilenet_model(assets)
    return _imagenet(model, data_config(model, mean=(0.5,) * 3, std=(0.5,) * 3), assets, limit)


TIMM_WEIGHTS = {"deit_tiny": "weights/deit_tiny_patch16_224.pth"}
"""The timm models of :data:`MODELS` and their shared weights: their sets are made as ``dfq invert --model
NAME --checkpoint FILE`` makes them (the checkpoint and its hash recorded), so they merge with the CLI's."""


def deit_tiny(assets: Path, limit: int) -> Loaded:
    """DeiT-Tiny (timm preprocessing, crop 0.9) and the ImageNet sample."""
    model = load_model(
        "deit_tiny", checkpoint=assets / TIMM_WEIGHTS["deit_tiny"], pretrained=False
    )
    return _imagenet(model.eval(), data_config(model), assets, limit)


def load(name: str, assets: Path, limit: int) -> Loaded:
    """One of :data:`MODELS` with up to ``limit`` evaluation images."""
    if name.startswith("resnet"):
        return cifar(assets, int(name[6:]), limit)
    return {"mobilenet_v1_025": mobilenet, "deit_tiny": deit_tiny}[name](assets, limit)


def calibration_images(name: str, assets: Path, cfg: dict, images: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` real calibration images: the seed-0 draw of ``n`` ImageNet sample images that
    ``dfq calibrate --calib-folder`` makes (ImageNet models), or the last ``n`` CIFAR evaluation images."""
    if name.startswith("resnet"):
        return images[-n:]
    return load_image_tensor(imagenet_val(assets), eval_transform(cfg), n)

