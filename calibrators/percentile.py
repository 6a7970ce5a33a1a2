"""Percentile calibration: clip the range at the p-th percentile of the observed values.

The "percentile" method of NVIDIA pytorch-quantization / ModelOpt's ``HistogramCalibrator`` and of
ONNX Runtime's ``CalibrationMethod.Percentile``. Per-tensor statistics (activations, seen batch after
batch) come from a bounded growing histogram (:mod:`dfq.calibrators._histogram`) and are read with
linear interpolation inside a bin, so they are accurate to about one bin width. Per-channel
statistics (weights, small and collected once) are exact: the collected tensors are kept and each
channel's percentile is computed with numpy's default ``linear`` interpolation.

Symmetric ranges use the p-th percentile of ``|x|``; asymmetric ones the ``(100 - p)``-th and p-th
percentiles of the signed values.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dfq.numerics import int_range

from ._histogram import HistogramOrRows, finish_range, not_collected
from .base import register_calibrator

__all__ = ["PercentileCalibrator", "row_quantile"]


def row_quantile(rows: Tensor, q: float) -> Tensor:
    """Quantile ``q`` of every row of ``rows`` (numpy's ``linear`` method), in float64.

    >>> row_quantile(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), 0.5)
    tensor([2.5000], dtype=torch.float64)
    """
    ordered = rows.double().sort(dim=1).values
    pos = q * (ordered.shape[1] - 1)
    k = min(int(pos), ordered.shape[1] - 1)
    upper = ordered[:, min(k + 1, ordered.shape[1] - 1)]
    return ordered[:, k] + (pos - k) * (upper - ordered[:, k])


@register_calibrator("percentile")
class PercentileCalibrator(HistogramOrRows):
    """Percentile range, per tensor (histogram) or per index of ``axis`` (exact).

    Args:
        num_bits: target bit width (validated only).
        symmetric: return ``(-amax, amax)`` with ``amax`` the p-th percentile of ``|x|``.
        paper: accepted for a uniform constructor; the range does not depend on the scale divisor.
        axis: per-channel statistics along this axis (keeps the collected tensors: meant for weights).
        percentile: p in ``(0, 100]``.
        num_bins: histogram bins for per-tensor statistics.
    """

    def __init__(
        self,
        *,
        num_bits: int = 8,
        symmetric: bool = True,
        paper: bool = False,
        axis: int | None = None,
        percentile: float = 99.99,
        num_bins: int = 2048,
    ) -> None:
        int_range(num_bits)
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.num_bits, self.symmetric, self.paper, self.axis = num_bits, symmetric, paper, axis
        self.percentile = float(percentile)
        super().__init__(axis, num_bins, absolute=symmetric)

    def compute_range(self) -> tuple[Tensor, Tensor]:
        """The percentile range (float32, CPU; 0-dim per-tensor, ``(C,)`` per-channel).

        Raises:
            RuntimeError: nothing was collected.
        """
        upper, lower = self.percentile / 100.0, (100.0 - self.percentile) / 100.0
        if self.axis is None:
            if self._hist.empty:
                raise not_collected(self)
            hi = torch.tensor(self._hist.quantile(upper))
            lo = -hi if self.symmetric else torch.tensor(self._hist.quantile(lower))
            return finish_range(lo, hi, self.symmetric)
        if not self._rows:
            raise not_collected(self)
        rows = torch.cat(self._rows, dim=1)
        if self.symmetric:
            amax = row_quantile(rows.abs(), upper)
            return finish_range(-amax, amax, True)
        return finish_range(row_quantile(rows, lower), row_quantile(rows, upper), False)
