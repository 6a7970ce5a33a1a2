"""Tests for dfq.models: names, fail-fast hub, preprocessing, ImageNet index, families (loading a
checkpoint into a model: test_checkpoints.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from dfq import models
from dfq.errors import DfqError
from dfq.models import (
    ALIASES,
    data_config,
    eval_transform,
    is_cls_vit,
    load_model,
    model_family,
    resolve_model_name,
    wnid_to_index,
)
from tests._helpers import _one_line


# ------------------------------------------------------------------------------------------- names
def test_aliases_resolve_to_timm_models() -> None:
    assert resolve_model_name("deit_tiny") == "deit_tiny_patch16_224"
    assert resolve_model_name("DeiT_Base") == "deit_base_patch16_224"
    assert resolve_model_name("vit_large") == "vit_large_patch16_224"
    assert set(ALIASES) == {f"deit_{s}" for s in ("tiny", "small", "base")} | {
        f"vit_{s}" for s in ("tiny", "small", "base", "large")
    }
    assert all(timm.is_model(target) for target in ALIASES.values())


def test_timm_names_pass_through() -> None:
    assert resolve_model_name("test_vit") == "test_vit"
    assert resolve_model_name("vit_base_patch16_224.augreg_in21k") == "vit_base_patch16_224.augreg_in21k"


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(DfqError) as err:
        resolve_model_name("deit_tinny")
    msg = _one_line(err)
    assert "deit_tiny" in msg and "aliases" in msg


# -------------------------------------------------------------------------------------------- hub
def test_random_init_without_pretrained() -> None:
    model = load_model("test_vit", pretrained=False)
    assert not model.training
    assert load_model("test_resnet", pretrained=False, num_classes=10).fc.out_features == 10


def test_pretrained_offline_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing cached
    start = time.perf_counter()
    with pytest.raises(DfqError) as err:
        load_model("test_vit", pretrained=True)
    assert time.perf_counter() - start < 10.0  # fails fast: not the ~45 s of hub retries
    msg = _one_line(err)
    assert "--checkpoint" in msg and "--no-pretrained" in msg


def test_pretrained_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "hub_reachable", lambda *a, **k: False)
    start = time.perf_counter()
    with pytest.raises(DfqError) as err:
        load_model("test_vit", pretrained=True)
    assert time.perf_counter() - start < 10.0  # fails fast: not the ~45 s of hub retries
    assert "unreachable" in _one_line(err) and "--checkpoint" in str(err.value)


def test_hub_probe_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connect that hangs (simulated: no traffic leaves this machine) is abandoned after ``timeout``."""

    def hang(*_args: object, **_kwargs: object) -> None:
        time.sleep(5)  # then fail as a timed-out connect does (the probe thread is a daemon)
        raise TimeoutError("simulated")

    monkeypatch.setattr(models.socket, "create_connection", hang)
    start = time.perf_counter()
    assert models.hub_reachable("hub.invalid", timeout=0.5) is False
    assert time.perf_counter() - start < 4.5  # 0.5 s plus scheduling slack on a loaded machine, not 5 s


def test_model_without_pretrained_weights() -> None:
    name = next(n for n in timm.list_models() if (c := timm.models.get_pretrained_cfg(n)) is None
                or not (c.hf_hub_id or c.url or c.file))
    with pytest.raises(DfqError, match="no pretrained weights"):
        load_model(name, pretrained=True)


# ----------------------------------------------------------------------------------- preprocessing
def test_data_config_and_transform() -> None:
    model = load_model("test_vit", pretrained=False)
    config = data_config(model)
    assert set(config) == {"input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode"}
    assert config["input_size"] == (3, 160, 160)
    config = data_config(model, mean=[0.5, 0.5, 0.5], std=(0.5, 0.5, 0.5), input_size=64, crop_pct=1.0)
    assert config["mean"] == (0.5, 0.5, 0.5) and config["input_size"] == (3, 64, 64)
    x = eval_transform(config)(Image.new("RGB", (80, 100), (255, 0, 0)))
    assert x.shape == (3, 64, 64)
    assert torch.allclose(x[0], torch.ones(64, 64)) and torch.allclose(x[1], -torch.ones(64, 64))
    with pytest.raises(DfqError, match="unknown preprocessing"):
        data_config(model, meen=(0.5,))


# -------------------------------------------------------------------------------- ImageNet classes
def test_wnid_index() -> None:
    index = wnid_to_index()
    synsets = list(index)
    assert len(index) == 1000 and [index[s] for s in synsets] == list(range(1000))
    assert index["n01440764"] == 0 and index["n15075141"] == 999
    assert synsets == sorted(synsets)
    index["n01440764"] = 5  # callers get a copy
    assert wnid_to_index()["n01440764"] == 0


# ---------------------------------------------------------------------------------------- families
def test_model_family() -> None:
    vit = timm.create_model("test_vit")
    assert model_family(vit) == "vit" and is_cls_vit(vit)
    assert model_family(timm.create_model("test_resnet")) == "cnn"
    registers = timm.create_model("test_vit", reg_tokens=4)
    assert not is_cls_vit(registers) and model_family(registers) == "other"
    pooled = timm.create_model("test_vit", global_pool="avg")
    assert not is_cls_vit(pooled)
    assert model_family(torch.nn.Linear(2, 2)) == "other"


# ------------------------------------------------------------------------------------ real assets
def test_deit_tiny_asset(assets: Path) -> None:
    from dfq.data import open_image

    model = load_model("deit_tiny", checkpoint=assets / "weights" / "deit_tiny_patch16_224.pth")
    assert sum(p.numel() for p in model.parameters()) == 5_717_416
    assert model_family(model) == "vit"
    config = data_config(model)
    assert config["interpolation"] == "bicubic" and config["input_size"] == (3, 224, 224)
    assert config["mean"] == IMAGENET_DEFAULT_MEAN and config["std"] == IMAGENET_DEFAULT_STD
    assert config["crop_pct"] == model.pretrained_cfg["crop_pct"]  # timm's own value (0.9 in timm 1.0)
    config = data_config(model, crop_pct=0.875)  # the asset's documented eval: resize 256, crop 224
    assert config["crop_pct"] == 0.875
    tench = next((assets / "data" / "imagenet-sample" / "val" / "n01440764").iterdir())
    x = eval_transform(config)(open_image(tench))
    with torch.no_grad():
        assert model(x[None]).argmax(1).item() == 0
