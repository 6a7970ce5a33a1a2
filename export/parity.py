"""Parity of an exported graph with the torch fake-quant model it came from (spec: DEPLOYMENT.md §e3).

This module owns :func:`parity`: run the calibrated torch model and the ONNX file (ONNX Runtime) on the
same images and report top-1 agreement, max/mean |Δlogit|, and how the gap compares with the
quantization error itself (torch fake-quant vs the same model with its quantizers off).

Why a gap exists at all: ONNX Runtime fuses ``DQ -> MatMul`` into integer kernels
(``MatMulIntegerToFloat``, ``QLinearMatMul``) whose float rounding differs from torch's by an ulp; a
value sitting within an ulp of a rounding tie then lands on the neighbouring integer code, one
quantization step away. Such flips are rare (a handful per ten million activations), so most images
match to float precision, and the few that do not differ by less than the quantization error
``|fake-quant - float|`` itself; both figures are reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dfq.evaluation import TorchPredictor

__all__ = ["parity", "compare_logits"]


def compare_logits(reference: Tensor, candidate: Tensor) -> dict[str, float]:
    """Agreement and |Δlogit| statistics of ``candidate`` against ``reference`` (both ``(N, C)``)."""
    ref, cand = reference.double(), candidate.double()
    diff = (cand - ref).abs()
    per_image = diff.amax(1)
    tol = 1e-4 * max(ref.abs().max().item(), 1.0)
    top2 = ref.topk(2, dim=1).values if ref.shape[1] > 1 else torch.cat([ref, ref], 1)
    return {
        "agreement": (ref.argmax(1) == cand.argmax(1)).double().mean().item(),
        "max_abs_diff": diff.max().item(),
        "mean_abs_diff": diff.mean().item(),
        "min_top2_margin": (top2[:, 0] - top2[:, 1]).min().item(),
        "float_exact_fraction": (per_image <= tol).double().mean().item(),
    }


def parity(
    model: nn.Module,
    onnx_path: str | Path,
    images: Tensor,
    *,
    providers: Sequence[str] | None = None,
    batch_size: int = 32,
    optimize: bool = True,
    fuse_qdq: bool | None = None,
) -> dict[str, Any]:
    """Compare the torch fake-quant model and its ONNX export on ``images``.

    Args:
        model: the calibrated fake-quant model that was exported.
        onnx_path: the exported file.
        images: CPU float images ``(N, 3, H, W)``.
        providers: ONNX Runtime providers (default CPU).
        batch_size: images per forward.
        optimize: ONNX Runtime's graph optimizations (Q/DQ fused into integer kernels); False runs every
            node as written.
        fuse_qdq: ORT's integer Q/DQ fusion; None: on unless the CPU lacks VNNI
            (:func:`dfq.export.runtime.ort_predictor`).

    Returns:
        ``agreement`` (top-1, fraction), ``max_abs_diff``, ``mean_abs_diff``, ``min_top2_margin`` of
        the torch logits, ``float_exact_fraction`` (images whose logits match to 1e-4 of the logit
        scale, i.e. no rounding-tie flip on the way), ``quant_error_max``/``quant_error_mean`` (|fake-quant - float| in torch),
        ``gap_ratio`` (= mean export gap / mean quantization error), ``providers``, ``qdq_fused`` and ``num_images``.
    """
    from dfq.export.runtime import ort_predictor
    from dfq.quant.calibrate import quantizers_off

    ort_pred = ort_predictor(onnx_path, providers, optimize=optimize, fuse_qdq=fuse_qdq)
    torch_pred = TorchPredictor(model)
    fq, fp, ex = [], [], []
    for chunk in images.split(batch_size):
        fq.append(torch_pred(chunk))
        with quantizers_off(model):
            fp.append(torch_pred(chunk))
        ex.append(ort_pred(chunk))
    ref, flt, out = torch.cat(fq), torch.cat(fp), torch.cat(ex)
    result: dict[str, Any] = compare_logits(ref, out)
    qerr = (ref.double() - flt.double()).abs()
    result["quant_error_max"] = qerr.max().item()
    result["quant_error_mean"] = qerr.mean().item()
    result["gap_ratio"] = result["mean_abs_diff"] / max(result["quant_error_mean"], 1e-12)
    result["providers"] = ort_pred.providers
    result["qdq_fused"] = ort_pred.qdq_fused
    result["num_images"] = int(images.shape[0])
    return result
