"""One calibration on several processes: merge the calibrators' statistics across ranks before the ranges.

When ``torchrun`` runs a calibration loop on several ranks, each rank's calibrators have seen its share of
the data. :func:`merge_across_ranks` makes every rank's calibrators hold the statistics of all the data, as
if one process had seen it, so ``compute_range`` gives the same range everywhere:

* min/max (:class:`~dfq.calibrators.minmax.MinMaxCalibrator`): the element-wise minimum and maximum over
  ranks -- exactly the range of one process that saw the union;
* histograms (percentile, MSE and entropy calibrators, per tensor): each rank's counts spread over the
  union of the ranges and summed (:meth:`~dfq.calibrators._histogram.GrowingHistogram.merge`). One process
  re-bins as the range grows batch by batch, the merge once per rank, so the two agree to about a bin
  width (exactly when every rank's histogram already spans the union);
* kept per-channel rows (percentile and MSE with ``axis``): concatenated in rank order (exact).

One object collective carries everything (:func:`dfq.distributed.all_gather_object`, CPU tensors), and every
rank merges the same list in rank order. Without a ``torchrun`` session it does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dfq import distributed

from ._histogram import HistogramOrRows
from .base import Calibrator
from .entropy import EntropyCalibrator
from .minmax import MinMaxCalibrator

__all__ = ["merge_across_ranks"]


def _statistics(cal: Calibrator) -> Any:
    """What ``cal`` has collected, as CPU tensors and numbers."""
    if isinstance(cal, MinMaxCalibrator):
        if cal._min is None or cal._max is None:
            return None
        return cal._min.detach().cpu(), cal._max.detach().cpu()
    if isinstance(cal, HistogramOrRows):
        return cal._hist.state(), [r.cpu() for r in cal._rows]
    if isinstance(cal, EntropyCalibrator):
        return cal._hist.state()
    raise TypeError(f"cannot merge a {type(cal).__name__} across ranks: it keeps statistics dfq does not know")


def _absorb(cal: Calibrator, parts: list[Any]) -> None:
    """Replace ``cal``'s statistics by the merge of every rank's ``parts`` (rank order)."""
    if isinstance(cal, MinMaxCalibrator):
        seen = [p for p in parts if p is not None]
        if not seen:
            cal.reset()
            return
        shapes = {tuple(lo.shape) for lo, _ in seen}
        if len(shapes) != 1:
            raise ValueError(f"ranks collected different channel counts for one quantizer: {sorted(shapes)}")
        device = cal._min.device if cal._min is not None else torch.device("cpu")
        lo = torch.stack([p[0] for p in seen]).amin(dim=0)
        hi = torch.stack([p[1] for p in seen]).amax(dim=0)
        cal._min, cal._max = lo.to(device), hi.to(device)
    elif isinstance(cal, HistogramOrRows):
        cal._hist.merge([p[0] for p in parts])
        cal._rows = [r for p in parts for r in p[1]]
    else:
        cal._hist.merge(parts)  # type: ignore[attr-defined]


def merge_across_ranks(calibrators: Sequence[Calibrator]) -> None:
    """Give every rank's calibrators the statistics of all ranks (see the module docstring).

    A collective: every rank calls it with its calibrators of the same quantizers, in the same order.
    A no-op without a ``torchrun`` session.

    Raises:
        TypeError: a calibrator whose statistics this module does not know (a user's own class).
        DfqError: another rank stopped (:mod:`dfq.distributed`).
    """
    if distributed.world_size() == 1:
        return
    mine = [_statistics(c) for c in calibrators]
    everyone = distributed.all_gather_object(mine)
    for i, cal in enumerate(calibrators):
        _absorb(cal, [rank_parts[i] for rank_parts in everyone])
