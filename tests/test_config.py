"""dfq.config: QuantConfig / QuantSpec round trip and validation, and the :class:`BiasCorrection` mode, an
enum in the config that still accepts, and still writes, the plain strings of recipes on disk."""

from __future__ import annotations

import dataclasses
import json

import pytest

import dfq
from dfq.config import BiasCorrection, QuantConfig, QuantSpec, preset


def test_config_round_trip_and_validation():
    for cfg in dfq.presets.values():
        assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown activation site"):
        QuantConfig(act_sites=frozenset({"nope"}))
    with pytest.raises(ValueError, match="exclude each other"):
        QuantConfig(act_sites=frozenset({"qkv_out", "q"}))
    with pytest.raises(ValueError, match="unknown QuantConfig key"):
        QuantConfig.from_dict({**preset("w8a8").to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="num_bits"):
        QuantSpec(num_bits=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset("w8a8").name = "x"  # type: ignore[misc]
    assert preset("w8a8").trt_compatible and not preset("w8a8", "paper").trt_compatible


# -- BiasCorrection ----------------------------------------------------------------------------------
# What dfq wrote before BiasCorrection existed (preset w4a8 with bias_correction="on"), byte for byte.
OLD_RECIPE = (
    '{"act": {"calibrator": "minmax", "calibrator_args": {}, "num_bits": 8, "paper_scale": false, '
    '"per_channel": false, "symmetric": true}, "act_sites": ["conv_in", "fc1_in", "fc2_in", "head_in", '
    '"image", "k", "linear_in", "proj_in", "q", "qkv_in", "softmax", "v"], "bias_correction": "on", '
    '"name": "w4a8", "numerics": "trt", "quantize_head": true, "quantize_patch_embed": true, '
    '"site_calibrators": {"softmax": "mse"}, "version": 1, "weight": {"calibrator": "mse", '
    '"calibrator_args": {}, "num_bits": 4, "paper_scale": false, "per_channel": true, "symmetric": true}}'
)


@pytest.mark.parametrize("text", ["auto", "on", "off"])
def test_bias_correction_accepts_strings_and_writes_them_back(text):
    cfg = QuantConfig(bias_correction=text)
    assert cfg.bias_correction is BiasCorrection(text)
    assert cfg == QuantConfig(bias_correction=BiasCorrection(text))
    assert dataclasses.replace(preset("w8a8"), bias_correction=text).bias_correction is BiasCorrection(text)
    d = cfg.to_dict()
    assert type(d["bias_correction"]) is str and d["bias_correction"] == text
    assert QuantConfig.from_dict(json.loads(json.dumps(d))) == cfg


@pytest.mark.parametrize("bad", ["ON", "yes", True, None, 1])
def test_bias_correction_refuses_other_values(bad):
    with pytest.raises(ValueError, match="auto, on or off"):
        QuantConfig(bias_correction=bad)


def test_old_string_recipe_round_trips_unchanged():
    cfg = QuantConfig.from_dict(json.loads(OLD_RECIPE))
    assert cfg.bias_correction is BiasCorrection.ON
    assert cfg == dataclasses.replace(preset("w4a8"), bias_correction=BiasCorrection.ON)
    assert json.dumps(cfg.to_dict(), sort_keys=True) == OLD_RECIPE


@pytest.mark.parametrize(
    ("mode", "cnn", "expected"),
    [("auto", True, True), ("auto", False, False), ("on", False, True), ("off", True, False)],
)
def test_auto_resolves_by_model_family(mode, cnn, expected):
    assert BiasCorrection(mode).enabled(cnn=cnn) is expected
