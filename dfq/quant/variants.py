"""Quantization variants of one float model, evaluated against its FP logits computed once.

An ablation, a calibration-source comparison or a one-at-a-time sensitivity analysis all run the
same loop: load the evaluation images once, run the float model on them once, then for every
variant build a calibrated fake-quant copy (:func:`calibrated_copy`: ``deepcopy`` → ``quantize_`` →
``calibrate``), run it on the same images and score it against the FP logits with
:func:`dfq.evaluation.classification_metrics`. :class:`VariantEvaluator` holds the images and the FP
logits; a variant is a name and its model, or a zero-argument builder so that only one quantized
copy is alive at a time. No paper is implemented here.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from dfq.config import QuantConfig
from dfq.evaluation import Predictor, batched_logits, classification_metrics
from dfq.quant.calibrate import ForwardLoop, activation_quantizers, calibrate
from dfq.quant.modules import QuantLayer
from dfq.quant.transform import FilterFn, quantize_

__all__ = [
    "image_batches_loop",
    "calibrated_copy",
    "VariantSource",
    "VariantResult",
    "VariantEvaluator",
]

VariantSource = nn.Module | Callable[[], Predictor | nn.Module]
"""A variant's model: an ``nn.Module``, or a zero-argument builder returning a module or a predictor
(wrap an already built predictor, which takes the images, as ``lambda: predictor``)."""


def image_batches_loop(images: Tensor, batch_size: int = 32) -> ForwardLoop:
    """A ``forward_loop`` that runs the model on ``images`` in consecutive batches of ``batch_size``.

    >>> import torch
    >>> seen = []
    >>> image_batches_loop(torch.zeros(5, 3, 2, 2), 2)(lambda x: seen.append(len(x)))
    >>> seen
    [2, 2, 1]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")

    def loop(model: Callable[[Tensor], Any]) -> None:
        for batch in images.split(batch_size):
            model(batch)

    return loop


def _needs_calibration(model: nn.Module) -> bool:
    """Whether :func:`calibrate` has anything to set: activation ranges or bias corrections."""
    corrected = (m for m in model.modules() if isinstance(m, QuantLayer) and m.bias_correction is not None)
    return bool(activation_quantizers(model)) or any(True for _ in corrected)


def calibrated_copy(
    model: nn.Module, config: QuantConfig, forward_loop: ForwardLoop, filter_fn: FilterFn | None = None
) -> nn.Module:
    """A calibrated fake-quant copy of ``model``; the float model is left untouched.

    ``copy.deepcopy`` → :func:`dfq.quant.transform.quantize_` → :func:`dfq.quant.calibrate.calibrate`.
    A config with nothing to calibrate (weights only, no bias correction) returns the quantized copy
    without calling ``forward_loop``.

    Args:
        model: the float model.
        config: the quantization recipe.
        forward_loop: runs the model on calibration data, e.g. :func:`image_batches_loop`.
        filter_fn: optional ``(layer, name) -> bool``; False keeps that layer in float.

    Returns:
        The quantized, calibrated copy.
    """
    quantized = quantize_(copy.deepcopy(model), config, filter_fn)
    return calibrate(quantized, forward_loop) if _needs_calibration(quantized) else quantized


@dataclass(frozen=True)
class VariantResult:
    """One variant scored against the FP logits.

    Attributes:
        name: the variant's name.
        logits: float32 ``(N, C)`` logits on the evaluation images (for paired statistics).
        metrics: :func:`dfq.evaluation.classification_metrics` against the FP logits
            (``top1``, ``top5``, ``agreement``, ``kl``, counts).
        seconds: wall time of building the variant (e.g. calibrating it) and running it.
    """

    name: str
    logits: Tensor
    metrics: dict[str, Any]
    seconds: float


class VariantEvaluator:
    """Evaluation images, their labels and the FP logits, computed once; variants scored against them.

    Args:
        reference: the float model (or a predictor) whose logits are the reference.
        images: ``(N, 3, H, W)`` preprocessed evaluation images.
        labels: ``(N,)`` class ids (negative = unlabelled: agreement and KL only).
        batch_size: images per forward (:func:`dfq.evaluation.batched_logits`).

    Attributes:
        reference_logits: the FP logits, float32 ``(N, C)``.
        reference_metrics: top-1/top-5 of the reference itself.
    """

    def __init__(
        self, reference: Predictor | nn.Module, images: Tensor, labels: Tensor, batch_size: int = 50
    ) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.reference_logits = batched_logits(reference, images, batch_size)
        self.reference_metrics = classification_metrics(self.reference_logits, labels)

    def logits(self, model: Predictor | nn.Module) -> Tensor:
        """Logits of ``model`` on the evaluation images."""
        return batched_logits(model, self.images, self.batch_size)

    def evaluate(self, name: str, variant: VariantSource) -> VariantResult:
        """Build ``variant`` if it is a builder, run it on the images, score it against the FP logits."""
        start = time.perf_counter()
        model = variant if isinstance(variant, nn.Module) else variant()
        logits = self.logits(model)
        metrics = classification_metrics(logits, self.labels, reference_logits=self.reference_logits)
        return VariantResult(name, logits, metrics, time.perf_counter() - start)

    def run(self, variants: Iterable[tuple[str, VariantSource]]) -> Iterator[VariantResult]:
        """:meth:`evaluate` every ``(name, variant)`` in turn, yielding each result as it is ready."""
        for name, variant in variants:
            yield self.evaluate(name, variant)
