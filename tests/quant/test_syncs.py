"""No host sync in a calibrated fake-quant forward (DESIGN.md §4), counted with :class:`HostSyncCounter`;
and the benchmark that reports the count next to the fake-quant overhead answers ``--help``."""

from __future__ import annotations

import copy
import dataclasses
import doctest
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import dfq.quant.syncs
from dfq.config import QuantConfig, preset
from dfq.quant.calibrate import calibrate
from dfq.quant.modules import QuantLayer, quantizers
from dfq.quant.syncs import HostSyncCounter
from dfq.quant.transform import quantize_

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "fakequant_overhead.py"


def _calibrated(name: str, config: QuantConfig) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    size = model.patch_embed.img_size if hasattr(model, "patch_embed") else (32, 32)
    x = torch.randn(4, 3, *size)
    return calibrate(quantize_(copy.deepcopy(model), config), lambda m: m(x)), x


def test_doctest():
    result = doctest.testmod(dfq.quant.syncs)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("inference", [False, True], ids=["no_grad", "inference_mode"])
def test_the_counter_sees_deliberate_syncs(inference):
    t = torch.tensor([0.5, 2.0])
    mode = torch.inference_mode if inference else torch.no_grad  # inference_mode dispatches them undecomposed
    with mode(), HostSyncCounter() as syncs:
        _ = (t * 2).sum() + 1  # none
    assert syncs.count == 0
    with mode(), HostSyncCounter() as syncs:
        t.sum().item()
        bool(torch.isfinite(t).all())  # the check the quantizer's forward made on every call
        float(t[0])
        t[t > 1]  # boolean mask: a data-dependent size
    assert syncs.count == 4, dict(syncs.ops)


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("test_vit", preset("w8a8")),
        ("test_vit", preset("w4a8", "paper")),
        ("test_resnet", dataclasses.replace(preset("w8a8"), bias_correction="on")),
    ],
    ids=["vit-w8a8", "vit-w4a8-paper", "resnet-bias-correction"],
)
def test_calibrated_fakequant_forward_has_no_host_sync(one_thread, name, config):
    qmodel, x = _calibrated(name, config)
    qs = quantizers(qmodel)
    assert qs and all(q.mode == "quantize" and q.is_calibrated for q in qs)
    if name == "test_resnet":  # the correction path runs too
        assert any(m.bias_correction is not None for m in qmodel.modules() if isinstance(m, QuantLayer))
    with torch.no_grad(), HostSyncCounter() as syncs:
        qmodel(x)
    assert syncs.count == 0, dict(syncs.ops)
    with torch.inference_mode(), HostSyncCounter() as syncs:
        qmodel(x)
    assert syncs.count == 0, dict(syncs.ops)
    # training (QAT, reconstruction): forward and backward through the straight-through estimator
    qmodel.train()
    xg = x.clone().requires_grad_(True)
    with HostSyncCounter() as syncs:
        qmodel(xg).square().mean().backward()
    assert syncs.count == 0, dict(syncs.ops)
    assert xg.grad is not None


def test_benchmark_help_runs():
    out = subprocess.run(
        [sys.executable, str(BENCHMARK), "--help"], capture_output=True, text=True, timeout=120, check=True
    )
    for flag in (
        "--model",
        "--checkpoint",
        "--no-pretrained",
        "--scheme",
        "--batch-size",
        "--threads",
        "--json",
    ):
        assert flag in out.stdout
