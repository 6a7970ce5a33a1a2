"""The tables of BENCHMARKS.md that ``make bench`` regenerates (``benchmarks/_tables*.py``): each renderer,
fed hand-made reports and provenance, writes the figures and the command lines it should, and a table
renders only when every step it reads has run. Toolkit, reconstruction, precision, QAT, export, ORT
speed and ablation tables here; SMI, CNN, training and timing tables in test_bench_tables_more.py."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from tests._bench_render import bench_on_path, rec_report, render

pytestmark = pytest.mark.usefixtures(bench_on_path.__name__)


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


def test_reconstruct_tables_render_hand_made_reports(tmp_path: Path) -> None:
    smi = {"method": "smi", "images": 128, "path": "runs/sets/x", "calibrated_on": 64, "ranges_from": 32}
    di = {"method": "deepinversion", "images": 256, "path": "runs/sets/y", "calibrated_on": 64}
    dt = rec_report("deit_tiny", smi, {"iters": 300, "batch_size": 16, "lr": 0.01, "reg_weight": 1.0},
              (0.764, 0.828, 0.2119), (0.754, 0.852, 0.1464), 0.792, 988.2, 14)  # fmt: skip
    dt["site_calibrators"] = ["fc2_in=mse"]
    mb = rec_report("mobilenet_v1_025", di, {"iters": 500, "batch_size": 32, "lr": 0.1, "reg_weight": 10.0, "views": 3,
              "act_ranges": "learn"}, (0.08, 0.086, 4.5201), (0.202, 0.232, 2.6411), 0.57, 399.7, 15)  # fmt: skip
    fi = rec_report("deit_tiny", di, {"iters": 300, "batch_size": 16, "lr": 0.1, "reg_weight": 10.0, "views": 7,
              "fisher": 0.5}, (0.748, 0.844, 0.192), (0.77, 0.88, 0.0991), 0.792, 500.0, 14)  # fmt: skip
    fi["wall"] = {"reconstruct_this_process": 712.4}
    text = render(tmp_path / "syn", "reconstruct", [dt, mb, fi])
    assert ("| DeiT-Tiny, 64 DeepInversion images, 300 steps/unit, batch 16, lr 0.1, reg 10, 7 augmented views per "
            "image, Fisher-weighted loss (0.5) | 74.8 / 0.844 / 0.192 | 77.0 / 0.880 / 0.099 | 79.2 "
            "| 712 s wall (14 units and the Fisher pass) |") in text.splitlines()  # fmt: skip
    assert ("| DeiT-Tiny, 64 SMI images, 300 steps/unit, batch 16, lr 1e-2, reg 1, `fc2_in` mse, activation ranges "
            "from the first 32 images | 76.4 / 0.828 / 0.212 "
            "| 75.4 / 0.852 / 0.146 | 79.2 | 988 s (14 units) |") in text.splitlines()  # fmt: skip
    assert ("| MobileNet-v1 0.25, 64 DeepInversion images, 500 steps/unit, batch 32, lr 0.1, reg 10, 3 augmented views "
            "per image, LSQ activation ranges (range lr 4e-5) | 8.0 / 0.086 / 4.52 | 20.2 / 0.232 / 2.64 | 57.0 "
            "| 400 s (15 units) |") in text.splitlines()  # fmt: skip
    real = rec_report("deit_tiny", {"method": "real (sample images not scored)", "images": 32},
                {"iters": 300, "batch_size": 16, "lr": 0.1, "reg_weight": 10.0}, (0.759, 0.84, 0.1973),
                (0.7714, 0.8889, 0.0913), 0.7906, 839.0, 14, scored=468)  # fmt: skip
    text = render(tmp_path / "real", "reconstruct-real", [real])
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
    lines = render(tmp_path / "mixed", "mixed", [mixed]).splitlines()
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
    text = render(tmp_path / "estimate", "estimate", [estimate])
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
    diverged = {"config": {**base, "lr": 3e-4, "mixup": 0.5, "steps": 400}, "set": {"trained_on": 128}, "stopped_early": True,
                "curve": [{"step": 0, "top1": 0.76, "kl": 0.2168, "loss": None},
                          {"step": 50, "top1": 0.528, "kl": 1.236, "loss": 0.7057}]}  # fmt: skip
    lines = render(tmp_path, "qat-dt", [first, diverged, first]).splitlines()
    assert lines[2] == ("| lr 3e-5, range lr 1e-4, weight ranges learn, activation ranges frozen, no mixup, no warm-up, "
                        "1000 steps, batch 16, 128 training images | 0.217 / 0.175 / 0.179 / 0.170 / 0.173 … 0.165 "
                        "(600) | 0.165 (600) | 75.0 | 0.12–0.20 | 600 |")  # fmt: skip
    assert lines[3] == "| lr 3e-4, mixup 0.5, 400 steps | 0.217 / 1.236 (50) | 0.217 (0) | 52.8 | 0.71 | 50 (patience) |"
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
    text = render(tmp_path / "int8", "export-accuracy", [rows])
    assert "| bound | top-1 McNemar p | KL Δ 95% CI |" in text and "| ORT fused–unfused agreement |" in text
    assert ("| deit_tiny | w8a8 | 79.2 | 78.8 / 0.936 / 0.0262 | 78.4 / 0.942 / 0.0263 | 97.8% | 94.8% | 96.2% | 93.8% "
            "| 0.73 | −0.0015…+0.0016 | 1.10 | clean | pass |") in text.splitlines()  # fmt: skip
    assert text.splitlines()[3].endswith("| 1 error (`Foo`), 1 warning (`Ceil`) | FAIL (agreement, kl_within_noise) |")
    # a CPU without VNNI: the default session ran the Q/DQ unfused, the fused session's figures beside
    unfused = {**rows[0], "ort_qdq_fused": False, "ort_fused": {"top1": 0.77, "agreement": 0.9, "kl": 0.0512}}
    text = render(tmp_path / "novnni", "export-accuracy", [[unfused]])
    assert "| 78.4 / 0.942 / 0.0263 (Q/DQ unfused; fused: 77.0 / 0.900 / 0.0512) | 97.8% |" in text
    fp8 = [_export_row("deit_tiny", "w8a8-fp8", ["info: per-channel FP8 weight scales"], (True, True, True))]
    text = render(tmp_path / "fp8", "export-accuracy-fp8", [fp8])
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
    lines = render(tmp_path, "ort-speed", [report], loads=(0.29, 0.15)).splitlines()
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
    lines = render(tmp_path / "dt", "dt-calib", [rows]).splitlines()
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
    lines = render(tmp_path / "mb", "mobilenet-api", [api, mb]).splitlines()
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
    lines = render(tmp_path / "sites", "dt-sites", [rows]).splitlines()
    assert lines[2:5] == ["| `softmax` activations (W8 weights) | 79.0 | −0.2 | 0.950 | 0.0233 |",
                          "| `fc2_in` activations (W8 weights) | 79.0 | −0.2 | 0.950 | 0.0102 |",
                          "| `q` activations (W8 weights) | 79.0 | −0.2 | 0.950 | 0.0020 |"]  # fmt: skip
    assert len([x for x in lines if x.startswith("| `")]) == len(variants) - 2 == 10  # one row per ViT site
    assert lines[2 + 10:2 + 10 + 4] == ["| W8 weights alone (min/max) | 79.2 | 0.0 | 0.990 | 0.0005 |",
                                        "| W4 weights alone (min/max) | 71.2 | −8.0 | 0.800 | 0.2982 |", "",
                                        "FP top-1 79.2, top-5 95.2."]  # fmt: skip
    seeds = [{"variant": "fp", "top1": 0.798, "top5": 0.95}, _row("w8a8:site=softmax/minmax,seed=0", 0.782, 0.93, 0.0372),
             _row("w8a8:site=softmax/minmax,seed=2", 0.782, 0.93, 0.0401)]  # fmt: skip
    lines = render(tmp_path / "seeds", "dt-seeds", [seeds]).splitlines()
    assert lines[2:5] == ["| FP (crop_pct the model's) | 79.8 | — | — | — |",
                         "| `w8a8` min/max, 32 real images, seed 0 | 78.2 | −1.6 | 0.930 | 0.0372 |",
                         "| `w8a8` min/max, 32 real images, seed 2 | 78.2 | −1.6 | 0.930 | 0.0401 |"]  # fmt: skip
