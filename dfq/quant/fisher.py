"""Output-aware weights for block reconstruction: the diagonal Fisher of each unit's output.

Plain reconstruction weighs every output element of a unit alike, yet the network's prediction does
not: the last ViT block's patch tokens are never read by a token-pooling head, and a few residual
channels carry most of what later blocks attend to. BRECQ (Li et al., ICLR 2021) weighs the squared
output error by the squared gradient of the loss with respect to that output (the diagonal of the
Fisher information). Without labels, the loss here is the KL divergence from the float model's
prediction to the quantized one's, summed per image, and its gradient is taken once, on the
calibrated quantized model (straight-through through every quantizer), for every unit at the same
time: one forward and backward per image, not one per unit.

The squared gradients of one unit are scaled to mean 1 and mixed with a uniform weight:
``w = mix * g² / mean(g²) + (1 - mix)``. ``mix = 0`` is plain reconstruction; ``mix = 1`` lets an
output element the prediction does not depend on be fitted not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfq.errors import DfqError
from dfq.quant.calibrate import quantizers_off
from dfq.vit import forward_kept

__all__ = ["output_fisher", "fisher_weights"]


def fisher_weights(grad: Tensor, mix: float) -> Tensor:
    """``mix * g² / mean(g²) + (1 - mix)`` over all of ``grad`` (uniform where every gradient is 0).

    >>> fisher_weights(torch.tensor([0.0, 1.0, 0.0, 1.0]), 0.5)
    tensor([0.5000, 1.5000, 0.5000, 1.5000])
    """
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must lie in [0, 1], got {mix}")
    g2 = grad.double().pow(2)
    mean = g2.mean()
    if mean <= 0:
        return torch.ones_like(grad, dtype=torch.float32)
    return (mix * g2 / mean + (1.0 - mix)).float()


def output_fisher(
    model: nn.Module,
    units: Sequence[str],
    images: Tensor,
    batch: int,
    mix: float,
    keep_index: Tensor | None = None,
) -> dict[str, Tensor]:
    """:func:`fisher_weights` of each named unit's output for every image, on the CPU in bfloat16.

    Args:
        model: a calibrated fake-quant model; its float prediction (quantizers off) is the target,
            its quantized one is differentiated. Left as it was (parameters' ``requires_grad`` too).
        units: names of modules of ``model`` with one tensor output.
        images: the images, ``(N, C, H, W)`` in the model's input space.
        batch: images per forward.
        mix: share of the Fisher weight (see the module text).
        keep_index: kept token ids per image (:func:`dfq.vit.forward_tokens`), or None.
    """
    modules = dict(model.named_modules())
    missing = [n for n in units if n not in modules]
    if missing:
        raise DfqError(f"no module named {missing[0]!r} in the model")
    grads: dict[str, list[Tensor]] = {n: [] for n in units}

    def hook_for(name: str) -> Any:
        def hook(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
            if not isinstance(out, Tensor):
                raise DfqError(f"reconstruction needs units with one tensor in and out, got {type(out).__name__}")
            if out.requires_grad:
                out.register_hook(lambda g: grads[name].append(g.detach().to("cpu", torch.bfloat16)))

        return hook

    saved = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    device = next(model.parameters()).device
    keeps = keep_index.split(batch) if keep_index is not None else [None] * len(images.split(batch))
    handles = [modules[n].register_forward_hook(hook_for(n)) for n in units]
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        for x, keep in zip(images.split(batch), keeps, strict=True):
            x = x.to(device)
            keep = None if keep is None else keep.to(device)
            with torch.no_grad(), quantizers_off(model):
                target = F.log_softmax(forward_kept(model, x, keep).float(), dim=-1)
            with torch.enable_grad():
                logits = forward_kept(model, x.detach().requires_grad_(True), keep)
                kl = F.kl_div(F.log_softmax(logits.float(), dim=-1), target, log_target=True, reduction="sum")
                kl.backward()
    finally:
        for h in handles:
            h.remove()
        for p, flag in saved.items():
            p.requires_grad_(flag)
        model.train(was_training)
    out = {}
    for name in units:
        if len(grads[name]) != len(images.split(batch)):
            raise DfqError(f"unit {name!r} does not lie on the path from the images to the prediction")
        out[name] = fisher_weights(torch.cat(grads[name]), mix).to(torch.bfloat16)
    return out
