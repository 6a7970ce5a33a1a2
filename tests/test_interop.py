"""dfq sets as other toolchains' calibration step: ModelOpt forward_loop and calibration_data file,
ONNX Runtime CalibrationDataReader with quantize_static, TensorRT calibrator batches, ``dfq export-set``."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.interop import (
    RUN_SET_DIR,
    modelopt_forward_loop,
    read_set,
    trt_calibration_batches,
    trt_calibrator,
    write_calibration_data,
)
from dfq.runs import CALIBRATION_DIR
from tests._cli import run_cli

HAS_MODELOPT = importlib.util.find_spec("modelopt") is not None


def _set(n: int = 10, size: int = 32, sparse: bool = True) -> CalibrationSet:
    torch.manual_seed(1)
    images = torch.randn(n, 3, size, size)
    images[-1] *= 1.5  # the largest values sit in the last (partial) batch: a reader that drops it fails
    tokens = (size // 16) ** 2
    keep = torch.stack([torch.arange(1 + tokens // 2) for _ in range(n)]) if sparse else None
    return CalibrationSet(images, labels=torch.arange(n), keep_index=keep, provenance={"method": "test"})


def test_importing_interop_imports_no_toolchain() -> None:
    code = ("import sys, dfq.interop; bad = [m for m in ('onnx', 'onnxruntime', 'modelopt', 'tensorrt') "
            "if m in sys.modules]; assert not bad, bad")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------ ModelOpt
@pytest.mark.skipif(not HAS_MODELOPT, reason="nvidia-modelopt is not installed (pip install dfq[interop])")
def test_modelopt_quantize_calibrates_on_exactly_the_set(one_thread: None) -> None:
    import modelopt.torch.quantization as mtq

    calib = _set(10, 32)  # sparse: ModelOpt gets the dense images
    model = timm.create_model("test_vit", pretrained=False, img_size=32).eval()
    seen: list[torch.Tensor] = []
    qkv_absmax: list[torch.Tensor] = []
    adapter = modelopt_forward_loop(calib, batch_size=4)

    def loop(m: nn.Module) -> None:  # the adapter, observed by hooks registered on the converted model
        h1 = m.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
        h2 = m.blocks[0].attn.qkv.register_forward_pre_hook(lambda _, args: qkv_absmax.append(args[0].abs().max()))
        try:
            adapter(m)
        finally:
            h1.remove()
            h2.remove()

    mtq.quantize(model, mtq.INT8_DEFAULT_CFG, loop)
    assert [x.shape[0] for x in seen] == [4, 4, 2]
    assert torch.equal(torch.cat(seen), calib.images)  # every image once, in order, unchanged
    amax = model.patch_embed.proj.input_quantizer.amax
    assert float(amax) == pytest.approx(float(calib.images.abs().max()), rel=1e-6)
    assert float(model.blocks[0].attn.qkv.input_quantizer.amax) == pytest.approx(float(max(qkv_absmax)), rel=1e-6)


def test_forward_loop_casts_to_the_model_dtype() -> None:
    calib = _set(3, 16, sparse=False)
    model = nn.Conv2d(3, 2, 3).to(torch.float64)
    dtypes: list[torch.dtype] = []
    model.register_forward_pre_hook(lambda _, args: dtypes.append(args[0].dtype))
    modelopt_forward_loop(calib, batch_size=2)(model)
    assert dtypes == [torch.float64, torch.float64]
    with pytest.raises(ValueError, match="batch_size"):
        modelopt_forward_loop(calib, batch_size=0)


# --------------------------------------------------------------------------- ModelOpt ONNX PTQ file
def _modelopt_load(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """What ``python -m modelopt.onnx.quantization --calibration_data_path`` does with the file
    (modelopt/onnx/quantization/__main__.py, 0.47): np.load without pickle, a dict for .npz names."""
    data = np.load(str(path), allow_pickle=False)
    if str(path).endswith(".npz"):
        data = {key: data[key] for key in data.files}
    return data


def test_calibration_data_round_trips_bit_exactly(tmp_path: Path) -> None:
    calib = _set(5, 16)
    expected = calib.images.numpy()
    npz = _modelopt_load(write_calibration_data(calib, tmp_path / "c.npz", input_name="pixel_values"))
    assert isinstance(npz, dict) and list(npz) == ["pixel_values"]
    assert npz["pixel_values"].dtype == np.float32 and npz["pixel_values"].tobytes() == expected.tobytes()
    npy = _modelopt_load(write_calibration_data(calib, tmp_path / "c.npy", fmt="npy"))
    assert isinstance(npy, np.ndarray) and npy.shape == expected.shape and npy.tobytes() == expected.tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy", "c.npz"]  # no temporary left behind
    with pytest.raises(DfqError, match=r"must end in \.npz"):
        write_calibration_data(calib, tmp_path / "c.bin")
    with pytest.raises(DfqError, match="unknown format"):
        write_calibration_data(calib, tmp_path / "c.pt", fmt="pt")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- ONNX Runtime
class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())  # fmt: skip
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _export(model: nn.Module, path: Path, dynamic: bool = True) -> Path:
    torch.onnx.export(
        model, (torch.zeros(2, 3, 16, 16),), str(path), dynamo=False, opset_version=17, input_names=["pixels"],
        output_names=["logits"], dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None,
    )  # fmt: skip
    return path


def test_ort_reader_yields_each_image_once_per_pass_and_rewinds() -> None:
    from onnxruntime.quantization import CalibrationDataReader

    from dfq.interop import OrtCalibrationReader

    calib = _set(7, 16)
    reader = OrtCalibrationReader(calib, input_name="pixels", batch_size=3)
    assert isinstance(reader, CalibrationDataReader) and len(reader) == 3
    for _ in range(2):  # a pass, then a rewound pass
        items = []
        while (item := reader.get_next()) is not None:
            items.append(item)
        assert reader.get_next() is None
        assert [list(i) for i in items] == [["pixels"]] * 3 and [i["pixels"].shape[0] for i in items] == [3, 3, 1]
        assert np.array_equal(np.concatenate([i["pixels"] for i in items]), calib.images.numpy())
        reader.rewind()
    reader.set_range(1, 3)  # ORT's CalibStridedMinMax
    assert [i["pixels"].shape[0] for i in reader] == [3, 1]
    reader.rewind()
    assert np.array_equal(reader.get_next()["pixels"], calib.images[3:6].numpy())


def test_ort_quantize_static_with_the_reader(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from dfq.interop import OrtCalibrationReader

    torch.manual_seed(0)
    model = _Tiny().eval()
    float_path = _export(model, tmp_path / "tiny.onnx")
    calib = _set(7, 16)
    reader = OrtCalibrationReader(calib, batch_size=3, model=float_path)
    assert reader.input_name == "pixels"  # read from the model
    q_path = tmp_path / "tiny.int8.onnx"
    quantize_static(str(float_path), str(q_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True})  # fmt: skip
    proto = onnx.load(str(q_path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    q_input = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "pixels")
    absmax = float(calib.images.abs().max())  # in the last, partial batch
    assert float(inits[q_input.input[1]]) == pytest.approx(absmax / 127, rel=1e-6)

    from dfq.export.runtime import ort_predictor

    got = ort_predictor(q_path)(calib.images).numpy()  # Q/DQ unfused on x86 without VNNI (see ort_predictor)
    with torch.no_grad():
        ref = model(calib.images).numpy()
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max(), (np.abs(got - ref).max(), np.abs(ref).max())

    static = _export(model, tmp_path / "static.onnx", dynamic=False)  # batch fixed at 2
    with pytest.raises(DfqError, match="batch dimension is 2"):
        OrtCalibrationReader(calib, batch_size=2, model=static)  # 7 images do not split into batches of 2
    with pytest.raises(DfqError, match="no input 'input'"):
        OrtCalibrationReader(calib, input_name="input", model=float_path)


# ---------------------------------------------------------------------------------- TensorRT <= 10
def test_trt_batches_are_full_and_in_order() -> None:
    calib = _set(10, 16)
    with pytest.warns(UserWarning, match="leaves out the last 2 of 10"):
        batches = list(trt_calibration_batches(calib, 4))
    assert [tuple(b.shape) for b in batches] == [(4, 3, 16, 16)] * 2
    assert all(b.dtype == torch.float32 and b.device.type == "cpu" and b.is_contiguous() for b in batches)
    assert torch.equal(torch.cat(batches), calib.images[:8])
    assert torch.equal(torch.cat(list(trt_calibration_batches(calib, 5))), calib.images)
    for bad in (0, 11):
        with pytest.raises(DfqError, match="batch size must be 1..10"):
            trt_calibration_batches(calib, bad)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_trt_calibrator_from_a_set_needs_tensorrt(tmp_path: Path) -> None:
    with pytest.raises(DfqError, match="TensorRT is not installed"):
        trt_calibrator(_set(4, 16), tmp_path / "c.cache", batch_size=2)


# --------------------------------------------------------------------------------- dfq export-set
def test_export_set_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_dir = tmp_path / "set"
    code, _, err = run_cli(["invert", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--method",
                            "noise", "--num-images", "3", "--out", str(set_dir)], capsys)  # fmt: skip
    assert code == 0, err
    images = CalibrationSet.load(set_dir).images.numpy()

    code, out, err = run_cli(["export-set", str(set_dir), "--out", str(tmp_path / "a.npz"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["key"] == "input" and json.loads(out)["num_images"] == 3
    assert _modelopt_load(tmp_path / "a.npz")["input"].tobytes() == images.tobytes()

    run = tmp_path / "run"
    shutil.copytree(set_dir, run / "calibration")  # a run directory holds its set in calibration/
    code, out, err = run_cli(["export-set", str(run), "--format", "npy", "--out", str(tmp_path / "b.npy")], capsys)
    assert code == 0 and out.startswith("wrote "), err
    assert np.array_equal(_modelopt_load(tmp_path / "b.npy"), images)
    assert np.array_equal(read_set(run).images.numpy(), images)
    assert RUN_SET_DIR == CALIBRATION_DIR

    def one_line_error(args: list[str], match: str) -> None:
        code, _, err = run_cli(["export-set", *args], capsys)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and match in err, err

    one_line_error([str(tmp_path / "missing"), "--out", str(tmp_path / "m.npz")], "does not exist")
    one_line_error([str(tmp_path), "--out", str(tmp_path / "m.npz")], "no calibration set")
    one_line_error([str(set_dir), "--out", str(tmp_path / "a.npz")], "pass --force")
    one_line_error([str(set_dir), "--format", "npz", "--out", str(tmp_path / "m.npy")], "must end in .npz")
    one_line_error([str(set_dir), "--format", "npy", "--input-name", "x", "--out", str(tmp_path / "m.npy")], "npz only")
    code, _, err = run_cli(["export-set", str(set_dir), "--format", "pt", "--out", str(tmp_path / "m.pt")], capsys)
    assert code == 2 and err.startswith("error: invalid value for '--format'") and len(err.splitlines()) == 1, err
    code, _, err = run_cli(["export-set", str(set_dir), "--out", str(tmp_path / "a.npz"), "--input-name", "x",
                            "--force"], capsys)  # fmt: skip
    assert code == 0, err
    assert list(_modelopt_load(tmp_path / "a.npz")) == ["x"]
