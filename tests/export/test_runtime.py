"""dfq.export.runtime: ONNX Runtime with optimizations off runs the graph as written."""

from __future__ import annotations

import torch

from dfq.export.runtime import ort_predictor
from dfq.quant.calibrate import quantizers_off


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
