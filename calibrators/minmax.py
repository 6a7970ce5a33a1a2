"""Min/max calibration: the running global minimum and maximum of everything collected.

This is the range PSAQ-ViT and SMI calibrate with (global min/max over the calibration forwards, no
moving average; see ``reference/ALGORITHMS.md``), ModelOpt's ``MaxCalibrator`` and TensorRT's
``IInt8MinMaxCalibrator``. Symmetric ranges use ``amax = max(|min|, |max|)``. The running statistics
stay on the tensors' device, so :meth:`MinMaxCalibrator.collect` never synchronizes with the host.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dfq.numerics import int_range

from ._histogram import channel_rows, finish_range, not_collected
from .base import register_calibrator

__all__ = ["MinMaxCalibrator"]


@register_calibrator("minmax")
class MinMaxCalibrator:
    """Running min/max, per tensor or per index of ``axis``.

    Args:
        num_bits: target bit width (validated only; the range does not depend on it).
        symmetric: return ``(-amax, amax)`` with ``amax = max(|min|, |max|)``.
        paper: accepted for a uniform constructor; the range does not depend on the scale divisor.
        axis: per-channel statistics along this axis (reducing over all other dims), or None.

    >>> cal = MinMaxCalibrator(symmetric=False)
    >>> cal.collect(torch.tensor([-1.0, 2.0])); cal.collect(torch.tensor([3.0]))
    >>> cal.compute_range()
    (tensor(-1.), tensor(3.))
    """

    def __init__(
        self, *, num_bits: int = 8, symmetric: bool = True, paper: bool = False, axis: int | None = None
    ) -> None:
        int_range(num_bits)
        self.num_bits, self.symmetric, self.paper, self.axis = num_bits, symmetric, paper, axis
        self.reset()

    def reset(self) -> None:
        """Forget the running min/max."""
        self._min: Tensor | None = None
        self._max: Tensor | None = None

    def collect(self, x: Tensor) -> None:
        """Fold ``x`` into the running min/max (empty tensors are ignored).

        Raises:
            ValueError: per-channel ``x`` whose channel count differs from earlier tensors'.
        """
        x = x.detach().float()
        if x.numel() == 0:
            return
        if self.axis is None:
            lo, hi = torch.aminmax(x)
        else:
            lo, hi = torch.aminmax(channel_rows(x, self.axis), dim=1)
        if self._min is None or self._max is None:
            self._min, self._max = lo, hi
            return
        if lo.shape != self._min.shape:
            raise ValueError(f"axis {self.axis} has {lo.numel()} channels here, {self._min.numel()} before")
        self._min = torch.minimum(self._min, lo.to(self._min.device))
        self._max = torch.maximum(self._max, hi.to(self._max.device))

    def compute_range(self) -> tuple[Tensor, Tensor]:
        """``(min, max)`` collected so far, or ``(-amax, amax)`` when symmetric (float32, CPU).

        Raises:
            RuntimeError: nothing was collected.
        """
        if self._min is None or self._max is None:
            raise not_collected(self)
        return finish_range(self._min, self._max, self.symmetric)
