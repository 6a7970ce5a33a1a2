"""dfq.calibrators.minmax: exact per-tensor and per-channel ranges, symmetric and not."""

from __future__ import annotations

import pytest
import torch

from tests.calibrators._helpers import feed, gaussian


def test_minmax_per_tensor_exact() -> None:
    batches = [gaussian(3, 50, seed=i) + i for i in range(4)]
    data = torch.cat([b.flatten() for b in batches])
    lo, hi = feed("minmax", batches, symmetric=False)
    assert torch.equal(lo, data.min()) and torch.equal(hi, data.max())
    lo, hi = feed("minmax", batches)
    assert torch.equal(hi, data.abs().max()) and torch.equal(lo, -data.abs().max())


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_minmax_per_channel_exact(axis: int) -> None:
    batches = [gaussian(6, 5, 7, seed=i) * (i + 1) for i in range(3)]
    data = torch.cat(batches, dim=2 if axis in (0, 1) else 0)
    other = tuple(d for d in range(3) if d != axis % 3)
    lo, hi = feed("minmax", batches, symmetric=False, axis=axis)
    assert lo.shape == (data.shape[axis],)
    assert torch.equal(lo, data.amin(dim=other)) and torch.equal(hi, data.amax(dim=other))
    lo, hi = feed("minmax", batches, axis=axis)
    assert torch.equal(hi, data.abs().amax(dim=other)) and torch.equal(lo, -hi)
