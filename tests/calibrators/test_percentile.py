"""dfq.calibrators.percentile: close to numpy's percentiles per tensor while the range grows, exact per
channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.calibrators._helpers import feed, gaussian


@pytest.mark.parametrize("p", [99.0, 99.99])
def test_percentile_per_tensor_close_to_numpy_with_growing_range(p: float) -> None:
    # the range grows twice: later batches are wider than the first one
    batches = [
        gaussian(300_000, seed=1),
        gaussian(300_000, scale=3.0, seed=2),
        gaussian(400_000, scale=4.0, seed=3),
    ]
    x = torch.cat(batches).double().numpy()
    _, hi = feed("percentile", batches, percentile=p)
    width = np.abs(x).max() / 2048
    assert abs(float(hi) - np.percentile(np.abs(x), p)) <= 2 * width
    lo, hi = feed("percentile", batches, percentile=p, symmetric=False)
    width = (x.max() - x.min()) / 2048
    assert abs(float(hi) - np.percentile(x, p)) <= 2 * width
    assert abs(float(lo) - np.percentile(x, 100 - p)) <= 2 * width


@pytest.mark.parametrize("axis", [0, 1])
def test_percentile_per_channel_exact(axis: int) -> None:
    w = gaussian(8, 300, seed=4)
    w[3, 7] = 40.0
    x = w.double().numpy()
    lo, hi = feed("percentile", [w], axis=axis, percentile=99.0)
    np.testing.assert_allclose(hi.numpy(), np.percentile(np.abs(x), 99.0, axis=1 - axis), rtol=1e-6)
    assert torch.equal(lo, -hi)
    lo, hi = feed("percentile", [w], axis=axis, percentile=99.0, symmetric=False)
    np.testing.assert_allclose(lo.numpy(), np.percentile(x, 1.0, axis=1 - axis), rtol=1e-6)
    np.testing.assert_allclose(hi.numpy(), np.percentile(x, 99.0, axis=1 - axis), rtol=1e-6)
