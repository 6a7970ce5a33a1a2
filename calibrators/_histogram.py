"""Shared statistics of the calibrators: a bounded growing histogram and per-channel helpers.

The histogram follows NVIDIA pytorch-quantization's ``HistogramCalibrator`` (``calib/histogram.py``):
equal-width bins over ``[0, max|x|]`` (or ``[min, max]`` for signed statistics), accumulated across
batches. pytorch-quantization keeps the bin width and appends bins when a batch exceeds the range, so
its memory grows with the range; here the bin count is fixed and, when a batch widens the range, the
old counts are re-binned into the wider bins assuming a uniform density inside each old bin. Counts
are conserved exactly; a widening moves mass by less than one (new) bin width.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from dfq.errors import DfqError

__all__ = ["GrowingHistogram", "channel_rows", "finish_range", "not_collected"]


def channel_rows(x: Tensor, axis: int) -> Tensor:
    """View ``x`` as float32 rows ``(C, -1)``, one row per index of ``axis``.

    Args:
        x: any tensor with at least one dimension.
        axis: the channel dimension (negative values count from the end).

    Raises:
        ValueError: ``axis`` is not a dimension of ``x``.
    """
    if not -x.dim() <= axis < x.dim():
        raise ValueError(f"axis {axis} is out of range for a tensor of shape {tuple(x.shape)}")
    return x.detach().float().movedim(axis, 0).reshape(x.shape[axis], -1)


def finish_range(lo: Tensor, hi: Tensor, symmetric: bool) -> tuple[Tensor, Tensor]:
    """Return ``(lo, hi)`` as float32 CPU tensors, or ``(-amax, amax)`` when ``symmetric``."""
    lo, hi = lo.detach().float().cpu(), hi.detach().float().cpu()
    if symmetric:
        amax = torch.maximum(lo.abs(), hi.abs())
        return -amax, amax
    return lo, hi


def not_collected(calibrator: object) -> RuntimeError:
    """The error raised by ``compute_range`` before any ``collect``."""
    name = type(calibrator).__name__
    return RuntimeError(
        f"{name}.compute_range() called before any collect(): no statistics to compute a range from"
    )


class GrowingHistogram:
    """Counts of ``x`` (or ``|x|``) in ``num_bins`` equal bins spanning every value collected so far.

    Counts live on the CPU in float64 (exact up to 2^53). Each :meth:`add` runs one ``aminmax`` and one
    ``histc`` on the tensor's device and copies two scalars and ``num_bins`` counts to the host. While
    every value seen is the same number the histogram is a point mass (``counts`` is None, ``lo == hi``).

    Attributes:
        lo: lower end of the range (0 when ``absolute``), the smallest value seen otherwise.
        hi: largest value seen.
        total: number of values seen.
        counts: float64 counts per bin, or None while empty or a point mass.
    """

    def __init__(self, num_bins: int = 2048, absolute: bool = False) -> None:
        """Create an empty histogram.

        Args:
            num_bins: number of bins (>= 1).
            absolute: histogram ``|x|`` over ``[0, max|x|]`` instead of ``x`` over ``[min, max]``.
        """
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        self.num_bins = num_bins
        self.absolute = absolute
        self.reset()

    def reset(self) -> None:
        """Forget every value."""
        self.lo, self.hi, self.total = math.inf, -math.inf, 0
        self.counts: Tensor | None = None

    @property
    def empty(self) -> bool:
        """True before the first non-empty :meth:`add`."""
        return self.total == 0

    @property
    def is_point(self) -> bool:
        """True when every value seen is the same number (``lo == hi``)."""
        return self.total > 0 and self.counts is None

    def edges(self) -> Tensor:
        """The ``num_bins + 1`` bin edges, float64 on the CPU."""
        return torch.linspace(self.lo, self.hi, self.num_bins + 1, dtype=torch.float64)

    def add(self, x: Tensor) -> None:
        """Count the values of ``x``, widening the range (and re-binning) if they exceed it.

        Raises:
            DfqError: ``x`` holds inf or NaN (a ValueError).
        """
        x = x.detach().float().flatten()
        if x.numel() == 0:
            return
        if self.absolute:
            x = x.abs()
        lo, hi = torch.stack(torch.aminmax(x)).tolist()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            # bad data, not a bug: a DfqError (a ValueError) reaches the user as one line
            raise DfqError("cannot calibrate on a tensor holding inf or NaN: the model gives non-finite activations")
        new_lo = min(self.lo, 0.0 if self.absolute else lo)
        new_hi = max(self.hi, hi)
        if new_lo == new_hi:  # still a single value: nothing to bin yet
            self.lo, self.hi, self.total = new_lo, new_hi, self.total + x.numel()
            return
        if self.counts is None:
            self.counts = torch.zeros(self.num_bins, dtype=torch.float64)
            if self.total:  # the point mass seen so far goes to the bin holding its value
                pos = (self.lo - new_lo) / (new_hi - new_lo) * self.num_bins
                self.counts[min(int(pos), self.num_bins - 1)] = self.total
        elif new_lo < self.lo or new_hi > self.hi:
            self.counts = self._rebinned(new_lo, new_hi)
        self.lo, self.hi, self.total = new_lo, new_hi, self.total + x.numel()
        self.counts += torch.histc(x, self.num_bins, new_lo, new_hi).double().cpu()

    def _rebinned(self, new_lo: float, new_hi: float) -> Tensor:
        """The current counts spread over ``[new_lo, new_hi]`` (which contains the current range)."""
        assert self.counts is not None
        old_edges = self.edges().numpy()
        cdf = np.concatenate([[0.0], np.cumsum(self.counts.numpy())])
        new_edges = np.linspace(new_lo, new_hi, self.num_bins + 1)
        return torch.from_numpy(np.diff(np.interp(new_edges, old_edges, cdf)))

    def state(self) -> tuple[float, float, int, Tensor | None]:
        """``(lo, hi, total, counts)``: everything :meth:`merge` needs from another histogram."""
        return self.lo, self.hi, self.total, self.counts

    def merge(self, states: list[tuple[float, float, int, Tensor | None]]) -> None:
        """Replace this histogram by the sum of the histograms whose :meth:`state` is given.

        Each is spread over the union of their ranges (re-binned as when :meth:`add` widens the range;
        one with the union's own range is added bin for bin) and the counts are summed in the order given,
        so every process that merges the same states gets the same histogram.
        """
        parts = [s for s in states if s[2] > 0]
        self.reset()
        if not parts:
            return
        lo, hi = min(p[0] for p in parts), max(p[1] for p in parts)
        self.total = sum(int(p[2]) for p in parts)
        self.lo, self.hi = lo, hi
        if lo == hi:  # every part a point mass at the same value
            return
        counts = torch.zeros(self.num_bins, dtype=torch.float64)
        new_edges = np.linspace(lo, hi, self.num_bins + 1)
        for p_lo, p_hi, p_total, p_counts in parts:
            if p_counts is None:  # a point mass: its bin in the union
                pos = (p_lo - lo) / (hi - lo) * self.num_bins
                counts[min(int(pos), self.num_bins - 1)] += p_total
            elif (p_lo, p_hi) == (lo, hi):
                counts += p_counts.double()
            else:
                old_edges = np.linspace(p_lo, p_hi, self.num_bins + 1)
                cdf = np.concatenate([[0.0], np.cumsum(p_counts.double().numpy())])
                counts += torch.from_numpy(np.diff(np.interp(new_edges, old_edges, cdf)))
        self.counts = counts

    def quantile(self, q: float) -> float:
        """The value below which a fraction ``q`` of the counts lies (linear inside a bin).

        Args:
            q: fraction in ``[0, 1]``.
        """
        if self.counts is None:
            return self.lo
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), self.counts.cumsum(0)])
        target = q * float(cdf[-1])
        k = int(torch.searchsorted(cdf, torch.tensor([target], dtype=torch.float64)))
        if k == 0:
            return self.lo
        k = min(k, self.num_bins)
        edges = self.edges()
        frac = (target - float(cdf[k - 1])) / max(float(cdf[k] - cdf[k - 1]), 1e-300)
        return float(edges[k - 1] + min(max(frac, 0.0), 1.0) * (edges[k] - edges[k - 1]))

    def sample_points(self, per_bin: int = 4) -> tuple[Tensor, Tensor]:
        """Points standing for the histogram: ``per_bin`` evenly spaced points inside each bin.

        Returns:
            ``(points, weights)`` float64 CPU tensors; each point carries ``count / per_bin``.
        """
        if self.counts is None:
            return torch.tensor([self.lo], dtype=torch.float64), torch.tensor([float(self.total)])
        width = (self.hi - self.lo) / self.num_bins
        offsets = (torch.arange(per_bin, dtype=torch.float64) + 0.5) / per_bin * width
        points = (self.edges()[:-1, None] + offsets).flatten()
        weights = (self.counts[:, None] / per_bin).expand(-1, per_bin).flatten()
        return points, weights


class HistogramOrRows:
    """Shared state of calibrators that keep a histogram per tensor, or the raw rows per channel.

    Per-tensor statistics (``axis=None``, activations) go into a :class:`GrowingHistogram`;
    per-channel statistics (weights, collected once and small) keep the channel rows as given.
    """

    def __init__(self, axis: int | None, num_bins: int, absolute: bool) -> None:
        self.axis = axis
        self._hist = GrowingHistogram(num_bins, absolute=absolute)
        self._rows: list[Tensor] = []

    def reset(self) -> None:
        """Forget the histogram and the kept per-channel tensors."""
        self._hist.reset()
        self._rows = []

    def collect(self, x: Tensor) -> None:
        """Add ``x`` to the histogram (per-tensor) or keep its channel rows (per-channel).

        Raises:
            ValueError: inf/NaN values, or a channel count that differs from earlier tensors'.
        """
        if self.axis is None:
            self._hist.add(x)
            return
        rows = channel_rows(x, self.axis)
        if self._rows and rows.shape[0] != self._rows[0].shape[0]:
            raise ValueError(
                f"axis {self.axis} has {rows.shape[0]} channels here, {self._rows[0].shape[0]} before"
            )
        if rows.numel():
            self._rows.append(rows.clone())
