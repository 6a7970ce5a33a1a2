"""Helpers shared by the tests of dfq.calibrators: registry and histogram names, float32 Gaussian samples
from numpy, and feeding batches to a calibrator."""

from __future__ import annotations

import numpy as np
import torch

from dfq import calibrators

# ``from dfq import calibrators`` (not ``from dfq.calibrators import ...``): ruff cannot see that the
# sibling directory ``calibrators/`` is ``dfq.calibrators`` and would sort it as third-party.
get_calibrator = calibrators.get_calibrator


GrowingHistogram = calibrators._histogram.GrowingHistogram


def gaussian(*shape: int, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """float32 Gaussian samples from numpy (independent of torch's generator)."""
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape) * scale).float()


def feed(name: str, batches: list[torch.Tensor], **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Build ``name``, collect ``batches`` and return its range."""
    cal = get_calibrator(name, **kwargs)
    for x in batches:
        cal.collect(x)
    return cal.compute_range()
