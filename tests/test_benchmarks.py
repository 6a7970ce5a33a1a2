"""The scripts in ``benchmarks/`` (the runs themselves need the shared assets): every script answers
``--help``, the doctests of their helpers pass, and the export verdict of ``export_accuracy.py`` holds on
hand-made rows. The scripts import their siblings (``_assets``) from their own folder, as they do when run."""

from __future__ import annotations

import doctest
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))
DOCTESTED = sorted(p.stem for p in BENCHMARKS.glob("*.py") if ">>>" in p.read_text())


@pytest.fixture(scope="module", autouse=True)
def _on_path() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    yield
    sys.path.remove(str(BENCHMARKS))


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script: str) -> None:
    """Each script parses ``--help`` from the repository root: its imports resolve and its CLI is built."""
    r = subprocess.run(
        [sys.executable, str(Path("benchmarks") / script), "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith(f"usage: {script}"), r.stdout[:200]


@pytest.mark.parametrize("name", DOCTESTED)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_export_verdict_bounds_and_noise() -> None:
    ea = importlib.import_module("export_accuracy")
    # the floor is the lower reproducibility yardstick, capped at 99%, minus one point
    assert ea.verdict(0.99, 1.0, 1.0, 1.0, (0.0, 0.0))["bound"] == 0.98
    assert ea.verdict(0.95, 0.97, 0.96, 1.0, (0.0, 0.0))["bound"] == 0.95
    assert ea.verdict(0.95, 0.97, 0.96, 1.0, (0.0, 0.0))["pass"]
    assert not ea.verdict(0.9499, 0.97, 0.96, 1.0, (0.0, 0.0))["agreement"]
    assert not ea.verdict(1.0, 1.0, 1.0, 1.0, (0.001, 0.002))["kl_within_noise"]


def test_paired_noise_on_hand_made_logits() -> None:
    ea = importlib.import_module("export_accuracy")
    labels = torch.arange(6) % 3
    fp = torch.nn.functional.one_hot(labels, 3).float() * 4
    same = fp.clone()
    p, (lo, hi) = ea.paired_noise(same, same.clone(), labels, fp)
    assert p == 1.0 and lo == hi == 0.0
    # ORT wrong on all 6 images where torch is right: McNemar p = 2 / 2**6
    wrong = torch.roll(fp, 1, dims=1)
    p, (lo, hi) = ea.paired_noise(same, wrong, labels, fp)
    assert p == pytest.approx(2 / 64) and lo > 0


def test_nonfinite_ort_output_fails_the_row() -> None:
    """A graph that outputs NaN must get a FAIL verdict, not crash the table."""
    ea = importlib.import_module("export_accuracy")
    labels = torch.arange(6) % 3
    fp = torch.nn.functional.one_hot(labels, 3).float() * 4
    broken = fp.clone()
    broken[2] = float("nan")
    assert ea._metrics(broken, labels, fp)["kl"] != ea._metrics(broken, labels, fp)["kl"]  # NaN
    p, ci = ea.paired_noise(fp, broken, labels, fp)
    assert not ea.verdict(1.0, 1.0, 1.0, p, ci)["kl_within_noise"]


def test_bench_tables_render_hand_made_reports(tmp_path: Path) -> None:
    tables = importlib.import_module("_tables")
    prov = {"command": "python benchmarks/fp8.py", "started": "2026-12-02 03:00:00 UTC", "seconds": 60.0,
            "load_at_start": 0.2, "machine": "2 CPU cores", "versions": {"torch": "2.9"}}  # fmt: skip
    rows = [{"config": "float", "top1": 0.792, "agreement": 1.0, "kl": 0.0},
            {"config": "int8 w8a8", "top1": 0.79, "agreement": 0.94, "kl": 0.0293},
            {"config": "fp8 w8a8", "top1": 0.8, "agreement": 0.944, "kl": 0.0184}]  # fmt: skip
    for step in tables.TABLES["fp8"][0]:
        (tmp_path / step).mkdir()
        report = {"model": "deit_tiny", "set_dir": "runs/sets/x", "calib_images": 32, "rows": rows}
        (tmp_path / step / "report.json").write_text(json.dumps(report))
        (tmp_path / step / "provenance.json").write_text(json.dumps(prov))
    out = tables.render_tables(tmp_path)
    assert set(out) == {"fp8"}  # the toolkit tables' steps have not run
    assert "| DeiT-Tiny | 32 of `runs/sets/x` | 500 | 79.2 | 79.0 / 0.940 / 0.0293 | 80.0 / 0.944 / 0.0184 |" in out["fp8"]
    assert out["fp8"].count("`python benchmarks/fp8.py` — 2026-12-02 03:00:00 UTC") == 6
    bench = importlib.import_module("bench")
    text = "x\n<!-- bench:fp8 -->\nold\n<!-- /bench:fp8 -->\n<!-- bench:modelopt -->\nkept\n<!-- /bench:modelopt -->\n"
    new, stale = bench.render(text, out)
    assert "old" not in new and "80.0 / 0.944" in new and "kept" in new and stale == ["modelopt"]


def test_fp8_gemm_scales_are_dequantization_scales() -> None:
    """The GPU script's GEMMs on the CPU (torch runs ``_scaled_mm`` there too): each FP8 product equals the
    float64 product of the dequantized E4M3 operands up to bf16 output rounding, and is near the float one."""
    fg = importlib.import_module("fp8_gemm")
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(40, 64, generator=g), torch.randn(48, 64, generator=g) * 0.125
    fns = fg.gemms(x, w)
    sx, sw = x.abs().amax() / 448, w.abs().amax() / 448
    deq = (fg.to_fp8(x, sx).double() * sx.double()) @ (fg.to_fp8(w, sw).double() * sw.double()).t()
    torch.testing.assert_close(fns["fp8"]().double(), deq, rtol=1e-2, atol=1e-2 * deq.abs().max().item())
    torch.testing.assert_close(fns["fp8_with_cast"](), fns["fp8"]())
    ref = x.double() @ w.double().t()
    for name in ("fp8", "fp8_rowwise"):
        err = float((fns[name]().double() - ref).norm() / ref.norm())
        assert 0.005 < err < 0.06, (name, err)  # E4M3's 3 mantissa bits: a few percent, never exact
    assert float((fns["bf16"]().double() - ref).norm() / ref.norm()) < 0.01
