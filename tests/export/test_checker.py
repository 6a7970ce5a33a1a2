"""dfq.export.checker: clean on the exports of a ViT and a CNN, and catching broken graphs (zero-points,
scales, QOperator ops, Q/DQ on outputs, a wrong weight axis)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from dfq.export.checker import Finding, check_model, check_onnx
from tests.export._helpers import Graph


def test_checker_is_clean_on_vit_and_cnn(vit, cnn):
    for _, path in (vit, cnn):
        assert [f for f in check_onnx(path) if f.severity == "error"] == []


# -- checker on broken graphs ---------------------------------------------------------------------
def test_checker_catches_broken_graphs(vit):
    proto = onnx.load(str(vit[1]))
    g = Graph(proto)
    q0, q1 = g.op("QuantizeLinear")[:2]
    for t in proto.graph.initializer:
        if t.name == q0.input[2]:
            t.CopyFrom(numpy_helper.from_array(np.array(3, dtype=np.int8), t.name))
        if t.name == q1.input[1]:
            t.CopyFrom(numpy_helper.from_array(np.array(-0.5, dtype=np.float32), t.name))
    proto.graph.node.append(
        onnx.helper.make_node(
            "QLinearConv", ["a", "b", "c", "d", "e", "f", "g", "h"], ["y"], name="bad_qconv"
        )
    )
    mm = next(n for n in g.op("MatMul") if n.input[1] in {d.output[0] for d in g.op("DequantizeLinear")})
    proto.graph.node.append(
        onnx.helper.make_node(
            "QuantizeLinear", [mm.output[0], q0.input[1], q0.input[2]], ["oq"], name="out_q"
        )
    )
    findings = check_model(proto)
    errors = [f for f in findings if f.severity == "error"]
    text = "\n".join(str(f) for f in errors)
    assert "zero-point must be 0" in text
    assert "positive and finite" in text
    assert "QOperator op QLinearConv" in text and any(f.node == "bad_qconv" for f in errors)
    assert any(f.node == "out_q" and "output of MatMul" in f.message for f in errors)
    assert all(isinstance(f, Finding) for f in findings)


def test_checker_catches_wrong_weight_axis(vit):
    proto = onnx.load(str(vit[1]))
    g = Graph(proto)
    dq = next(
        d for d in g.op("DequantizeLinear") if d.input[0] in g.consts and g.consts[d.input[0]].ndim == 2
    )
    codes = g.consts[dq.input[0]]
    for t in proto.graph.initializer:  # a square weight with the axis flipped keeps shapes valid
        if t.name == dq.input[1]:
            t.CopyFrom(numpy_helper.from_array(np.ones(codes.shape[0], np.float32), t.name))
    for a in dq.attribute:
        if a.name == "axis":
            a.i = 0
    assert any("output-channel axis" in f.message for f in check_model(proto))
