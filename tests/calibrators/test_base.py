"""Calibrators against independent references: numpy min/max/percentiles, float64 MSE, a slow KL search.

Generic checks are generated from the registry, so every registered calibrator runs here.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from dfq import calibrators

# ``from dfq import calibrators`` (not ``from dfq.calibrators import ...``): ruff cannot see that the
# sibling directory ``calibrators/`` is ``dfq.calibrators`` and would sort it as third-party.
get_calibrator = calibrators.get_calibrator
GrowingHistogram = calibrators._histogram.GrowingHistogram
entropy_divergences = calibrators.entropy.entropy_divergences
entropy_threshold = calibrators.entropy.entropy_threshold
NAMES = calibrators.calibrator_names()


def gaussian(*shape: int, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """float32 Gaussian samples from numpy (independent of torch's generator)."""
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape) * scale).float()


def feed(name: str, batches: list[torch.Tensor], **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Build ``name``, collect ``batches`` and return its range."""
    cal = get_calibrator(name, **kwargs)
    for x in batches:
        cal.collect(x)
    return cal.compute_range()


def mse64(x: np.ndarray, amax: np.ndarray | float, num_bits: int, paper: bool = False) -> np.ndarray:
    """Float64 MSE of symmetric fake quantization with ``amax`` (per row when ``amax`` is a vector)."""
    amax = np.asarray(amax, dtype=np.float64)
    divisor = (2**num_bits - 1) / 2 if paper else 2 ** (num_bits - 1) - 1
    scale = (amax / divisor)[..., None] if amax.ndim else amax / divisor
    q = np.clip(np.round(x / scale), -(2 ** (num_bits - 1)), 2 ** (num_bits - 1) - 1)
    return ((q * scale - x) ** 2).mean(axis=-1)


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


# ---------------------------------------------------------------- every registered calibrator


@pytest.mark.parametrize("name", NAMES)
def test_per_tensor_symmetric_contract(name: str) -> None:
    batches = [gaussian(4, 1000, scale=s, seed=i) for i, s in enumerate((1.0, 2.0, 0.5))]
    lo, hi = feed(name, batches)
    absmax = max(float(x.abs().max()) for x in batches)
    for t in (lo, hi):
        assert t.dim() == 0 and t.dtype == torch.float32 and t.device.type == "cpu"
    assert float(lo) == -float(hi)
    assert 0.0 < float(hi) <= absmax


@pytest.mark.parametrize("name", NAMES)
def test_before_collect_and_reset(name: str) -> None:
    cal = get_calibrator(name)
    with pytest.raises(RuntimeError, match="before any collect"):
        cal.compute_range()
    cal.collect(gaussian(5000, scale=10.0, seed=1))
    cal.reset()
    with pytest.raises(RuntimeError, match="before any collect"):
        cal.compute_range()
    x = gaussian(5000, seed=2)
    cal.collect(x)
    assert torch.equal(torch.stack(cal.compute_range()), torch.stack(feed(name, [x])))


@pytest.mark.parametrize("name", NAMES)
def test_all_zero_and_bad_bits(name: str) -> None:
    lo, hi = feed(name, [torch.zeros(3, 4), torch.zeros(7)])
    assert float(lo) == 0.0 and float(hi) == 0.0
    with pytest.raises(ValueError, match="num_bits"):
        get_calibrator(name, num_bits=1)


# ---------------------------------------------------------------- minmax


def test_minmax_per_tensor_exact() -> None:
    batches = [gaussian(3, 50, seed=i) + i for i in range(4)]
    data = torch.cat([b.flatten() for b in batches])
    lo, hi = feed("minmax", batches, symmetric=False)
    assert torch.equal(lo, data.min()) and torch.equal(hi, data.max())
    lo, hi = feed("minmax", batches)
    assert torch.equal(hi, data.abs().max()) and torch.equal(lo, -data.abs().max())


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_minmax_per_channel_exact(axis: int) -> None:
    batches = [gaussian(6, 5, 7, seed=i) * (i + 1) for i in range(3)]
    data = torch.cat(batches, dim=2 if axis in (0, 1) else 0)
    other = tuple(d for d in range(3) if d != axis % 3)
    lo, hi = feed("minmax", batches, symmetric=False, axis=axis)
    assert lo.shape == (data.shape[axis],)
    assert torch.equal(lo, data.amin(dim=other)) and torch.equal(hi, data.amax(dim=other))
    lo, hi = feed("minmax", batches, axis=axis)
    assert torch.equal(hi, data.abs().amax(dim=other)) and torch.equal(lo, -hi)


def test_per_channel_count_mismatch() -> None:
    for name in ("minmax", "percentile", "mse"):
        cal = get_calibrator(name, axis=0)
        cal.collect(torch.ones(4, 3))
        with pytest.raises(ValueError, match="channels"):
            cal.collect(torch.ones(5, 3))


# ---------------------------------------------------------------- percentile


@pytest.mark.parametrize("p", [99.0, 99.99])
def test_percentile_per_tensor_close_to_numpy_with_growing_range(p: float) -> None:
    # the range grows twice: later batches are wider than the first one
    batches = [
        gaussian(300_000, seed=1),
        gaussian(300_000, scale=3.0, seed=2),
        gaussian(400_000, scale=4.0, seed=3),
    ]
    x = torch.cat(batches).double().numpy()
    _, hi = feed("percentile", batches, percentile=p)
    width = np.abs(x).max() / 2048
    assert abs(float(hi) - np.percentile(np.abs(x), p)) <= 2 * width
    lo, hi = feed("percentile", batches, percentile=p, symmetric=False)
    width = (x.max() - x.min()) / 2048
    assert abs(float(hi) - np.percentile(x, p)) <= 2 * width
    assert abs(float(lo) - np.percentile(x, 100 - p)) <= 2 * width


@pytest.mark.parametrize("axis", [0, 1])
def test_percentile_per_channel_exact(axis: int) -> None:
    w = gaussian(8, 300, seed=4)
    w[3, 7] = 40.0
    x = w.double().numpy()
    lo, hi = feed("percentile", [w], axis=axis, percentile=99.0)
    np.testing.assert_allclose(hi.numpy(), np.percentile(np.abs(x), 99.0, axis=1 - axis), rtol=1e-6)
    assert torch.equal(lo, -hi)
    lo, hi = feed("percentile", [w], axis=axis, percentile=99.0, symmetric=False)
    np.testing.assert_allclose(lo.numpy(), np.percentile(x, 1.0, axis=1 - axis), rtol=1e-6)
    np.testing.assert_allclose(hi.numpy(), np.percentile(x, 99.0, axis=1 - axis), rtol=1e-6)


# ---------------------------------------------------------------- mse


@pytest.mark.parametrize("paper", [False, True])
def test_mse_per_channel_beats_every_candidate(paper: bool) -> None:
    w = gaussian(6, 512, seed=5)
    w[2, 17] = 25.0
    x = w.double().numpy()
    _, amax = feed("mse", [w], num_bits=4, axis=0, paper=paper)
    absmax = np.abs(x).max(axis=1)
    chosen = mse64(x, amax.double().numpy(), 4, paper)
    assert float(amax[2]) < 0.9 * absmax[2]
    assert np.all(chosen <= mse64(x, absmax, 4, paper) * (1 + 1e-5))
    for ratio in np.linspace(0.2, 1.0, 81):
        assert np.all(chosen <= mse64(x, absmax * ratio, 4, paper) * (1 + 1e-4))


def test_mse_per_tensor_gaussian_4bit() -> None:
    batches = [gaussian(50_000, seed=i, scale=1.0 + 0.1 * i) for i in range(4)]
    x = torch.cat(batches).double().numpy()
    lo, hi = feed("mse", batches, num_bits=4)
    absmax = np.abs(x).max()
    assert float(lo) == -float(hi) and float(hi) < 0.75 * absmax
    chosen = mse64(x, float(hi), 4)
    assert chosen < 0.8 * mse64(x, absmax, 4)
    best = min(mse64(x, absmax * r, 4) for r in np.linspace(0.2, 1.0, 81))
    assert chosen <= best * 1.02  # the histogram search lands on (nearly) the raw-data optimum
    _, hi8 = feed("mse", batches, num_bits=8)
    assert mse64(x, float(hi8), 8) <= mse64(x, absmax, 8)


# ---------------------------------------------------------------- entropy


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


# ---------------------------------------------------------------- asymmetric / histogram


def test_asymmetric_on_positive_data() -> None:
    batches = [torch.from_numpy(np.random.default_rng(i).uniform(1.0, 3.0, 50_000)).float() for i in range(3)]
    data = torch.cat(batches)
    lo, hi = feed("minmax", batches, symmetric=False)
    assert torch.equal(lo, data.min()) and torch.equal(hi, data.max())
    lo, hi = feed("percentile", batches, symmetric=False)
    width = float(data.max() - data.min()) / 2048
    assert 0.0 < float(lo) and abs(float(lo) - np.percentile(data.double().numpy(), 0.01)) <= 2 * width
    lo, hi = feed("mse", batches, symmetric=False)
    assert 0.0 <= float(lo) <= float(data.min()) < float(hi) <= float(data.max())


def test_histogram_conserves_counts_and_point_mass() -> None:
    hist = GrowingHistogram(64)
    hist.add(torch.full((10,), 2.0))
    assert hist.is_point and hist.quantile(0.5) == 2.0
    hist.add(torch.tensor([0.0, 1.0]))
    hist.add(torch.tensor([-4.0, 8.0]))  # widens on both sides: re-binning
    assert hist.counts is not None and float(hist.counts.sum()) == pytest.approx(14.0)
    assert (hist.lo, hist.hi) == (-4.0, 8.0)
    assert abs(hist.quantile(0.5) - 2.0) <= 2 * 12.0 / 64
    with pytest.raises(ValueError, match="inf or NaN"):
        hist.add(torch.tensor([1.0, float("nan")]))


@pytest.mark.parametrize("module", [calibrators.minmax, calibrators.percentile])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
