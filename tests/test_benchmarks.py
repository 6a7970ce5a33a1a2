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


def test_bench_steps_cover_every_table() -> None:
    """Every step a table reads is a step of ``make bench``, named once, and its command is fully formatted."""
    bench, tables = importlib.import_module("bench"), importlib.import_module("_tables")
    names = [s.name for s in bench.STEPS]
    assert len(names) == len(set(names))
    assert {s for steps, _ in tables.TABLES.values() for s in steps} <= set(names)
    for step in bench.STEPS:
        assert not any("{" in a for a in step.command(Path("runs/bench") / step.name)), step.name


def test_spearman_on_hand_ranked_values() -> None:
    from dfq.stats import spearman
    # ranks (1, 2, 3, 4, 5) against (2, 1, 4, 3, 5): sum d^2 = 4, rho = 1 - 6 * 4 / (5 * 24) = 0.8
    assert spearman([0.1, 0.2, 0.3, 0.4, 0.5], [2.0, 1.0, 40.0, 30.0, 50.0]) == 0.8
    assert spearman([3.0, 2.0, 1.0], [0.1, 0.2, 0.3]) == -1.0
    # a tie takes the mean of its ranks: (1, 2.5, 2.5, 4) against (1, 2, 3, 4): Pearson 4.5 / sqrt(4.5 * 5)
    assert spearman([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]) == round(4.5 / (4.5 * 5) ** 0.5, 6)


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


def test_ablate_steps_run_every_variant_the_tables_show() -> None:
    bench, extra = importlib.import_module("bench"), importlib.import_module("_tables_extra")
    ablate = importlib.import_module("ablate")
    steps = {s.name: s.args for s in bench.STEPS}
    dt = set(steps["ablate-dt"]) | set(ablate.NOISE_STUDY)  # --study noise-placement adds its variants
    assert set(extra.DT_VARIANTS) <= dt
    assert {"w8a8-paper:calib=noise" + (f",drop={d}" if d else "") for d in extra.NOISE_PLACEMENT} <= dt
    assert set(extra.MB_VARIANTS) - {"api"} <= set(steps["ablate-mb"])
    for variant in [*extra.DT_VARIANTS, *set(extra.MB_VARIANTS) - {"api"}]:
        ablate.parse_variant(variant)  # each one is a valid variant


def test_bench_cli_step_report_is_its_printed_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``dfq`` step runs ``python -m dfq.cli``; what it prints is its report, and output that is not JSON
    fails the step without a report."""
    bench = importlib.import_module("bench")
    step = bench.Step("inv", "dfq", ("bench", "inversion", "--model", "deit_base", "--json"))
    assert step.command(Path("o"))[1:4] == ["-m", "dfq.cli", "bench"]
    assert step.shown(Path("o")) == "dfq bench inversion --model deit_base --json"

    class Printing(bench.Step):
        def command(self, out: Path) -> list[str]:
            return [sys.executable, "-c", f"print({self.args[0]!r}); import sys; print('progress', file=sys.stderr)"]

    monkeypatch.setattr(bench, "BENCH_DIR", tmp_path)
    monkeypatch.setattr(bench, "REPORTS", tmp_path / "kept")
    assert bench.run_step(Printing("good", "dfq", ('{"speedup": 4.5}',)), redo=False)
    assert json.loads((tmp_path / "good" / "report.json").read_text()) == {"speedup": 4.5}
    assert json.loads((tmp_path / "kept" / "good" / "report.json").read_text()) == {"speedup": 4.5}  # kept in git
    assert (tmp_path / "kept" / "good" / "provenance.json").exists()
    assert bench.run_step(Printing("good", "dfq", ("not json",)), redo=False)  # kept: not run again
    assert "progress" in (tmp_path / "good" / "log.txt").read_text()
    provenance = json.loads((tmp_path / "good" / "provenance.json").read_text())
    assert "load_at_start" in provenance and "resumed" not in provenance  # no checkpoint was there to continue
    assert not bench.run_step(Printing("bad", "dfq", ("usage: dfq ...",)), redo=False)
    assert not (tmp_path / "bad" / "report.json").exists() and not (tmp_path / "kept" / "bad").exists()
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "qat.ckpt").write_bytes(b"")  # a stopped run's checkpoint: this process continues it
    assert bench.run_step(Printing("again", "dfq", ('{"speedup": 4.5}',)), redo=False)
    assert json.loads((tmp_path / "kept" / "again" / "provenance.json").read_text())["resumed"] is True


def test_pending_runs_set_steps_only_for_steps_still_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh checkout with every report kept runs nothing; a step without one pulls in the set steps it
    reads, through merged sets, and not the others."""
    bench = importlib.import_module("bench")
    monkeypatch.setattr(bench, "REPORTS", tmp_path / "kept")
    a = bench.Step("set-a", "make_set.py", ("--out", "runs/sets/nowhere-a"))
    b = bench.Step("set-b", "make_set.py", ("--out", "runs/sets/nowhere-b"))
    ab = bench.Step("set-ab", "merge_sets.py", ("runs/sets/nowhere-ab", "runs/sets/nowhere-a", "runs/sets/nowhere-b"))
    use_ab = bench.Step("use-ab", "reconstruct.py", ("--set-dir", "runs/sets/nowhere-ab", "--out", "{out}"))
    use_b = bench.Step("use-b", "precision.py", ("estimate", "--model-set", "m=runs/sets/nowhere-b", "--out", "{out}"))
    steps = (a, b, ab, use_ab, use_b)
    assert bench.pending(steps, set()) == {"set-a", "set-b", "set-ab", "use-ab", "use-b"}
    (tmp_path / "kept" / "use-ab").mkdir(parents=True)
    (tmp_path / "kept" / "use-ab" / "report.json").write_text("{}")
    assert bench.pending(steps, set()) == {"set-b", "use-b"}  # `--model-set m=DIR` reads b
    (tmp_path / "kept" / "use-b").mkdir()
    (tmp_path / "kept" / "use-b" / "report.json").write_text("{}")
    assert bench.pending(steps, set()) == set()
    assert bench.pending(steps, {"use-ab"}) == {"set-a", "set-b", "set-ab", "use-ab"}


def test_adopted_report_keeps_its_recorded_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--adopt STEP=DIR`` takes a hand-made run's report with a provenance built from what it recorded."""
    bench = importlib.import_module("bench")
    monkeypatch.setattr(bench, "BENCH_DIR", tmp_path / "bench")
    monkeypatch.setattr(bench, "REPORTS", tmp_path / "kept")
    src = tmp_path / "runs" / "rec"
    src.mkdir(parents=True)
    report = {"machine_load_start": {"time": "2026-12-02T05:27:27+0000", "loadavg": [2.0, 2.2, 2.4]},
              "wall": {"set_or_load": 0.5, "reconstruct_this_process": 400.0}}  # fmt: skip
    (src / "report.json").write_text(json.dumps(report))
    step = next(s for s in bench.STEPS if s.name == "rec-mb-cmi96")
    bench.adopt(step, src)
    prov = json.loads((tmp_path / "bench" / "rec-mb-cmi96" / "provenance.json").read_text())
    assert prov["started"] == "2026-12-02T05:27:27+0000" and prov["load_at_start"] == 2.0 and prov["seconds"] == 400.5
    assert prov["command"].endswith(f"--out {src}") and prov["adopted_from"] == str(src)
    assert json.loads((tmp_path / "kept" / "rec-mb-cmi96" / "provenance.json").read_text()) == prov
    # distill_probe.py records one total per training-set size: the wall time is their sum
    probe = {"machine_load_start": report["machine_load_start"], "runs": [{"seconds_total": 304.2}, {"seconds_total": 318.0}]}
    (src / "report.json").write_text(json.dumps(probe))
    bench.adopt(next(s for s in bench.STEPS if s.name == "probe-dt"), src)
    assert json.loads((tmp_path / "bench" / "probe-dt" / "provenance.json").read_text())["seconds"] == 622.2
    (src / "report.json").write_text("{}")
    with pytest.raises(SystemExit, match="records no start"):
        bench.adopt(step, src)


def test_estimate_model_set_refuses_a_bad_pair(tmp_path: Path) -> None:
    """``precision.py estimate --model-set`` takes MODEL=DIR for a known model; anything else is one error line."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "precision.py"), "estimate", "--model-set", "vit=runs/x",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert done.returncode != 0 and done.stderr.strip().startswith("error: --model-set takes MODEL=DIR")
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_reconstruct_refuses_a_negative_range_images(tmp_path: Path) -> None:
    """``reconstruct.py --range-images -1`` is one error line, before anything is loaded or written."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "reconstruct.py"), "--range-images", "-1",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert done.returncode != 0 and done.stderr.strip().startswith("error: --range-images takes 0 (all)")
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_adopt_refuses_a_missing_report(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench.py"), "--render-only", "--file", str(tmp_path / "B.md"),
                           "--adopt", f"rec-dt={tmp_path / 'none'}"], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert done.returncode != 0 and done.stderr.strip().startswith("error: --adopt takes STEP=DIR")
    assert len(done.stderr.strip().splitlines()) == 1


def test_calib_variance_resumes_only_its_own_partial(tmp_path: Path) -> None:
    cv = importlib.import_module("calib_variance")
    key = {"sources": ["di=runs/sets/a", "real=real"], "model": "deit_tiny", "subset": 16, "draws": 8}
    rows = [{"source": "di", "draw": "all", "images": 32, "top1": 0.79, "agreement": 0.93, "kl": 0.03},
            {"source": "di", "draw": 0, "images": 16, "top1": 0.78, "agreement": 0.92, "kl": 0.04}]  # fmt: skip
    path = tmp_path / "report.json.partial"
    assert cv.load_partial(path, key) == ({}, {})  # no file yet
    path.write_text(json.dumps({"key": key, "rows": rows, "ranges": {"di": {"fc1_in": 3.5}}}))
    done, ranges = cv.load_partial(path, key)
    assert done == {("di", "all"): rows[0], ("di", "0"): rows[1]} and ranges == {"di": {"fc1_in": 3.5}}
    assert cv.load_partial(path, key | {"draws": 4}) == ({}, {})  # other arguments: start over
    assert cv.load_partial(None, key) == ({}, {})  # no --json: nothing kept


def test_demo_summary_says_when_ort_ran_unfused() -> None:
    """The demo's last row names the session that scored the export: on an x86 CPU without VNNI,
    ``dfq eval`` ran the Q/DQ nodes unfused, and the row says so (hand-made summary)."""
    demo = importlib.import_module("demo")
    row = {"source": "SMI", "top1": 0.78, "agreement": 0.93, "kl": 0.0265, "seconds": 12.0, "fp_top1": 0.792, "images": 468}
    load = {"loadavg": [0.1, 0.1, 0.1]}
    speed = {"batches": {"1": {"speedup": 1.5, "fp32_ms": 30.0, "int8_ms": 20.0}}, "idle": True, "load_before": load}
    summary = {"rows": [row], "smi_iterations": 200, "ort_speed": speed, "wall_seconds": 600.0,
               "ort_eval": {"quant": {"top1": 0.782}, "agreement": 0.932, "kl": 0.0265}}  # fmt: skip
    assert "| SMI run's Q/DQ ONNX in ONNX Runtime | 78.2% | 93.2% | 0.0265 | — |" in demo.render(summary)
    summary["ort_eval"]["onnxruntime"] = {"providers": ["CPUExecutionProvider"], "qdq_fused": False}
    assert "in ONNX Runtime (Q/DQ unfused: this CPU has no VNNI) | 78.2% |" in demo.render(summary)
