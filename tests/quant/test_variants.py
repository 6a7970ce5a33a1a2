"""Tests for dfq.quant.variants: calibrated copies equal the hand-written quantize_ → calibrate, and the
variant loop scores every variant against FP logits computed once (checked against classification_metrics)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from dfq.config import preset
from dfq.evaluation import classification_metrics
from dfq.quant.calibrate import activation_quantizers, calibrate
from dfq.quant.modules import quantizers
from dfq.quant.transform import quantize_
from dfq.quant.variants import VariantEvaluator, calibrated_copy, image_batches_loop


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)
    ).eval()


def _images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


def test_image_batches_loop_covers_every_image_once() -> None:
    images, seen = _images(7), []
    image_batches_loop(images, 3)(seen.append)
    assert [len(b) for b in seen] == [3, 3, 1] and torch.equal(torch.cat(seen), images)
    with pytest.raises(ValueError, match="batch_size"):
        image_batches_loop(images, 0)


def test_calibrated_copy_equals_quantize_then_calibrate() -> None:
    model, calib, images = _cnn(), _images(8), _images(5, seed=2)
    before = copy.deepcopy(model.state_dict())
    q = calibrated_copy(model, preset("w8a8"), image_batches_loop(calib, 4))
    assert not quantizers(model)  # the float model is untouched
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    by_hand = calibrate(quantize_(copy.deepcopy(model), preset("w8a8")), lambda m: [m(b) for b in calib.split(4)])
    with torch.no_grad():
        assert torch.equal(q(images), by_hand(images))
    assert all(a.mode == "quantize" for a in activation_quantizers(q))


def test_weight_only_config_skips_the_loop_and_filter_keeps_layers_float() -> None:
    calls = []
    weight_only = dataclasses.replace(preset("w8a8"), act_sites=frozenset(), bias_correction="off")
    q = calibrated_copy(_cnn(), weight_only, lambda m: calls.append(m))
    assert calls == [] and quantizers(q) and not activation_quantizers(q)
    q = calibrated_copy(_cnn(), preset("w8a8"), image_batches_loop(_images(4)), filter_fn=lambda _m, name: name != "0")
    assert isinstance(q[0], nn.Conv2d) and not isinstance(q[5], nn.Linear)


def test_variants_are_scored_against_reference_logits_computed_once() -> None:
    model, images = _cnn(), _images(9, seed=3)
    labels = torch.tensor([0, 1, 2, 3, 4, -1, 0, 1, 2])
    reference_calls = []

    def reference(x: torch.Tensor) -> torch.Tensor:
        reference_calls.append(len(x))
        return model(x)

    ev = VariantEvaluator(reference, images, labels, batch_size=4)
    assert reference_calls == [4, 4, 1]
    with torch.no_grad():
        fp = model(images)
    assert torch.allclose(ev.reference_logits, fp)
    assert ev.reference_metrics == classification_metrics(ev.reference_logits, labels)

    built = []

    def build() -> nn.Module:
        built.append("w8a8")
        return calibrated_copy(model, preset("w8a8"), image_batches_loop(_images(8), 4))

    results = ev.run([("fp", model), ("w8a8", build), ("noise", lambda: lambda x: torch.randn(len(x), 5))])
    first = next(results)
    assert built == []  # builders run only when their turn comes
    assert first.name == "fp" and first.metrics["agreement"] == 1.0 and first.metrics["kl"] == pytest.approx(0, abs=1e-12)
    rest = list(results)
    assert built == ["w8a8"] and [r.name for r in rest] == ["w8a8", "noise"]
    assert reference_calls == [4, 4, 1]  # never run again
    for r in [first, *rest]:
        assert r.logits.shape == (9, 5) and r.seconds >= 0
        assert r.metrics == classification_metrics(r.logits, labels, reference_logits=ev.reference_logits)
