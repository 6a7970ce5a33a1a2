"""dfq.jobs.invert: the caller's data config reaches the inverter, and the set it makes fits only a model
with that normalization."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dfq.errors import DfqError
from dfq.jobs import InvertRequest, run_invert
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


def test_manifest_holds_the_resolved_config_and_settings_fail_before_the_model(tmp_path, monkeypatch) -> None:
    """Review: the manifest recorded the unresolved config (None fields, a deleted checkpoint_path), and
    bad settings were refused only after loading (possibly downloading) the model."""
    import dfq.jobs.invert as invert_job
    from dfq.errors import DfqError
    from dfq.jobs import InvertRequest, run_invert

    request = InvertRequest(out=str(tmp_path / "s"), method="deepinversion", model="test_vit", pretrained=False,
                            num_images=1, settings=("iterations=2",), device="cpu", progress=False)  # fmt: skip
    config = run_invert(request).provenance["config"]
    assert config["betas"] is not None and config["iterations"] == 2  # resolved for the ViT family
    assert not {"checkpoint_path", "checkpoint_every", "log_every"} & set(config)

    def no_model(*_a, **_k):  # noqa: ANN002, ANN003
        raise AssertionError("the model must not be loaded before the settings are checked")

    monkeypatch.setattr(invert_job, "load_job_model", no_model)
    bad = InvertRequest(out=str(tmp_path / "t"), method="deepinversion", model="test_vit", pretrained=False,
                        settings=("no_such_field=1",), device="cpu", progress=False)  # fmt: skip
    with pytest.raises(DfqError, match="no_such_field"):
        run_invert(bad)
