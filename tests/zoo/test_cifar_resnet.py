"""dfq.zoo: the CIFAR ResNets (architecture, timm-like data config, strict loading of the real weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dfq.errors import DfqError
from dfq.models import data_config, model_family
from dfq.zoo import cifar_resnet, load_cifar_resnet
from dfq.zoo.cifar_resnet import BasicBlock

RESNET20 = "weights/cifar10_resnet20-12fca82f.th"
RESNET56 = "weights/cifar10_resnet56-4bfd9763.th"


pytestmark = pytest.mark.usefixtures("one_thread")


def _expected_params(depth: int, num_classes: int = 10) -> int:
    """Parameter count from the architecture's definition (3×3 convs without bias, BN weight + bias)."""
    n = (depth - 2) // 6
    total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
    in_planes = 16
    for planes in (16, 32, 64):
        for _ in range(n):
            total += in_planes * planes * 9 + planes * planes * 9 + 4 * planes
            in_planes = planes
    return total + 64 * num_classes + num_classes


@pytest.mark.parametrize("depth", [20, 32, 56])
def test_forward_shape_and_param_count(depth: int) -> None:
    model = cifar_resnet(depth)
    assert not model.training
    assert tuple(model(torch.zeros(2, 3, 32, 32)).shape) == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == _expected_params(depth)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == depth - 1  # every conv has a BN


def test_known_parameter_counts() -> None:
    # akamaster/pytorch_resnet_cifar10 README: ResNet-20 0.27M, ResNet-56 0.85M parameters.
    assert sum(p.numel() for p in cifar_resnet(20).parameters()) == 269_722
    assert sum(p.numel() for p in cifar_resnet(56).parameters()) == 853_018


def test_data_config_and_classifier() -> None:
    model = cifar_resnet(20)
    cfg = data_config(model)
    assert cfg["input_size"] == (3, 32, 32)
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))  # what the checkpoints were trained with
    assert cfg["std"] == pytest.approx((0.229, 0.224, 0.225))
    assert cfg["crop_pct"] == 1.0
    clf = model.get_classifier()
    assert isinstance(clf, nn.Linear) and (clf.in_features, clf.out_features) == (64, 10)
    assert model_family(model) == "cnn"


@pytest.mark.parametrize("depth", [0, 7, 21, 100])
def test_bad_depth(depth: int) -> None:
    with pytest.raises(ValueError, match="6n"):
        cifar_resnet(depth)


def test_option_a_shortcut_pads_zero_channels() -> None:
    block = BasicBlock(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    short = block.shortcut(x)
    assert short.shape == (2, 32, 4, 4)
    assert torch.equal(short[:, 8:24], x[:, :, ::2, ::2])
    assert short[:, :8].abs().sum() == 0 and short[:, 24:].abs().sum() == 0


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = cifar_resnet(20)
    state = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state, "best_prec1": 0.0}, tmp_path / "r20.th")
    loaded = load_cifar_resnet(tmp_path / "r20.th", 20)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(DfqError, match="does not fit"):
        load_cifar_resnet(tmp_path / "r20.th", 32)


@pytest.mark.parametrize(("weights", "depth", "correct"), [(RESNET20, 20, 776), (RESNET56, 56, 789)])
def test_real_resnet_accuracy_matches_the_assets_readme(assets: Path, weights: str, depth: int, correct: int) -> None:
    """With the model's own preprocessing (the training statistics) the shared weights reproduce the
    assets README: ResNet-20 91.73% (776/846), ResNet-56 93.26% (789/846) on the lossless images."""
    model = load_cifar_resnet(assets / weights, depth)
    data = np.load(assets / "data/cifar10/test_lossless_first846.npz")
    x = torch.from_numpy(data["x_test"]).float() / 255.0
    y = torch.from_numpy(data["y_test_prefix"]).long()
    cfg = data_config(model)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        hits = int((model((x - mean) / std).argmax(1) == y).sum())
    assert hits == correct, hits


def test_real_resnet56_loads_strictly(assets: Path) -> None:
    model = load_cifar_resnet(assets / RESNET56, 56)
    assert model.layer3[8].bn2.running_var.abs().sum() > 0
    with pytest.raises(DfqError):
        load_cifar_resnet(assets / RESNET56, 20)
