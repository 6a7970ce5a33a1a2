"""Tests for dfq.stats: McNemar p-values summed by hand, bootstrap intervals against a float64 numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dfq.stats import bootstrap_interval, bootstrap_resamples, mcnemar_p, paired_comparison


@pytest.mark.parametrize(
    ("only_a", "only_b", "expected"),
    [
        (0, 0, 1.0),  # no discordant image
        (0, 1, 1.0),  # 2 * C(1,0) / 2 = 1
        (2, 2, 1.0),  # 2 * (1 + 4 + 6) / 16 = 1.375, capped at 1
        (1, 4, 0.375),  # 2 * (1 + 5) / 32
        (4, 1, 0.375),  # symmetric
        (0, 6, 0.03125),  # 2 * 1 / 64
        (3, 7, 0.34375),  # 2 * (1 + 10 + 45 + 120) / 1024
        (0, 10, 2 / 1024),
    ],
)
def test_mcnemar_by_hand(only_a: int, only_b: int, expected: float) -> None:
    assert mcnemar_p(only_a, only_b) == expected


def test_mcnemar_large_counts_against_float64_binomial() -> None:
    """Exact integers stay exact where the float pmf would need care: compare with a log-space sum."""
    n, k = 300, 130

    def log_pmf(i: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)

    reference = 2 * sum(math.exp(log_pmf(i)) for i in range(k + 1))
    assert mcnemar_p(k, n - k) == pytest.approx(reference, rel=1e-9)
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_p(-1, 3)


def test_resamples_are_seeded_and_in_range() -> None:
    r = bootstrap_resamples(7, 50, seed=3)
    assert r.shape == (50, 7) and r.dtype == torch.int64
    assert int(r.min()) >= 0 and int(r.max()) < 7
    assert torch.equal(r, bootstrap_resamples(7, 50, seed=3))
    assert not torch.equal(r, bootstrap_resamples(7, 50, seed=4))
    # the draw the benchmarks always made: randint on a CPU generator seeded 0
    expected = torch.randint(0, 7, (50, 7), generator=torch.Generator().manual_seed(0))
    assert torch.equal(bootstrap_resamples(7, 50), expected)


def test_interval_positions_by_hand() -> None:
    # resample i holds only item i, so the sorted means are exactly 0, 1, ..., 39
    values, resamples = torch.arange(40.0), torch.arange(40)[:, None].expand(40, 40)
    assert bootstrap_interval(values, resamples) == (1.0, 38.0)  # round(0.025*40)=1, round(0.975*40)-1=38
    assert bootstrap_interval(values, resamples, level=0.9) == (2.0, 37.0)  # round(2)=2, round(38)-1=37
    # 2000 resamples at 95%: positions 50 and 1949 (no float slip to 1948)
    big = torch.arange(2000.0)
    assert bootstrap_interval(big, torch.arange(2000)[:, None].expand(2000, 2000)) == (50.0, 1949.0)


def test_interval_against_numpy_float64() -> None:
    g = torch.Generator().manual_seed(1)
    values = torch.randn(300, generator=g, dtype=torch.float64)
    resamples = bootstrap_resamples(300, 2000, seed=5)
    means = np.sort(values.numpy()[resamples.numpy()].mean(axis=1))
    assert bootstrap_interval(values, resamples) == pytest.approx((means[50], means[1949]), abs=1e-12)


def test_interval_of_nonfinite_values_is_nan() -> None:
    lo, hi = bootstrap_interval(torch.tensor([1.0, float("inf"), 0.0]), bootstrap_resamples(3, 20))
    assert math.isnan(lo) and math.isnan(hi)


def test_interval_rejects_bad_shapes_and_levels() -> None:
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(torch.zeros(3), bootstrap_resamples(3, 5), level=1.0)
    with pytest.raises(ValueError, match=r"\(R, N\)"):
        bootstrap_interval(torch.zeros(3), bootstrap_resamples(4, 5))


def test_paired_comparison_by_hand() -> None:
    # 6 images: the candidate alone is right on images 0 and 1, the baseline alone on image 5
    cand = torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.bool)
    base = torch.tensor([0, 0, 1, 0, 0, 1], dtype=torch.bool)
    kl = torch.tensor([0.5, 0.1, 0.2, 0.3, 0.4, 0.6], dtype=torch.float64)
    kl_b = torch.tensor([0.2, 0.1, 0.2, 0.1, 0.1, 0.3], dtype=torch.float64)
    resamples = bootstrap_resamples(6, 400, seed=2)
    c = paired_comparison(cand, base, kl, kl_b, resamples)
    assert c.num_images == 6
    assert c.top1_diff == pytest.approx(1 / 6)  # (3 - 2) / 6
    assert (c.only_candidate, c.only_baseline) == (2, 1)
    assert c.mcnemar_p == 1.0  # 2 * (1 + 3) / 8 capped
    assert c.kl_diff == pytest.approx((0.3 + 0 + 0 + 0.2 + 0.3 + 0.3) / 6)
    d_top1 = np.array([1, 1, 0, 0, 0, -1], dtype=np.float64)
    means = np.sort(d_top1[resamples.numpy()].mean(axis=1))
    assert c.top1_ci == pytest.approx((means[10], means[389]))  # round(0.025*400)=10, round(0.975*400)-1=389
    d_kl = (kl - kl_b).numpy()
    means = np.sort(d_kl[resamples.numpy()].mean(axis=1))
    assert c.kl_ci == pytest.approx((means[10], means[389]))


def test_paired_comparison_default_resamples_and_length_check() -> None:
    same = torch.ones(5, dtype=torch.bool)
    c = paired_comparison(same, same, torch.zeros(5), torch.zeros(5))
    assert (c.top1_diff, c.top1_ci, c.mcnemar_p, c.kl_ci) == (0.0, (0.0, 0.0), 1.0, (0.0, 0.0))
    with pytest.raises(ValueError, match="baseline_correct"):
        paired_comparison(same, same[:4], torch.zeros(5), torch.zeros(5))
