"""Entropy calibration: TensorRT's KL-divergence threshold search ("EntropyCalibration2").

The algorithm of Migacz, "8-bit Inference with TensorRT" (GTC 2017), as implemented by NVIDIA
pytorch-quantization / ModelOpt (``_compute_amax_entropy``). A histogram of ``|x|`` with ``num_bins``
bins over ``[0, max|x|]`` is accumulated across batches (:mod:`dfq.calibrators._histogram`). For every
candidate bin count ``i`` from ``nq = 2^(num_bits-1)`` to ``num_bins`` (step ``stride``):

* P is the first ``i`` bins, with the mass of all bins ``>= i`` (the outliers) added to bin ``i - 1``;
* Q merges the first ``i`` *raw* bins (without the outliers, as in TensorRT) into ``nq`` groups
  (bin ``j`` in group ``floor(j * nq / i)``) and spreads each group's mass evenly over its non-zero
  bins; empty bins stay empty;
* both are normalized and ``KL(P || Q)`` is computed (``inf`` when Q is 0 where P is not).

The smallest divergence wins (the largest ``i`` among ties) and ``amax = i * bin_width``, the upper
edge of the last kept bin. We use the edge rather than TensorRT's slide formula ``(i + 0.5) * width``
because P describes exactly the values in ``[0, i * width]`` (everything above is folded into bin
``i - 1``) and because pytorch-quantization and ModelOpt return the same edge, so ranges compare
one to one; the two differ by half a bin (``amax / 4096`` at 2048 bins). Like them, bin 0 is
overwritten with bin 1 before the search (``flatten_zero_bin``) so that a spike of exact zeros
(ReLU outputs, padding) does not dominate P.

Limitation (inherent to the method, kept on purpose): the first candidate is ``nq`` bins, so when a
few huge outliers stretch the histogram until the bulk of the data fits in fewer than ``nq`` bins,
every candidate below the outliers ends in an empty bin (KL ``inf``) and the threshold lands on an
outlier; use more bins, or percentile/mse, for such tensors.

TensorRT's entropy calibration is symmetric and per-tensor, so asymmetric or per-channel
construction raises ``ValueError``; ``paper`` is accepted and ignored (the search models ``nq``
positive levels either way).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dfq.numerics import int_range

from ._histogram import GrowingHistogram, finish_range, not_collected
from .base import register_calibrator

__all__ = ["EntropyCalibrator", "entropy_divergences", "entropy_threshold"]


def entropy_divergences(
    hist: Tensor, num_bits: int, stride: int = 1, flatten_zero_bin: bool = True
) -> tuple[Tensor, Tensor]:
    """KL(P || Q) of every candidate threshold of a ``|x|`` histogram (see the module docstring).

    Vectorized over candidates with prefix sums, in ``O(candidates x 2^(num_bits-1))`` float64 work:
    group ``g`` of candidate ``i`` is the bin run ``[ceil(g i / nq), ceil((g + 1) i / nq))``, so group
    masses and non-zero bin counts are differences of cumulative sums, and
    ``KL = sum p log p - sum_g P(g) log q_g`` (bins below ``i - 1``) plus the last bin's own term.

    Args:
        hist: counts of ``|x|`` in equal bins starting at 0.
        num_bits: bit width; ``2^(num_bits-1)`` quantized levels and the first candidate.
        stride: step between candidate bin counts.
        flatten_zero_bin: overwrite bin 0 with bin 1 first (pytorch-quantization's rule).

    Returns:
        ``(candidates, divergences)``: candidate bin counts ``i`` (int64) and float64 KL values
        (``inf`` where Q is 0 in a bin where P is not).
    """
    h = hist.detach().double().cpu().flatten().clone()
    n, nq = h.numel(), 2 ** (num_bits - 1)
    if flatten_zero_bin and n > 1:
        h[0] = h[1]
    cand = torch.arange(nq, n + 1, stride)
    zero = torch.zeros(1, dtype=torch.float64)
    total = h.sum().clamp_min(1e-300)
    p = h / total
    plogp = torch.where(h > 0, p * torch.log(p), 0.0)
    cum_p, cum_nz, cum_plogp = (torch.cat([zero, v.cumsum(0)]) for v in (p, (h > 0).double(), plogp))
    # group bounds ceil(g * i / nq): exact in float64 (integer quotients are correctly rounded)
    bounds = torch.ceil(torch.arange(nq + 1, dtype=torch.float64) * cand[:, None] / nq).long()  # (k, nq+1)
    mass = cum_p[bounds[:, 1:]] - cum_p[bounds[:, :-1]]  # P(g) before the outliers, (k, nq)
    count = cum_nz[bounds[:, 1:]] - cum_nz[bounds[:, :-1]]
    kept = cum_p[cand]  # Q's normalizer over the raw first i bins
    q = mass / count.clamp_min(1.0) / kept.clamp_min(1e-300)[:, None]  # Q per non-zero bin of group g
    cross = torch.where((count > 0) & (mass > 0), mass * torch.log(q), 0.0).sum(dim=1)
    last = cand - 1  # always in group nq - 1
    log_q_last = torch.log(q[:, -1])
    has_last = h[last] > 0
    cross = cross - torch.where(has_last, p[last] * log_q_last, 0.0)
    p_last = p[last] + (1.0 - cum_p[cand] / cum_p[-1].clamp_min(1e-300))  # plus the outliers
    last_term = torch.where(has_last, p_last * (torch.log(p_last) - log_q_last), torch.inf)
    last_term = torch.where(p_last > 0, last_term, 0.0)
    return cand, cum_plogp[last] - cross + last_term


def entropy_threshold(
    hist: Tensor, bin_edges: Tensor, num_bits: int, stride: int = 1, flatten_zero_bin: bool = True
) -> float:
    """TensorRT's entropy ``amax`` of a ``|x|`` histogram: ``bin_edges[i]`` of the least-KL ``i``.

    Divergences within ``1e-12`` of the minimum count as ties (prefix sums round at ~1e-15), and the
    largest tied ``i`` wins, as in pytorch-quantization.

    Args:
        hist: counts of ``|x|`` in ``len(bin_edges) - 1`` equal bins, ``bin_edges[0] == 0``.
        bin_edges: the bin edges.
        num_bits: bit width.
        stride: step between candidate bin counts.
        flatten_zero_bin: overwrite bin 0 with bin 1 first.

    Returns:
        The threshold; ``bin_edges[-1]`` when there are fewer than ``2^(num_bits-1)`` bins or no
        candidate has a finite divergence.
    """
    candidates, kl = entropy_divergences(hist, num_bits, stride, flatten_zero_bin)
    finite = torch.isfinite(kl)
    if not bool(finite.any()):
        return float(bin_edges[-1])
    best = torch.nonzero(finite & (kl <= kl[finite].min() + 1e-12)).max()
    return float(bin_edges[candidates[best]])


@register_calibrator("entropy")
class EntropyCalibrator:
    """TensorRT entropy calibration over a growing ``|x|`` histogram (symmetric, per-tensor only).

    Args:
        num_bits: bit width of the searched quantization (``2^(num_bits-1)`` levels).
        symmetric: must be True.
        paper: accepted for a uniform constructor and ignored.
        axis: must be None.
        num_bins: histogram bins (at least ``2^(num_bits-1)``).
        stride: step between candidate thresholds, in bins.
        flatten_zero_bin: overwrite bin 0 with bin 1 before the search (pytorch-quantization's rule).
    """

    def __init__(
        self,
        *,
        num_bits: int = 8,
        symmetric: bool = True,
        paper: bool = False,
        axis: int | None = None,
        num_bins: int = 2048,
        stride: int = 1,
        flatten_zero_bin: bool = True,
    ) -> None:
        int_range(num_bits)
        if not symmetric:
            raise ValueError(
                "entropy calibration is symmetric per-tensor (TensorRT's); use minmax/percentile/mse for asymmetric ranges"
            )
        if axis is not None:
            raise ValueError(
                "entropy calibration is symmetric per-tensor (TensorRT's); use minmax/percentile/mse for per-channel ranges"
            )
        if num_bins < 2 ** (num_bits - 1):
            raise ValueError(f"num_bins must be >= 2^(num_bits-1) = {2 ** (num_bits - 1)}, got {num_bins}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.num_bits, self.symmetric, self.paper, self.axis = num_bits, symmetric, paper, axis
        self.stride, self.flatten_zero_bin = stride, flatten_zero_bin
        self._hist = GrowingHistogram(num_bins, absolute=True)

    def reset(self) -> None:
        """Forget the histogram."""
        self._hist.reset()

    def collect(self, x: Tensor) -> None:
        """Add ``|x|`` to the histogram (empty tensors are ignored).

        Raises:
            ValueError: ``x`` holds inf or NaN.
        """
        self._hist.add(x)

    def compute_range(self) -> tuple[Tensor, Tensor]:
        """``(-amax, amax)`` with the entropy threshold (float32, CPU, 0-dim).

        Raises:
            RuntimeError: nothing was collected.
        """
        hist = self._hist
        if hist.empty:
            raise not_collected(self)
        if hist.counts is None:  # every |x| equal (all zeros)
            amax = hist.hi
        else:
            amax = entropy_threshold(
                hist.counts, hist.edges(), self.num_bits, self.stride, self.flatten_zero_bin
            )
        amax_t = torch.tensor(amax)
        return finish_range(-amax_t, amax_t, True)
