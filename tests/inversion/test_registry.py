"""Every registered inverter, generated from the registry (dfq.inversion.registry) and run through
``invert``: on timm's ``test_vit`` and on a BatchNorm ``test_resnet``, within the clipping bounds, with the
caller's normalization. ViT and CNN settings come from ``_vit`` and ``_cnn``."""

from __future__ import annotations

import pytest
import torch

from dfq.inversion import get_inverter, invert, inverter_names
from dfq.inversion._loop import pixel_bounds
from dfq.models import data_config
from tests.inversion import _cnn, _vit
from tests.inversion._cnn import SMALL, _resnet, _small_cfg
from tests.inversion._vit import SIDE, _test_vit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", [n for n in inverter_names() if "vit" in get_inverter(n).families and n != "folder"])
def test_every_vit_inverter_runs(name: str) -> None:
    model = _test_vit()
    flags = [p.requires_grad for p in model.parameters()]
    cs = invert(model, name, progress=False, **_vit._small_kwargs(name))
    assert cs.images.shape == (2, 3, SIDE, SIDE)
    assert torch.isfinite(cs.images).all()
    if getattr(get_inverter(name).make_config(), "clip", False):
        lo, hi = pixel_bounds(data_config(model)["mean"], data_config(model)["std"])
        assert (cs.images >= lo - 1e-6).all() and (cs.images <= hi + 1e-6).all()
    assert [p.requires_grad for p in model.parameters()] == flags  # caller's model untouched
    assert not model.training


@pytest.mark.parametrize("name", [n for n in inverter_names() if "cnn" in get_inverter(n).families and n != "folder"])
def test_every_cnn_inverter_runs(name: str) -> None:
    model = _resnet()
    size = tuple(data_config(model)["input_size"])
    cs = invert(model, name, progress=False, **_cnn._small_kwargs(name))
    assert cs.images.shape == (2, *size)
    assert torch.isfinite(cs.images).all()
    if getattr(get_inverter(name).make_config(), "clip", False):
        lo, hi = pixel_bounds(data_config(model)["mean"], data_config(model)["std"])
        assert (cs.images >= lo - 1e-6).all() and (cs.images <= hi + 1e-6).all()
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    "name", [n for n in inverter_names() if "cnn" in get_inverter(n).families and n not in ("folder", "noise")]
)
def test_the_callers_normalization_reaches_the_images(name: str) -> None:
    """Regression: ``data_overrides`` mean/std 0.5 were recorded while the inverters clipped to the
    model's own (ImageNet) bounds, about [-2.1, 2.6]: they recomputed the data config themselves."""
    model = _resnet()
    half = _small_cfg(model, mean=(0.5,) * 3, std=(0.5,) * 3)
    cs = invert(model, name, data_cfg=half, progress=False, **_cnn._small_kwargs(name))
    assert cs.images.shape == (2, 3, SMALL, SMALL)  # test_resnet's own size is 224: data_cfg's wins
    assert cs.images.min() >= -1 - 1e-6 and cs.images.max() <= 1 + 1e-6
    if getattr(get_inverter(name).make_config(), "clip", False):  # the Gaussian init saturates the bounds
        assert cs.images.min() == -1 and cs.images.max() == 1
