"""The tables of BENCHMARKS.md that ``make bench`` regenerates, continued (test_bench_tables.py has the
first half): SMI calibration and pairing, calibration variance, CNN, training, W8A8 reconstruction,
timing tables, a timed step's wait for an idle machine, QAT after reconstruction and the estimate."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests._bench_render import PROV, bench_on_path, render

pytestmark = pytest.mark.usefixtures(bench_on_path.__name__)


def _calibrate_report(numerics: str, top1: float, agreement: float, kl: float) -> dict:
    return {"quant_config": {"numerics": numerics}, "calibration": {"num_images": 32}, "fp": {"top1": 0.792},
            "quant": {"top1": top1}, "agreement": agreement, "kl": kl}  # fmt: skip


def test_smi_tables_render_hand_made_reports(tmp_path: Path) -> None:
    reports = [_calibrate_report("trt", 0.788, 0.946, 0.0271), _calibrate_report("trt", 0.788, 0.922, 0.0437),
               _calibrate_report("paper", 0.782, 0.908, 0.0389)]  # fmt: skip
    lines = render(tmp_path / "calib", "smi-calib", reports).splitlines()
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
    lines = render(tmp_path / "paired", "smi-paired", [paired]).splitlines()
    assert lines[0].startswith("| trt W8A8, vs dense DeepInversion | top-1 Δ (95% CI) |")
    assert lines[2:4] == ["| SMI, kept tokens | −0.8 pt (−2.8, +1.0) | 9 / 13, p = 0.52 | +0.016 (+0.012, +0.021) |",
                          "| real images | −0.8 pt (−2.6, +0.8) | 7 / 11, p = 0.48 | −0.000 (−0.003, +0.003) |"]  # fmt: skip
    rows = [{"source": s, "draw": d, "images": 32 if d == "all" else 16, "top1": 0.79, "agreement": 0.93, "kl": kl}
            for s, kls in (("di", (0.0274, 0.0256, 0.026)), ("smi", (0.0437, 0.037, 0.038)))
            for d, kl in zip(("all", 0, 1), kls, strict=True)]  # fmt: skip
    lines = render(tmp_path / "variance", "calib-variance", [{"rows": rows}]).splitlines()
    assert lines[0] == ("| source | whole set (32) | 2 halves: mean ± sd (min–max) | − DI, same draws: mean (min–max) "
                        "| top-1 over the halves: mean (min–max) |")  # fmt: skip
    assert lines[2:4] == ["| dense DeepInversion | 0.0274 | 0.0258 ± 0.0003 (0.0256–0.0260) | — | 79.0 (79.0–79.0) |",
                          "| SMI seed 0, kept tokens | 0.0437 | 0.0375 ± 0.0007 (0.0370–0.0380) | +0.0117 (+0.0114…+0.0120) "
                          "| 79.0 (79.0–79.0) |"]  # fmt: skip
    ranges = {"di": {"blocks.3.attn.softmax": 0.4, "blocks.0.fc2_in": 10.0}, "smi": {"blocks.3.attn.softmax": 0.6,
              "blocks.0.fc2_in": 12.0}}  # fmt: skip
    lines = render(tmp_path / "variance2", "calib-variance", [{"rows": rows, "ranges": ranges, "range_threshold": 1.4}])
    assert ("sites off by more than 1.4x for some source:\n- `blocks.3.attn.softmax`: smi 1.50x\n"
            "Every other site within 1.20x–1.20x of di for every source.") in lines


def test_cnn_tables_render_hand_made_reports(tmp_path: Path) -> None:
    def rows(source: str, settings: list, w8: tuple, w4: tuple, made: float) -> list:
        return [{"source": source, "settings": settings, "scheme": scheme, "top1": m[0], "agreement": m[1], "kl": m[2],
                 "seconds_to_make": made} for scheme, m in (("w8a8", w8), ("w4a8", w4))]  # fmt: skip

    report = [*rows("real", [], (0.9338, 0.998, 0.0015), (0.9279, 0.963, 0.0657), 0.0),
              *rows("deepinversion", ["iterations=500", "batch_size=64"], (0.935, 0.991, 0.0026), (0.9291, 0.965, 0.0621), 586.2),
              *rows("cmi", ["ngf=16"], (0.572, 0.864, 0.063), (0.286, 0.316, 1.9068), 1523.4)]  # fmt: skip
    lines = render(tmp_path / "cifar", "cnn-cifar", [report]).splitlines()
    assert lines[2:4] == ["| real | 93.38 | 0.998 | 0.0015 | 92.79 | 0.963 | 0.0657 | — |",
                          "| DeepInversion (500 it.) | 93.50 | 0.991 | 0.0026 | 92.91 | 0.965 | 0.0621 | 586 |"]  # fmt: skip
    lines = render(tmp_path / "mb", "cnn-mobilenet", [report]).splitlines()
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
    lines = render(tmp_path / "kd", "kd-cifar", [di, noise, mix]).splitlines()
    assert lines[0].startswith("| training images | mixup | make set (s) | KD 1500 steps (s) |")
    assert lines[2:5] == ["| DeepInversion (200 it.) | — | 1290 | 1417 | 29.7 | 0.293 | 5.10 | 30.9 (step 700) |",
                          "| Gaussian noise | — | 0 | 1417 | 11.1 | 0.111 | 12.69 | 11.5 |",
                          "| DeepInversion (200 it.) | 0.5 | (same set) | 1417 | 34.4 | 0.340 | 4.28 | 34.4 |"]  # fmt: skip
    assert "Teacher 93.26% on the same images." in lines

    def point(step: int, top1: float) -> dict:
        return {"step": step, "top1": top1, "agreement": top1 + 0.006, "kl": 4.5 - step / 1000}

    probe = {"runs": [{"num_images": 32, "seconds_total": 304.3, "curve": [point(0, 0.0), point(50, 0.042), point(100, 0.07)]}]}
    lines = render(tmp_path / "probe", "probe", [probe]).splitlines()
    assert lines[0] == "| images | step 50 | 100 | wall (s) |"
    assert lines[2] == "| 32 | 4.2 / 0.048 / 4.45 | 7.0 / 0.076 / 4.40 | 304 |"
    long = {"runs": [{"num_images": 128, "seconds_total": 1408.3, "curve": [point(s, s / 2000) for s in range(0, 1201, 100)]}]}
    lines = render(tmp_path / "long", "probe-long", [long]).splitlines()
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
    lines = render(tmp_path, "rec-w8a8", [cal, rec]).splitlines()
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
    lines = render(tmp_path / "fq", "fakequant-overhead", [base, now], loads=(0.3, 0.31)).splitlines()
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
    lines = render(tmp_path / "inv", "inversion-speed", [speed]).splitlines()
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
    lines = importlib.import_module("_tables").provenance_lines([("t", {**PROV, "waited_for_idle": False})])
    assert "not idle" in lines[0]


def test_qat_after_reconstruction_table_renders_hand_made_reports(tmp_path: Path) -> None:
    m = lambda t, a, k: {"top1": t, "agreement": a, "kl": k}  # noqa: E731
    curve = [{"step": 0, **m(0.458, 0.584, 0.5607)}, {"step": 50, **m(0.466, 0.57, 0.5630)},
             {"step": 100, **m(0.476, 0.576, 0.5793)}, {"step": 150, **m(0.462, 0.574, 0.5856)}]  # fmt: skip
    report = {"model": "mobilenet_v1_025", "set": {"method": "cmi", "trained_on": 96}, "fp": m(0.57, 1.0, 0.0),
              "config": {"steps": 150, "batch_size": 32, "weight_ranges": "frozen", "act_ranges": "frozen"},
              "calibration_alone": m(0.286, 0.32, 1.8906), "reconstructed": m(0.458, 0.584, 0.5607),
              "qat": m(0.462, 0.574, 0.5856), "curve": curve, "wall": {"qat_this_process": 598.2}}  # fmt: skip
    lines = render(tmp_path, "qat-rec", [report]).splitlines()
    assert lines[2] == ("| MobileNet-v1 0.25, 96 CMI images | 28.6 / 0.320 / 1.891 | 45.8 / 0.584 / 0.561 "
                        "| 46.2 / 0.574 / 0.586 | 46.2–47.6 / 0.563–0.586 | 57.0 | 150, 32, frozen / frozen | 598 s |")


def test_estimate_names_the_set_each_model_used(tmp_path: Path) -> None:
    rows = [{"model": mdl, "label": f"w8a8 minmax, {src}", "top1": 0.5, "agreement": 0.9, "kl": kl,
             "held_agreement": 0.8, "held_kl": hk}
            for mdl in ("deit_tiny", "mobilenet_v1_025")
            for src, kl, hk in (("synthetic", 0.03, 0.1), ("real", 0.02, 0.09), ("noise", 0.1, 0.2))]  # fmt: skip
    sets = {"deit_tiny": "runs/sets/smi500-dt-s1", "mobilenet_v1_025": "runs/sets/cmi-mb-96"}
    text = render(tmp_path, "estimate-cmi", [{"configs": rows, "sets": sets}])
    assert "| DeiT-Tiny | W8A8 minmax, SMI images |" in text and "| MobileNet | W8A8 minmax, CMI images |" in text
    assert "1.000 pooled over all 6" in text
