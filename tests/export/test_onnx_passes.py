"""dfq.export.onnx_passes: the INT4 weight-only and FP16-remainder exports (graph rewrites after the
torch export)."""

from __future__ import annotations

import numpy as np
import torch

from dfq.export.checker import check_onnx
from dfq.export.onnx import export_onnx
from dfq.export.parity import parity
from dfq.export.runtime import ort_predictor
from tests.export._helpers import SHAPE, Graph, _is_activation_dq


def test_int4_weight_only_export(out, w4, images):
    model, w4_path = w4
    int8 = Graph(w4_path)
    path = export_onnx(model, out / "w4_int4.onnx", input_shape=SHAPE, int4_weights=True)
    g = Graph(path)
    assert next(o.version for o in g.model.opset_import if o.domain == "") == 21
    int4 = [
        dq
        for dq in g.op("DequantizeLinear")
        if dq.input[0] in g.consts and g.consts[dq.input[0]].dtype != np.int8
    ]
    assert len(int4) == 4 * len(model.blocks) + 1  # qkv, proj, fc1, fc2 per block + head; the conv stays INT8
    codes4 = sorted(g.consts[dq.input[0]].astype(np.int8).tobytes() for dq in int4)
    codes8 = sorted(
        int8.consts[dq.input[0]].tobytes()
        for dq in int8.op("DequantizeLinear")
        if dq.input[0] in int8.consts and int8.consts[dq.input[0]].ndim == 2
    )
    assert codes4 == codes8
    for mm in g.op("MatMul"):  # weight-only: weighted MatMuls take float activations
        if mm.input[1] in {dq.output[0] for dq in int4}:
            assert not _is_activation_dq(g, mm.input[0])
    y = ort_predictor(path)(images[:2])
    assert torch.isfinite(y).all()


def test_fp16_remainder(out, vit, images):
    model, _ = vit
    path = export_onnx(model, out / "fp16.onnx", input_shape=SHAPE, fp16_remainder=True)
    g = Graph(path)
    assert not [f for f in check_onnx(path) if f.severity == "error"]
    assert not any(a.dtype == np.float32 for a in g.consts.values())
    r = parity(model, path, images[:4])
    # FP16 activations and scales add their own rounding (about 2^-11 relative per op) on top of the
    # INT8 grid: the gap stays of the order of the quantization error, not above twice it
    assert r["mean_abs_diff"] <= 2 * r["quant_error_mean"]
