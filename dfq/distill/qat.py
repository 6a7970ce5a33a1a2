"""Data-free QAT: the calibrated fake-quant model as the student of its own float model.

The weights train through the quantizers' straight-through estimator (:func:`dfq.numerics.fake_quantize`).
The ranges, per :class:`~dfq.distill.config.DistillConfig`:

* weights ``frozen`` (as calibrated), ``rederive`` (the weight calibrator runs on the current weights
  before every step, so the range follows the training) or ``learn`` (LSQ step sizes,
  :meth:`dfq.quant.quantizer.FakeQuantizer.learn_range`);
* activations ``frozen`` or ``learn`` (LSQ).

:func:`prepare_qat` sets this up and returns a :class:`QAT` whose :meth:`QAT.before_step` the loop calls
before each step and whose :meth:`QAT.finish` turns learned ranges back into buffers, so the trained
model saves, loads (:func:`dfq.load`) and exports exactly like a calibrated one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dfq.distill.config import DistillConfig
from dfq.errors import DfqError
from dfq.quant.calibrate import activation_quantizers
from dfq.quant.modules import QuantLayer, quantizers
from dfq.quant.quantizer import FakeQuantizer

__all__ = ["QAT", "prepare_qat"]


@dataclass
class QAT:
    """The QAT state of one fake-quant student."""

    model: nn.Module
    weight_ranges: str
    layers: list[QuantLayer]

    def before_step(self) -> None:
        """``rederive``: recompute every weight range from the current weights (no gradient)."""
        if self.weight_ranges == "rederive":
            _rederive(self.layers)

    def finish(self, model: nn.Module | None = None) -> None:
        """Learned ranges of ``model`` (default: the trained one; e.g. its moving average) become
        buffers again; re-derived ones are brought up to its final weights."""
        model = self.model if model is None else model
        if self.weight_ranges == "rederive":
            _rederive(_weighted(model))
        for q in quantizers(model):
            if q.is_learned:
                q.learn_range(False)


def _weighted(model: nn.Module) -> list[QuantLayer]:
    return [m for m in model.modules() if isinstance(m, QuantLayer) and m.weight_quantizer is not None]


@torch.no_grad()
def _rederive(layers: list[QuantLayer]) -> None:
    for layer in layers:
        layer.weight_quantizer.calibrate_from(layer.layer.weight)


def prepare_qat(model: nn.Module, config: DistillConfig) -> QAT:
    """Make a calibrated fake-quant model trainable as configured.

    Every float parameter trains (weights, biases, norms); ranges per ``config.weight_ranges`` and
    ``config.act_ranges``.

    Raises:
        DfqError: the model has no quantizer, or some quantizer is not calibrated.
    """
    qs = quantizers(model)
    if not qs:
        raise DfqError("QAT needs a fake-quant model (dfq.quantize_ and dfq.calibrate, or dfq.load of a run)")
    missing = [q.site for q in qs if q.mode == "quantize" and not q.is_calibrated]
    if missing:
        raise DfqError(f"QAT needs a calibrated model; {len(missing)} quantizer(s) have no range (e.g. {missing[0]})")
    for p in model.parameters():
        p.requires_grad_(True)
    layers = _weighted(model)
    if config.weight_ranges == "learn":
        for layer in layers:
            _learn(layer.weight_quantizer)
    if config.act_ranges == "learn":
        for q in activation_quantizers(model):
            _learn(q)
    return QAT(model, config.weight_ranges, layers)


def _learn(q: FakeQuantizer) -> None:
    if q.mode == "quantize" and not q.is_learned:
        q.learn_range(True)
