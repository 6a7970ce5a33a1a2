"""``dfq analyze RUN``: per-layer (and per-site) sensitivity of a run on held-out images.

The images are the run's own held-out set (``RUN/holdout``, written by ``dfq calibrate``) or a saved
set given with ``--images``; never the run's calibration images. The FP logits are computed once: the
run's float weights with every quantizer off, or the float model of the recipe where reconstruction
or QAT moved the weights. The table goes to ``RUN/analysis.json`` and ``RUN/analysis.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dfq._progress import show_progress
from dfq.data import CalibrationSet
from dfq.devices import check_device
from dfq.errors import DfqError
from dfq.jobs.plan import ANALYSIS_JSON, HOLDOUT_DIR, analysis_record, image_digests, write_analysis

__all__ = ["AnalyzeRequest", "run_analyze"]


@dataclass(frozen=True)
class AnalyzeRequest:
    """``dfq analyze``: the run, the images (None: ``RUN/holdout``), which quantizers, batch, device."""

    run: str
    images: str | None = None
    sites: bool = False
    batch_size: int = 32
    device: str | None = None
    limit: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise DfqError("--batch-size must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise DfqError("--limit must be at least 1")
        if self.device is not None:  # a free string on the command line: cpu:-1, cuda:x, meta, ...
            try:
                kind = torch.device(self.device).type
            except (RuntimeError, ValueError):
                kind = None
            if kind not in ("cpu", "cuda"):
                raise DfqError(f"--device {self.device!r} is not a device to measure on; use cpu, cuda or cuda:N")


def _images(request: AnalyzeRequest, run: Path) -> tuple[CalibrationSet, str]:
    from dfq.runs import CALIBRATION_DIR

    if request.images is not None:
        held, source = CalibrationSet.load(request.images), f"set {request.images}"
        calib = CalibrationSet.load(run / CALIBRATION_DIR)
        if image_digests(held.images) & image_digests(calib.images):
            raise DfqError(f"--images {request.images} holds the run's calibration images; analyze on held-out images")
    elif (run / HOLDOUT_DIR).is_dir():
        held = CalibrationSet.load(run / HOLDOUT_DIR)
        source = str(held.provenance.get("method") or "held-out images")
    else:
        raise DfqError(f"{run} has no held-out images ({HOLDOUT_DIR}/); pass --images SET, a set not used for calibration")
    return held, source


def run_analyze(request: AnalyzeRequest) -> dict[str, Any]:
    """Measure the run's sensitivity, write ``analysis.json``/``analysis.md`` into it, return the record.

    Raises:
        DfqError: not a run directory, no held-out images, images the run was calibrated on.
    """
    from dfq.evaluation import batched_logits
    from dfq.jobs.evaluate import float_reference
    from dfq.quant.sensitivity import sensitivity
    from dfq.runs import load, read_recipe

    run = Path(request.run)
    recipe = read_recipe(run)
    if "quant" not in recipe:
        raise DfqError(f"{run} holds no quantized model (a distilled float student?); analyze a calibrated run")
    held, source = _images(request, run)
    if request.limit is not None:
        held = held if len(held) <= request.limit else held.split(request.limit)[0]
    dev = torch.device(check_device(request.device))
    net = load(run, device=dev)
    reference = batched_logits(float_reference(recipe, net, dev), held.images, request.batch_size)
    kinds = ("weight", "act") if request.sites else ("weight",)
    baseline, rows = sensitivity(net, held.images, reference, kinds, request.batch_size, show_progress(request.progress))
    record = analysis_record(baseline, rows, {"source": source, "count": len(held)})
    write_analysis(run, record)
    record["written"] = str(run / ANALYSIS_JSON)
    return record
