"""dfq.inversion._pixels: the pixel-optimisation loop keeps a copy of the best iterate, and clips to the
bounds of the caller's data config (SMI and DeepInversion, called directly and through ``invert``)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from dfq.inversion import get_inverter, invert
from dfq.inversion._loop import pixel_bounds
from dfq.inversion._pixels import run_pixels
from dfq.inversion.deepinversion import deepinversion
from dfq.inversion.smi import SMIConfig, smi
from dfq.models import data_config
from tests.inversion._vit import SMALL, _small_kwargs, _small_vit

pytestmark = pytest.mark.usefixtures("one_thread")


def test_best_loss_keeps_a_copy_not_the_last_iterate() -> None:
    seen: list[Tensor] = []

    def loss_fn(x: Tensor, y: Tensor, it: int, state: dict, gen: torch.Generator) -> Tensor:
        seen.append(x.detach().clone())
        return x.square().mean() + (-10.0 if it == 2 else 0.0)  # iteration 2 is the best by far

    cfg = SMIConfig(num_images=2, batch_size=2, iterations=5, schedule=(), lr=0.1, log_every=1)
    data_cfg = {"input_size": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    labels = torch.zeros(2, dtype=torch.long)
    result = run_pixels(
        "test", cfg, nn.Identity(), data_cfg, loss_fn, labels, device=torch.device("cpu"), progress=False
    )
    assert torch.equal(result.images, seen[2])  # the images that produced the best loss
    assert not torch.equal(result.images, seen[-1])
    assert result.best_losses[0] == pytest.approx(float(seen[2].square().mean()) - 10.0)


@pytest.mark.parametrize("method", ["smi", "deepinversion"])
def test_the_callers_data_config_sets_the_clipping_bounds(method: str) -> None:
    """Regression: the inverters recomputed the data config and clipped to the model's own bounds."""
    model = _small_vit()
    mean, std = (0.2, 0.4, 0.6), (0.3, 0.25, 0.2)  # test_vit's own are 0.5 / 0.5
    data_cfg = data_config(model, input_size=SMALL, mean=mean, std=std)
    inverter = {"smi": smi, "deepinversion": deepinversion}[method]
    config = get_inverter(method).make_config(**_small_kwargs(method))
    cs = inverter(model, config, data_cfg=data_cfg, progress=False)
    lo, hi = pixel_bounds(mean, std)
    # the Gaussian init saturates both bounds of every channel, and nothing leaves them
    torch.testing.assert_close(cs.images.amin(dim=(0, 2, 3)), lo.flatten())
    torch.testing.assert_close(cs.images.amax(dim=(0, 2, 3)), hi.flatten())
    # the same through invert(): an explicit data_cfg wins over the model's own
    again = invert(model, method, data_cfg=data_cfg, progress=False, **_small_kwargs(method))
    assert torch.equal(again.images, cs.images)
