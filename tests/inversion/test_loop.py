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
