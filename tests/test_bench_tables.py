"""The tables of BENCHMARKS.md that ``make bench`` regenerates (``benchmarks/_tables*.py``): each renderer,
fed hand-made reports and provenance, writes the figures and the command lines it should, and a table
renders only when every step it reads has run."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module", autouse=True)
def _on_path() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    yield
    sys.path.remove(str(BENCHMARKS))


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


_PROV = {"command": "python benchmarks/x.py", "started": "2026-12-02 03:00:00 UTC", "seconds": 60.0,
         "load_at_start": 0.2, "machine": "2 CPU cores", "versions": {"torch": "2.9"}}  # fmt: skip


def _render(tmp_path: Path, table: str, reports: list, loads: tuple[float, ...] = ()) -> str:
    """``table`` rendered from hand-made reports: the i-th of its steps gets ``reports[i]`` (the last one
    when there are fewer) and a provenance with ``loads[i]`` as its load at the start."""
    tables = importlib.import_module("_tables")
    for i, step in enumerate(tables.TABLES[table][0]):
        (tmp_path / step).mkdir(parents=True)
        (tmp_path / step / "report.json").write_text(json.dumps(reports[min(i, len(reports) - 1)]))
        prov = {**_PROV, "load_at_start": loads[i]} if i < len(loads) else _PROV
        (tmp_path / step / "provenance.json").write_text(json.dumps(prov))
    out = tables.render_tables(tmp_path)
    assert table in out  # and only the tables whose steps are all among this one's
    assert all(set(tables.TABLES[t][0]) <= set(tables.TABLES[table][0]) for t in out), set(out)
    assert out[table].count("`python benchmarks/x.py` — 2026-12-02 03:00:00 UTC") == len(tables.TABLES[table][0])
    return out[table]


def _rec(model: str, set_info: dict, config: dict, calib: tuple, rec: tuple, fp: float, secs: float, units: int,
         scored: int = 500) -> dict:  # fmt: skip
    metrics = [dict(zip(("top1", "agreement", "kl"), m, strict=True)) for m in (calib, rec)]
    return {"model": model, "scheme": "w4a8", "set": set_info, "scored_images": scored,
            "config": {"act_ranges": "frozen", "range_lr": 4e-5, "drop": 0.0, "views": 0, **config},
            "fp": {"top1": fp, "agreement": 1.0, "kl": 0.0}, "calibration_alone": metrics[0],
            "reconstructed": metrics[1], "reconstruct_seconds_total": secs, "units": [{}] * units}  # fmt: skip


def test_reconstruct_tables_render_hand_made_reports(tmp_path: Path) -> None:
    smi = {"method": "smi", "images": 128, "path": "runs/sets/x", "calibrated_on": 64, "ranges_from": 32}
    di = {"method": "deepinversion", "images": 256, "path": "runs/sets/y", "calibrated_on": 64}
    dt = _rec("deit_tiny", smi, {"iters": 300, "batch_size": 16, "lr": 0.01, "reg_weight": 1.0},
              (0.764, 0.828, 0.2119), (0.754, 0.852, 0.1464), 0.792, 988.2, 14)  # fmt: skip
    dt["site_calibrators"] = ["fc2_in=mse"]
    mb = _rec("mobilenet_v1_025", di, {"iters": 500, "batch_size": 32, "lr": 0.1, "reg_weight": 10.0, "views": 3,
              "act_ranges": "learn"}, (0.08, 0.086, 4.5201), (0.202, 0.232, 2.6411), 0.57, 399.7, 15)  # fmt: skip
    fi = _rec("deit_tiny", di, {"iters": 300, "batch_size": 16, "lr": 0.1, "reg_weight": 10.0, "views": 7,
              "fisher": 0.5}, (0.748, 0.844, 0.192), (0.77, 0.88, 0.0991), 0.792, 500.0, 14)  # fmt: skip
    fi["wall"] = {"reconstruct_this_process": 712.4}
    text = _render(tmp_path / "syn", "reconstruct", [dt, mb, fi])
    assert ("| DeiT-Tiny, 64 DeepInversion images, 300 steps/unit, batch 16, lr 0.1, reg 10, 7 augmented views per "
            "image, Fisher-weighted loss (0.5) | 74.8 / 0.844 / 0.192 | 77.0 / 0.880 / 0.099 | 79.2 "
            "| 712 s wall (14 units and the Fisher pass) |") in text.splitlines()  # fmt: skip
    assert ("| DeiT-Tiny, 64 SMI images, 300 steps/unit, batch 16, lr 1e-2, reg 1, `fc2_in` mse, activation ranges "
            "from the first 32 images | 76.4 / 0.828 / 0.212 "
            "| 75.4 / 0.852 / 0.146 | 79.2 | 988 s (14 units) |") in text.splitlines()  # fmt: skip
    assert ("| MobileNet-v1 0.25, 64 DeepInversion images, 500 steps/unit, batch 32, lr 0.1, reg 10, 3 augmented views "
            "per image, LSQ activation ranges (range lr 4e-5) | 8.0 / 0.086 / 4.52 | 20.2 / 0.232 / 2.64 | 57.0 "
            "| 400 s (15 units) |") in text.splitlines()  # fmt: skip
    real = _rec("deit_tiny", {"method": "real (sample images not scored)", "images": 32},
                {"iters": 300, "batch_size": 16, "lr": 0.1, "reg_weight": 10.0}, (0.759, 0.84, 0.1973),
                (0.7714, 0.8889, 0.0913), 0.7906, 839.0, 14, scored=468)  # fmt: skip
    text = _render(tmp_path / "real", "reconstruct-real", [real])
    assert text.startswith("| model, 32 real images | calibration alone: top-1 / agr. / KL | reconstructed: top-1 / "
                           "agr. / KL | FP top-1 (468) | time |\n")  # fmt: skip
    assert ("| DeiT-Tiny, 300 steps/unit, batch 16, lr 0.1, reg 10 | 75.9 / 0.840 / 0.197 | 77.1 / 0.889 / 0.091 "
            "| 79.1 | 839 s (14 units) |") in text.splitlines()  # fmt: skip


def test_precision_tables_render_hand_made_reports(tmp_path: Path) -> None:
    # four layers of 1M weights; the budget-6 plan puts two of them at 8 bits: 2 MB + 1 MB
    mixed = {"calib_images": 32, "holdout": 32, "model": "deit_tiny", "rows": [
        {"config": "uniform w4a8", "average_bits": 4.0, "top1": 0.76, "agreement": 0.824, "kl": 1.234,
         "held_agreement": 0.406, "held_kl": 0.6407},
        {"config": "mixed, budget 6", "budget": 6.0, "average_bits": 6.0, "weight_bytes": 3_000_000,
         "eight_bit": ["b", "a"], "layers": {"a": 8, "b": 8, "c": 4, "d": 4},
         "sensitivity": [{"name": n, "numel": 1_000_000} for n in "abcd"], "top1": 0.774, "agreement": 0.886,
         "kl": 0.1017, "held_agreement": 0.656, "held_kl": 0.2343},
        {"config": "uniform w8a8", "average_bits": 8.0, "top1": 0.79, "agreement": 0.94, "kl": 0.0293,
         "held_agreement": 1.0, "held_kl": 0.0035}]}  # fmt: skip
    lines = _render(tmp_path / "mixed", "mixed", [mixed]).splitlines()
    assert lines[2:5] == ["| uniform W4 | 4.00 | 0 | 2.00 MB | 76.0 | 0.824 | 1.23 | 0.641 |",
                          "| mixed, budget 6 | 6.00 | 2 | 3.00 MB | 77.4 | 0.886 | 0.102 | 0.234 |",
                          "| uniform W8 | 8.00 | all 4 | 4.00 MB | 79.0 | 0.940 | 0.029 | 0.0035 |"]  # fmt: skip
    assert lines[6:8] == ["Calibrated on the set's first 32 images; held-out KL on its last 32.",
                          "8-bit layers at budget 6: `a`, `b`."]

    def config(model: str, label: str, top1: float, agreement: float, kl: float, held: float) -> dict:
        return {"model": model, "label": label, "top1": top1, "agreement": agreement, "kl": kl,
                "held_agreement": 0.71875, "held_kl": held}  # fmt: skip

    estimate = {"configs": [
        config("deit_tiny", "w8a8 minmax, synthetic", 0.79, 0.94, 0.01, 0.1),
        config("deit_tiny", "w8a8 minmax, noise", 0.79, 0.924, 0.03, 0.2),
        config("deit_tiny", "w4a8 minmax, real", 0.76, 0.824, 0.02, 0.3),
        config("mobilenet_v1_025", "w8a8 minmax, synthetic", 0.57, 0.87, 0.05, 0.002),
        config("mobilenet_v1_025", "w4a8 minmax, noise", 0.04, 0.048, 0.06, 0.003),
        config("mobilenet_v1_025", "w4a8 + reconstruction (200 steps/unit), real", 0.098, 0.118, 4.0, 1.5)]}  # fmt: skip
    text = _render(tmp_path / "estimate", "estimate", [estimate])
    assert "| DeiT-Tiny | W8A8 minmax, SMI images | 79.0 | 0.940 | 0.010 | 0.719 | 0.100 |" in text.splitlines()
    assert "| DeiT-Tiny | W8A8 minmax, noise | 79.0 | 0.924 | 0.030 | 0.719 | 0.200 |" in text.splitlines()
    assert "| MobileNet | W8A8 minmax, DI images | 57.0 | 0.870 | 0.050 | 0.719 | 0.0020 |" in text.splitlines()
    assert ("| MobileNet | W4A8 + reconstruction (200 steps/unit), real images | 9.8 | 0.118 | 4.00 | 0.719 | 1.50 |"
            in text.splitlines())  # fmt: skip
    # DeiT ranks held-out (1, 2, 3) vs real (1, 3, 2): 1 - 6 * 2 / 24 = 0.5; MobileNet's agree: 1. Pooled,
    # held-out ranks (3, 4, 5, 1, 2, 6) vs real (1, 3, 2, 4, 5, 6): sum d^2 = 32, 1 - 6 * 32 / 210 = 0.0857
    assert ("Spearman rank correlation of the held-out KL with the real KL: DeiT-Tiny 0.500, MobileNet 1.000 "
            "(3 configurations each), 0.086 pooled over all 6.") in text  # fmt: skip


def test_qat_table_renders_hand_made_reports(tmp_path: Path) -> None:
    base = {"steps": 1000, "batch_size": 16, "lr": 3e-5, "range_lr": 1e-4, "weight_ranges": "learn",
            "act_ranges": "frozen", "mixup": 0.0, "warmup_steps": 0}  # fmt: skip
    kls, losses = (0.2168, 0.175, 0.179, 0.1704, 0.1734, 0.168, 0.1651), (None, 0.2, 0.15, 0.145, 0.1165, 0.12, 0.13)
    curve = [{"step": 100 * i, "top1": 0.75, "kl": k, "loss": loss} for i, (k, loss) in enumerate(zip(kls, losses, strict=True))]
    first = {"config": base, "set": {"trained_on": 128}, "curve": curve, "reconstructed": None}
    diverged = {"config": {**base, "lr": 3e-4, "mixup": 0.5, "steps": 400}, "set": {"trained_on": 128},
                "curve": [{"step": 0, "top1": 0.76, "kl": 0.2168, "loss": None},
                          {"step": 50, "top1": 0.528, "kl": 1.236, "loss": 0.7057}]}  # fmt: skip
    lines = _render(tmp_path, "qat-dt", [first, diverged, first]).splitlines()
    assert lines[2] == ("| lr 3e-5, range lr 1e-4, weight ranges learn, activation ranges frozen, no mixup, no warm-up, "
                        "1000 steps, batch 16, 128 training images | 0.217 / 0.175 / 0.179 / 0.170 / 0.173 … 0.165 "
                        "(600) | 75.0 | 0.12–0.20 | 600 |")  # fmt: skip
    assert lines[3] == "| lr 3e-4, mixup 0.5, 400 steps | 0.217 / 1.236 (50) | 52.8 | 0.71 | 50 |"
    assert lines[4].startswith("| same | 0.217 / 0.175")


def _export_row(model: str, scheme: str, findings: list[str], passed: tuple[bool, bool, bool]) -> dict:
    checks = dict(zip(("agreement", "top1_within_noise", "kl_within_noise"), passed, strict=True))
    return {"model": model, "scheme": scheme, "num_images": 500, "fp_top1": 0.792,
            "torch": {"top1": 0.788, "agreement": 0.936, "kl": 0.0262},
            "ort": {"top1": 0.784, "agreement": 0.942, "kl": 0.0263}, "torch_ort_agreement": 0.978,
            "max_abs_logit_diff": 1.101, "torch_f32_f64_agreement": 0.948, "ort_fused_unfused_agreement": 0.962,
            "top1_mcnemar_p": 0.7266, "kl_diff_ci95": [-0.00154, 0.00157],
            "verdict": {"bound": 0.938, **checks, "pass": all(passed)},
            "checker_errors": sum(f.startswith("error") for f in findings), "checker_findings": findings}  # fmt: skip


def test_export_tables_render_hand_made_reports(tmp_path: Path) -> None:
    rows = [_export_row("deit_tiny", "w8a8", [], (True, True, True)),
            _export_row("mobilenet_v1_025", "w4a8", ["error: op Foo is not supported [n1]",
                        "warning: op Ceil is outside dfq's supported list [Ceil]"], (False, True, False))]  # fmt: skip
    text = _render(tmp_path / "int8", "export-accuracy", [rows])
    assert "| bound | top-1 McNemar p | KL Δ 95% CI |" in text and "| ORT fused–unfused agreement |" in text
    assert ("| deit_tiny | w8a8 | 79.2 | 78.8 / 0.936 / 0.0262 | 78.4 / 0.942 / 0.0263 | 97.8% | 94.8% | 96.2% | 93.8% "
            "| 0.73 | −0.0015…+0.0016 | 1.10 | clean | pass |") in text.splitlines()  # fmt: skip
    assert text.splitlines()[3].endswith("| 1 error (`Foo`), 1 warning (`Ceil`) | FAIL (agreement, kl_within_noise) |")
    fp8 = [_export_row("deit_tiny", "w8a8-fp8", ["info: per-channel FP8 weight scales"], (True, True, True))]
    text = _render(tmp_path / "fp8", "export-accuracy-fp8", [fp8])
    assert "| ORT optimized–unoptimized agreement |" in text
    assert text.splitlines()[2].startswith("| deit_tiny | w8a8-fp8 | 79.2 |")
    assert text.splitlines()[2].endswith("| 1.10 | clean (1 info) | pass |")


def test_ort_speed_table_renders_hand_made_reports(tmp_path: Path) -> None:
    batch1 = {"fp32_ms": 30.91, "dfq_ms": 24.19, "dfq_ort_ms": 22.24, "ort_static_ms": 28.51, "fp32/dfq": 1.278,
              "fp32/dfq_ort": 1.39, "fp32/ort_static": 1.084, "fp32/dfq_per_round_q1_median_q3": [1.25, 1.29, 1.36],
              "fp32/dfq_ort_per_round_q1_median_q3": [1.35, 1.466, 1.482], "ort_static/dfq": 1.179,
              "ort_static/dfq_ort": 1.282}  # fmt: skip
    acc = {k: {"top1": t, "agreement": a, "kl": kl} for k, t, a, kl in (
        ("fp32", 0.792, 1.0, 0.0), ("dfq", 0.784, 0.942, 0.02631), ("dfq_ort", 0.796, 0.946, 0.02502),
        ("ort_static", 0.792, 0.928, 0.04187), ("dfq_torch_fake_quant", 0.788, 0.936, 0.02619),
        ("dfq_ort_torch_fake_quant", 0.788, 0.93, 0.02559))}  # fmt: skip
    report = {"threads": 2, "latency": {"batch1": batch1}, "machine_load": {"idle": True}, "accuracy": {**acc, "num_images": 500}}
    lines = _render(tmp_path, "ort-speed", [report], loads=(0.29, 0.15)).splitlines()
    assert lines[2] == "| 1 (0.29) | 1 | 30.9 ms | 24.2 ms | 22.2 ms | 28.5 ms | 1.28x | 1.39x (1.35–1.48) | 1.08x | 1.28x |"
    assert lines[3].startswith("| 2 (0.15) | 1 | 30.9 ms |")
    assert lines[5] == ("Run 1: 2 threads; its load check: idle. On 500 images (top-1 / agreement with FP32 / KL): FP32 "
                        "79.2; dfq 78.4 / 0.942 / 0.0263; dfq_ort 79.6 / 0.946 / 0.0250; ORT `quantize_static` 79.2 / "
                        "0.928 / 0.0419; torch fake-quant dfq 78.8 / 0.936 / 0.0262, dfq_ort 78.8 / 0.930 / 0.0256.")  # fmt: skip


def _row(variant: str, top1: float, agreement: float, kl: float) -> dict:
    return {"variant": variant, "top1": top1, "agreement": agreement, "kl": kl}


def test_ablate_tables_render_hand_made_reports(tmp_path: Path) -> None:
    rows = [{"variant": "fp", "top1": 0.792, "top5": 0.952}, _row("w8a8:site=softmax/minmax", 0.774, 0.934, 0.0345),
            _row("w8a8:calib=real", 0.788, 0.946, 0.0271), _row("w8a8-paper:calib=noise", 0.056, 0.06, 3.1332),
            _row("w8a8-paper:calib=noise,drop=logits", 0.798, 0.924, 0.197),
            _row("w8a8-paper:calib=noise,drop=head_in+logits", 0.794, 0.93, 0.0355)]  # fmt: skip
    lines = _render(tmp_path / "dt", "dt-calib", [rows]).splitlines()
    assert lines[:5] == [
        "| scheme / numerics | calibration | activation ranges | top-1 | Δ vs FP | agreement | KL |", "|---|---|---|---|---|---|---|",
        "| w8a8 trt | 32 real | min/max everywhere (`--site-calibrator softmax=minmax`) | 77.4 | −1.8 | 0.934 | 0.0345 |",
        "| w8a8 trt | 32 real | default: min/max, MSE on the softmax output | 78.8 | −0.4 | 0.946 | 0.0271 |",
        "| w8a8 paper | 32 noise | min/max | 5.6 | −73.6 | 0.060 | 3.1332 |"]  # fmt: skip
    tables = importlib.import_module("_tables")
    text = tables.render_tables(tmp_path / "dt")["noise-placement"]
    assert text.splitlines()[2:5] == ["| none (full PSAQ-ViT placement) | 5.6 | 0.060 | 3.133 |",
                                      "| `logits` | 79.8 | 0.924 | 0.197 |", "| `head_in`, `logits` | 79.4 | 0.930 | 0.0355 |"]
    api = {"fp": {"top1": 0.57}, "quant": {"top1": 0.562}, "agreement": 0.862, "kl": 0.0608}
    mb = [{"variant": "fp", "top1": 0.57, "top5": 0.8}, _row("w8a8:bc=0", 0.508, 0.77, 0.19), _row("w8a8:act=mse", 0.57, 0.852, 0.0635)]
    lines = _render(tmp_path / "mb", "mobilenet-api", [api, mb]).splitlines()
    assert lines[2:5] == ["| W8A8 min/max, no bias correction | 50.8 | −6.2 | 0.770 | 0.1900 |",
                          "| W8A8 min/max + bias correction (default) | 56.2 | −0.8 | 0.862 | 0.0608 |",
                          "| W8A8 MSE activations + bias correction | 57.0 | 0.0 | 0.852 | 0.0635 |"]  # fmt: skip


def test_site_and_seed_tables_render_hand_made_reports(tmp_path: Path) -> None:
    variants = importlib.import_module("ablate").site_study()  # the study's own variant names
    kls = {"softmax": 0.0233, "fc2_in": 0.0102, "q": 0.002}
    every = variants[-2].split("drop=")[1].split("+")
    rows = [{"variant": "fp", "top1": 0.792, "top5": 0.952}]
    for v in variants[:-2]:
        (site,) = set(every) - set(v.split("drop=")[1].split("+"))  # every ViT site, not conv_in/linear_in
        rows.append(_row(v, 0.79, 0.95, kls.get(site, 0.001)))
    rows += [_row(variants[-2], 0.792, 0.99, 0.0005), _row(variants[-1], 0.712, 0.8, 0.2982)]
    lines = _render(tmp_path / "sites", "dt-sites", [rows]).splitlines()
    assert lines[2:5] == ["| `softmax` activations (W8 weights) | 79.0 | −0.2 | 0.950 | 0.0233 |",
                          "| `fc2_in` activations (W8 weights) | 79.0 | −0.2 | 0.950 | 0.0102 |",
                          "| `q` activations (W8 weights) | 79.0 | −0.2 | 0.950 | 0.0020 |"]  # fmt: skip
    assert len([x for x in lines if x.startswith("| `")]) == len(variants) - 2 == 10  # one row per ViT site
    assert lines[2 + 10:2 + 10 + 4] == ["| W8 weights alone (min/max) | 79.2 | 0.0 | 0.990 | 0.0005 |",
                                        "| W4 weights alone (min/max) | 71.2 | −8.0 | 0.800 | 0.2982 |", "",
                                        "FP top-1 79.2, top-5 95.2."]  # fmt: skip
    seeds = [{"variant": "fp", "top1": 0.798, "top5": 0.95}, _row("w8a8:site=softmax/minmax,seed=0", 0.782, 0.93, 0.0372),
             _row("w8a8:site=softmax/minmax,seed=2", 0.782, 0.93, 0.0401)]  # fmt: skip
    lines = _render(tmp_path / "seeds", "dt-seeds", [seeds]).splitlines()
    assert lines[2:5] == ["| FP (crop_pct the model's) | 79.8 | — | — | — |",
                         "| `w8a8` min/max, 32 real images, seed 0 | 78.2 | −1.6 | 0.930 | 0.0372 |",
                         "| `w8a8` min/max, 32 real images, seed 2 | 78.2 | −1.6 | 0.930 | 0.0401 |"]  # fmt: skip


def _calibrate_report(numerics: str, top1: float, agreement: float, kl: float) -> dict:
    return {"quant_config": {"numerics": numerics}, "calibration": {"num_images": 32}, "fp": {"top1": 0.792},
            "quant": {"top1": top1}, "agreement": agreement, "kl": kl}  # fmt: skip


def test_smi_tables_render_hand_made_reports(tmp_path: Path) -> None:
    reports = [_calibrate_report("trt", 0.788, 0.946, 0.0271), _calibrate_report("trt", 0.788, 0.922, 0.0437),
               _calibrate_report("paper", 0.782, 0.908, 0.0389)]  # fmt: skip
    lines = _render(tmp_path / "calib", "smi-calib", reports).splitlines()
    assert lines[2:4] == ["| trt | 32 real | 78.8 | −0.4 | 0.946 | 0.0271 |",
                          "| trt | 32 SMI, kept tokens only (the SMI paper's recipe) | 78.8 | −0.4 | 0.922 | 0.0437 |"]
    assert lines[4] == "| paper | 32 SMI, all tokens | 78.2 | −1.0 | 0.908 | 0.0389 |"  # a trt step given a paper report
    assert lines[12] == "| paper | 32 dense DeepInversion | 78.2 | −1.0 | 0.908 | 0.0389 |"

    def comparison(run: str, top1: tuple, counts: tuple, kl: tuple) -> dict:
        return {"run": run, "baseline": "dt-w8a8-di", "top1_diff": top1[0], "top1_ci": list(top1[1:]),
                "only_run": counts[0], "only_baseline": counts[1], "mcnemar_p": counts[2], "kl_diff": kl[0],
                "kl_ci": list(kl[1:])}  # fmt: skip

    paired = {"num_images": 500, "comparisons": [
        comparison("dt-w8a8-smi", (-0.008, -0.028, 0.01), (9, 13, 0.5235), (0.0163, 0.0121, 0.0209)),
        comparison("dt-w8a8-real", (-0.008, -0.026, 0.008), (7, 11, 0.48), (-0.0002, -0.003, 0.003))]}  # fmt: skip
    lines = _render(tmp_path / "paired", "smi-paired", [paired]).splitlines()
    assert lines[0].startswith("| trt W8A8, vs dense DeepInversion | top-1 Δ (95% CI) |")
    assert lines[2:4] == ["| SMI, kept tokens | −0.8 pt (−2.8, +1.0) | 9 / 13, p = 0.52 | +0.016 (+0.012, +0.021) |",
                          "| real images | −0.8 pt (−2.6, +0.8) | 7 / 11, p = 0.48 | −0.000 (−0.003, +0.003) |"]  # fmt: skip
    rows = [{"source": s, "draw": d, "images": 32 if d == "all" else 16, "top1": 0.79, "agreement": 0.93, "kl": kl}
            for s, kls in (("di", (0.0274, 0.0256, 0.026)), ("smi", (0.0437, 0.037, 0.038)))
            for d, kl in zip(("all", 0, 1), kls, strict=True)]  # fmt: skip
    lines = _render(tmp_path / "variance", "calib-variance", [{"rows": rows}]).splitlines()
    assert lines[0] == ("| source | whole set (32) | 2 halves: mean ± sd (min–max) | − DI, same draws: mean (min–max) "
                        "| top-1 over the halves: mean (min–max) |")  # fmt: skip
    assert lines[2:4] == ["| dense DeepInversion | 0.0274 | 0.0258 ± 0.0003 (0.0256–0.0260) | — | 79.0 (79.0–79.0) |",
                          "| SMI seed 0, kept tokens | 0.0437 | 0.0375 ± 0.0007 (0.0370–0.0380) | +0.0117 (+0.0114…+0.0120) "
                          "| 79.0 (79.0–79.0) |"]  # fmt: skip
    ranges = {"di": {"blocks.3.attn.softmax": 0.4, "blocks.0.fc2_in": 10.0}, "smi": {"blocks.3.attn.softmax": 0.6,
              "blocks.0.fc2_in": 12.0}}  # fmt: skip
    lines = _render(tmp_path / "variance2", "calib-variance", [{"rows": rows, "ranges": ranges, "range_threshold": 1.4}])
    assert ("sites off by more than 1.4x for some source:\n- `blocks.3.attn.softmax`: smi 1.50x\n"
            "Every other site within 1.20x–1.20x of di for every source.") in lines


def test_cnn_tables_render_hand_made_reports(tmp_path: Path) -> None:
    def rows(source: str, settings: list, w8: tuple, w4: tuple, made: float) -> list:
        return [{"source": source, "settings": settings, "scheme": scheme, "top1": m[0], "agreement": m[1], "kl": m[2],
                 "seconds_to_make": made} for scheme, m in (("w8a8", w8), ("w4a8", w4))]  # fmt: skip

    report = [*rows("real", [], (0.9338, 0.998, 0.0015), (0.9279, 0.963, 0.0657), 0.0),
              *rows("deepinversion", ["iterations=500", "batch_size=64"], (0.935, 0.991, 0.0026), (0.9291, 0.965, 0.0621), 586.2),
              *rows("cmi", ["ngf=16"], (0.572, 0.864, 0.063), (0.286, 0.316, 1.9068), 1523.4)]  # fmt: skip
    lines = _render(tmp_path / "cifar", "cnn-cifar", [report]).splitlines()
    assert lines[2:4] == ["| real | 93.38 | 0.998 | 0.0015 | 92.79 | 0.963 | 0.0657 | — |",
                          "| DeepInversion (500 it.) | 93.50 | 0.991 | 0.0026 | 92.91 | 0.965 | 0.0621 | 586 |"]  # fmt: skip
    lines = _render(tmp_path / "mb", "cnn-mobilenet", [report]).splitlines()
    assert lines[4] == "| CMI (ngf 16) | 57.2 | 0.864 | 0.0630 | 28.6 | 0.316 | 1.9068 | 1523 |"


def test_training_tables_render_hand_made_reports(tmp_path: Path) -> None:
    def kd(method: str, path: str, seconds: float, mixup: float, final: tuple, curve: list) -> dict:
        return {"set": {"method": method, "images": 512, "seconds": seconds, "path": path,
                        "iterations": 200 if method != "noise" else None},
                "config": {"steps": 1500, "mixup": mixup}, "teacher_metrics": {"top1": 0.93262},
                "final": dict(zip(("top1", "agreement", "kl"), final, strict=True)), "seconds_total": 1417.2,
                "curve": [{"step": s, "top1": t} for s, t in curve]}  # fmt: skip

    di = kd("deepinversion", "runs/sets/x", 1289.97, 0.0, (0.2967, 0.2931, 5.103), [(0, 0.08), (700, 0.3085), (1500, 0.2967)])
    noise = kd("noise", "runs/bench/n/set", 0.01, 0.0, (0.1111, 0.1111, 12.6877), [(0, 0.08), (200, 0.1147), (1500, 0.1111)])
    mix = kd("deepinversion", "runs/sets/x", 1289.97, 0.5, (0.344, 0.3404, 4.2831), [(0, 0.08), (1500, 0.344)])
    lines = _render(tmp_path / "kd", "kd-cifar", [di, noise, mix]).splitlines()
    assert lines[0].startswith("| training images | mixup | make set (s) | KD 1500 steps (s) |")
    assert lines[2:5] == ["| DeepInversion (200 it.) | — | 1290 | 1417 | 29.7 | 0.293 | 5.10 | 30.9 (step 700) |",
                          "| Gaussian noise | — | 0 | 1417 | 11.1 | 0.111 | 12.69 | 11.5 |",
                          "| DeepInversion (200 it.) | 0.5 | (same set) | 1417 | 34.4 | 0.340 | 4.28 | 34.4 |"]  # fmt: skip
    assert "Teacher 93.26% on the same images." in lines

    def point(step: int, top1: float) -> dict:
        return {"step": step, "top1": top1, "agreement": top1 + 0.006, "kl": 4.5 - step / 1000}

    probe = {"runs": [{"num_images": 32, "seconds_total": 304.3, "curve": [point(0, 0.0), point(50, 0.042), point(100, 0.07)]}]}
    lines = _render(tmp_path / "probe", "probe", [probe]).splitlines()
    assert lines[0] == "| images | step 50 | 100 | wall (s) |"
    assert lines[2] == "| 32 | 4.2 / 0.048 / 4.45 | 7.0 / 0.076 / 4.40 | 304 |"
    long = {"runs": [{"num_images": 128, "seconds_total": 1408.3, "curve": [point(s, s / 2000) for s in range(0, 1201, 100)]}]}
    lines = _render(tmp_path / "long", "probe-long", [long]).splitlines()
    assert lines[0] == "| step | 100 | 200 | 300 | 400 | 600 | 800 | 1000 | 1200 |"
    assert lines[2] == "| top-1 | 5.0 | 10.0 | 15.0 | 20.0 | 30.0 | 40.0 | 50.0 | 60.0 |"
    assert "128 images, 1408 s." in lines


def test_w8a8_reconstruction_table_renders_hand_made_reports(tmp_path: Path) -> None:
    def row(config: str, top1: float, agreement: float, kl: float) -> dict:
        return {"config": config, "top1": top1, "agreement": agreement, "kl": kl, "held_agreement": 0.75, "held_kl": 0.1}

    cal = {"calib_images": 32, "model": "deit_tiny", "rows": [
        row("preset (minmax; softmax mse)", 0.79, 0.94, 0.0293), row("fc2_in mse", 0.79, 0.956, 0.0242),
        row("every site mse", 0.788, 0.928, 0.0311), row("every site entropy", 0.77, 0.9, 0.0658)]}  # fmt: skip
    rec = {"set": {"method": "smi", "calibrated_on": 32}, "site_calibrators": ["fc2_in=mse"], "config": {"range_lr": 0.01},
           "reconstructed": {"top1": 0.788, "agreement": 0.96, "kl": 0.0173}, "reconstruct_seconds_total": 886.9}  # fmt: skip
    lines = _render(tmp_path, "rec-w8a8", [cal, rec]).splitlines()
    assert lines[0] == "| W8A8 on 32 SMI images | top-1 | agreement | KL | vs default calibration |"
    assert lines[2:6] == [
        "| calibration alone (minmax; softmax mse, the preset) | 79.0 | 0.940 | 0.0293 | 1.00x |",
        "| calibration, `fc2_in` mse | 79.0 | 0.956 | 0.0242 | 1.21x |",
        "| calibration, every site mse / entropy | 78.8 / 77.0 | 0.928 / 0.900 | 0.0311 / 0.0658 | 0.94x / 0.45x |",
        "| `fc2_in` mse + reconstruction, ranges learned at 1e-2 (887 s) | 78.8 | 0.960 | 0.0173 | 1.69x |"]  # fmt: skip


def test_timing_tables_render_hand_made_reports(tmp_path: Path) -> None:
    ratios = [1.379, 1.456, 1.484, 1.487, 1.513, 1.519, 1.548, 1.554, 1.58, 1.612, 1.612, 1.652, 1.666, 1.676, 1.689]
    base = {"model": "deit_tiny", "batch_size": 8, "threads": 2, "rounds": 15, "iters": 3, "float_ms": 178.256,
            "fakequant_ms": 268.428, "fakequant/float": 1.506, "per_round_ratio": ratios,
            "host_syncs_per_forward": {"float": 0, "fakequant": 148}, "load": {"idle": True},
            "code": {"commit": "cd6b316c1b445f10", "revision": "cd6b316"}}  # fmt: skip
    now = {**base, "host_syncs_per_forward": {"float": 0, "fakequant": 0}, "code": {"commit": "abcdef0123", "dirty": True},
           "load": {"idle": False, "not_idle_because": ["pid 7 python at 80% of a core"]}}  # fmt: skip
    lines = _render(tmp_path / "fq", "fakequant-overhead", [base, now], loads=(0.3, 0.31)).splitlines()
    assert lines[2] == "| before (`cd6b316`) | 178.3 ms | 268.4 ms | 1.51x | 1.55x (1.49–1.65) | 148 |"
    assert lines[3] == "| after (`abcdef0`, with local changes) | 178.3 ms | 268.4 ms | 1.51x | 1.55x (1.49–1.65) | 0 |"
    assert lines[6].endswith("load 0.31 at the start; its load check: not idle (pid 7 python at 80% of a core).")

    def stage(kept: int, secs: float, gflop: float, n: int, first: int | None = None) -> dict:
        st = {"kept_patches": kept, "seconds_per_it": secs, "it_per_s": 1 / secs, "flops_per_it": gflop * 1e9,
              "iterations_in_run": n}  # fmt: skip
        return st if first is None else {**st, "first_iteration": first}

    speed = {"iterations": 4000, "batch_size": 32, "device": "cpu", "steps_per_stage": 3, "machine_load": {"idle": True},
             "dense": stage(196, 15.8814, 2293.95, 4000), "stages": [stage(196, 14.9651, 2293.95, 50, 0),
             stage(46, 3.2034, 533.68, 3950, 50)], "speedup": 4.48495, "flops_ratio": 3.89882,
             "dense_seconds_per_it": 15.8814, "smi_seconds_per_it": 3.541}  # fmt: skip
    lines = _render(tmp_path / "inv", "inversion-speed", [speed]).splitlines()
    assert lines[2:5] == ["| dense (all 4000) | 196 | 15.88 | 0.063 | 2294 |", "| 0–49 | 196 | 14.97 | 0.067 | 2294 |",
                          "| 50–3999 | 46 | 3.20 | 0.312 | 534 |"]  # fmt: skip
    assert lines[6].startswith("Whole schedule: SMI/dense speedup 4.48x (15.9 s vs 3.5 s per iteration on average), "
                               "FLOPs ratio 3.90x; batch 32 on cpu")  # fmt: skip


def test_timing_steps_wait_for_an_idle_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A timed step waits until the 1-minute load is under 0.5, and says so when it never got there."""
    bench = importlib.import_module("bench")
    loads = iter([1.7, 0.9, 0.3])
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    assert bench.wait_idle(poll_s=0.0) is True
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert bench.wait_idle(wait_s=0.0, poll_s=0.0) is False
    timed = {s.name for s in bench.STEPS if s.timed}
    assert {"ort-speed-1", "ort-speed-2", "fq-overhead-now", "inversion-speed-deit-base"} <= timed
    lines = importlib.import_module("_tables").provenance_lines([("t", {**_PROV, "waited_for_idle": False})])
    assert "not idle" in lines[0]


def test_qat_after_reconstruction_table_renders_hand_made_reports(tmp_path: Path) -> None:
    m = lambda t, a, k: {"top1": t, "agreement": a, "kl": k}  # noqa: E731
    curve = [{"step": 0, **m(0.458, 0.584, 0.5607)}, {"step": 50, **m(0.466, 0.57, 0.5630)},
             {"step": 100, **m(0.476, 0.576, 0.5793)}, {"step": 150, **m(0.462, 0.574, 0.5856)}]  # fmt: skip
    report = {"model": "mobilenet_v1_025", "set": {"method": "cmi", "trained_on": 96}, "fp": m(0.57, 1.0, 0.0),
              "config": {"steps": 150, "batch_size": 32, "weight_ranges": "frozen", "act_ranges": "frozen"},
              "calibration_alone": m(0.286, 0.32, 1.8906), "reconstructed": m(0.458, 0.584, 0.5607),
              "qat": m(0.462, 0.574, 0.5856), "curve": curve, "wall": {"qat_this_process": 598.2}}  # fmt: skip
    lines = _render(tmp_path, "qat-rec", [report]).splitlines()
    assert lines[2] == ("| MobileNet-v1 0.25, 96 CMI images | 28.6 / 0.320 / 1.891 | 45.8 / 0.584 / 0.561 "
                        "| 46.2 / 0.574 / 0.586 | 46.2–47.6 / 0.563–0.586 | 57.0 | 150, 32, frozen / frozen | 598 s |")


def test_estimate_names_the_set_each_model_used(tmp_path: Path) -> None:
    rows = [{"model": mdl, "label": f"w8a8 minmax, {src}", "top1": 0.5, "agreement": 0.9, "kl": kl,
             "held_agreement": 0.8, "held_kl": hk}
            for mdl in ("deit_tiny", "mobilenet_v1_025")
            for src, kl, hk in (("synthetic", 0.03, 0.1), ("real", 0.02, 0.09), ("noise", 0.1, 0.2))]  # fmt: skip
    sets = {"deit_tiny": "runs/sets/smi500-dt-s1", "mobilenet_v1_025": "runs/sets/cmi-mb-96"}
    text = _render(tmp_path, "estimate-cmi", [{"configs": rows, "sets": sets}])
    assert "| DeiT-Tiny | W8A8 minmax, SMI images |" in text and "| MobileNet | W8A8 minmax, CMI images |" in text
    assert "1.000 pooled over all 6" in text
