"""Q/DQ ONNX export (dfq.export.onnx): placement, numerics, options, dynamic batch.

References are independent of the exporter: scales are recomputed from the quantizers' ``lo``/``hi``
buffers, weight codes are compared with the torch fake-quantized weights, and graph rules are read
directly off the ONNX nodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from dfq.config import for_onnxruntime
from dfq.errors import DfqError
from dfq.export.checker import check_onnx
from dfq.export.onnx import export_mode, export_onnx
from dfq.export.parity import parity
from dfq.export.runtime import ort_predictor
from dfq.quant.calibrate import calibrate, quantizers_off
from dfq.quant.modules import QuantLayer, quantizers
from dfq.quant.transform import quantize_
from tests.export._helpers import SHAPE, Graph, _calibrated, _config, _is_activation_dq


# -- graph rules ----------------------------------------------------------------------------------
def test_every_matmul_input_is_dequantized_including_attention(vit):
    model, path = vit
    g = Graph(path)
    blocks = len(model.blocks)
    matmuls = g.op("MatMul")
    assert len(matmuls) == 6 * blocks + 1  # qkv, q@kT, attn@v, proj, fc1, fc2 per block + head
    for mm in matmuls:
        assert g.src(mm.input[0]) == "DequantizeLinear" and g.src(mm.input[1]) == "DequantizeLinear", mm.name
    attention = [mm for mm in matmuls if all(_is_activation_dq(g, i) for i in mm.input)]
    assert len(attention) == 2 * blocks
    assert len(g.op("Conv")) == 1 and g.src(g.op("Conv")[0].input[0]) == "DequantizeLinear"


def test_ort_placement_leaves_patch_embed_and_head_float(out):
    """``for_onnxruntime``: no Q/DQ where ORT cannot fuse it (Conv, classifier); every block matmul keeps it."""
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False).eval()
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    qmodel = calibrate(quantize_(model, for_onnxruntime(_config("w8a8"))), lambda m: m(x))
    g = Graph(export_onnx(qmodel, out / "ort.onnx", input_shape=SHAPE))
    conv = g.op("Conv")[0]
    assert g.src(conv.input[0]) == "input" and g.src(conv.input[1]) == "initializer"
    (head,) = g.op("Gemm")  # the float nn.Linear exports as Gemm
    assert g.src(head.input[0]) != "DequantizeLinear" and g.src(head.input[1]) == "initializer"
    matmuls = g.op("MatMul")
    assert len(matmuls) == 6 * len(qmodel.blocks)
    assert all(g.src(mm.input[0]) == g.src(mm.input[1]) == "DequantizeLinear" for mm in matmuls)


def test_no_qdq_on_outputs_and_float_ops_stay_float(vit, cnn):
    for _, path in (vit, cnn):
        g = Graph(path)
        for n in g.nodes:
            if n.op_type in ("Conv", "MatMul", "Gemm"):
                assert all(c.op_type != "QuantizeLinear" for c in g.consumers.get(n.output[0], [])), n.name
            if n.op_type in ("LayerNormalization", "Softmax", "Erf"):
                assert g.src(n.input[0]) != "DequantizeLinear", n.name
    g = Graph(vit[1])
    for sm in g.op("Softmax"):  # the only consumer is the attn@v input quantizer
        (q,) = g.consumers[sm.output[0]]
        assert q.op_type == "QuantizeLinear"
        (dq,) = g.consumers[q.output[0]]
        assert [c.op_type for c in g.consumers[dq.output[0]]] == ["MatMul"]


def test_qdq_numerics_int8_zero_points_and_scales(vit):
    model, path = vit
    g = Graph(path)
    for n in g.op("QuantizeLinear") + g.op("DequantizeLinear"):
        zp, scale = g.consts[n.input[2]], g.consts[n.input[1]]
        assert zp.dtype == np.int8 and not zp.any()
        assert np.all(np.isfinite(scale)) and np.all(scale > 0)
    # one Q per tensor, per-tensor activation scales
    assert len({q.input[0] for q in g.op("QuantizeLinear")}) == len(g.op("QuantizeLinear"))
    assert all(g.consts[q.input[1]].size == 1 for q in g.op("QuantizeLinear"))
    # the image quantizer's scale is amax/127 of its calibrated range
    fq = model.patch_embed.proj.input_quantizer
    amax = max(abs(float(fq.lo)), abs(float(fq.hi)))
    (q,) = g.consumers["input"]
    assert g.consts[q.input[1]].item() == pytest.approx(amax / 127, rel=1e-6)


def test_weight_dq_axis_and_codes_match_torch(vit, cnn):
    for model, path in (vit, cnn):
        g = Graph(path)
        dequantized = []
        for dq in g.op("DequantizeLinear"):
            if dq.input[0] not in g.consts:
                continue
            codes, scale = g.consts[dq.input[0]], g.consts[dq.input[1]]
            users = g.consumers[dq.output[0]]
            assert codes.dtype == np.int8
            for user in users:
                if user.op_type == "Conv":
                    assert g.axis(dq) == 0 and scale.size == codes.shape[0]
                else:
                    assert user.op_type == "MatMul" and g.axis(dq) == 1 and scale.size == codes.shape[1]
            shape = [1] * codes.ndim
            shape[g.axis(dq)] = -1
            dequantized.append(codes.astype(np.float32) * scale.reshape(shape))
        layers = [m for m in model.modules() if isinstance(m, QuantLayer)]
        assert len(dequantized) == len(layers)
        for layer in layers:  # the exported weight is the fake-quant weight (Linear transposed to (in, out))
            w = layer.quantized_weight().detach().numpy()
            w = w.T if w.ndim == 2 else w
            assert any(d.shape == w.shape and np.allclose(d, w, rtol=0, atol=1e-6) for d in dequantized)


def test_conv_subclass_with_its_own_forward_exports(out, images):
    """timm's ``Conv2dSame`` (TF 'same' padding, the Keras MobileNet's convs) keeps its padding in the
    export and its weight on the integer grid: ORT matches torch fake-quant."""
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    model = nn.Sequential(
        Conv2dSame(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), Conv2dSame(8, 8, 3, stride=2, bias=True),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    ).eval()  # fmt: skip
    qmodel = calibrate(quantize_(model, _config("w8a8")), lambda m: m(images[:8]))
    assert sum(isinstance(m, QuantLayer) and isinstance(m.layer, Conv2dSame) for m in qmodel.modules()) == 2
    path = export_onnx(qmodel, out / "same.onnx", input_shape=SHAPE)
    g = Graph(path)
    assert len(g.op("Pad")) == 2 and all(g.src(c.input[1]) == "DequantizeLinear" for c in g.op("Conv"))
    r = parity(qmodel, path, images)
    assert r["agreement"] >= 0.99 and r["mean_abs_diff"] <= r["quant_error_mean"]


def test_dynamic_batch(vit, images):
    model, path = vit
    g = Graph(path)
    assert g.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert g.model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    pred = ort_predictor(path)
    for n in (1, 3):
        y = pred(images[:n])
        assert y.shape == (n, 1000) and y.dtype == torch.float32 and torch.isfinite(y).all()
        with torch.no_grad():
            ref = model(images[:n])
            with quantizers_off(model):
                flt = model(images[:n])
        # another batch size means other kernels, hence other rounding-tie flips: same yardstick as parity
        assert (y - ref).abs().mean() <= (ref - flt).abs().mean()


def test_export_mode_restores_modules(vit):
    model, _ = vit
    before = [type(m) for m in model.modules()]
    with pytest.raises(RuntimeError), export_mode(model):
        raise RuntimeError("boom")
    assert [type(m) for m in model.modules()] == before
    assert all(q.mode == "quantize" for q in quantizers(model))


# -- numerics variants --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paper(out: Path) -> tuple[nn.Module, Path]:
    model = _calibrated("test_vit", "w8a8-paper")
    return model, export_onnx(model, out / "paper.onnx", input_shape=SHAPE)


def test_paper_numerics_export_uint8_for_ort(paper, images):
    model, path = paper
    g = Graph(path)
    act = [q for q in g.op("QuantizeLinear") if q.input[0] not in g.consts]
    assert act and all(g.consts[q.input[2]].dtype == np.uint8 for q in act)
    assert any(f.severity == "error" for f in check_onnx(path, target="trt"))
    assert not any(f.severity == "error" for f in check_onnx(path, target="ort"))
    r = parity(model, path, images[:4])
    assert r["mean_abs_diff"] <= r["quant_error_mean"]


def test_w4a8_weights_on_the_4bit_grid(w4):
    model, path = w4
    g = Graph(path)
    weights = [dq for dq in g.op("DequantizeLinear") if dq.input[0] in g.consts]
    assert weights and all(g.consts[dq.input[0]].dtype == np.int8 for dq in weights)
    assert all(np.abs(g.consts[dq.input[0]]).max() <= 8 for dq in weights)
    # minmax ranges: every output channel reaches code +-7 and its scale is amax/7
    conv = next(dq for dq in weights if g.consts[dq.input[0]].ndim == 4)
    w = model.patch_embed.proj.layer.weight.detach().numpy()
    amax = np.abs(w).reshape(w.shape[0], -1).max(1)
    assert np.allclose(g.consts[conv.input[1]], amax / 7, rtol=1e-6)
    assert (np.abs(g.consts[conv.input[0]]).reshape(w.shape[0], -1).max(1) == 7).all()


def test_int4_refused_for_8bit_weights(out, vit):
    with pytest.raises(DfqError, match="4-bit"):
        export_onnx(vit[0], out / "x.onnx", input_shape=SHAPE, int4_weights=True)
