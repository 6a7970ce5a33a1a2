"""benchmarks/plots.py on small hand-made reports: PNGs for the figures with inputs, a note for the rest."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("matplotlib")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def plots():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("plots")
    finally:
        sys.path.remove(str(BENCHMARKS))


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _row(config: str, kl: float, agreement: float) -> dict:
    return {"config": config, "top1": 0.78, "agreement": agreement, "kl": kl}


def _reports(runs: Path) -> None:
    bench = runs / "bench"
    for name, set_dir in (("fp8-dt-smi", "runs/sets/smi-x"), ("fp8-dt-real", "real: the last 32 sample images")):
        _write(bench / name / "report.json", {"set_dir": set_dir, "calib_images": 32, "scored_images": 468, "rows": [
            _row("float", 0.0, 1.0), _row("int8 w8a8", 0.03, 0.93), _row("fp8 w8a8", 0.02, 0.94)]})  # fmt: skip
        _write(bench / name / "provenance.json", {"started": "2026-12-02 03:40:01 UTC"})
    _write(bench / "modelopt-dt" / "report.json", {"calib_images": 32, "scored_images": 468, "rows": [
        {"source": "smi (smi-x)", "kl": 0.016, "agreement": 0.95}, {"source": "Gaussian noise", "kl": 0.1,
                                                                    "agreement": 0.08}]})  # fmt: skip
    curve = [{"step": s, "top1": 0.1 + s / 1000, "kl": 1.0} for s in (0, 100, 200)]
    for name, method in (("kd-cifar-di", "deepinversion"), ("kd-cifar-noise", "noise")):
        _write(runs / name / "report.json", {"set": {"method": method}, "config": {"mixup": 0.0},
                                             "teacher_metrics": {"top1": 0.93}, "curve": curve,
                                             "machine_load_start": {"time": "2026-12-01T18:01:38+0000"}})  # fmt: skip
    batch = {"fp32_ms": 25.0, "dfq_ms": 17.0, "dfq_ort_ms": 16.5, "ort_static_ms": 21.0, "fp32/dfq": 1.47,
             "fp32/dfq_ort": 1.51, "fp32/ort_static": 1.17, "fp32/dfq_per_round_q1_median_q3": [1.4, 1.45, 1.5]}
    _write(runs / "ort_speed_idle2.json", {"model": "deit_tiny", "threads": 2, "latency": {"batch1": batch},
                                           "machine_load": {"idle": True, "start": {"time": "2026-12-01T15:26"}}})


def test_render_plots_writes_pngs_and_skips_missing_inputs(plots, tmp_path: Path, capsys) -> None:
    runs, out = tmp_path / "runs", tmp_path / "img"
    _reports(runs)  # no runs/sets/*/preview.png: that figure is skipped
    made = plots.render_plots(runs / "bench", out, runs)
    names = sorted(p.name for p in made)
    assert names == ["calibration_sources.png", "kd_curves.png", "ort_latency.png"]
    for path in made:
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) < plots.MAX_BYTES
        with Image.open(path) as im:
            im.verify()
    assert not (out / "smi_preview.png").exists()
    assert "skipped smi_preview.png" in capsys.readouterr().out


def test_preview_is_resized_and_nothing_else_needed(plots, tmp_path: Path) -> None:
    set_dir = tmp_path / "runs" / "sets" / "smi-x"
    set_dir.mkdir(parents=True)
    Image.new("RGB", (8 * 34, 2 * 34), (200, 30, 30)).save(set_dir / "preview.png")
    _write(set_dir / "calibration.json", {"provenance": {"method": "smi", "kept_patches": [196, 46]}})
    made = plots.render_plots(tmp_path / "runs" / "bench", tmp_path / "img", preview_set="smi-x")
    assert [p.name for p in made] == ["smi_preview.png"]
    assert made[0].read_bytes()[:8] == PNG_MAGIC


def test_empty_and_malformed_inputs_skip_without_error(plots, tmp_path: Path, capsys) -> None:
    assert plots.render_plots(tmp_path / "bench", tmp_path / "img") == []
    _write(tmp_path / "bench" / "modelopt-dt" / "report.json", {"rows": [{"source": "smi"}]})  # no kl
    assert plots.render_plots(tmp_path / "bench", tmp_path / "img") == []
    text = capsys.readouterr().out
    assert text.count("plots: skipped") >= 8 and "malformed input (KeyError" in text


def test_curve_panels_read_the_kept_reports_before_the_runs(plots, tmp_path: Path) -> None:
    bench, runs = tmp_path / "reports", tmp_path / "runs"
    curve = [{"step": s, "top1": 0.2, "kl": 1.0} for s in (0, 100)]
    for root, method in ((bench, "deepinversion"), (runs, "noise")):  # the kept CIFAR report, an old run beside it
        _write(root / "kd-cifar-x" / "report.json", {"set": {"method": method}, "config": {}, "curve": curve,
                                                     "teacher_metrics": {"top1": 0.93}})  # fmt: skip
    _write(runs / "qat-dt-a" / "report.json", {"curve": curve, "fp": {"top1": 0.79}})  # no kept QAT report
    panels, notes = plots.curve_panels(bench, runs)
    assert notes == []
    cifar, qat = panels
    assert [line[0] for line in cifar["lines"]] == ["deepinversion"] and cifar["sources"] == [str(bench / "kd-cifar-x")]
    assert qat["sources"] == [str(runs / "qat-dt-a")] and qat["ref"] == ("FP", 79.0)
    assert plots.curve_panels(tmp_path / "none", tmp_path / "none") == ([], [
        "no report.json with a curve for the panel 'CIFAR-10 KD: ResNet-56 -> ResNet-20 (random init)'",
        "no report.json with a curve for the panel 'DeiT-Tiny W4A8 data-free QAT'"])  # fmt: skip
