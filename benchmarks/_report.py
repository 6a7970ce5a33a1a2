"""The report of a distillation benchmark: its training set, each run's outcome, and ``OUT/report.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def best_of(result: Any) -> dict[str, Any] | None:
    """``{"step", top1, agreement, kl, ...}`` of a :class:`dfq.distill.loop.DistillResult`'s best evaluation."""
    return {"step": result.best["step"], **result.best["metrics"]} if result.best else None


def set_record(calib: Any, path: Path, **extra: Any) -> dict[str, Any]:
    """The training set of a report: method, size, inversion seconds (resumes summed) and path."""
    return {"method": calib.provenance.get("method"), "images": len(calib), "seconds": calib.provenance.get("seconds"),
            "path": str(path), **extra}  # fmt: skip


def run_record(result: Any) -> dict[str, Any]:
    """A run's best evaluation, training seconds (resumes summed), resume point, whether ``patience``
    stopped it early, and its curve."""
    return {"best": best_of(result), "seconds_total": result.seconds, "resumed_from": result.resumed_from,
            "stopped_early": result.stopped_early, "curve": result.curve}  # fmt: skip


def write_report(out: Path, report: dict[str, Any]) -> None:
    """Write ``out/report.json`` and print it without its curves."""
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: v for k, v in report.items() if k not in ("curve", "runs")}, indent=2, default=str))
