"""MSE calibration: the clipping range whose quantize -> dequantize error is smallest.

The "mse" method of NVIDIA pytorch-quantization / ModelOpt (``_compute_amax_mse`` searches clip values
over a histogram; ModelOpt's ``MseCalibrator`` scales the max by a grid of multipliers). Candidates are
``ratio * range`` for ``ratio`` in ``linspace(min_ratio, 1, num_candidates)``: symmetric ranges scale
``amax``, asymmetric ones scale both ``lo`` and ``hi``. Every candidate is quantized with
:func:`dfq.numerics.qparams_from_range` and :func:`dfq.numerics.quantize_to_int`, so the searched grid
is exactly the quantizer's (``[-128, 127] * amax / 127`` for TensorRT, ``amax / 127.5`` with ``paper``,
the unsigned affine grid including 0 when asymmetric).

* Per-channel (weights, collected once): the collected tensors are kept and each channel picks the
  ratio with the least mean squared error over its own values.
* Per-tensor (activations): a signed growing histogram; its bins are represented by evenly spaced
  points weighted by the counts, and the expected squared error is computed for all candidates at
  once (memory ``num_candidates x 4 num_bins``, independent of the data size).

Ties go to the largest ratio (least clipping).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dfq.numerics import int_range, qparams_from_range, quantize_to_int

from ._histogram import HistogramOrRows, finish_range, not_collected
from .base import register_calibrator

__all__ = ["MseCalibrator"]


def _last_argmin(err: Tensor) -> Tensor:
    """Index of the smallest value along dim 0, the last one among ties."""
    return err.shape[0] - 1 - torch.argmin(err.flip(0), dim=0)


@register_calibrator("mse")
class MseCalibrator(HistogramOrRows):
    """Least-MSE clipping range, per tensor (histogram) or per index of ``axis`` (exact).

    Args:
        num_bits: bit width the candidates are quantized with.
        symmetric: symmetric signed grid, ``(-amax, amax)`` returned.
        paper: PSAQ-ViT scale divisor for symmetric grids (see :mod:`dfq.numerics`).
        axis: per-channel statistics along this axis (keeps the collected tensors: meant for weights).
        num_candidates: number of clipping ratios searched.
        min_ratio: smallest ratio of the observed range searched, in ``(0, 1]``.
        num_bins: histogram bins for per-tensor statistics.
    """

    def __init__(
        self,
        *,
        num_bits: int = 8,
        symmetric: bool = True,
        paper: bool = False,
        axis: int | None = None,
        num_candidates: int = 81,
        min_ratio: float = 0.2,
        num_bins: int = 2048,
    ) -> None:
        int_range(num_bits)
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        if not 0.0 < min_ratio <= 1.0:
            raise ValueError(f"min_ratio must be in (0, 1], got {min_ratio}")
        self.num_bits, self.symmetric, self.paper, self.axis = num_bits, symmetric, paper, axis
        self.num_candidates, self.min_ratio = num_candidates, float(min_ratio)
        super().__init__(axis, num_bins, absolute=False)

    def ratios(self) -> Tensor:
        """The searched clipping ratios, float32, ascending."""
        return torch.linspace(self.min_ratio, 1.0, self.num_candidates)

    def _base(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """The range the ratios scale: ``(-amax, amax)`` when symmetric, else ``(lo, hi)``."""
        if self.symmetric:
            amax = torch.maximum(lo.abs(), hi.abs())
            return -amax, amax
        return lo, hi

    def compute_range(self) -> tuple[Tensor, Tensor]:
        """The least-MSE range (float32, CPU; 0-dim per-tensor, ``(C,)`` per-channel).

        Raises:
            RuntimeError: nothing was collected.
        """
        if self.axis is None:
            return self._per_tensor()
        if not self._rows:
            raise not_collected(self)
        rows = torch.cat(self._rows, dim=1)
        lo, hi = self._base(*torch.aminmax(rows, dim=1))
        ratios = self.ratios().to(rows.device)
        errors = []
        for r in ratios:
            c_lo, c_hi = lo * r, hi * r
            scale, zp, qmin, qmax = qparams_from_range(c_lo, c_hi, self.num_bits, self.symmetric, self.paper)
            diff = quantize_to_int(rows, scale, zp, qmin, qmax, axis=0).sub_(zp[:, None]).mul_(scale[:, None])
            errors.append(diff.sub_(rows).square_().sum(dim=1))  # in place: weights can be large
        best = _last_argmin(torch.stack(errors))
        return finish_range(lo * ratios[best], hi * ratios[best], self.symmetric)

    def _per_tensor(self) -> tuple[Tensor, Tensor]:
        """Search the candidates against the histogram's weighted points."""
        hist = self._hist
        if hist.empty:
            raise not_collected(self)
        lo, hi = torch.tensor(hist.lo), torch.tensor(hist.hi)
        if hist.is_point:
            return finish_range(lo, hi, self.symmetric)
        points, weights = hist.sample_points()
        x = points.float()
        lo, hi = self._base(lo, hi)
        c_lo, c_hi = lo * self.ratios(), hi * self.ratios()
        scale, zp, qmin, qmax = qparams_from_range(c_lo, c_hi, self.num_bits, self.symmetric, self.paper)
        scale, zp = scale[:, None], zp[:, None]
        deq = (quantize_to_int(x[None, :], scale, zp, qmin, qmax) - zp) * scale
        errors = ((deq.double() - points) ** 2 * weights).sum(dim=1)
        best = _last_argmin(errors)
        return finish_range(c_lo[best], c_hi[best], self.symmetric)
