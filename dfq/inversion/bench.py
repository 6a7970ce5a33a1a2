"""Speed of dense vs sparse ViT inversion, measured as ratios in one process (SMI, Hu et al., ICML 2024).

:func:`benchmark_inversion` times one inversion iteration (forward, backward, Adam step, clip) of
DeepInversion-ViT (dense) and of SMI at every sparsity stage of a schedule (kept counts
196/137/95/66/46 for the default schedule on a 224-px /16 ViT), with identical settings: same images,
same loss (CE + TV_l2 on the full image), same jitter, same token-sparse forward
(:func:`dfq.vit.forward_tokens`, dense = no gather). It weights the per-stage times by how many of
the ``iterations`` fall in each stage, which gives the whole-run speedup the paper reports (Table 1/3).

FLOPs per iteration are counted with :class:`dfq.flops.FlopCount` (``FlopCounterMode`` plus formulas
for every SDPA kernel): plain ``FlopCounterMode`` knows no formula for the CPU's fused attention
kernel, so with timm's fused attention it left the attention matmuls, the term that falls with the
square of the kept count, out of ``flops_per_it`` and ``flops_ratio``. The count is the attention's
arithmetic (forward ``q @ k^T`` and ``p @ v``, backward the four gradient matmuls), the same whichever
kernel runs, fused or not, and on the ``meta`` device. Per image and iteration (the model is frozen,
so the backward computes input gradients only, one matmul per forward matmul of a linear layer, two
per attention matmul), with ``T = k + 1`` tokens of width ``D`` and an MLP ratio of 4, that is
``depth·(48·T·D² + 12·T²·D)`` for the blocks plus twice the dense patch embedding and twice the
classifier on the CLS token (``tests/inversion/test_bench.py`` checks DeiT-Base against it). An
attention op without a formula (a kernel a later torch adds) is reported with a warning.

Peak memory is ``torch.cuda.max_memory_allocated`` per stage on CUDA; on the CPU it is reported as
``None`` (process RSS deltas are dominated by the allocator's caching and are not comparable).
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfq.errors import DfqError
from dfq.flops import FlopCount
from dfq.inversion import priors
from dfq.inversion._loop import frozen_eval, pixel_bounds
from dfq.inversion.smi import DEFAULT_SCHEDULE, kept_counts, patch_grid, remap_index
from dfq.loadcheck import measure_load
from dfq.vit import check_model, forward_tokens

__all__ = ["benchmark_inversion"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark_inversion(
    model: nn.Module,
    *,
    batch_size: int,
    iterations: int = 4000,
    schedule: tuple[tuple[int, float], ...] = DEFAULT_SCHEDULE,
    device: str | torch.device = "cpu",
    warmup: int = 2,
    steps_per_stage: int = 3,
    amp: bool = False,
    tv_l2: float = 1e-4,
    lr: float = 0.25,
    check_load: bool = True,
    load_start: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Time dense DeepInversion-ViT and SMI iterations at each sparsity stage.

    Args:
        model: a timm CLS ViT (random weights are fine: the cost does not depend on them).
        batch_size: images per iteration.
        iterations: length of the run the schedule belongs to (weights the stages).
        schedule: SMI prune schedule ``((iteration, ratio), ...)``.
        device: where to run.
        warmup: untimed iterations before each timed stage.
        steps_per_stage: timed iterations per stage.
        amp: bf16 autocast on CUDA.
        tv_l2: TV weight of the timed loss.
        lr: Adam learning rate of the timed step.
        check_load: record the load average and busy processes before and after the timed stages
            (:func:`dfq.loadcheck.measure_load`, ~2 s) and warn when the machine was not idle.
        load_start: :func:`dfq.loadcheck.snapshot` taken before the caller's own work (model
            build), whose load average is the one judged.

    Returns:
        A JSON-able dict: ``dense`` and ``stages`` (each with ``kept_patches``, ``seconds_per_it``,
        ``it_per_s``, ``flops_per_it``, ``peak_memory_bytes``, ``iterations_in_run``), the
        whole-run ``smi_seconds_total`` / ``dense_seconds_total``, their per-iteration averages,
        ``speedup`` (dense total / SMI total), ``flops_ratio`` (same, for FLOPs) and
        ``machine_load`` (``idle``, ``not_idle_because``, the ``before``/``after`` snapshots; None
        without ``check_load``).

    Raises:
        DfqError: bad arguments (a schedule outside ``[1, iterations)``).
    """
    check_model(model)
    if batch_size < 1 or steps_per_stage < 1 or warmup < 0:
        raise DfqError("--batch-size and --steps-per-stage must be >= 1, --warmup >= 0")
    its = [it for it, _ in schedule]
    if any(not 1 <= it < iterations for it in its) or its != sorted(set(its)):
        raise DfqError(f"schedule iterations must be strictly increasing in [1, {iterations}) (--iterations), got {its}")
    device = torch.device(device)
    from dfq.models import data_config

    dcfg = data_config(model)
    input_size = tuple(dcfg["input_size"])
    grid_h, grid_w, patch = patch_grid(model, input_size)  # type: ignore[arg-type]
    counts = kept_counts(grid_h * grid_w, schedule)
    bounds = [0, *its, iterations]
    lo, hi = pixel_bounds(dcfg["mean"], dcfg["std"], device)
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(int(model.num_classes), (batch_size,), generator=gen).to(device)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")
    jitter = input_size[-1] // 8
    model = model.to(device)

    def make_keep(k: int) -> Tensor | None:
        if k == grid_h * grid_w:
            return None
        rows = [
            torch.randperm(grid_h * grid_w, generator=gen)[:k].sort().values + 1 for _ in range(batch_size)
        ]
        return torch.cat([torch.zeros(batch_size, 1, dtype=torch.long), torch.stack(rows)], 1).to(device)

    def measure(keep: Tensor | None, sparse: bool) -> dict[str, Any]:
        x = torch.randn((batch_size, *input_size), generator=gen).to(device).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr, betas=(0.5, 0.99))

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            x_in, (dy, dx, flipped) = priors.random_jitter_flip(x, jitter, 0.5, generator=gen)
            fwd_keep = None if keep is None else remap_index(keep, dy, dx, flipped, grid_h, grid_w, patch)
            with autocast:
                logits = forward_tokens(model, x_in, fwd_keep, validate=False) if sparse else model(x_in)
            loss = F.cross_entropy(logits.float(), labels) + tv_l2 * priors.tv_l2(x)
            loss.backward()
            opt.step()
            with torch.no_grad():
                torch.clamp_(x, lo, hi)

        for _ in range(warmup):
            step()
        with FlopCount() as flops:
            step()
        if flops.uncounted:
            warnings.warn(
                f"flops_per_it leaves out {', '.join(flops.uncounted)} (no FLOP formula)", stacklevel=3
            )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps_per_stage):
            step()
        _sync(device)
        seconds = (time.perf_counter() - start) / steps_per_stage
        return {
            "kept_patches": grid_h * grid_w if keep is None else keep.shape[1] - 1,
            "seconds_per_it": seconds,
            "it_per_s": 1.0 / seconds,
            "flops_per_it": flops.total,
            "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device))
            if device.type == "cuda"
            else None,
        }

    load_record = measure_load(start=load_start) if check_load else nullcontext(None)
    with frozen_eval(model), load_record as load:
        dense = measure(None, sparse=False)
        dense["iterations_in_run"] = iterations
        stages = []
        for i, k in enumerate(counts):
            stage = measure(make_keep(k), sparse=True)
            stage["iterations_in_run"] = bounds[i + 1] - bounds[i]
            stage["first_iteration"] = bounds[i]
            stages.append(stage)
    smi_total = sum(s["seconds_per_it"] * s["iterations_in_run"] for s in stages)
    smi_flops = sum(s["flops_per_it"] * s["iterations_in_run"] for s in stages)
    dense_total = dense["seconds_per_it"] * iterations
    return {
        "model": type(model).__name__,
        "device": str(device),
        "batch_size": batch_size,
        "input_size": list(input_size),
        "iterations": iterations,
        "schedule": [list(p) for p in schedule],
        "amp": bool(amp and device.type == "cuda"),
        "steps_per_stage": steps_per_stage,
        "memory_note": "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "not measured on CPU (None)",
        "machine_load": load,
        "dense": dense,
        "stages": stages,
        "dense_seconds_total": dense_total,
        "smi_seconds_total": smi_total,
        "dense_seconds_per_it": dense["seconds_per_it"],
        "smi_seconds_per_it": smi_total / iterations,
        "speedup": dense_total / smi_total if smi_total > 0 else math.inf,
        "flops_ratio": dense["flops_per_it"] * iterations / smi_flops if smi_flops else math.inf,
    }
