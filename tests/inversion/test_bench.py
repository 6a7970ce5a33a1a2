"""dfq.inversion.bench: per-stage FLOPs of an inversion iteration against a count by hand (timm
``test_vit``, and DeiT-Base on the meta device), and the bookkeeping of the measured seconds."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from dfq.inversion.bench import benchmark_inversion
from tests.inversion._vit import _test_vit

pytestmark = pytest.mark.usefixtures("one_thread")


def _iteration_flops(
    kept: int, *, batch: int, patches: int, patch: int, dim: int, hidden: int, depth: int, classes: int
) -> int:
    """Matmul/conv FLOPs of one bench iteration of a CLS ViT by hand (a multiply-add counts 2).

    Forward, per image: the patch-embedding conv on every patch (``2·N·D·3p²``), then per block on
    ``T = kept + 1`` tokens the linears qkv (``2·T·D·3D``), proj (``2·T·D·D``), fc1 and fc2
    (``2·T·D·H`` each) and the attention matmuls ``q @ k^T`` and ``attn @ v`` (``2·T·T·D`` each,
    summed over heads), and the classifier on the CLS token (``2·D·C``). Backward: the model is frozen
    and only the image is optimised, so every linear and the conv compute their input gradient only
    (one matmul, as many FLOPs as forward) while each attention matmul needs the gradients of both
    operands (twice its forward).
    """
    t = kept + 1
    embed = 2 * patches * dim * 3 * patch * patch
    linears = 2 * t * dim * (3 * dim + dim + 2 * hidden)
    attention = 2 * (2 * t * t * dim)
    head = 2 * dim * classes
    forward = embed + depth * (linears + attention) + head
    backward = embed + depth * (linears + 2 * attention) + head
    return batch * (forward + backward)


@pytest.mark.parametrize("fused", [True, False])
def test_benchmark_inversion_reports_consistent_stages(fused: bool) -> None:
    model = _test_vit()
    for blk in model.blocks:
        blk.attn.fused_attn = fused  # the CPU's fused SDPA kernel or timm's unfused attention
    report = benchmark_inversion(
        model, batch_size=1, iterations=20, schedule=((2, 0.3), (4, 0.3)), warmup=0, steps_per_stage=1,
        check_load=fused,  # the load record costs ~2 s: once is enough
    )
    if fused:  # the machine's load around the timed stages is recorded (whatever it was)
        load = report["machine_load"]
        assert load["idle"] == (load["not_idle_because"] == []) and len(load["before"]["loadavg"]) == 3
    else:
        assert report["machine_load"] is None
    stages = report["stages"]
    assert [s["kept_patches"] for s in stages] == [100, 70, 49]
    assert [s["iterations_in_run"] for s in stages] == [2, 2, 16]
    flops = [s["flops_per_it"] for s in stages]
    # test_vit: 16-px patches, width 64, MLP 192, 6 blocks, 10 classes; attention counted on both paths
    arch = {"batch": 1, "patches": 100, "patch": 16, "dim": 64, "hidden": 192, "depth": 6, "classes": 10}
    assert flops == [_iteration_flops(k, **arch) for k in (100, 70, 49)]
    assert report["dense"]["flops_per_it"] == flops[0]
    assert flops[0] > flops[1] > flops[2] > 0
    # the seconds are whatever this machine measured: only their bookkeeping is checked, never a speedup
    seconds = [s["seconds_per_it"] for s in (report["dense"], *stages)]
    assert all(math.isfinite(s) and s > 0 for s in seconds)
    total = sum(s["seconds_per_it"] * s["iterations_in_run"] for s in stages)
    assert report["smi_seconds_total"] == pytest.approx(total)
    assert report["speedup"] == pytest.approx(report["dense"]["seconds_per_it"] * 20 / total)
    assert report["dense"]["peak_memory_bytes"] is None  # CPU: not measured
    weighted = sum(f * s["iterations_in_run"] for f, s in zip(flops, stages, strict=True))
    assert report["flops_ratio"] == pytest.approx(flops[0] * 20 / weighted) and report["flops_ratio"] > 1


def test_benchmark_inversion_deit_base_flops_by_hand() -> None:
    """DeiT-Base's per-stage FLOPs of the default SMI schedule (kept 196/137/95/66/46) against the
    formula by hand, within 1%. Built and run on the ``meta`` device: shapes only, no arithmetic,
    so the 86M-parameter model costs seconds (the meta device takes SDPA's math path; the test above
    checks that the fused CPU kernel counts the same)."""
    with torch.device("meta"):
        model = timm.create_model("deit_base_patch16_224", pretrained=False)
    report = benchmark_inversion(model, batch_size=2, device="meta", warmup=0, steps_per_stage=1, check_load=False)
    stages = report["stages"]
    kept = [196, 137, 95, 66, 46]
    assert [s["kept_patches"] for s in stages] == kept
    assert [s["iterations_in_run"] for s in stages] == [50, 50, 100, 100, 3700]
    arch = {"batch": 2, "patches": 196, "patch": 16, "dim": 768, "hidden": 3072, "depth": 12, "classes": 1000}
    by_hand = [_iteration_flops(k, **arch) for k in kept]
    assert [s["flops_per_it"] for s in stages] == pytest.approx(by_hand, rel=1e-2)
    assert report["dense"]["flops_per_it"] == pytest.approx(by_hand[0], rel=1e-2)
    ratio = by_hand[0] * 4000 / sum(f * s["iterations_in_run"] for f, s in zip(by_hand, stages, strict=True))
    assert report["flops_ratio"] == pytest.approx(ratio, rel=1e-2)
