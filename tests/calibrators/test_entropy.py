"""dfq.calibrators.entropy: the KL search against a slow, literal float64 reference (Migacz's pseudocode,
pytorch-quantization's binning rule), far outliers, and the settings it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfq import calibrators
from tests.calibrators._helpers import GrowingHistogram, feed, gaussian, get_calibrator

entropy_divergences = calibrators.entropy.entropy_divergences


entropy_threshold = calibrators.entropy.entropy_threshold


def reference_kl(
    hist: np.ndarray, num_bits: int, stride: int = 1, flatten: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Slow, literal float64 KL search (Migacz's pseudocode, pytorch-quantization's binning rule)."""
    bins = np.array(hist, dtype=np.float64)
    if flatten:
        bins[0] = bins[1]
    nq = 2 ** (num_bits - 1)
    cands, out = [], []
    for i in range(nq, len(bins) + 1, stride):
        p = bins[:i].copy()
        p[i - 1] += bins[i:].sum()
        group = np.digitize(np.arange(i), np.linspace(0, i, nq + 1)) - 1
        q = np.zeros(i)
        for g in range(nq):
            members = (group == g) & (bins[:i] > 0)
            if members.any():
                q[members] = bins[:i][members].sum() / members.sum()
        p, q = p / p.sum(), q / q.sum()
        kl = 0.0
        for pj, qj in zip(p, q, strict=True):
            if pj > 0:
                kl += np.inf if qj == 0 else pj * np.log(pj / qj)
        cands.append(i)
        out.append(kl)
    return np.array(cands), np.array(out)


@pytest.mark.parametrize(
    ("bins", "num_bits", "stride", "flatten", "sparse"),
    [(400, 8, 1, True, False), (300, 6, 3, False, True), (300, 5, 2, True, True)],
)
def test_entropy_search_matches_slow_reference(
    bins: int, num_bits: int, stride: int, flatten: bool, sparse: bool
) -> None:
    rng = np.random.default_rng(bins + num_bits)
    hist = np.histogram(np.abs(rng.standard_normal(200_000)), bins=bins, range=(0, 4.5))[0].astype(float)
    hist[-5:] += 3.0  # a few far outliers
    if sparse:  # empty bins, including at candidate thresholds
        hist[rng.random(bins) < 0.3] = 0.0
    cands, ref = reference_kl(hist, num_bits, stride, flatten)
    got_cands, got = entropy_divergences(torch.from_numpy(hist), num_bits, stride, flatten)
    assert np.array_equal(got_cands.numpy(), cands)
    finite = np.isfinite(ref)
    assert np.array_equal(np.isfinite(got.numpy()), finite)
    np.testing.assert_allclose(got.numpy()[finite], ref[finite], rtol=1e-9, atol=1e-12)
    edges = np.linspace(0, 4.5, bins + 1)
    best = len(ref) - 1 - np.argmin(ref[::-1])  # the largest threshold among ties
    assert (
        entropy_threshold(torch.from_numpy(hist), torch.from_numpy(edges), num_bits, stride, flatten)
        == edges[cands[best]]
    )


def test_entropy_calibrator_uses_the_reference_threshold() -> None:
    batches = [gaussian(100_000, seed=7), gaussian(100_000, scale=2.0, seed=8)]
    ref_hist = GrowingHistogram(512, absolute=True)
    for x in batches:
        ref_hist.add(x)
    cands, kl = reference_kl(ref_hist.counts.numpy(), 8)
    best = cands[len(kl) - 1 - np.argmin(kl[::-1])]
    lo, hi = feed("entropy", batches, num_bins=512)
    assert float(hi) == pytest.approx(float(ref_hist.edges()[best]), rel=1e-6) and float(lo) == -float(hi)


def test_entropy_ignores_far_outliers() -> None:
    # outliers at 50 sigma: the bulk still spans more than 2^(b-1) = 128 of the 2048 bins, which the
    # search needs (TensorRT's algorithm cannot resolve a bulk narrower than its first candidate)
    x = gaussian(200_000, seed=9)
    x[:5] = torch.tensor([50.0, -50.0, 40.0, 45.0, -47.0])
    _, hi = feed("entropy", [x])
    assert 3.0 < float(hi) < 6.0


def test_entropy_rejects_asymmetric_and_per_channel() -> None:
    with pytest.raises(ValueError, match="symmetric per-tensor"):
        get_calibrator("entropy", symmetric=False)
    with pytest.raises(ValueError, match="symmetric per-tensor"):
        get_calibrator("entropy", axis=0)
