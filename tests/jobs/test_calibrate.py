"""dfq.jobs.calibrate: one provenance record and one checkpoint hash per run, whatever the calibration
source; the quantization options are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dfq
from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.jobs import CalibrateRequest, CalibrationSource, run_calibrate
from dfq.jobs.calibrate import quant_config_from_options


def test_one_provenance_and_one_checkpoint_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every source yields the same provenance record, and the checkpoint is hashed once per run."""
    import dfq.jobs.model as job_model

    weights = tmp_path / "w.pth"
    torch.save(dfq.load_model("test_vit", pretrained=False).state_dict(), weights)
    calls = []
    real = job_model.checkpoint_sha256
    monkeypatch.setattr(job_model, "checkpoint_sha256", lambda p: calls.append(p) or real(p))
    request = CalibrateRequest(out=str(tmp_path / "run"), config=dfq.presets["w8a8"], model="test_vit",
                               checkpoint=str(weights), source=CalibrationSource.inversion("noise"), num_images=2,
                               device="cpu", progress=False)  # fmt: skip
    report = run_calibrate(request)
    assert len(calls) == 1
    recipe = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert recipe["model"] == report["model"] and recipe["model"]["checkpoint_sha256"] == real(weights)
    provenance = CalibrationSet.load(tmp_path / "run" / "calibration").provenance
    assert provenance["model"] == recipe["model"]  # one identity record, one shape, in the set and the recipe
    for key in ("source", "method", "config", "seed", "versions", "device", "seconds", "wall_seconds"):
        assert key in provenance, key
    assert recipe["calibration"]["source"] == "inversion" and recipe["calibration"]["method"] == "noise"
    # the same set reused by path: accepted for these weights, its provenance untouched
    request = CalibrateRequest(out=str(tmp_path / "run2"), config=dfq.presets["w8a8"], model="test_vit",
                               checkpoint=str(weights), source=CalibrationSource.saved_set(str(tmp_path / "run" /
                               "calibration")), device="cpu", progress=False)  # fmt: skip
    assert run_calibrate(request)["calibration"]["source"] == "set"


def test_quant_options_are_one_line_errors() -> None:
    with pytest.raises(DfqError, match="unknown activation site"):
        quant_config_from_options(sites="q,nonsense")
    with pytest.raises(DfqError, match="SITE=NAME"):
        quant_config_from_options(site_calibrators=("softmax",))
    with pytest.raises(DfqError, match="unknown target"):
        quant_config_from_options(target="tflite")
    assert quant_config_from_options("w8a8", "paper").numerics == "paper"
