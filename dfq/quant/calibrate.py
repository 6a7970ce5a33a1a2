"""Activation calibration: ``with calibration_mode(model): ...`` and ``calibrate(model, forward_loop)``.

The model-level operation takes a ``forward_loop`` (any callable that runs the model on
calibration data), so it does not care where the data comes from: real images, model inversion or
noise. The mode switch is a context manager that restores every quantizer's previous mode when
the loop raises, and finalizes the ranges only when it succeeds (Brevitas' ``calibration_mode``).
Under ``torchrun`` each rank's loop sees its share of the data and the statistics are merged across
ranks before the ranges are computed (:mod:`dfq.quant.merge`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from dfq.checkpoints import nonfinite_names
from dfq.errors import DfqError
from dfq.quant.merge import merge_across_ranks
from dfq.quant.modules import QuantLayer, quantizers
from dfq.quant.quantizer import FakeQuantizer, Role

__all__ = [
    "calibration_mode",
    "calibrate",
    "quantizers_off",
    "ForwardLoop",
    "activation_quantizers",
    "weight_quantizers",
]

ForwardLoop = Callable[[nn.Module], object]


def activation_quantizers(model: nn.Module) -> list[FakeQuantizer]:
    """Activation quantizers of ``model`` (weight quantizers calibrate from their weights)."""
    return [q for q in quantizers(model) if q.role is Role.ACTIVATION]


def weight_quantizers(model: nn.Module) -> list[FakeQuantizer]:
    """Weight quantizers of ``model`` (calibrated from their weights at ``quantize_``)."""
    return [q for q in quantizers(model) if q.role is Role.WEIGHT]


@contextmanager
def calibration_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Collect activation statistics inside the block; set the ranges when it exits cleanly.

    Inside, the model runs in float: weight quantizers are off and every activation quantizer
    passes tensors through unchanged and feeds them to its calibrator; layers with bias correction
    record their input's channel means. On a clean exit the ranges are computed and the quantizers switch to
    ``quantize``. If the block raises, each quantizer gets back its previous mode and range.

    Raises:
        ValueError: the model has neither activation quantizers nor bias correction (call ``quantize_``).
        RuntimeError: after the block, some quantizers saw no data (their names are listed).
        DfqError: after the block, some range is NaN or infinite (the activations were not finite).
    """
    acts = activation_quantizers(model)
    weights = weight_quantizers(model)
    corrected = [m for m in model.modules() if isinstance(m, QuantLayer) and m.bias_correction is not None]
    if not acts and not corrected:
        raise ValueError("model has nothing to calibrate: call dfq.quantize_(model, config) first")
    saved = [(q.mode, q.lo.clone(), q.hi.clone()) for q in acts]
    saved_weights = [q.mode for q in weights]
    for q in acts:
        q._calibrator = None
        q.mode = "calibrate"
    for q in weights:  # all ranges come from the float model
        q.mode = "off"
    for layer in corrected:
        layer.start_input_mean()
    try:
        yield model
    except BaseException:
        for q, (mode, lo, hi) in zip(acts, saved, strict=True):
            q.mode, q._calibrator = mode, None
            q.load_range(lo, hi)
        for layer in corrected:
            layer.collecting_mean = False
        raise
    finally:
        for q, mode in zip(weights, saved_weights, strict=True):
            q.mode = mode
    merge_across_ranks(acts, corrected)  # under torchrun: every rank's statistics (one process: nothing)
    for layer in corrected:  # weight quantizers are back on: the weight error is measurable
        layer.finish_bias_correction()
    names = {id(m): n for n, m in model.named_modules()}
    missing: list[str] = []
    nonfinite: list[str] = []
    for q in acts:
        try:
            q.finish_calibration()
        except RuntimeError:
            missing.append(names.get(id(q), q.site))
        else:
            if nonfinite_names([("lo", q.lo), ("hi", q.hi)]):
                nonfinite.append(names.get(id(q), q.site))
        q.mode = "quantize"
    if missing:
        raise RuntimeError(f"{len(missing)} quantizer(s) saw no calibration data: {', '.join(missing[:8])}")
    if nonfinite:
        raise DfqError(
            f"calibration gave {len(nonfinite)} quantizer(s) a NaN or infinite range ({', '.join(nonfinite[:3])}): "
            "the model produces non-finite activations on the calibration data"
        )


def calibrate(model: nn.Module, forward_loop: ForwardLoop) -> nn.Module:
    """Calibrate every activation range of a fake-quant model with ``forward_loop(model)``.

    Args:
        model: a model prepared by :func:`dfq.quantize_`.
        forward_loop: runs the model on calibration data, e.g.
            ``lambda m: [m(x) for x in batches]``. It is called once, under ``torch.no_grad()``.

    Returns:
        The same model, with ranges set and quantizers in ``quantize`` mode.
    """
    was_training = model.training
    model.eval()
    try:
        with calibration_mode(model), torch.no_grad():
            forward_loop(model)
    finally:
        model.train(was_training)
    return model


@contextmanager
def quantizers_off(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in float inside the block: every quantizer (weights too) is an identity.

    A calibrated fake-quant model keeps its float weights, so this gives the exact FP reference
    without a second copy of the model. Previous modes are restored on exit, also on error.
    """
    qs = quantizers(model)
    saved = [q.mode for q in qs]
    for q in qs:
        q.mode = "off"
    try:
        yield model
    finally:
        for q, mode in zip(qs, saved, strict=True):
            q.mode = mode
