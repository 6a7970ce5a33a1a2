"""Legacy TensorRT calibration cache: header, known hex values, round trip, scales from an export, float graph."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import onnx
import pytest
import timm
import torch

from dfq.config import preset
from dfq.errors import DfqError
from dfq.export.onnx import export_onnx
from dfq.export.runtime import ort_predictor
from dfq.export.trt_calibrator import (
    cache_from_model,
    cache_header,
    make_trt_calibrator,
    read_calibration_cache,
    strip_qdq,
    write_calibration_cache,
)
from dfq.quant.calibrate import activation_quantizers, calibrate
from dfq.quant.transform import quantize_

SHAPE = (3, 160, 160)


def test_header_format():
    assert cache_header("10.0.0") == "TRT-100000-EntropyCalibration2"
    assert cache_header("10.3.1", "MinMaxCalibration") == "TRT-100301-MinMaxCalibration"
    assert cache_header("8.6.1") == "TRT-8601-EntropyCalibration2"


def test_known_values_and_round_trip(tmp_path: Path):
    scales = {"input": 1 / 127, "/blocks.0/norm1/LayerNormalization_output_0": 0.5, "x:y": 2.0}
    path = write_calibration_cache(tmp_path / "c.cache", scales)
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-100000-EntropyCalibration2"
    # independent: big-endian float32 bytes of 1/127 and of 0.5 (= 0x3f000000)
    assert lines[1] == "input: " + struct.pack(">f", 1 / 127).hex() == "input: 3c010204"
    assert lines[2].endswith(": 3f000000")
    header, back = read_calibration_cache(path)
    assert header == lines[0]
    assert back.keys() == scales.keys()
    for k, v in scales.items():
        assert back[k] == pytest.approx(v, rel=1e-7)


def test_rejects_bad_scales_and_files(tmp_path: Path):
    with pytest.raises(DfqError, match="positive"):
        write_calibration_cache(tmp_path / "c.cache", {"t": 0.0})
    (tmp_path / "bad.cache").write_text("hello\n")
    with pytest.raises(DfqError, match="not a TensorRT calibration cache"):
        read_calibration_cache(tmp_path / "bad.cache")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False).eval()
    x = torch.randn(8, *SHAPE)
    calibrate(quantize_(model, preset("w8a8")), lambda m: m(x))
    path = export_onnx(model, tmp_path_factory.mktemp("cache") / "m.onnx", input_shape=SHAPE)
    return model, path


def test_cache_from_model_keys_are_onnx_tensors(exported, tmp_path: Path):
    model, path = exported
    scales = cache_from_model(model, path)
    proto = onnx.load(str(path))
    produced = {o for n in proto.graph.node for o in n.output} | {i.name for i in proto.graph.input}
    assert scales and set(scales) <= produced
    fq = model.patch_embed.proj.input_quantizer
    assert scales["input"] == pytest.approx(max(abs(float(fq.lo)), abs(float(fq.hi))) / 127, rel=1e-6)
    _, back = read_calibration_cache(write_calibration_cache(tmp_path / "m.cache", scales))
    assert back == pytest.approx(scales, rel=1e-7)


def test_strip_qdq_gives_the_float_model(exported, tmp_path: Path):
    model, path = exported
    flt = strip_qdq(path, tmp_path / "float.onnx")
    proto = onnx.load(str(flt))
    assert not [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    names = {o for n in proto.graph.node for o in n.output} | {"input"}
    assert set(cache_from_model(model, path)) <= names  # the cache keys exist in the float graph
    x = torch.randn(2, *SHAPE)
    acts = activation_quantizers(model)
    for q in acts:  # the reference: quantized weights, float activations
        q.mode = "off"
    try:
        with torch.no_grad():
            ref = model(x)
    finally:
        for q in acts:
            q.mode = "quantize"
    y = ort_predictor(flt)(x)
    assert torch.allclose(y, ref, atol=1e-4), (y - ref).abs().max()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_calibrator_needs_tensorrt(tmp_path: Path):
    with pytest.raises(DfqError, match="TensorRT is not installed"):
        make_trt_calibrator([torch.zeros(1, *SHAPE)], tmp_path / "c.cache")
