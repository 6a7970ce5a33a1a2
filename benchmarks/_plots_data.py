"""The numbers behind :mod:`plots`' figures, read from the benchmark reports on disk (no matplotlib here).

Every loader returns None (or an empty list) when its reports are missing; :mod:`plots` then prints a
note and skips the figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Report = dict[str, Any]
SOURCES = ("SMI", "DeepInversion", "CMI", "real", "noise")
"""The calibration sources in the order the figures show them."""


def read_json(path: Path) -> Report | None:
    """A JSON file's object, None when the file is absent."""
    return json.loads(path.read_text()) if path.is_file() else None


def source_name(text: str) -> str:
    """The calibration source a report's ``set_dir`` or ``source`` names, in the figures' words.

    >>> [source_name(s) for s in ("runs/sets/smi500-dt-s1", "deepinversion (di200-dt)", "runs/sets/di200-dt",
    ...                           "real: the last 32 sample images (not scored)", "Gaussian noise", "runs/sets/cmi-mb")]
    ['SMI', 'DeepInversion', 'DeepInversion', 'real', 'noise', 'CMI']
    """
    t = text.lower()
    base = t.split(" (")[0].rstrip("/").rsplit("/", 1)[-1]
    if t.startswith("real"):
        return "real"
    if "noise" in t:
        return "noise"
    for prefix, name in (("smi", "SMI"), ("cmi", "CMI"), ("deepinversion", "DeepInversion"), ("di", "DeepInversion")):
        if base.startswith(prefix):
            return name
    return text


def run_date(report: Report, run_dir: Path | None = None) -> str:
    """The day a run started: ``bench.py``'s provenance when there is one, else the report's load record.

    >>> run_date({"machine_load_start": {"time": "2026-12-01T18:01:38+0000"}})
    '2026-12-01'
    >>> run_date({"machine_load": {"start": {"time": "2026-12-01T15:26:11+0000"}}})
    '2026-12-01'
    """
    prov = read_json(run_dir / "provenance.json") if run_dir is not None else None
    if prov and prov.get("started"):
        return str(prov["started"])[:10]
    load = report.get("machine_load_start") or report.get("machine_load", {}).get("start") or {}
    return str(load.get("time", "date unknown"))[:10]


def source_metrics(bench_dir: Path) -> Report | None:
    """``{"series": {quantizer: {source: (kl, agreement)}}, "steps", "dates", "scored", "calib"}`` from the
    ``fp8-dt-*``, ``modelopt-dt`` and ``ort-sets-dt`` reports (DeiT-Tiny); None when none is on disk."""
    series: dict[str, dict[str, tuple[float, float]]] = {}
    steps, dates, scored, calib = [], set(), set(), set()

    def seen(run: Path, r: Report) -> None:
        steps.append(run.name)
        dates.add(run_date(r, run))
        scored.add(r.get("scored_images", 500))
        calib.add(r.get("calib_images", 32))

    for run in sorted(bench_dir.glob("fp8-dt-*")):
        if (r := read_json(run / "report.json")) is None:
            continue
        rows = {row["config"]: row for row in r["rows"]}
        for config, label in (("int8 w8a8", "dfq INT8 W8A8"), ("fp8 w8a8", "dfq FP8 W8A8")):
            if config in rows:
                series.setdefault(label, {})[source_name(r["set_dir"])] = (rows[config]["kl"], rows[config]["agreement"])
        seen(run, r)
    for name, label in (("modelopt-dt", "ModelOpt INT8"), ("ort-sets-dt", "ORT quantize_static INT8")):
        if (r := read_json(bench_dir / name / "report.json")) is None:
            continue
        series[label] = {source_name(row["source"]): (row["kl"], row["agreement"]) for row in r["rows"]}
        seen(bench_dir / name, r)
    if not series:
        return None
    return {"series": series, "steps": steps, "dates": sorted(dates), "scored": sorted(scored), "calib": sorted(calib)}


def _kd_label(r: Report, run: Path) -> str:
    method = r.get("set", {}).get("method", run.name)
    mixup = r.get("config", {}).get("mixup") or 0
    return f"{method} + mixup {mixup:g}" if mixup else str(method)


def curve_panels(bench_dir: Path, runs_dir: Path) -> tuple[list[Report], list[str]]:
    """The KD figure's panels (title, lines of (label, steps, top-1), reference line, sources, dates) and a
    note for each panel left out: CIFAR KD and DeiT-Tiny W4A8 QAT, each from the kept reports
    (``bench_dir/kd-cifar-*``, ``bench_dir/qat-dt*``), else from ``runs_dir``'s runs of the same names."""

    def kept_or_runs(pattern: str) -> list[Path]:
        kept = [p for p in sorted(bench_dir.glob(pattern)) if (p / "report.json").is_file()]
        return kept or [p for p in sorted(runs_dir.glob(pattern)) if (p / "report.json").is_file()]

    groups = (
        ("CIFAR-10 KD: ResNet-56 -> ResNet-20 (random init)", kept_or_runs("kd-cifar-*"), "teacher_metrics",
         "teacher", _kd_label),
        ("DeiT-Tiny W4A8 data-free QAT", kept_or_runs("qat-dt*"), "fp", "FP", lambda r, run: run.name),
    )  # fmt: skip
    panels, notes = [], []
    for title, runs, ref_key, ref_label, label in groups:
        lines, sources, dates, ref = [], [], set(), None
        for run in runs:
            r = read_json(run / "report.json")
            if not r or not r.get("curve"):
                continue
            pts = [(p["step"], 100 * p["top1"]) for p in r["curve"] if p.get("top1") is not None]
            lines.append((label(r, run), [s for s, _ in pts], [t for _, t in pts]))
            sources.append(str(run))
            dates.add(run_date(r, run))
            ref = ref if ref is not None else (r.get(ref_key) or {}).get("top1")
        if not lines:
            notes.append(f"no report.json with a curve for the panel '{title}'")
            continue
        ref_line = None if ref is None else (ref_label, 100 * ref)
        panels.append({"title": title, "lines": lines, "ref": ref_line, "sources": sources, "dates": sorted(dates)})
    return panels, notes


def ort_speed_report(bench_dir: Path, runs_dir: Path) -> tuple[Path, Report, str] | None:
    """The newest ``bench_dir/ort-speed-*/report.json`` (else ``runs/ort_speed_idle2.json``), its report and
    its date; None when neither holds a ``latency`` record."""
    bench = sorted(bench_dir.glob("ort-speed-*/report.json"))
    path = bench[-1] if bench else runs_dir / "ort_speed_idle2.json"
    r = read_json(path)
    if not r or not r.get("latency"):
        return None
    return path, r, run_date(r, path.parent if bench else None)
