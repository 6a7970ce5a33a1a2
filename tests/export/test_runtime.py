"""dfq.export.runtime: ONNX Runtime with optimizations off runs the graph as written; Q/DQ fusion is
off by default only where ORT's fused int8 kernels may saturate."""

from __future__ import annotations

import torch

from dfq.export.runtime import int8_dot_may_saturate, ort_predictor
from dfq.jobs.speed import export_float_onnx
from dfq.quant.calibrate import quantizers_off
from tests.export._helpers import SHAPE


def test_ort_unoptimized_runs_the_graph_as_written(vit, images):
    """optimize=False keeps every Q/DQ node (no fusion into integer kernels) and gives the same numbers up
    to rounding-tie flips, bounded as in the parity tests."""
    model, path = vit
    fused, plain = ort_predictor(path, threads=1), ort_predictor(path, threads=1, optimize=False)
    assert plain.session.get_session_options().graph_optimization_level.name == "ORT_DISABLE_ALL"
    a, b = fused(images[:4]), plain(images[:4])
    with torch.no_grad(), quantizers_off(model):
        flt = model(images[:4])
    assert a.shape == b.shape and (a - b).abs().mean() <= (a - flt).abs().mean()


def test_qdq_fusion_default_follows_the_cpu(vit, images):
    """By default ORT fuses integer Q/DQ except on an x86 CPU without VNNI; fuse_qdq forces either way;
    unfused, the session is close to torch fake-quant on any CPU (measured on test_vit: mean |ORT -
    torch| 0.0012 against a quantization error of 0.0051; fused on an AVX2-only EPYC: 0.0169)."""
    model, path = vit
    auto = ort_predictor(path, threads=1)
    assert auto.qdq_fused is (not int8_dot_may_saturate())
    assert ort_predictor(path, threads=1, fuse_qdq=True).qdq_fused is True
    unfused = ort_predictor(path, threads=1, fuse_qdq=False)
    assert unfused.qdq_fused is False and ort_predictor(path, optimize=False).qdq_fused is False
    with torch.no_grad():
        ref = model(images)
        with quantizers_off(model):
            flt = model(images)
    assert (unfused(images) - ref).abs().mean() <= 0.5 * (ref - flt).abs().mean()


def test_float_graph_has_nothing_to_fuse(tmp_path):
    import timm

    path = export_float_onnx(timm.create_model("test_resnet", pretrained=False), tmp_path / "fp32.onnx", SHAPE)
    assert ort_predictor(path).qdq_fused is False
