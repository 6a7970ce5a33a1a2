"""Paired statistics for two evaluations on the same images: exact McNemar test and bootstrap intervals.

On a few hundred images two quantized variants differ in top-1 by a handful of images, so a bare
"79.6 vs 78.8" says nothing. Both variants saw the *same* images, so the comparison is paired:

* top-1: the exact McNemar test (McNemar 1947; exact binomial form, e.g. Fagerland et al. 2013,
  "The McNemar test for binary matched-pairs data") on the discordant images, those only one of the
  two gets right;
* any per-image quantity (correct = 1/0, KL to the FP model): the percentile bootstrap interval
  (Efron & Tibshirani 1993, ch. 13) of the mean of the per-image differences, over resamples of the
  image indices that are drawn once and shared, so every quantity sees the same resamples.

Pure functions on CPU tensors; no model, no I/O. :func:`paired_comparison` bundles the three figures
the benchmarks print for a candidate against a baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["spearman", "mcnemar_p", "bootstrap_resamples", "bootstrap_interval", "PairedComparison", "paired_comparison"]


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs against p = 1/2.

    With ``n = only_a + only_b`` discordant images and ``k = min(only_a, only_b)``, the p-value is
    ``min(1, 2 * sum_{i <= k} C(n, i) / 2**n)``, computed with exact integers.

    Args:
        only_a: images only the first evaluation gets right.
        only_b: images only the second evaluation gets right.

    Returns:
        The p-value in (0, 1]; 1.0 when there is no discordant image.

    Raises:
        ValueError: a negative count.

    >>> mcnemar_p(0, 0), round(mcnemar_p(9, 13), 3), mcnemar_p(0, 6)
    (1.0, 0.523, 0.03125)
    >>> mcnemar_p(3, 7)  # 2 * (1 + 10 + 45 + 120) / 2**10
    0.34375
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be non-negative, got {only_a} and {only_b}")
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def bootstrap_resamples(num_items: int, num_resamples: int = 2000, seed: int = 0) -> Tensor:
    """Indices of ``num_resamples`` resamples (with replacement) of ``num_items`` items.

    Draw them once and pass the same tensor to every :func:`bootstrap_interval` of one comparison,
    so all its intervals see the same resampled images.

    Returns:
        int64 ``(num_resamples, num_items)``, drawn from a CPU generator seeded with ``seed``.

    >>> r = bootstrap_resamples(5, 3, seed=0); tuple(r.shape), bool(((r >= 0) & (r < 5)).all())
    ((3, 5), True)
    >>> bool((bootstrap_resamples(5, 3, seed=0) == r).all())
    True
    """
    if num_items < 1 or num_resamples < 1:
        raise ValueError(f"need at least one item and one resample, got {num_items} and {num_resamples}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_items, (num_resamples, num_items), generator=generator)


def bootstrap_interval(values: Tensor, resamples: Tensor, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` over the given resample indices.

    The means of the ``R`` resamples are sorted; the interval runs from the one at position
    ``round(a * R)`` to the one at ``round((1 - a) * R) - 1``, with ``a = (1 - level) / 2``
    (for R = 2000 at 95%: positions 50 and 1949). The means are taken in the dtype of ``values``.

    Args:
        values: ``(N,)`` per-item values, e.g. per-image differences of two evaluations.
        resamples: int64 ``(R, N)`` indices into ``values`` (see :func:`bootstrap_resamples`).
        level: coverage of the interval, in (0, 1).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when any value is not finite (the mean is then undefined).

    >>> values = torch.arange(40.0)
    >>> bootstrap_interval(values, torch.arange(40)[:, None].expand(40, 40))  # resample i is all item i
    (1.0, 38.0)
    >>> bootstrap_interval(torch.tensor([0.0, float("nan")]), torch.tensor([[0, 0], [0, 1]]))
    (nan, nan)
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if values.dim() != 1 or resamples.dim() != 2 or resamples.shape[1] != values.shape[0]:
        raise ValueError(f"values must be (N,) and resamples (R, N), got {tuple(values.shape)} and {tuple(resamples.shape)}")
    if not bool(torch.isfinite(values).all()):
        return math.nan, math.nan
    means = values[resamples].mean(dim=1).sort().values
    tail = (1.0 - level) / 2
    lo, hi = round(tail * len(means)), round((1.0 - tail) * len(means)) - 1
    return float(means[lo]), float(means[max(lo, hi)])


@dataclass(frozen=True)
class PairedComparison:
    """A candidate evaluation against a baseline on the same images (differences are candidate − baseline).

    Attributes:
        num_images: how many images both were evaluated on.
        top1_diff: difference of the top-1 accuracies (fraction, not points).
        top1_ci: bootstrap interval of ``top1_diff``.
        only_candidate: images only the candidate gets right.
        only_baseline: images only the baseline gets right.
        mcnemar_p: exact McNemar p-value of those two counts.
        kl_diff: difference of the mean per-image KL divergences (to the FP model).
        kl_ci: bootstrap interval of ``kl_diff``; ``(nan, nan)`` when some KL is not finite.
    """

    num_images: int
    top1_diff: float
    top1_ci: tuple[float, float]
    only_candidate: int
    only_baseline: int
    mcnemar_p: float
    kl_diff: float
    kl_ci: tuple[float, float]


def paired_comparison(
    correct: Tensor,
    baseline_correct: Tensor,
    kl: Tensor,
    baseline_kl: Tensor,
    resamples: Tensor | None = None,
    level: float = 0.95,
) -> PairedComparison:
    """Top-1 difference with interval and McNemar test, and KL difference with interval, of two evaluations.

    Args:
        correct: bool ``(N,)``, whether the candidate gets each image right.
        baseline_correct: bool ``(N,)``, the same for the baseline.
        kl: ``(N,)`` per-image KL(FP ‖ candidate) (see :func:`dfq.evaluation.per_image_kl`).
        baseline_kl: ``(N,)`` per-image KL(FP ‖ baseline).
        resamples: ``(R, N)`` bootstrap indices; default :func:`bootstrap_resamples` ``(N)`` (2000, seed 0).
        level: coverage of both intervals.

    The top-1 differences are taken in float64; the KL differences in the dtype of ``kl``.

    >>> c = paired_comparison(torch.tensor([True, True, False, True]), torch.tensor([True, False, False, False]),
    ...                       torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.1, 0.1, 0.1, 0.1]))
    >>> c.top1_diff, c.only_candidate, c.only_baseline, c.mcnemar_p, round(c.kl_diff, 6)
    (0.5, 2, 0, 0.5, 0.15)
    """
    correct, baseline_correct = correct.bool().reshape(-1), baseline_correct.bool().reshape(-1)
    n = correct.shape[0]
    for name, t in (("baseline_correct", baseline_correct), ("kl", kl), ("baseline_kl", baseline_kl)):
        if t.reshape(-1).shape[0] != n:
            raise ValueError(f"{name} has {t.numel()} values, correct has {n}")
    if resamples is None:
        resamples = bootstrap_resamples(n)
    d_top1 = correct.double() - baseline_correct.double()
    d_kl = kl.reshape(-1) - baseline_kl.reshape(-1)
    only_c, only_b = int((correct & ~baseline_correct).sum()), int((baseline_correct & ~correct).sum())
    return PairedComparison(
        num_images=n,
        top1_diff=float(d_top1.mean()),
        top1_ci=bootstrap_interval(d_top1, resamples, level),
        only_candidate=only_c,
        only_baseline=only_b,
        mcnemar_p=mcnemar_p(only_c, only_b),
        kl_diff=float(d_kl.mean()),
        kl_ci=bootstrap_interval(d_kl, resamples, level),
    )


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of ``a`` and ``b``: Pearson's on their ranks, ties given their mean rank.

    >>> spearman([1, 2, 3, 4], [10, 20, 40, 30])
    0.8
    >>> spearman([1, 2, 2, 3], [3, 2, 2, 1])
    -1.0
    """

    def ranks(x: list[float]) -> list[float]:
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for k in order[i : j + 1]:
                r[k] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    return round(cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)), 6)
