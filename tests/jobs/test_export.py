"""dfq.jobs.export (``export_run``): run directories of timm and Python-built models export to Q/DQ ONNX;
paper numerics are refused for TensorRT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dfq.config import preset
from dfq.errors import DfqError
from dfq.export.checker import check_onnx
from dfq.export.runtime import ort_predictor
from dfq.jobs import CalibrateRequest, CalibrationSource, run_calibrate
from dfq.jobs.export import QDQ_ONNX, export_run
from dfq.runs import load
from dfq.zoo.cifar_resnet import cifar_resnet
from tests._helpers import _timm_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_export_run_onnx_and_trt_refused_for_paper(tmp_path):
    _, run = _timm_run(tmp_path, "w8a8")
    path = export_run(run, "onnx")
    assert path == run / QDQ_ONNX and path.is_file()
    _, paper_run = _timm_run(tmp_path, "w8a8-paper")
    with pytest.raises(DfqError, match="TensorRT cannot run") as e:
        export_run(paper_run, "trt")
    assert "\n" not in str(e.value)
    with pytest.raises(DfqError, match="unknown export format"):
        export_run(run, "tflite")  # type: ignore[arg-type]


def test_export_run_of_a_python_built_model(tmp_path):
    """A run made through the Python API from a non-timm model exports once the architecture is
    passed in, at the run's own input size, and ORT agrees with the reloaded fake-quant model."""
    torch.manual_seed(0)
    job = CalibrateRequest(
        out=str(tmp_path / "run"),
        config=preset("w8a8"),
        source=CalibrationSource.inversion("noise"),
        num_images=8,
        device="cpu",
        progress=False,
    )
    run_calibrate(job, model=cifar_resnet(20))
    run = Path(job.out)
    with pytest.raises(DfqError, match="built in Python"):
        export_run(run)
    path = export_run(run, model=cifar_resnet(20))
    assert check_onnx(path) == []
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = load(run, model=cifar_resnet(20))(x)
    got = ort_predictor(path, threads=1)(x)
    assert got.shape == (16, 10)
    assert (got.argmax(1) == ref.argmax(1)).float().mean() >= 0.9
    assert torch.allclose(got, ref, atol=0.05 * ref.abs().max().item())
