"""``dfq bench ort RUN``: how much faster the run's exported Q/DQ graph runs than its float model in
ONNX Runtime on this machine, as ratios measured in one process.

The float model is exported to a temporary FP32 ONNX file (same input shape, opset 17); both graphs
get ORT sessions with the same thread count and are timed *interleaved* (FP32, INT8, FP32, ...) per
batch size (:func:`dfq.export.latency.time_rounds`), after a warm-up. The report holds, per batch,
the median milliseconds of each, ``speedup`` = FP32 / INT8 (above 1: the quantized graph is faster)
and the quartiles of the per-round ratios, plus the machine's load before the timing
and the other busy processes before and after it (:func:`dfq.loadcheck.measure_load`): a speedup
measured on a busy machine is not a figure, and the report says so (``idle``, ``not_idle_because``).

The INT8 graph is timed with ORT's Q/DQ fusion on (its integer kernels, the point of the figure) even
on an x86 CPU without VNNI, where those kernels may saturate and ``dfq eval`` runs the graph unfused
(:func:`dfq.export.runtime.ort_predictor`); the report's ``int8_may_saturate`` says when that is so.
"""

from __future__ import annotations

import statistics
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfq.errors import DfqError

__all__ = ["ort_speedup", "export_float_onnx"]


def export_float_onnx(model: nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    """The float ``model`` as an FP32 ONNX file (opset 17, dynamic batch, input ``input``), the
    baseline a Q/DQ graph is timed against."""
    model = model.cpu().eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(2, *shape),), str(path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    return path


def _float_model(recipe: dict[str, Any], model: nn.Module | None) -> nn.Module:
    from dfq.runs import recipe_float_model

    found = model if model is not None else recipe_float_model(recipe)
    if found is None:
        raise DfqError("this run's model was built in Python: pass it (dfq.jobs.speed.ort_speedup(run, model=...))")
    return found


def ort_speedup(
    run_dir: str | Path,
    batch_sizes: Sequence[int] = (1, 8),
    *,
    threads: int | None = None,
    rounds: int = 7,
    iters: int = 5,
    warmup: int = 2,
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """Time a run's ``model.qdq.onnx`` against its FP32 model in ONNX Runtime (CPU provider).

    Args:
        run_dir: a run directory holding ``model.qdq.onnx`` (``dfq export RUN`` or ``--export onnx``).
        batch_sizes: batches to time, each on random input of the model's shape.
        threads: ORT intra-op threads for both sessions (default: ORT's choice, all cores).
        rounds: interleaved rounds per batch size; the median round is reported.
        iters: calls per round.
        warmup: untimed calls of each session first.
        model: the float architecture of a run built in Python (None: the recipe's timm model).

    Returns:
        ``{"machine_load", "load_before", "idle", "threads", "batches": {"1": {"fp32_ms", "int8_ms",
        "speedup", "speedup_q1_median_q3"}, ...}, "int8_may_saturate"}`` (``machine_load``:
        :func:`dfq.loadcheck.measure_load`'s record, with ``not_idle_because``; ``int8_may_saturate``: the
        timed fused kernels may saturate on this CPU, :func:`dfq.export.runtime.int8_dot_may_saturate`).

    Raises:
        DfqError: no exported graph in the run, onnxruntime missing, a bad batch size (below 1, or larger
            than the host memory).
    """
    from dfq.jobs.export import QDQ_ONNX
    from dfq.jobs.model import check_batch_fits
    from dfq.loadcheck import measure_load, snapshot
    from dfq.models import data_config
    from dfq.runs import read_recipe

    run = Path(run_dir)
    qdq = run / QDQ_ONNX
    if not qdq.is_file():
        raise DfqError(f"{run} has no {QDQ_ONNX}: export it first (dfq export {run})")
    if not batch_sizes or min(batch_sizes) < 1:
        raise DfqError(f"batch sizes must be at least 1, got {list(batch_sizes)}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise DfqError("dfq bench ort needs onnxruntime (pip install onnxruntime)") from e
    from dfq.export.latency import paired_quartiles, time_rounds
    from dfq.export.runtime import int8_dot_may_saturate, ort_predictor

    start = snapshot()  # before this function's own work (export, sessions) raises the load average
    recipe = read_recipe(run)
    fmodel = _float_model(recipe, model)
    size = recipe.get("data_config", {}).get("input_size") or data_config(fmodel)["input_size"]
    shape = tuple(int(s) for s in size)
    check_batch_fits(max(batch_sizes), shape)  # the random input of the largest batch, before any export
    result: dict[str, Any] = {"threads": threads, "rounds": rounds, "iters": iters, "batches": {},
                              "int8_may_saturate": int8_dot_may_saturate()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="dfq-speed-") as tmp:
        fp32 = ort_predictor(export_float_onnx(fmodel, Path(tmp) / "fp32.onnx", shape), threads=threads)
        int8 = ort_predictor(qdq, threads=threads, fuse_qdq=True)
        gen = torch.Generator().manual_seed(0)
        with measure_load(warn=False, start=start) as load:
            for bs in batch_sizes:
                x = torch.randn(bs, *shape, generator=gen)
                t = time_rounds({"fp32": fp32, "int8": int8}, x, rounds=rounds, iters=iters, warmup=warmup)
                f, q = statistics.median(t["fp32"]), statistics.median(t["int8"])
                result["batches"][str(bs)] = {
                    "fp32_ms": round(f * 1e3, 2), "int8_ms": round(q * 1e3, 2), "speedup": round(f / q, 3),
                    "speedup_q1_median_q3": paired_quartiles(t["fp32"], t["int8"]) if rounds > 1 else None,
                }  # fmt: skip
    result.update(machine_load=load, idle=load["idle"], load_before=start)
    return result
