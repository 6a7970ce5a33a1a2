"""One calibration on several ``torchrun`` ranks: merge what each rank observed before the ranges are set.

:func:`dfq.quant.calibrate.calibration_mode` calls :func:`merge_across_ranks` when its block ends cleanly,
before any range is computed: every activation quantizer's calibrator gets the statistics of all ranks
(:func:`dfq.calibrators.merge.merge_across_ranks`: min/max exactly, histograms summed over the union of
the ranges) and every bias-corrected layer the input sums and counts of all ranks. Each rank then
computes the same ranges and corrections, the ones one process would get from the union of the data
(histogram calibrators to about one bin width). Without a ``torchrun`` session
(:func:`dfq.distributed.session`) it does nothing, so one process calibrates exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dfq import distributed
from dfq.quant.modules import QuantLayer
from dfq.quant.quantizer import FakeQuantizer

__all__ = ["merge_across_ranks"]


def merge_across_ranks(quantizers: Sequence[FakeQuantizer], layers: Sequence[QuantLayer] = ()) -> None:
    """Merge the calibration statistics of ``quantizers`` and the input means of bias-corrected ``layers``
    across ranks (a collective: every rank passes the same modules of the same model, in order).

    A no-op in one process.

    Raises:
        DfqError: another rank stopped (:mod:`dfq.distributed`).
    """
    if distributed.world_size() == 1:
        return
    from dfq.calibrators.merge import merge_across_ranks as merge_calibrators

    merge_calibrators([q.calibrator for q in quantizers])  # an idle rank's empty calibrator merges too
    if not layers:
        return
    mine = [(None if m._mean_sum is None else m._mean_sum.detach().cpu(), m._mean_count) for m in layers]
    everyone = distributed.all_gather_object(mine)
    for i, layer in enumerate(layers):
        sums = [parts[i][0] for parts in everyone if parts[i][0] is not None]
        device = layer.layer.weight.device
        layer._mean_sum = torch.stack(sums).sum(dim=0).to(device) if sums else None
        layer._mean_count = sum(parts[i][1] for parts in everyone)
