"""The job layer (``dfq/jobs``): one calibration source, one data config reaching the inverters, one
identity record and one checkpoint hash per run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dfq
from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.jobs import CalibrateRequest, CalibrationSource, InvertRequest, run_calibrate, run_invert
from dfq.jobs.calibrate import quant_config_from_options
from dfq.jobs.model import check_set_matches, load_job_model

HALF = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def test_caller_data_config_reaches_the_inverter(tmp_path: Path) -> None:
    """Regression: with mean/std 0.5 overrides on a BN CNN, the manifest said 0.5 while the images were
    clipped to the ImageNet-normalisation bounds, and the set was then accepted for a 0.5 model."""
    from dfq.zoo import cifar_resnet

    torch.manual_seed(0)
    model = cifar_resnet(20)  # built by the caller; its data config is timm's ImageNet default
    request = InvertRequest(out=str(tmp_path / "set"), method="deepinversion", num_images=4, device="cpu",
                            settings=("iterations=10", "lr=0.5"), data_overrides=HALF, progress=False)  # fmt: skip
    calib = run_invert(request, model=model)
    assert calib.provenance["model"]["mean"] == [0.5] * 3 and calib.provenance["model"]["std"] == [0.5] * 3
    # 0.5/0.5 normalisation maps pixels [0, 1] to [-1, 1]; ImageNet's would allow up to (1 - 0.406) / 0.225 = 2.64
    assert calib.images.min() >= -1.0 - 1e-6 and calib.images.max() <= 1.0 + 1e-6
    assert calib.images.abs().max() > 0.9  # and the optimisation does reach the bounds it was given
    # the set fits a model with that normalisation, and is refused for the same model with timm's own
    check_set_matches(calib, load_job_model(None, module=model, data_overrides=HALF).identity, "set")
    with pytest.raises(DfqError, match="made with mean"):
        check_set_matches(calib, load_job_model(None, module=model).identity, "set")


def test_source_from_options_needs_exactly_one() -> None:
    with pytest.raises(DfqError, match="exactly one"):
        CalibrationSource.from_options(None, None, None)
    with pytest.raises(DfqError, match="exactly one"):
        CalibrationSource.from_options(".", None, "noise")
    with pytest.raises(DfqError, match="needs --inversion"):
        CalibrationSource.from_options(".", None, None, ("lr=1",))
    with pytest.raises(DfqError, match="choose from"):
        CalibrationSource.inversion("no-such-method")
    with pytest.raises(DfqError, match="is not a directory"):
        CalibrationSource.folder("/nonexistent-folder")
    source = CalibrationSource.from_options(None, None, "noise", ("std=0.5",))
    assert source.describe() == {"source": "inversion", "method": "noise", "settings": ["std=0.5"]}


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
