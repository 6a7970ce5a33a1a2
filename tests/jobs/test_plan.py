"""Precision planning through the CLI: held-out images and the data-free estimate, ``dfq analyze``,
``--weight-bits-budget`` (reloaded, exported and run in ONNX Runtime), ``dfq report``."""

from __future__ import annotations

import json

import pytest
import torch

import dfq
from dfq.data import CalibrationSet
from dfq.evaluation import per_image_kl
from dfq.quant.calibrate import quantizers_off
from tests._cli import run_cli

BASE = ["calibrate", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--batch-size", "4"]


def _one_line_error(code: int, err: str) -> None:
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err


@pytest.fixture(scope="module")
def noise_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("sets") / "noise"
    code, _, err = run_cli(["invert", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--method", "noise",
                            "--num-images", "6", "--seed", "7", "--out", str(out), "--json"])  # fmt: skip
    assert code == 0, err
    return out


def test_a_run_without_eval_folder_holds_images_out_and_reports_the_estimate(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli([*BASE, "--inversion", "noise", "--num-images", "4", "--holdout", "3",
                                 "--scheme", "w4a8", "--out", str(out), "--json"], capsys)  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    est = report["estimate"]
    assert est["images"] == 3 and est["source"] == "noise" and "not on real data" in est["caveat"]
    calib, held = CalibrationSet.load(out / "calibration"), CalibrationSet.load(out / "holdout")
    assert len(calib) == 4 and len(held) == 3 and report["calibration"]["num_images"] == 4
    assert held.provenance["split"] == {"part": "tail", "start": 4, "stop": 7, "of": 7}
    q = dfq.load(out)  # the estimate, recomputed independently from the saved run and held-out images
    with torch.no_grad():
        ql = q(held.images)
        with quantizers_off(q):
            fl = q(held.images)
    assert est["kl"] == pytest.approx(float(per_image_kl(fl, ql).mean()), rel=1e-4)
    assert est["agreement"] == pytest.approx(float((ql.argmax(1) == fl.argmax(1)).double().mean()))


def test_default_holdout_and_small_sets(tmp_path, noise_set, capsys):
    code, stdout, err = run_cli([*BASE, "--inversion", "noise", "--num-images", "2", "--out", str(tmp_path / "a"),
                                 "--json"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["estimate"]["images"] == 8  # the default without an evaluation folder
    code, stdout, err = run_cli([*BASE, "--calib-set", str(noise_set), "--out", str(tmp_path / "b"), "--json"], capsys)
    assert code == 0, err
    assert "too few" in json.loads(stdout)["estimate"]["skipped"]  # 6 images cannot spare 8: said, not faked
    code, stdout, err = run_cli([*BASE, "--inversion", "noise", "--num-images", "2", "--holdout", "0",
                                 "--out", str(tmp_path / "z"), "--json"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["estimate"]["skipped"].startswith("--holdout 0")
    assert not (tmp_path / "z" / "holdout").exists()
    assert len(CalibrationSet.load(tmp_path / "b" / "calibration")) == 6
    code, _, err = run_cli([*BASE, "--calib-set", str(noise_set), "--holdout", "6", "--out", str(tmp_path / "c")], capsys)
    _one_line_error(code, err)
    assert not (tmp_path / "c").exists()
    code, stdout, err = run_cli([*BASE, "--calib-set", str(noise_set), "--holdout", "2", "--out", str(tmp_path / "d"),
                                 "--json"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["estimate"]["images"] == 2 and len(CalibrationSet.load(tmp_path / "d" / "calibration")) == 4


def test_holdout_set_must_not_hold_calibration_images(tmp_path, noise_set, capsys):
    code, _, err = run_cli([*BASE, "--calib-set", str(noise_set), "--holdout-set", str(noise_set),
                            "--out", str(tmp_path / "r")], capsys)  # fmt: skip
    _one_line_error(code, err)
    assert "calibration images" in err and not (tmp_path / "r").exists()
    code, stdout, err = run_cli([*BASE, "--inversion", "noise", "--num-images", "3", "--holdout-set", str(noise_set),
                                 "--out", str(tmp_path / "ok"), "--json"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["estimate"]["images"] == 6


def test_weight_bits_budget_plans_reloads_exports_and_runs_in_onnxruntime(tmp_path, image_folder, capsys):
    out = tmp_path / "mixed"
    code, stdout, err = run_cli([*BASE, "--inversion", "noise", "--num-images", "4", "--holdout", "4",
                                 "--scheme", "w4a8", "--weight-bits-budget", "5", "--eval-folder", str(image_folder),
                                 "--export", "onnx", "--out", str(out), "--json"], capsys)  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    mixed = report["mixed_precision"]
    layers = mixed["layers"]
    assert len(layers) == 26 and set(layers.values()) == {4, 8}
    assert mixed["average_bits"] <= 5.0 and mixed["eight_bit"] == sorted(k for k, b in layers.items() if b == 8)
    plans = mixed["plans"]
    chosen = [p for p in plans if p["chosen"]]
    assert len(plans) >= 2 and len(chosen) == 1 and chosen[0]["held_kl"] == min(p["held_kl"] for p in plans)
    assert report["estimate"]["kl"] == pytest.approx(chosen[0]["held_kl"], rel=1e-6)  # the kept plan is the run
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["quant"]["layer_weight_bits"] == {k: 8 for k in mixed["eight_bit"]}
    q = dfq.load(out)
    named = dict(q.named_modules())
    assert all(named[k].weight_quantizer.spec.num_bits == b for k, b in layers.items())
    numels = {k: named[k].layer.weight.numel() for k in layers}
    assert mixed["average_bits"] == pytest.approx(sum(numels[k] * b for k, b in layers.items()) / sum(numels.values()), abs=1e-4)
    analysis = json.loads((out / "analysis.json").read_text())
    assert len(analysis["rows"]) == 26 and analysis["baseline_kl"] == mixed["uniform_kl"]
    import onnx
    from onnx import numpy_helper

    from dfq.export.parity import parity

    r = parity(q, out / "model.qdq.onnx", CalibrationSet.load(out / "holdout").images)
    assert r["agreement"] >= 0.75 and r["mean_abs_diff"] <= r["quant_error_mean"]  # ORT runs what torch ran
    graph = onnx.load(str(out / "model.qdq.onnx")).graph
    codes = {t.name.removesuffix(".w_quantized"): numpy_helper.to_array(t).astype(int) for t in graph.initializer
             if t.name.endswith(".w_quantized")}  # fmt: skip
    assert set(codes) == set(layers)  # each layer's weight codes on its own grid: [-8, 7] or beyond
    assert all((codes[k].min() >= -8 and codes[k].max() <= 7) == (b == 4) for k, b in layers.items())


@pytest.mark.parametrize("budget,scheme", [("3", "w4a8"), ("9", "w4a8"), ("6", "w8a8")])
def test_bad_budgets_are_one_line_errors(tmp_path, budget, scheme, capsys):
    code, _, err = run_cli([*BASE, "--inversion", "noise", "--scheme", scheme, "--weight-bits-budget", budget,
                            "--out", str(tmp_path / "r")], capsys)  # fmt: skip
    _one_line_error(code, err)
    assert not (tmp_path / "r").exists()


def test_analyze_writes_a_ranked_table_and_refuses_calibration_images(tmp_path, noise_set, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli([*BASE, "--inversion", "noise", "--num-images", "3", "--holdout", "3", "--scheme", "w4a8",
                            "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    code, stdout, err = run_cli(["analyze", str(out), "--sites", "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    record = json.loads(stdout)
    kinds = {r["kind"] for r in record["rows"]}
    assert kinds == {"weight", "act"} and record["images"]["count"] == 3
    report = json.loads((out / "report.json").read_text())
    assert record["baseline_kl"] == pytest.approx(report["estimate"]["kl"], rel=1e-5)  # same model, same images
    md = (out / "analysis.md").read_text()
    assert md.count("\n| ") == len(record["rows"]) + 1  # header row + one per quantizer
    code, stdout, err = run_cli(["analyze", str(out), "--images", str(noise_set), "--limit", "2", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["images"]["count"] == 2
    code, _, err = run_cli(["analyze", str(out), "--images", str(out / "calibration")], capsys)
    _one_line_error(code, err)
    code, _, err = run_cli(["analyze", str(tmp_path)], capsys)
    _one_line_error(code, err)
    code, stdout, err = run_cli(["report", str(out)], capsys)
    assert code == 0, err
    html = (out / "report.html").read_text()
    assert "blocks.0.attn.qkv" in html and "not on real data" in html
