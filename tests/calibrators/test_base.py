"""The calibrator contract (dfq.calibrators.base and its registry), against independent references.

Generic checks are generated from the registry, so every registered calibrator runs here; then what
several calibrators share (per-channel counts, asymmetric ranges) and the doctests.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from dfq import calibrators
from tests.calibrators._helpers import feed, gaussian, get_calibrator

NAMES = calibrators.calibrator_names()


# ---------------------------------------------------------------- every registered calibrator
@pytest.mark.parametrize("name", NAMES)
def test_per_tensor_symmetric_contract(name: str) -> None:
    batches = [gaussian(4, 1000, scale=s, seed=i) for i, s in enumerate((1.0, 2.0, 0.5))]
    lo, hi = feed(name, batches)
    absmax = max(float(x.abs().max()) for x in batches)
    for t in (lo, hi):
        assert t.dim() == 0 and t.dtype == torch.float32 and t.device.type == "cpu"
    assert float(lo) == -float(hi)
    assert 0.0 < float(hi) <= absmax


@pytest.mark.parametrize("name", NAMES)
def test_before_collect_and_reset(name: str) -> None:
    cal = get_calibrator(name)
    with pytest.raises(RuntimeError, match="before any collect"):
        cal.compute_range()
    cal.collect(gaussian(5000, scale=10.0, seed=1))
    cal.reset()
    with pytest.raises(RuntimeError, match="before any collect"):
        cal.compute_range()
    x = gaussian(5000, seed=2)
    cal.collect(x)
    assert torch.equal(torch.stack(cal.compute_range()), torch.stack(feed(name, [x])))


@pytest.mark.parametrize("name", NAMES)
def test_all_zero_and_bad_bits(name: str) -> None:
    lo, hi = feed(name, [torch.zeros(3, 4), torch.zeros(7)])
    assert float(lo) == 0.0 and float(hi) == 0.0
    with pytest.raises(ValueError, match="num_bits"):
        get_calibrator(name, num_bits=1)


# ---------------------------------------------------------------- shared by several calibrators
def test_per_channel_count_mismatch() -> None:
    for name in ("minmax", "percentile", "mse"):
        cal = get_calibrator(name, axis=0)
        cal.collect(torch.ones(4, 3))
        with pytest.raises(ValueError, match="channels"):
            cal.collect(torch.ones(5, 3))


def test_asymmetric_on_positive_data() -> None:
    batches = [torch.from_numpy(np.random.default_rng(i).uniform(1.0, 3.0, 50_000)).float() for i in range(3)]
    data = torch.cat(batches)
    lo, hi = feed("minmax", batches, symmetric=False)
    assert torch.equal(lo, data.min()) and torch.equal(hi, data.max())
    lo, hi = feed("percentile", batches, symmetric=False)
    width = float(data.max() - data.min()) / 2048
    assert 0.0 < float(lo) and abs(float(lo) - np.percentile(data.double().numpy(), 0.01)) <= 2 * width
    lo, hi = feed("mse", batches, symmetric=False)
    assert 0.0 <= float(lo) <= float(data.min()) < float(hi) <= float(data.max())


@pytest.mark.parametrize("module", [calibrators.minmax, calibrators.percentile])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
