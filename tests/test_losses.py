"""dfq.losses: the divergences checked against torch's own and hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dfq.losses import cross_entropy, js_div, kl_div


def _logits(seed: int, shape: tuple[int, int] = (4, 5)) -> torch.Tensor:
    return 3 * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_kl_div_is_torchs_batchmean_kl(temperature: float) -> None:
    s, t = _logits(0), _logits(1)
    ref = F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1), reduction="batchmean")
    torch.testing.assert_close(kl_div(s, t, temperature), ref)
    per = kl_div(s, t, temperature, reduction="none")
    assert per.shape == (4,) and (per >= 0).all()
    torch.testing.assert_close(per.mean(), ref)
    with pytest.raises(ValueError, match="reduction"):
        kl_div(s, t, reduction="sum")


def test_kl_div_direction_and_temperature() -> None:
    s, t = _logits(2), _logits(3)
    assert not torch.allclose(kl_div(s, t), kl_div(t, s))  # KL(t || s), not symmetric
    assert kl_div(s, t, 100.0) < kl_div(s, t, 1.0)  # a high temperature flattens both distributions


def test_js_div_by_hand() -> None:
    a, b = _logits(4), _logits(5)
    p, q = F.softmax(a, 1), F.softmax(b, 1)
    m = (p + q) / 2
    by_hand = 0.5 * ((p * (p / m).log()).sum(1) + (q * (q / m).log()).sum(1)).mean()
    torch.testing.assert_close(js_div(a, b), by_hand)
    torch.testing.assert_close(js_div(a, b), js_div(b, a))  # symmetric
    assert 0 <= float(js_div(a, b)) <= math.log(2)


def test_cross_entropy_is_float32_under_low_precision_logits() -> None:
    logits = _logits(6).to(torch.bfloat16)
    labels = torch.tensor([0, 1, 2, 3])
    out = cross_entropy(logits, labels)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.cross_entropy(logits.float(), labels))
