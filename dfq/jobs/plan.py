"""Precision planning inside the jobs: held-out images, the data-free accuracy estimate, mixed precision.

* :func:`split_holdout`: the calibration images and the held-out ones (never used for calibration);
* :func:`estimate`: agreement and KL to the float model on the held-out images, the number a user
  without data gets instead of an accuracy (it ranks configurations; it is not a top-1);
* :func:`plan_mixed_precision`: per-layer weight widths under an average-width budget, greedy on the
  weight sensitivity measured on the held-out images (:mod:`dfq.quant.sensitivity`), the best of the
  greedy orderings by held-out KL;
* :func:`analysis_record` / :func:`write_analysis`: the sensitivity table as ``analysis.json`` and
  ``analysis.md`` in a run directory (read by ``dfq report``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dfq import atomic
from dfq._progress import show_progress
from dfq.config import QuantConfig
from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.evaluation import batched_logits, classification_metrics
from dfq.quant.sensitivity import (
    ORDERINGS,
    Sensitivity,
    average_weight_bits,
    choose_widths,
    mean_kl,
    sensitivity,
)

__all__ = [
    "DEFAULT_HOLDOUT",
    "ANALYSIS_JSON",
    "ANALYSIS_MD",
    "HOLDOUT_DIR",
    "ESTIMATE_CAVEAT",
    "split_holdout",
    "image_digests",
    "estimate",
    "plan_mixed_precision",
    "widths_config",
    "mixed_precision_record",
    "analysis_record",
    "write_analysis",
]

DEFAULT_HOLDOUT = 8
"""Held-out images of a run without an evaluation folder (made or drawn beside the calibration images)."""
ANALYSIS_JSON = "analysis.json"
ANALYSIS_MD = "analysis.md"
HOLDOUT_DIR = "holdout"
ESTIMATE_CAVEAT = (
    "measured on held-out synthetic images, not on real data: it says how far the quantized model drifts "
    "from the float one on images like the calibration set; use it to rank configurations, not as an accuracy"
)


def image_digests(images: Tensor) -> set[str]:
    """One sha256 per image (to tell whether two sets share images)."""
    return {hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest() for x in images.detach().cpu()}


def split_holdout(
    calib: CalibrationSet, holdout: int, required: bool
) -> tuple[CalibrationSet, CalibrationSet | None]:
    """The first ``len - holdout`` images for calibration and the last ``holdout`` held out.

    Raises:
        DfqError: ``required`` and the set is too small to keep at least one calibration image.
    """
    if holdout <= 0:
        return calib, None
    if len(calib) <= holdout:
        if required:
            raise DfqError(f"--holdout {holdout} leaves no calibration image of the {len(calib)} in the set")
        return calib, None
    return calib.split(len(calib) - holdout)


def estimate(
    quant: nn.Module, fp_logits: Tensor, held: CalibrationSet, source: str, batch_size: int
) -> dict[str, Any]:
    """Agreement and mean KL(FP ‖ quant) on the held-out images (every token: the deployed model sees
    whole images), with their count, source and caveat."""
    logits = batched_logits(quant, held.images, batch_size)
    unlabelled = torch.full((len(held),), -1, dtype=torch.int64)
    m = classification_metrics(logits, unlabelled, reference_logits=fp_logits)
    return {
        "source": source,
        "images": len(held),
        "agreement": m["agreement"],
        "kl": m["kl"],
        "caveat": ESTIMATE_CAVEAT,
    }


def widths_config(config: QuantConfig, widths: dict[str, int]) -> QuantConfig:
    """``config`` with the layers of ``widths`` whose width differs from the scheme's listed in
    ``layer_weight_bits``."""
    low = config.weight.num_bits
    return dataclasses.replace(config, layer_weight_bits=tuple((k, b) for k, b in widths.items() if b != low))


def plan_mixed_precision(
    quant: nn.Module,
    fp_logits: Tensor,
    held: CalibrationSet,
    budget: float,
    build: Callable[[dict[str, int]], nn.Module],
    batch_size: int,
    progress: bool,
) -> tuple[dict[str, int], nn.Module, float, list[Sensitivity], list[dict[str, Any]]]:
    """Weight widths for every quantized layer of ``quant`` within a mean of ``budget`` bits.

    The weight sensitivity of ``quant`` is measured once on the held-out images; each greedy ordering
    of :data:`dfq.quant.sensitivity.ORDERINGS` gives a plan, ``build(widths)`` calibrates it, and the
    plan with the lowest KL on the same held-out images is kept (the orderings disagree where
    quantizers interact; the measured KL decides, still without data).

    Returns:
        ``(widths, model, baseline_kl, rows, candidates)``: the chosen ``{layer: bits}`` and its
        calibrated model, the uniform model's held-out KL, its weight sensitivity rows, and one record
        per distinct plan tried (``by``, ``per_bit``, ``promoted`` layer count, ``average_bits``,
        ``held_kl``, ``chosen``).
    """
    baseline, rows = sensitivity(quant, held.images, fp_logits, ("weight",), batch_size, show_progress(progress))
    numels = {r.name: r.numel for r in rows}
    tried: list[tuple[dict[str, int], nn.Module, dict[str, Any]]] = []
    for by, per_bit in ORDERINGS:
        try:
            widths = choose_widths(rows, budget, baseline, by=by, per_bit=per_bit)
        except ValueError as e:
            raise DfqError(str(e)) from None
        if any(w == widths for w, _, _ in tried):
            continue
        model = build(widths)
        kl = mean_kl(model, held.images, fp_logits, batch_size)
        record = {"by": by, "per_bit": per_bit, "promoted": sum(widths[r.name] != r.bits for r in rows),
                  "average_bits": round(average_weight_bits(numels, widths), 4), "held_kl": kl}  # fmt: skip
        tried.append((widths, model, record))
    best = min(range(len(tried)), key=lambda i: tried[i][2]["held_kl"])
    for i, (_, _, record) in enumerate(tried):
        record["chosen"] = i == best
    widths, model, _ = tried[best]
    return widths, model, baseline, rows, [t[2] for t in tried]


def mixed_precision_record(
    widths: dict[str, int], rows: list[Sensitivity], budget: float, low: int
) -> dict[str, Any]:
    """The report entry of a mixed-precision plan."""
    numels = {r.name: r.numel for r in rows if r.kind == "weight"}
    return {
        "budget": budget,
        "average_bits": round(average_weight_bits(numels, widths), 4),
        "weight_bytes": sum(n * widths[k] for k, n in numels.items()) // 8,
        "eight_bit": sorted(k for k, b in widths.items() if b != low),
        "layers": widths,
    }


def analysis_record(baseline: float, rows: list[Sensitivity], images: dict[str, Any]) -> dict[str, Any]:
    """``analysis.json``: the images measured on, the baseline KL and one row per quantizer."""
    return {"images": images, "baseline_kl": baseline, "rows": [dataclasses.asdict(r) for r in rows]}


def write_analysis(run: Path, record: dict[str, Any]) -> None:
    """Write ``analysis.json`` and a ranked ``analysis.md`` (by KL saved when the quantizer is dropped)."""
    atomic.write_json(run / ANALYSIS_JSON, record)
    base = record["baseline_kl"]
    rows = sorted(record["rows"], key=lambda r: base - r["drop_kl"], reverse=True)
    img = record["images"]
    lines = [
        "# dfq sensitivity analysis",
        "",
        f"KL(FP ‖ quant) on {img.get('count')} held-out images ({img.get('source')}): **{base:.4f}** with every "
        "quantizer on. `alone`: only this quantizer on; `saved`: KL removed when only this one is off.",
        "",
        "| rank | quantizer | kind | bits | weights | alone KL | KL without it | saved |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {i} | {r['name']} | {r['kind']} | {r['bits']} | {r['numel']} | {r['alone_kl']:.4g} | {r['drop_kl']:.4g} "
        f"| {base - r['drop_kl']:.4g} |"
        for i, r in enumerate(rows, 1)
    ]
    atomic.write_text(run / ANALYSIS_MD, "\n".join(lines) + "\n")
