"""Export of run directories (timm and Python-built models), latency helper, lean imports, TensorRT.

The TensorRT tests skip where TensorRT or a GPU is absent (every machine this project has run on).
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from torch import nn

from dfq.config import preset
from dfq.errors import DfqError
from dfq.export import latency
from dfq.export.checker import check_onnx
from dfq.export.latency import latency_ratio
from dfq.export.onnx import export_onnx
from dfq.export.runtime import ort_predictor
from dfq.jobs import CalibrateRequest, CalibrationSource, run_calibrate
from dfq.jobs.export import QDQ_ONNX, export_run
from dfq.quant.calibrate import calibrate
from dfq.quant.transform import quantize_
from dfq.runs import RECIPE, load, save_quant_state, write_json
from dfq.zoo.cifar_resnet import cifar_resnet

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
SHAPE = (3, 64, 64)

pytestmark = pytest.mark.usefixtures("one_thread")


def _timm_run(root: Path, scheme: str) -> tuple[nn.Module, Path]:
    """A run directory as ``dfq calibrate`` writes it for timm's ``test_vit`` (random weights)."""
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, img_size=SHAPE[1:]).eval()
    cfg = preset(*scheme.split("-")) if "-" in scheme else preset(scheme)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    qmodel = calibrate(quantize_(model, cfg), lambda m: m(x))
    run = root / f"run-{scheme}"
    run.mkdir()
    recipe = {
        "model": {"source": "timm", "name": "test_vit", "kwargs": {"img_size": list(SHAPE[1:])}},
        "quant": cfg.to_dict(),
        "data_config": {"input_size": list(SHAPE)},
    }
    write_json(run / RECIPE, recipe)
    save_quant_state(run, recipe, qmodel)
    return qmodel, run


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


# -- latency, imports, TensorRT -----------------------------------------------------------------
def test_latency_ratio_is_a_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    """The arithmetic and the interleaving, on a fake clock: which of two real functions is faster is
    this machine's business (a round preempted by another process can make the cheaper one look
slower), so no speed is asserted."""
    clock = {"now": 0.0}
    calls: list[str] = []

    def timed(name: str, seconds: float) -> Callable[[torch.Tensor], None]:
        def fn(_: torch.Tensor) -> None:
            calls.append(name)
            clock["now"] += seconds  # binary fractions: the sums stay exact

        return fn

    monkeypatch.setattr(latency, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    x = torch.zeros(1)
    r = latency_ratio(timed("a", 0.25), timed("b", 0.0625), x, rounds=3, iters=2, warmup=1)
    assert r == {"a_ms": 250.0, "b_ms": 62.5, "ratio": 4.0, "rounds": 3, "iters": 2}
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3  # warm-up, then A and B interleaved by round


def test_latency_ratio_on_the_real_clock() -> None:
    x = torch.zeros(1)
    r = latency_ratio(lambda _: sum(range(2000)), lambda _: sum(range(200)), x, rounds=3, iters=3, warmup=1)
    assert r["a_ms"] > 0 and r["b_ms"] > 0  # positive and finite; their order is not asserted
    assert r["ratio"] == pytest.approx(r["a_ms"] / r["b_ms"]) and math.isfinite(r["ratio"])


def test_import_dfq_export_does_not_import_heavy_modules():
    code = (
        "import sys, dfq, dfq.export, dfq.export.onnx, dfq.export.checker, dfq.export.runtime, "
        "dfq.export.tensorrt, dfq.export.trt_calibrator, dfq.export.parity, dfq.export.latency; "
        "bad = [m for m in ('onnx', 'onnxruntime', 'tensorrt', 'pycuda') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


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
