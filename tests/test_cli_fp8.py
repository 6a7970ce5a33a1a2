"""``dfq calibrate --numerics fp8`` (the ``w8a8-fp8`` preset) end to end on timm's tiny ``test_vit``."""

from __future__ import annotations

import json

import dfq
from dfq.quant.modules import quantizers
from tests._cli import _calibrate_args, run_cli


def test_calibrate_fp8_writes_a_run_that_reloads_in_e4m3(tmp_path, image_folder, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli([*_calibrate_args(out, image_folder), "--numerics", "fp8"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert 0.0 <= report["agreement"] <= 1.0 and report["kl"] >= 0.0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["quant"]["name"] == "w8a8-fp8" and recipe["quant"]["act"]["format"] == "e4m3"
    model = dfq.load(out)
    assert {q.spec.format for q in quantizers(model)} == {"e4m3"}


def test_calibrate_fp8_refuses_a_grid_searching_calibrator_in_one_line(tmp_path, image_folder, capsys):
    args = [*_calibrate_args(tmp_path / "r", image_folder), "--numerics", "fp8", "--calibrator", "mse"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "integer grid" in err and not (tmp_path / "r").exists()
