"""The report of a distillation benchmark: the best evaluation of a run, and ``OUT/report.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def best_of(result: Any) -> dict[str, Any] | None:
    """``{"step", top1, agreement, kl, ...}`` of a :class:`dfq.distill.loop.DistillResult`'s best evaluation."""
    return {"step": result.best["step"], **result.best["metrics"]} if result.best else None


def write_report(out: Path, report: dict[str, Any]) -> None:
    """Write ``out/report.json`` and print it without its curves."""
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: v for k, v in report.items() if k not in ("curve", "runs")}, indent=2, default=str))
