"""Block reconstruction: learn each block's weight rounding so its quantized output matches the float one.

The BRECQ recipe (Li et al., ICLR 2021) with AdaRound's rounding (:mod:`dfq.rounding`) and QDrop's
option (Wei et al., ICLR 2022), on any calibration images, synthetic ones included:

1. the model is cut into *units*, in forward order: the residual/transformer blocks it is built from
   (:data:`BLOCK_TYPES`) and every quantized layer outside them (patch embedding, stem, classifier);
2. for each unit in turn, its input is taken from the quantized model (the units before it already
   reconstructed; ``inputs="fp"``: from the float model) and its target is the float unit's output on
   the float input, both recorded once for all images;
3. Adam trains one rounding variable per weight (and, as an option, the activation ranges inside the
   unit, LSQ) on the relative output error ``Σ (q - f)² / Σ f²`` (as an option weighted by the
   output's Fisher diagonal, :mod:`dfq.quant.fisher`) plus ``reg_weight`` times the mean
   annealed rounding penalty after a warm-up; ``drop`` > 0 keeps each quantized activation inside the unit in float with that
   probability during training (QDrop);
4. the hard rounding is written into the layer's weight, which then lies on its quantizer's grid: the
   result is an ordinary calibrated model (same state-dict keys, ranges unchanged), so saving,
   :func:`dfq.load` and export need nothing new.

Bias correction of a reconstructed layer is set to zero: the learned rounding already answers for the
output shift it estimated. :func:`reconstruct` can save its state after every unit and resume from it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from dfq.augment import with_views
from dfq.checkpointing import StateFile, run_identity, to_cpu
from dfq.errors import DfqError
from dfq.quant.calibrate import activation_quantizers, quantizers_off
from dfq.quant.fisher import output_fisher
from dfq.quant.modules import QuantLayer, quantizers
from dfq.quant.quantizer import FakeQuantizer
from dfq.quant.reconstruct_config import ReconstructConfig, UnitReport
from dfq.rounding import beta_at, init_rounding, rectified_sigmoid, rounded_weight, rounding_penalty
from dfq.vit import check_model, forward_kept

__all__ = ["ReconstructConfig", "BLOCK_TYPES", "reconstruction_units", "reconstruct", "UnitReport", "with_views"]

BLOCK_TYPES = frozenset(
    {"Block", "QuantBlock", "BasicBlock", "Bottleneck", "DepthwiseSeparableConv", "InvertedResidual", "EdgeResidual"}
)
"""Class names of the modules reconstructed as one unit (timm's ViT, ResNet and EfficientNet/MobileNet
blocks, dfq's CIFAR ResNet block)."""


def _unit_seed(seed: int, unit: int) -> int:
    """The seed of unit ``unit``'s batch draws and drop masks, within the 64 bits torch's generators take."""
    return (seed * 100003 + unit) % 2**63


def _rounds(m: nn.Module) -> bool:
    return isinstance(m, QuantLayer) and m.weight_quantizer is not None and m.weight_quantizer.mode == "quantize"


def reconstruction_units(model: nn.Module, units: str = "block") -> list[tuple[str, nn.Module]]:
    """The units of ``model`` in module order: blocks of :data:`BLOCK_TYPES` that hold a quantized
    weight, and each quantized layer outside them (``units="layer"``: every quantized layer).

    >>> import timm, dfq
    >>> q = dfq.quantize_(timm.create_model("test_vit"), dfq.presets["w4a8"])
    >>> [name for name, _ in reconstruction_units(q)]  # doctest: +ELLIPSIS
    ['patch_embed.proj', 'blocks.0', 'blocks.1', ..., 'blocks.5', 'head']
    """
    found: list[tuple[str, nn.Module]] = []
    inside: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        is_block = units == "block" and type(m).__name__ in BLOCK_TYPES and any(_rounds(c) for c in m.modules())
        if is_block or _rounds(m):
            found.append((name, m))
            inside.append(name)
    return found


class _Stop(Exception):
    pass


@torch.no_grad()
def _record(
    model: nn.Module,
    unit: nn.Module,
    images: Tensor,
    batch: int,
    inputs: bool,
    outputs: bool,
    keep_index: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """The input and/or output of ``unit`` for every image, on the CPU, from one forward of ``model``
    per batch that stops at the unit (None for what was not asked); with ``keep_index`` the forward
    is :func:`dfq.vit.forward_tokens` on each image's kept tokens."""
    got_in: list[Tensor] = []
    got_out: list[Tensor] = []

    def hook(_m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        for wanted, value, into in ((inputs, args[0], got_in), (outputs, out, got_out)):
            if not wanted:
                continue
            if not isinstance(value, Tensor):
                raise DfqError(f"reconstruction needs units with one tensor in and out, got {type(value).__name__}")
            into.append(value.detach().cpu())
        raise _Stop

    handle = unit.register_forward_hook(hook)
    device = next(model.parameters()).device
    keeps = keep_index.split(batch) if keep_index is not None else [None] * len(images.split(batch))
    try:
        for x, keep in zip(images.split(batch), keeps, strict=True):
            try:
                forward_kept(model, x.to(device), None if keep is None else keep.to(device))
            except _Stop:
                pass
    finally:
        handle.remove()
    return (torch.cat(got_in) if inputs else None), (torch.cat(got_out) if outputs else None)


class _Rounder(nn.Module):
    """Stands in for a layer's weight quantizer during its reconstruction: the AdaRound weight."""

    def __init__(self, quantizer: FakeQuantizer, weight: Tensor) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.mode = "quantize"  # what QuantLayer asks of its weight quantizer
        self.hard = False
        scale, _, _, _ = quantizer.qparams()
        self.v = nn.Parameter(init_rounding(weight.detach(), scale.detach(), quantizer.axis))

    def forward(self, w: Tensor) -> Tensor:
        scale, zp, qmin, qmax = self.quantizer.qparams()
        return rounded_weight(w, self.v, scale, zp, qmin, qmax, self.quantizer.axis, hard=self.hard)


def _error(out: Tensor, target: Tensor) -> Tensor:
    """The relative squared error ``Σ (out - target)² / Σ target²`` of a batch (0: exact; 1: as far as 0 is)."""
    return (out - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)


def _weighted_error(out: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """``Σ w (out - target)² / Σ target²``: :func:`_error` with a weight of mean about 1 per element."""
    return ((out - target).pow(2) * weights).sum() / target.pow(2).sum().clamp_min(1e-12)


@torch.no_grad()
def _unit_error(unit: nn.Module, x: Tensor, y: Tensor, batch: int, device: torch.device) -> float:
    """:func:`_error` over all images."""
    err, ref = 0.0, 0.0
    for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
        yb = yb.to(device)
        err += float((unit(xb.to(device)) - yb).pow(2).sum())
        ref += float(yb.pow(2).sum())
    return err / max(ref, 1e-12)


def _drop_hooks(unit: nn.Module, p: float, g: torch.Generator) -> list[Any]:
    """QDrop: each quantized activation inside ``unit`` keeps its float value with probability ``p``."""

    def hook(_m: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
        keep = torch.rand(out.shape, generator=g).to(out.device) < p
        return torch.where(keep, args[0], out)

    return [q.register_forward_hook(hook) for q in activation_quantizers(unit) if q.mode == "quantize"]


def _train_unit(
    name: str,
    unit: nn.Module,
    x: Tensor,
    y: Tensor,
    config: ReconstructConfig,
    seed: int,
    bar: Any,
    weights: Tensor | None = None,
) -> UnitReport:
    t0 = time.perf_counter()
    device = next(unit.parameters()).device
    layers = [m for m in unit.modules() if _rounds(m)]
    saved_grad = {p: p.requires_grad for p in unit.parameters()}
    for p in unit.parameters():
        p.requires_grad_(False)
    for layer in layers:  # the learned rounding answers for the output shift (its start is the float layer)
        if layer.bias_correction is not None:
            layer.bias_correction.zero_()
    before = _unit_error(unit, x, y, config.batch_size, device)
    rounders = [_Rounder(layer.weight_quantizer, layer.layer.weight) for layer in layers]
    for layer, r in zip(layers, rounders, strict=True):
        layer.weight_quantizer = r
    acts = [q for q in activation_quantizers(unit) if q.mode == "quantize" and q.is_calibrated]
    if config.act_ranges == "learn":
        for q in acts:
            q.learn_range(True)
    groups: list[dict[str, Any]] = [{"params": [r.v for r in rounders], "lr": config.lr}]
    if config.act_ranges == "learn" and acts:
        groups.append({"params": [p for q in acts for p in (q.lo, q.hi)], "lr": config.range_lr})
    optimizer = torch.optim.Adam(groups)
    n_weights = sum(r.v.numel() for r in rounders)
    g = torch.Generator().manual_seed(seed)
    hooks = _drop_hooks(unit, config.drop, g) if config.drop > 0 else []
    try:
        for it in range(config.iters):
            idx = torch.randint(len(x), (min(config.batch_size, len(x)),), generator=g)
            out = unit(x[idx].to(device))
            if weights is None:
                loss = _error(out, y[idx].to(device))
            else:
                loss = _weighted_error(out, y[idx].to(device), weights[idx].to(device, torch.float32))
            beta = beta_at(it / config.iters, config.warmup, *config.beta)
            if beta is not None and config.reg_weight > 0:
                loss = loss + config.reg_weight * sum(rounding_penalty(r.v, beta) for r in rounders) / n_weights
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            if it % 50 == 0:
                bar.set_postfix(unit=name, loss=f"{float(loss.detach()):.4g}")
    finally:
        for h in hooks:
            h.remove()
        flipped, total, undecided = 0, 0, 0
        with torch.no_grad():
            for layer, r in zip(layers, rounders, strict=True):
                h = rectified_sigmoid(r.v)
                undecided += int(((h > 0.01) & (h < 0.99)).sum())
                r.hard = True
                w = layer.layer.weight
                hard = r(w)
                nearest = r.quantizer(w)  # round-to-nearest on the same grid (mode quantize: see _rounds)
                flipped += int((hard != nearest).sum())
                total += hard.numel()
                w.copy_(hard)
                layer.weight_quantizer = r.quantizer
        for q in acts:
            if q.is_learned:
                q.learn_range(False)
        for p, flag in saved_grad.items():
            p.requires_grad_(flag)
    after = _unit_error(unit, x, y, config.batch_size, device)
    return UnitReport(name, len(layers), before, after, flipped / max(total, 1), undecided / max(total, 1),
                      round(time.perf_counter() - t0, 2))  # fmt: skip


def _fingerprint(images: Tensor) -> str:
    return hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def reconstruct(
    model: nn.Module,
    images: Tensor,
    config: ReconstructConfig | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    on_unit: Callable[[UnitReport], None] | None = None,
    keep_index: Tensor | None = None,
) -> list[UnitReport]:
    """Reconstruct a calibrated fake-quant ``model`` in place, unit by unit, on ``images`` (N, C, H, W).

    Args:
        model: calibrated by :func:`dfq.calibrate` (its float weights are the reference; they are
            replaced by their reconstructed grid values).
        images: the calibration images in the model's input space.
        config: the schedule (default :class:`ReconstructConfig`).
        checkpoint: a state file written after every unit; an existing one of the same run resumes
            after its last finished unit (same weights, images and config).
        progress: a progress bar over all units' steps.
        on_unit: called with each unit's report.
        keep_index: int64 ``(N, k)`` kept token ids per image (a sparse SMI set's
            :attr:`dfq.data.CalibrationSet.keep_index`): the transformer blocks are then fitted on
            the kept tokens only (:func:`dfq.vit.forward_tokens`), not on the patches the inversion
            stopped optimizing. Needs a CLS ViT; not with ``views``.

    Returns:
        One :class:`UnitReport` per unit (those finished before a resume included).

    Raises:
        DfqError: nothing to reconstruct, an FP8 model, a checkpoint of another run, a
            ``keep_index`` that does not fit the images or the model, or one with ``views``.
    """
    config = config or ReconstructConfig()
    units = reconstruction_units(model, config.units)
    if not units:
        raise DfqError("nothing to reconstruct: the model has no quantized weight (dfq.quantize_ and dfq.calibrate first)")
    if len(images) < 1:
        raise DfqError("reconstruction needs at least one calibration image")
    if any(q.spec.format != "int" for q in quantizers(model)):
        raise DfqError("reconstruction learns rounding on an integer grid; FP8 (e4m3) models are not supported")
    if keep_index is not None:
        if config.views:
            raise DfqError("views crop and flip the images, so their kept tokens no longer apply: use one or the other")
        if keep_index.ndim != 2 or len(keep_index) != len(images):
            raise DfqError(f"keep_index must be ({len(images)}, k), got {tuple(keep_index.shape)}")
        check_model(model)
    was_training = model.training
    model.eval()
    state = None
    if checkpoint is not None:
        fingerprint = _fingerprint(images) + ("" if keep_index is None else _fingerprint(keep_index))
        identity = run_identity(model, "reconstruct", config, config.seed, images=fingerprint)
        state = StateFile(Path(checkpoint), "reconstruct", 1, identity)
    saved = state.load() if state is not None else None
    reference = copy.deepcopy(model)  # float weights kept for the targets (quantizers off)
    done = 0
    reports: list[UnitReport] = []
    if saved is not None:
        model.load_state_dict(saved["model"])
        done = int(saved["units_done"])
        reports = [UnitReport(**r) for r in saved["reports"]]
    fp_units = dict(reference.named_modules())
    images = with_views(images, config.views, config.seed)
    fisher: dict[str, Tensor] = {}
    if config.fisher > 0:  # from the calibrated model (reference, quantizers on): the same on a resume
        fisher = output_fisher(reference, [n for n, _ in units[done:]], images, config.batch_size, config.fisher,
                               keep_index)  # fmt: skip
    with tqdm(total=len(units) * config.iters, initial=done * config.iters, desc="reconstruct",
              disable=not progress) as bar:  # fmt: skip
        for i, (name, unit) in enumerate(units):
            if i < done:
                continue
            with quantizers_off(reference):
                x, y = _record(reference, fp_units[name], images, config.batch_size, config.inputs == "fp", True,
                               keep_index)  # fmt: skip
            if x is None:
                x, _ = _record(model, unit, images, config.batch_size, True, False, keep_index)
            report = _train_unit(name, unit, x, y, config, _unit_seed(config.seed, i), bar, fisher.pop(name, None))
            reports.append(report)
            if on_unit is not None:
                on_unit(report)
            if state is not None:
                state.save({"model": to_cpu(model.state_dict()), "units_done": i + 1,
                            "reports": [dataclasses.asdict(r) for r in reports]})  # fmt: skip
    model.train(was_training)
    return reports
