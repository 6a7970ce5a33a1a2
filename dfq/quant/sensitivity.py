"""Per-layer (per-site) sensitivity of a calibrated fake-quant model, and mixed precision chosen from it.

:func:`sensitivity` measures, for every quantized layer's weights (and, as an option, every activation
site), the KL divergence to the float model on a set of images with

* ``alone_kl``: only that quantizer on, every other one off (what it costs by itself);
* ``drop_kl``: every quantizer on except that one (what taking it out of the quantized model saves:
  ``baseline_kl - drop_kl``).

The float logits come once from the model with every quantizer off (or from the caller, when the
float reference is another model, e.g. after reconstruction moved the weights). The images should be
*held out*: never the calibration images, on which the ranges were fitted.

:func:`choose_widths` turns the weight rows into a mixed-precision assignment: layers move from the
low width to the high one in the order of a measure from the table (KL saved when dropped, or KL
caused alone; per added weight bit or not), while the average weight width stays within the budget
(greedy on the table; no re-measurement).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from dfq.evaluation import batched_logits, per_image_kl
from dfq.quant.modules import QuantLayer, quantizers
from dfq.quant.quantizer import FakeQuantizer, Role

__all__ = ["Sensitivity", "sensitivity", "choose_widths", "average_weight_bits", "mean_kl", "Kind", "ORDERINGS"]

Kind = Literal["weight", "act"]


@dataclass(frozen=True)
class Sensitivity:
    """One quantizer's row: ``name`` is the layer (weights) or the quantizer module (activations),
    ``site`` the activation site name (``weight`` for weights), ``numel`` the weight count (0 for
    activations)."""

    name: str
    kind: Kind
    site: str
    bits: int
    numel: int
    alone_kl: float
    drop_kl: float


def _groups(model: nn.Module, kinds: Iterable[Kind]) -> list[tuple[str, Kind, FakeQuantizer, int]]:
    wanted = set(kinds)
    found: list[tuple[str, Kind, FakeQuantizer, int]] = []
    seen: set[int] = set()
    for name, m in model.named_modules():
        if isinstance(m, QuantLayer) and "weight" in wanted:
            q = m.weight_quantizer
            if q is not None and q.mode == "quantize":
                found.append((name, "weight", q, m.layer.weight.numel()))
                seen.add(id(q))
    if "act" in wanted:
        for name, m in model.named_modules():
            if isinstance(m, FakeQuantizer) and m.role is Role.ACTIVATION and m.mode == "quantize" and id(m) not in seen:
                found.append((name, "act", m, 0))
                seen.add(id(m))
    return found


def mean_kl(model: nn.Module, images: Tensor, reference: Tensor, batch_size: int) -> float:
    """Mean KL(reference ‖ model) over ``images`` (``reference``: logits on the same images)."""
    return float(per_image_kl(reference, batched_logits(model, images, batch_size)).mean())


@torch.no_grad()
def sensitivity(
    model: nn.Module,
    images: Tensor,
    reference_logits: Tensor | None = None,
    kinds: Sequence[Kind] = ("weight",),
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[float, list[Sensitivity]]:
    """Measure every quantizer of ``kinds`` alone and dropped (module docstring).

    Args:
        model: a calibrated fake-quant model (left as it was found).
        images: held-out images in the model's input space, ``(N, C, H, W)``.
        reference_logits: the float model's logits on ``images``; None: ``model`` with every quantizer off.
        kinds: ``weight`` (one row per quantized layer) and/or ``act`` (one per activation quantizer).
        batch_size: images per forward.
        progress: a progress bar over the measurements.

    Returns:
        ``(baseline_kl, rows)``: the KL of the model as it is, and one row per quantizer in module order.

    Raises:
        ValueError: no images, an unknown kind, or nothing of those kinds is quantized.
    """
    if len(images) == 0:
        raise ValueError("sensitivity needs at least one image")
    bad = set(kinds) - {"weight", "act"}
    if bad:
        raise ValueError(f"kinds are 'weight' and 'act', got {sorted(bad)}")
    groups = _groups(model, kinds)
    if not groups:
        raise ValueError(f"nothing to measure: the model has no quantizer of kind {', '.join(kinds)} switched on")
    every = quantizers(model)
    saved = [q.mode for q in every]
    try:
        for q in every:
            q.mode = "off"
        ref = reference_logits if reference_logits is not None else batched_logits(model, images, batch_size)
        for q, mode in zip(every, saved, strict=True):
            q.mode = mode
        baseline = mean_kl(model, images, ref, batch_size)
        rows = []
        for name, kind, q, numel in tqdm(groups, desc="sensitivity", disable=not progress):
            others = [(o, m) for o, m in zip(every, saved, strict=True) if o is not q]
            for o, _ in others:
                o.mode = "off"
            alone = mean_kl(model, images, ref, batch_size)
            for o, m in others:
                o.mode = m
            q.mode = "off"
            dropped = mean_kl(model, images, ref, batch_size)
            q.mode = "quantize"
            rows.append(Sensitivity(name, kind, q.site, q.spec.num_bits, numel, alone, dropped))
    finally:
        for q, mode in zip(every, saved, strict=True):
            q.mode = mode
    return baseline, rows


def average_weight_bits(numels: dict[str, int], widths: dict[str, int]) -> float:
    """The weight-count-weighted mean width of the layers ``numels`` under ``widths``.

    >>> average_weight_bits({"a": 3, "b": 1}, {"a": 4, "b": 8})
    5.0
    """
    total = sum(numels.values())
    return sum(n * widths[k] for k, n in numels.items()) / total


ORDERINGS = (("drop", True), ("alone", True), ("drop", False), ("alone", False))
"""The greedy orderings :func:`choose_widths` offers: the measure, and whether it is taken per added bit."""


def choose_widths(
    rows: Sequence[Sensitivity],
    budget_bits: float,
    baseline_kl: float,
    high: int = 8,
    by: Literal["drop", "alone"] = "drop",
    per_bit: bool = True,
) -> dict[str, int]:
    """Per-layer weight widths from the weight rows of :func:`sensitivity`, within an average-width budget.

    Every layer starts at its measured width; layers move to ``high`` bits in order of their measure —
    ``by="drop"``: the KL saved when the layer alone is left in float (``baseline_kl - drop_kl``, standing
    for making it ``high``-bit); ``by="alone"``: the KL it causes by itself (``alone_kl``) — divided by
    the bits it adds when ``per_bit``, skipping any that would break the budget or whose measure is not
    positive. The orderings disagree where quantizers interact; :func:`dfq.jobs.plan.plan_mixed_precision`
    tries each (:data:`ORDERINGS`) and keeps the plan with the lowest held-out KL.

    Args:
        rows: sensitivity rows (activation rows are ignored).
        budget_bits: the largest allowed mean weight width over the rows' layers.
        baseline_kl: the model's KL with every quantizer on.
        high: the width a promoted layer gets.
        by: the measure, ``drop`` or ``alone``.
        per_bit: rank by measure per added weight bit (else by the measure alone).

    Returns:
        ``{layer: bits}`` for every weight row.

    Raises:
        ValueError: the budget is below the starting mean width, or an unknown measure.

    >>> r = [Sensitivity("a", "weight", "weight", 4, 100, 0.2, 0.05), Sensitivity("b", "weight", "weight", 4, 300, 0.1, 0.15)]
    >>> choose_widths(r, 5.0, 0.2)  # a saves 0.15 over 400 bits, b 0.05 over 1200; 5.0 affords a only
    {'a': 8, 'b': 4}
    >>> choose_widths(r, 8.0, 0.2), choose_widths(r, 8.0, 0.2, by="alone", per_bit=False)
    ({'a': 8, 'b': 8}, {'a': 8, 'b': 8})
    """
    if by not in ("drop", "alone"):
        raise ValueError(f"by must be drop or alone, got {by!r}")
    weights = [r for r in rows if r.kind == "weight"]
    widths = {r.name: r.bits for r in weights}
    numels = {r.name: r.numel for r in weights}
    if not weights:
        return widths
    start = average_weight_bits(numels, widths)
    if budget_bits < start - 1e-9:
        raise ValueError(f"a budget of {budget_bits:g} weight bits is below the model's {start:.3g}")
    allowed = budget_bits * sum(numels.values())
    used = sum(numels[k] * widths[k] for k in widths)
    measure = {r.name: (baseline_kl - r.drop_kl) if by == "drop" else r.alone_kl for r in weights}

    def key(r: Sensitivity) -> float:
        return measure[r.name] / ((high - r.bits) * r.numel) if per_bit else measure[r.name]

    for r in sorted((r for r in weights if r.bits < high and measure[r.name] > 0), key=key, reverse=True):
        extra = (high - r.bits) * r.numel
        if used + extra <= allowed + 1e-6:
            widths[r.name] = high
            used += extra
    return widths
