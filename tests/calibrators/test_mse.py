"""dfq.calibrators.mse: the chosen range against a float64 MSE of every candidate, per channel and per
tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.calibrators._helpers import feed, gaussian


def mse64(x: np.ndarray, amax: np.ndarray | float, num_bits: int, paper: bool = False) -> np.ndarray:
    """Float64 MSE of symmetric fake quantization with ``amax`` (per row when ``amax`` is a vector)."""
    amax = np.asarray(amax, dtype=np.float64)
    divisor = (2**num_bits - 1) / 2 if paper else 2 ** (num_bits - 1) - 1
    scale = (amax / divisor)[..., None] if amax.ndim else amax / divisor
    q = np.clip(np.round(x / scale), -(2 ** (num_bits - 1)), 2 ** (num_bits - 1) - 1)
    return ((q * scale - x) ** 2).mean(axis=-1)


@pytest.mark.parametrize("paper", [False, True])
def test_mse_per_channel_beats_every_candidate(paper: bool) -> None:
    w = gaussian(6, 512, seed=5)
    w[2, 17] = 25.0
    x = w.double().numpy()
    _, amax = feed("mse", [w], num_bits=4, axis=0, paper=paper)
    absmax = np.abs(x).max(axis=1)
    chosen = mse64(x, amax.double().numpy(), 4, paper)
    assert float(amax[2]) < 0.9 * absmax[2]
    assert np.all(chosen <= mse64(x, absmax, 4, paper) * (1 + 1e-5))
    for ratio in np.linspace(0.2, 1.0, 81):
        assert np.all(chosen <= mse64(x, absmax * ratio, 4, paper) * (1 + 1e-4))


def test_mse_per_tensor_gaussian_4bit() -> None:
    batches = [gaussian(50_000, seed=i, scale=1.0 + 0.1 * i) for i in range(4)]
    x = torch.cat(batches).double().numpy()
    lo, hi = feed("mse", batches, num_bits=4)
    absmax = np.abs(x).max()
    assert float(lo) == -float(hi) and float(hi) < 0.75 * absmax
    chosen = mse64(x, float(hi), 4)
    assert chosen < 0.8 * mse64(x, absmax, 4)
    best = min(mse64(x, absmax * r, 4) for r in np.linspace(0.2, 1.0, 81))
    assert chosen <= best * 1.02  # the histogram search lands on (nearly) the raw-data optimum
    _, hi8 = feed("mse", batches, num_bits=8)
    assert mse64(x, float(hi8), 8) <= mse64(x, absmax, 8)
