"""dfq.calibrators._histogram: the growing histogram conserves counts and keeps a point mass."""

from __future__ import annotations

import pytest
import torch

from tests.calibrators._helpers import GrowingHistogram


def test_histogram_conserves_counts_and_point_mass() -> None:
    hist = GrowingHistogram(64)
    hist.add(torch.full((10,), 2.0))
    assert hist.is_point and hist.quantile(0.5) == 2.0
    hist.add(torch.tensor([0.0, 1.0]))
    hist.add(torch.tensor([-4.0, 8.0]))  # widens on both sides: re-binning
    assert hist.counts is not None and float(hist.counts.sum()) == pytest.approx(14.0)
    assert (hist.lo, hist.hi) == (-4.0, 8.0)
    assert abs(hist.quantile(0.5) - 2.0) <= 2 * 12.0 / 64
    with pytest.raises(ValueError, match="inf or NaN"):
        hist.add(torch.tensor([1.0, float("nan")]))
