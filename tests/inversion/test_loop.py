"""dfq.inversion._loop: the shared loop's ``frozen_eval`` restores the model, ``keep_best`` keeps a copy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dfq.inversion._loop import frozen_eval, keep_best

pytestmark = pytest.mark.usefixtures("one_thread")


def test_frozen_eval_restores_on_error() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    model[0].bias.requires_grad_(False)
    with pytest.raises(RuntimeError), frozen_eval(model):
        assert not any(p.requires_grad for p in model.parameters()) and not model.training
        raise RuntimeError
    assert model.training and model[0].weight.requires_grad and not model[0].bias.requires_grad


def test_keep_best_returns_a_clone() -> None:
    best_loss, (best,) = keep_best(
        torch.tensor(math.inf), torch.tensor(2.0), (torch.zeros(3),), (torch.ones(3),)
    )
    current = torch.full((3,), 7.0)
    best_loss, (best,) = keep_best(best_loss, torch.tensor(1.0), (best,), (current,))
    current.fill_(-1.0)  # the next iterate is written in place: the kept one must not change
    assert torch.equal(best, torch.full((3,), 7.0)) and best_loss.item() == 1.0
    best_loss, (best,) = keep_best(best_loss, torch.tensor(3.0), (best,), (torch.zeros(3),))
    assert torch.equal(best, torch.full((3,), 7.0)) and best_loss.item() == 1.0
    best_loss, (best,) = keep_best(best_loss, torch.tensor(float("nan")), (best,), (torch.zeros(3),))
    assert torch.equal(best, torch.full((3,), 7.0)) and best_loss.item() == 1.0


@pytest.mark.parametrize("method", ["smi", "deepinversion"])
def test_interrupt_after_a_committed_iteration_resumes_exactly(tmp_path, monkeypatch, method) -> None:
    """Regression (review): Ctrl-C after an iteration was committed (here inside the logging check)
    saved that iteration as the next to run, so a resume ran it twice (SMI at a prune then crashed)."""
    import dfq
    from dfq.inversion import _loop

    model = dfq.load_model("test_vit", pretrained=False)
    settings = {"num_images": 1, "iterations": 8, "log_every": 1, "progress": False}
    if method == "smi":
        settings["schedule"] = ((3, 0.5), (5, 0.5))
    reference = dfq.invert(model, method, **settings)
    real_check, calls = _loop.NonFiniteWatch.check, []

    def interrupt_once(self, *args):  # noqa: ANN001, ANN002
        calls.append(1)
        if len(calls) == 3:  # after iteration 2 was committed, right before the prune at 3
            raise KeyboardInterrupt
        return real_check(self, *args)

    ckpt = tmp_path / "c.ckpt"
    monkeypatch.setattr(_loop.NonFiniteWatch, "check", interrupt_once)
    with pytest.raises(KeyboardInterrupt):
        dfq.invert(model, method, checkpoint_path=str(ckpt), **settings)
    monkeypatch.setattr(_loop.NonFiniteWatch, "check", real_check)
    resumed = dfq.invert(model, method, checkpoint_path=str(ckpt), **settings)
    assert resumed.provenance["resumed_from"] == [0, 3]
    assert torch.equal(resumed.images, reference.images)
