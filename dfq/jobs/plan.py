"""Precision planning inside the jobs: held-out images, the data-free accuracy estimate, mixed precision.

* :func:`split_holdout`: the calibration images and the held-out ones (never used for calibration);
* :func:`estimate`: agreement and KL to the float model on the held-out images, the number a user
  without data gets instead of an accuracy (it ranks configurations; it is not a top-1);
* :func:`plan_mixed_precision`: per-layer weight widths under an average-width budget, greedy on the
  weight sensitivity measured on the held-out images (:mod:`dfq.quant.sensitivity`);
* :func:`analysis_record` / :func:`write_analysis`: the sensitivity table as ``analysis.json`` and
  ``analysis.md`` in a run directory (read by ``dfq report``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dfq import atomic
from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.evaluation import batched_logits, classification_metrics
from dfq.quant.sensitivity import Sensitivity, average_weight_bits, choose_widths, sensitivity

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


def plan_mixed_precision(
    quant: nn.Module, fp_logits: Tensor, held: CalibrationSet, budget: float, batch_size: int, progress: bool
) -> tuple[dict[str, int], float, list[Sensitivity]]:
    """Weight widths for every quantized layer of ``quant`` within a mean of ``budget`` bits.

    Returns:
        ``(widths, baseline_kl, rows)``: ``{layer: bits}``, the uniform model's held-out KL, and its
        weight sensitivity rows.
    """
    baseline, rows = sensitivity(quant, held.images, fp_logits, ("weight",), batch_size, progress)
    try:
        widths = choose_widths(rows, budget, baseline)
    except ValueError as e:
        raise DfqError(str(e)) from None
    return widths, baseline, rows


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
