"""dfq.export.tensorrt: one line of error without TensorRT; with TensorRT and a GPU, the engine agrees with
ONNX Runtime. The TensorRT tests skip where TensorRT or a GPU is absent (every machine this project has run
on)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from dfq.errors import DfqError
from dfq.export.onnx import export_onnx
from dfq.export.runtime import ort_predictor
from tests._helpers import SHAPE, _timm_run

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vit_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    out = tmp_path_factory.mktemp("trt")
    qmodel, _ = _timm_run(out, "w8a8")
    return qmodel, export_onnx(qmodel, out / "vit.onnx", input_shape=SHAPE)


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed")
def test_tensorrt_missing_is_one_line_error(vit_onnx, tmp_path):
    from dfq.export.tensorrt import build_engine

    with pytest.raises(DfqError, match=r"^TensorRT is not installed: pip install dfq\[trt\]"):
        build_engine(vit_onnx[1], tmp_path / "m.plan")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT or not torch.cuda.is_available(), reason="needs tensorrt and CUDA")
def test_tensorrt_engine_matches_ort(vit_onnx, tmp_path):
    from dfq.export.runtime import TrtPredictor
    from dfq.export.tensorrt import build_engine

    model, _ = vit_onnx
    path = export_onnx(model, tmp_path / "trt.onnx", input_shape=SHAPE, fp16_remainder=True)
    plan = build_engine(path, tmp_path / "trt.plan", timing_cache=tmp_path / "timing.cache")
    assert (tmp_path / "timing.cache").is_file()
    images = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(2))
    y = TrtPredictor(plan)(images)
    ref = ort_predictor(path)(images)
    assert (y.argmax(1) == ref.argmax(1)).float().mean() >= 0.75
