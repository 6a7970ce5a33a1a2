"""Exports shared by the tests of dfq/export (module-scoped: one set per test module): timm ``test_vit``
(W8A8 and W4A8) and ``test_resnet`` (W8A8), calibrated and exported to Q/DQ ONNX, and their input images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dfq.export.onnx import export_onnx
from tests.export._helpers import SHAPE, _calibrated


@pytest.fixture(scope="module")
def w4(out: Path) -> tuple[nn.Module, Path]:
    model = _calibrated("test_vit", "w4a8")
    return model, export_onnx(model, out / "w4.onnx", input_shape=SHAPE)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def vit(out: Path) -> tuple[nn.Module, Path]:
    model = _calibrated("test_vit", "w8a8")
    return model, export_onnx(model, out / "vit.onnx", input_shape=SHAPE)


@pytest.fixture(scope="module")
def cnn(out: Path) -> tuple[nn.Module, Path]:
    model = _calibrated("test_resnet", "w8a8")
    return model, export_onnx(model, out / "cnn.onnx", input_shape=SHAPE)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(2))
