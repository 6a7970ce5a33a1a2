"""``dfq/checkpoints.py`` beyond loading (``test_models.py`` covers that): non-finite values are refused
wherever they enter (weights, calibration ranges, saved runs, calibration sets), and the weights'
identity that a resumed inversion checks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import dfq
from dfq.checkpoints import check_finite, load_checkpoint_state, nonfinite_names, weights_sha256
from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.runs import QUANT_STATE, load, save_quant_state


def test_nonfinite_names_and_check() -> None:
    named = [("ok", torch.ones(3)), ("nan", torch.tensor([0.0, float("nan")])), ("ints", torch.arange(3)),
             ("ninf", torch.tensor(float("-inf")))]  # fmt: skip
    assert nonfinite_names(named) == ["nan", "ninf"]
    with pytest.raises(DfqError, match=r"in 2 tensor\(s\) \(nan, ninf\)"):
        check_finite(named, "thing")
    check_finite(named[:1], "thing")


def test_nonfinite_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"a": torch.ones(2), "b": torch.tensor([float("inf")])}, path)
    with pytest.raises(DfqError, match=r"checkpoint .*w\.pth holds NaN or infinite values in 1 tensor\(s\) \(b\)"):
        load_checkpoint_state(path)


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


def test_calibration_set_with_nonfinite_images_is_refused(tmp_path: Path) -> None:
    images = torch.zeros(2, 3, 4, 4)
    images[1, 2, 3, 3] = float("nan")
    CalibrationSet(images).save(tmp_path)
    with pytest.raises(DfqError, match="calibration set .* NaN or infinite"):
        CalibrationSet.load(tmp_path)


def test_weights_sha256_is_the_weights_identity() -> None:
    a = dfq.load_model("test_vit", pretrained=False)
    b = dfq.load_model("test_vit", pretrained=False)  # random init is seeded: same weights in every process
    assert weights_sha256(a) == weights_sha256(b)
    c = copy.deepcopy(a)
    with torch.no_grad():
        c.head.bias[0] += 1e-6
    assert weights_sha256(c) != weights_sha256(a)
    assert len(weights_sha256(a)) == 64


def test_extra_state_does_not_break_the_checks() -> None:
    class WithExtra(torch.nn.Linear):
        def get_extra_state(self) -> dict:
            return {"note": 1}

        def set_extra_state(self, state: dict) -> None:
            pass

    m = WithExtra(2, 2)
    assert nonfinite_names(m.state_dict().items()) == [] and len(weights_sha256(m)) == 64
