"""Run directories (``dfq/runs.py``): ``--force`` replaces only what dfq wrote, never a user's folder; the
report flags non-finite logits; ``load`` refuses a run whose saved state is not finite."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import dfq
from dfq.data import CalibrationSet, is_calibration_dir
from dfq.errors import DfqError
from dfq.runs import QUANT_STATE, RECIPE, check_output, is_run_dir, load, run_directory, save_quant_state


def _fake_run(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / RECIPE).write_text(json.dumps({"quant": {}, "versions": {"dfq": "0"}}))
    return path


def test_new_output_is_written_and_existing_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with run_directory(out) as tmp:
        (tmp / RECIPE).write_text(json.dumps({"quant": {}, "versions": {"dfq": "0"}}))
    assert is_run_dir(out)
    with pytest.raises(DfqError, match="already exists"), run_directory(out):
        pass


def test_force_replaces_a_dfq_run_and_a_set(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    (run / "old.txt").write_text("old")
    with run_directory(run, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in run.iterdir()) == ["new.txt"]
    calib = tmp_path / "set"
    CalibrationSet(torch.zeros(1, 3, 4, 4)).save(calib)
    assert is_calibration_dir(calib) and not is_run_dir(calib)
    with run_directory(calib, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert (calib / "new.txt").is_file() and not is_calibration_dir(calib)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no .old-* or .partial-* left


def test_force_never_deletes_a_users_folder_or_file(tmp_path: Path) -> None:
    """Regression: ``--out precious --force`` used to delete any folder (and a file)."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("x")
    with pytest.raises(DfqError, match="neither"), run_directory(precious, overwrite=True):
        raise AssertionError("the block must not run")
    assert (precious / "thesis.txt").read_text() == "x"
    file = tmp_path / "notes.txt"
    file.write_text("y")
    with pytest.raises(DfqError, match="is a file"):
        check_output(file, overwrite=True)
    assert file.read_text() == "y"
    # a directory whose recipe.json is not dfq's is not a run
    (precious / RECIPE).write_text(json.dumps({"name": "someone else's"}))
    assert not is_run_dir(precious)
    with pytest.raises(DfqError, match="neither"):
        check_output(precious, overwrite=True)


def test_force_refuses_the_current_directory_and_its_parents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: ``--out . --force`` tracebacked and left a ``..old-*`` directory behind."""
    here = _fake_run(tmp_path / "a" / "b")  # even a dfq run may not be replaced while we stand in it
    monkeypatch.chdir(here)
    for out in (".", "..", str(here), os.path.join("..", "b")):
        with pytest.raises(DfqError, match="current directory"):
            check_output(out, overwrite=True)
    assert (here / RECIPE).is_file() and sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


def test_a_set_folder_with_other_files_is_not_a_set(tmp_path: Path) -> None:
    """Regression (review): saving a set into a user's folder made the whole folder replaceable by --force."""
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "thesis.txt").write_text("x")
    with pytest.raises(DfqError, match="holds other files"):
        CalibrationSet(torch.zeros(1, 3, 4, 4)).save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]
    calib = tmp_path / "set"
    CalibrationSet(torch.zeros(1, 3, 4, 4)).save(calib)
    CalibrationSet(torch.ones(1, 3, 4, 4)).save(calib)  # a set may be saved over
    (calib / "notes.txt").write_text("mine")  # once the user puts a file in, it is not dfq's alone
    assert not is_calibration_dir(calib)
    with pytest.raises(DfqError, match="neither"):
        check_output(calib, overwrite=True)


def test_report_flags_nonfinite_logits(tmp_path: Path) -> None:
    from dfq.runs import REPORT_JSON, REPORT_MD, write_report

    report = {"model": {"name": "m"}, "fp": {"top1": 0.5, "top5": 1.0, "num_nonfinite": 0},
              "quant": {"top1": 0.0, "top5": 0.0, "num_nonfinite": 7}, "agreement": 0.0, "kl": None,
              "num_eval_images": 8}  # fmt: skip
    write_report(tmp_path, report)
    md = (tmp_path / REPORT_MD).read_text()
    assert "quant gave NaN/inf logits on 7 images" in md and "fp gave" not in md
    assert "mean KL(FP ‖ quant): —" in md and json.loads((tmp_path / REPORT_JSON).read_text())["kl"] is None


def test_load_refuses_a_run_with_nonfinite_state(tmp_path: Path) -> None:
    model = dfq.quantize_(dfq.load_model("test_vit", pretrained=False), dfq.presets["w8a8"])
    dfq.calibrate(model, lambda m: m(torch.randn(2, 3, 160, 160)))
    recipe = {"model": {"source": "timm", "name": "test_vit"}, "quant": dfq.presets["w8a8"].to_dict()}
    save_quant_state(tmp_path, recipe, model)
    assert load(tmp_path) is not None
    blob = torch.load(tmp_path / QUANT_STATE, weights_only=True)
    key = next(k for k in blob["state_dict"] if k.endswith("input_quantizer.hi"))
    blob["state_dict"][key] = torch.tensor(float("inf"))
    torch.save(blob, tmp_path / QUANT_STATE)
    with pytest.raises(DfqError, match=key.replace(".", r"\.")):
        load(tmp_path)
