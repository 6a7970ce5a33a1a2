"""FP8 (E4M3) Q/DQ export: ONNX Runtime's FP8 QuantizeLinear as a reference for :mod:`dfq.fp8`, the
exported graph's FP8 types and weights, the checker's FP8 rules, and torch/ORT parity on ``test_vit``."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from dfq.errors import DfqError
from dfq.export.checker import check_model
from dfq.export.onnx import export_onnx
from dfq.export.parity import parity
from dfq.fp8 import fake_quantize_fp8
from dfq.quant.modules import QuantLayer, quantizers
from tests.export._helpers import SHAPE, Graph, _calibrated


@pytest.fixture(scope="module")
def fp8(out: Path) -> tuple[nn.Module, Path]:
    model = _calibrated("test_vit", "w8a8-fp8")
    return model, export_onnx(model, out / "fp8.onnx", input_shape=SHAPE)


def _qdq_graph(scale: float) -> onnx.ModelProto:
    s = numpy_helper.from_array(np.array(scale, np.float32), "s")
    z = helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0.0])
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [s, z],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    return model


def test_onnxruntime_fp8_quantize_linear_matches_fake_quantize_fp8():
    scale = 0.0123
    g = torch.Generator().manual_seed(0)
    mag = torch.exp2(torch.empty(100_000).uniform_(-20, 6, generator=g))  # x / s from 2^-13 to beyond 448
    x = torch.cat([mag, -mag, torch.tensor([0.0, -0.0, 1e9])])
    sess = ort.InferenceSession(_qdq_graph(scale).SerializeToString(), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
    assert torch.equal(got, fake_quantize_fp8(x, torch.tensor(scale)))


def test_fp8_export_is_e4m3_qdq_at_opset_19_ir_9_with_e4m3_weights(fp8):
    model, path = fp8
    g = Graph(path)
    assert g.model.ir_version == 9 and g.model.opset_import[0].version == 19
    qdq = g.op("QuantizeLinear") + g.op("DequantizeLinear")
    assert qdq and all(g.consts[n.input[2]].dtype.name == "float8_e4m3fn" for n in qdq)
    assert all(not g.consts[n.input[2]].astype(np.float32).any() for n in qdq)
    assert all(g.consts[n.input[1]].dtype == np.float32 for n in qdq)
    assert not any(t.data_type == TensorProto.INT8 for t in g.model.graph.initializer)
    assert [f for f in check_model(g.model) if f.severity == "error"] == []
    # every weight DQ reproduces the torch fake-quant weight exactly (E4M3 codes times the channel scale)
    weight_dqs = [n for n in g.op("DequantizeLinear") if n.input[0] in g.consts]
    dequant = []
    for n in weight_dqs:
        codes, scale = g.consts[n.input[0]].astype(np.float32), g.consts[n.input[1]]
        shape = [1] * codes.ndim
        shape[g.axis(n) % codes.ndim] = -1
        dequant.append(codes * scale.reshape(shape))
    torch_weights = [ql.quantized_weight().detach() for ql in model.modules() if isinstance(ql, QuantLayer)]
    assert len(weight_dqs) == len(torch_weights)
    for w in torch_weights:
        want = (w.t() if w.dim() == 2 else w).numpy()
        assert any(d.shape == want.shape and np.array_equal(d, want) for d in dequant)


def test_fp8_export_agrees_with_torch_in_onnxruntime(fp8, images):
    model, path = fp8
    r = parity(model, path, images)
    assert r["agreement"] >= 0.99 and r["mean_abs_diff"] <= r["quant_error_mean"]


def _mutated(path: Path, change) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    m = onnx.load(str(path))
    change(m)
    return m


def _errors(model: onnx.ModelProto) -> list[str]:
    return [f.message for f in check_model(model) if f.severity == "error"]


def test_checker_fp8_rules(fp8):
    _, path = fp8

    def first_zp(m: onnx.ModelProto) -> onnx.TensorProto:
        name = next(n.input[2] for n in m.graph.node if n.op_type == "QuantizeLinear")
        return next(t for t in m.graph.initializer if t.name == name)

    def nonzero(m: onnx.ModelProto) -> None:
        first_zp(m).CopyFrom(helper.make_tensor(first_zp(m).name, TensorProto.FLOAT8E4M3FN, [], [1.0]))

    def e5m2(m: onnx.ModelProto) -> None:
        first_zp(m).CopyFrom(helper.make_tensor(first_zp(m).name, TensorProto.FLOAT8E5M2, [], [0.0]))

    def fp16_scale(m: onnx.ModelProto) -> None:
        name = next(n.input[1] for n in m.graph.node if n.op_type == "QuantizeLinear")
        t = next(t for t in m.graph.initializer if t.name == name)
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), name))

    def opset17(m: onnx.ModelProto) -> None:
        m.opset_import[0].version = 17

    assert any("zero-point must be 0" in e for e in _errors(_mutated(path, nonzero)))
    assert any("E4M3FN" in e for e in _errors(_mutated(path, e5m2)))
    assert any("scale must be float32" in e for e in _errors(_mutated(path, fp16_scale)))
    assert any("opset >= 19" in e for e in _errors(_mutated(path, opset17)))


def _matmul(m: onnx.ModelProto, part: str) -> onnx.NodeProto:
    return next(n for n in m.graph.node if n.op_type == "MatMul" and part in n.name)


def test_checker_fp8_gemm_and_attention_rules(fp8):
    _, path = fp8
    clean = check_model(onnx.load(str(path)))
    assert not [f for f in clean if f.severity != "info"]
    assert [f.message for f in clean if "per-channel FP8" in f.message]  # the export's weights are per channel

    def transposed_k(m: onnx.ModelProto) -> None:  # DQ -> Transpose -> MatMul, as timm's k.transpose would be
        qk = _matmul(m, "matmul_qk")
        m.graph.node.append(helper.make_node("Transpose", [qk.input[1]], ["k_t"], perm=[0, 1, 2, 3], name="k_t"))
        qk.input[1] = "k_t"

    def float_softmax(m: onnx.ModelProto) -> None:  # the softmax output reaches attn.v unquantized
        av = _matmul(m, "matmul_av")
        g = Graph(m)
        q = g.producer[g.producer[av.input[0]].input[0]]
        av.input[0] = q.input[0]

    def int8_weight(m: onnx.ModelProto) -> None:  # one Linear's weights as INT8 codes beside FP8 activations
        fc1 = _matmul(m, "mlp/fc1")
        dq = Graph(m).producer[fc1.input[1]]
        w = next(t for t in m.graph.initializer if t.name == dq.input[0])
        codes = np.zeros(numpy_helper.to_array(w).shape, np.int8)
        w.CopyFrom(numpy_helper.from_array(codes, w.name))
        del dq.input[2:]

    warned = [f.message for f in check_model(_mutated(path, transposed_k)) if f.severity == "warning"]
    assert any("passes Transpose" in w for w in warned), warned
    warned = [f.message for f in check_model(_mutated(path, float_softmax)) if f.severity == "warning"]
    assert any("input in float" in w for w in warned), warned
    assert any("mixes float8_e4m3fn and int8" in e for e in _errors(_mutated(path, int8_weight)))
    ort_findings = check_model(_mutated(path, int8_weight), target="ort")
    assert any(f.severity == "warning" and "mixes" in f.message for f in ort_findings)


def test_export_refuses_mixed_formats_and_fp8_fp16_remainder(fp8, tmp_path):
    model, _ = fp8
    with pytest.raises(DfqError, match="fp16_remainder"):
        export_onnx(model, tmp_path / "a.onnx", input_shape=SHAPE, fp16_remainder=True)
    mixed = copy.deepcopy(model)
    int_model = _calibrated("test_vit", "w8a8")
    first = next(q for q in quantizers(mixed))
    first.spec = next(q for q in quantizers(int_model)).spec
    with pytest.raises(DfqError, match="mixes quantization formats"):
        export_onnx(mixed, tmp_path / "b.onnx", input_shape=SHAPE)


def test_fp8_relu6_cnn_runs_in_onnxruntime(tmp_path):
    """ReLU6 (Clip) and Relu before an FP8 QuantizeLinear: ORT's Clip/Relu-into-Q rewrite rules read the
    zero-point as an integer and fail the session; ort_predictor turns them off for FP8 graphs."""
    from dfq.config import preset
    from dfq.export.runtime import ort_predictor
    from dfq.quant.calibrate import calibrate
    from dfq.quant.transform import quantize_

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()  # fmt: skip
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    q = calibrate(quantize_(net, preset("w8a8", "fp8")), lambda m: m(x))
    path = export_onnx(q, tmp_path / "relu6.onnx", input_shape=(3, 16, 16))
    assert any(n.op_type == "Clip" for n in onnx.load(str(path)).graph.node)
    got = ort_predictor(path)(x)
    with torch.no_grad():
        want = q(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0.05 * want.abs().max().item())
