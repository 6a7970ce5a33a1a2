"""Sparse Model Inversion for CLS ViTs (Hu et al., "Sparse Model Inversion: Efficient Inversion of
Vision Transformers for Data-Free Applications", ICML 2024).

SMI is DeepInversion-ViT (CE + TV_l2 on the full un-jittered image, Adam 0.25, betas (0.5, 0.99),
roll + flip, clipping; see :mod:`dfq.inversion.deepinversion`) plus progressive per-image patch
stopping: at each scheduled iteration ``p`` with ratio ``r``, every image keeps the
``int((k - 1) * (1 - r))`` of its ``k - 1`` remaining patches that the last block's head-averaged
CLS attention ranked highest in iteration ``p - 1``; stopped tokens are gathered out of the sequence
(:func:`dfq.vit.forward_tokens`), so they cost nothing in the blocks, forward or backward. The
default schedule ``((50, .3), (100, .3), (200, .3), (300, .3))`` keeps 196 -> 137 -> 95 -> 66 -> 46
patches of a 224-px /16 ViT. Facts followed: ALGORITHMS.md §1.3 and §5; deliberate fixes of §1.8:

* **Consecutive prunes work.** Iteration ``p - 1`` of a prune ``p`` is "the iteration before" even
  when it is itself a prune iteration: its forward already uses the index it just pruned to, and the
  attention it returns (aligned with that index) ranks the next prune. The reference's branch logic
  silently skips the first of two consecutive prunes.
* The iteration before a prune and the prune iteration are not jittered; on every other iteration
  the tracked (un-jittered) absolute ids are remapped for that forward only (:func:`remap_index`).
* **The returned mask is the tracked set** (the paper), not a recomputation from a dense forward on
  de-normalized images, so ``keep_index`` has ``1 + 46`` columns and names exactly the optimised
  patches. Images are returned as optimised (normalized space, lossless); stopped patches are not
  zeroed - calibration forwards only the kept tokens. :func:`dfq.preview.masked_preview` blackens
  them for display.
* The best-loss images are really kept (a copy); best tracking restarts at every prune, so the
  returned images are the lowest-loss iterate of the final sparsity stage, matching ``keep_index``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.inversion import priors
from dfq.inversion._loop import frozen_eval
from dfq.inversion._pixels import random_labels, run_pixels
from dfq.inversion.deepinversion import num_classes_of
from dfq.inversion.pixel_config import PixelInversionConfig, vit_jitter
from dfq.inversion.registry import register_inverter
from dfq.losses import cross_entropy
from dfq.vit import check_model, forward_tokens, topk_keep

__all__ = ["SMIConfig", "smi", "remap_index", "kept_counts", "patch_grid", "DEFAULT_SCHEDULE"]

DEFAULT_SCHEDULE: tuple[tuple[int, float], ...] = ((50, 0.3), (100, 0.3), (200, 0.3), (300, 0.3))


@dataclass(frozen=True)
class SMIConfig(PixelInversionConfig):
    """Hyperparameters of SMI (defaults: the reference's quantization setting).

    The shared fields are those of :class:`~dfq.inversion.pixel_config.PixelInversionConfig` with its
    ViT defaults (4000 iterations, lr 0.25, betas (0.5, 0.99), tv_l2 1e-4, jitter ``side // 8``).

    Attributes:
        schedule: ``((iteration, ratio), ...)``: at ``iteration`` drop ``ratio`` of the remaining
            patches. Iterations strictly increasing, in ``[1, iterations)``; ratios in ``[0, 1)``.
            Empty: no pruning (dense DeepInversion-ViT).
    """

    schedule: tuple[tuple[int, float], ...] = DEFAULT_SCHEDULE

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            schedule = tuple((int(it), float(r)) for it, r in self.schedule)
        except (TypeError, ValueError):
            raise ValueError(f"schedule must be pairs (iteration, ratio), got {self.schedule!r}") from None
        if any(int(it) != it for it, _ in self.schedule):
            raise ValueError(f"schedule iterations must be integers, got {self.schedule!r}")
        object.__setattr__(self, "schedule", schedule)
        previous = 0
        for it, ratio in schedule:
            if not 1 <= it < self.iterations:
                raise ValueError(f"schedule iteration {it} must lie in [1, iterations={self.iterations})")
            if it <= previous:
                raise ValueError(
                    f"schedule iterations must be strictly increasing, got {[i for i, _ in schedule]}"
                )
            if not 0.0 <= ratio < 1.0:
                raise ValueError(f"schedule ratio {ratio} at iteration {it} must be in [0, 1)")
            previous = it


def kept_counts(num_patches: int, schedule: tuple[tuple[int, float], ...]) -> list[int]:
    """Patches kept before the first prune and after each one (the reference's arithmetic).

    >>> kept_counts(196, DEFAULT_SCHEDULE)
    [196, 137, 95, 66, 46]
    """
    counts = [num_patches]
    for _, ratio in schedule:
        counts.append(int(counts[-1] * (1 - ratio)))
    return counts


def patch_grid(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, int, int]:
    """``(grid_h, grid_w, patch)`` of a square-patch ViT at ``input_size``.

    Raises:
        DfqError: non-square patches or a side that is not a multiple of the patch.
    """
    ph, pw = (int(v) for v in model.patch_embed.patch_size)
    _, h, w = input_size
    if ph != pw or h % ph or w % pw:
        raise DfqError(f"SMI needs square patches that tile the image; patch {ph}x{pw}, image {h}x{w}")
    return h // ph, w // pw, ph


def remap_index(
    keep_index: Tensor, dy: int, dx: int, flipped: bool, grid_h: int, grid_w: int, patch: int
) -> Tensor:
    """Where the kept patches' content sits after ``roll(dy, dx)`` then an optional horizontal flip.

    The pixel offsets become whole-patch shifts rounded half up, ``floor(offset / patch + 0.5)``
    (the reference's rule); the patch-id grid is rolled by them (cyclically, like ``torch.roll``),
    then its columns are mirrored if ``flipped``. Column 0 (CLS) stays 0.

    >>> keep = torch.tensor([[0, 1, 2, 5]])  # 2 x 3 grid: patches (0,0), (0,1), (1,1)
    >>> remap_index(keep, dy=16, dx=0, flipped=False, grid_h=2, grid_w=3, patch=16).tolist()
    [[0, 4, 5, 2]]

    Args:
        keep_index: int64 ``(B, k)`` absolute ids, CLS first, patches ``1..grid_h * grid_w`` raster.
        dy, dx: the roll in pixels (``torch.roll`` sign: content moves to higher indices).
        flipped: whether the rolled image was flipped left-right.
        grid_h, grid_w: patch grid.
        patch: patch side in pixels.

    Returns:
        int64 ``(B, k)`` ids of the same content in the augmented image.
    """
    sy = math.floor(dy / patch + 0.5)
    sx = math.floor(dx / patch + 0.5)
    ids = keep_index[:, 1:] - 1
    row = torch.remainder(ids // grid_w + sy, grid_h)
    col = torch.remainder(ids % grid_w + sx, grid_w)
    if flipped:
        col = grid_w - 1 - col
    return torch.cat([keep_index[:, :1], row * grid_w + col + 1], dim=1)


def smi_loss(x_full: Tensor, logits: Tensor, labels: Tensor, config: SMIConfig) -> Tensor:
    """CE on the (sparse) logits plus the image priors on the full un-jittered images."""
    loss = config.ce * cross_entropy(logits, labels)
    if config.tv_l2:
        loss = loss + config.tv_l2 * priors.tv_l2(x_full)
    if config.tv_l1:
        loss = loss + config.tv_l1 * priors.tv_l1(x_full)
    if config.l2:
        loss = loss + config.l2 * priors.l2_prior(x_full)
    return loss


@register_inverter("smi", SMIConfig, families=("vit",))
def smi(
    model: nn.Module,
    config: SMIConfig,
    *,
    data_cfg: dict[str, Any],
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CalibrationSet:
    """Synthesize ``config.num_images`` sparse images from a CLS ViT with SMI.

    The model is used frozen and in eval mode; its ``requires_grad`` flags and mode are restored.

    Args:
        model: a timm CLS ViT (:func:`dfq.vit.check_model`).
        config: the hyperparameters.
        data_cfg: the model's data config (:func:`dfq.models.data_config`, overrides applied):
            ``input_size`` of the images, ``mean``/``std`` of the clipping bounds.
        device: where to run (the model is moved there).
        progress: show a progress bar with loss and kept-token count.

    Returns:
        A :class:`CalibrationSet` with images in normalized space and ``keep_index`` ``(N, 1 + K)``
        (CLS first, kept patch ids ascending), ``None`` for an empty schedule. Provenance records the
        per-stage kept counts actually tracked.

    Raises:
        DfqError: not a supported ViT, or a non-finite loss.
    """
    check_model(model)
    device = torch.device(device)
    input_size = tuple(data_cfg["input_size"])
    grid_h, grid_w, patch = patch_grid(model, input_size)
    jitter = vit_jitter(config.jitter, input_size[-1])
    prune_at = dict(config.schedule)
    quiet = set(prune_at) | {p - 1 for p in prune_at}  # no jitter: pre-prune and prune iterations
    want_attn = {p - 1 for p in prune_at}
    model = model.to(device)
    n_tokens = grid_h * grid_w + 1

    def loss_fn(x: Tensor, y: Tensor, it: int, state: dict[str, Any], gen: torch.Generator) -> Tensor:
        keep = state["keep"]
        if it in prune_at:
            current = (
                keep if keep is not None else torch.arange(n_tokens, device=x.device).repeat(x.shape[0], 1)
            )
            keep = topk_keep(current, state["attn"], prune_at[it])
            state["keep"] = keep
            state["history"] = [*state["history"], keep.shape[1] - 1]
            distinct = (keep[:, 1:] != keep[:, :-1]).sum(1)  # rows are sorted: distinct ids - 1 = patches
            state["per_image"] = torch.cat([state["per_image"], distinct[:, None]], 1)
        if it in quiet:
            x_in, fwd_keep = x, keep
        else:
            x_in, (dy, dx, flipped) = priors.random_jitter_flip(x, jitter, config.flip, generator=gen)
            fwd_keep = None if keep is None else remap_index(keep, dy, dx, flipped, grid_h, grid_w, patch)
        if it in want_attn:
            logits, attn = forward_tokens(model, x_in, fwd_keep, return_cls_attn=True, validate=False)
            state["attn"] = attn.detach()
        else:
            logits = forward_tokens(model, x_in, fwd_keep, validate=False)
            state["attn"] = None
        return smi_loss(x, logits, y, config)

    with frozen_eval(model):
        labels = random_labels(config.num_images, num_classes_of(model, input_size, device), config.seed)
        result = run_pixels(
            "smi", config, model, data_cfg, loss_fn, labels, device=device, progress=progress,
            reset_best_at=frozenset(prune_at),
            init_state=lambda bs: {
                "keep": None,
                "attn": None,
                "history": [n_tokens - 1],
                "per_image": torch.full((bs, 1), n_tokens - 1, device=device),
            },
            kept_count=lambda s: n_tokens if s["keep"] is None else int(s["keep"].shape[1]),
        )  # fmt: skip
    keeps = [s["keep"] for s in result.states]
    keep_index = None if keeps[0] is None else torch.cat(keeps).to(torch.long)
    history = result.states[0]["history"]
    return CalibrationSet(
        images=result.images,
        labels=labels,
        keep_index=keep_index,
        provenance={
            "method": "smi",
            "config": asdict(config),
            "seed": config.seed,
            "iterations": config.iterations,
            "jitter": jitter,
            "kept_patches": list(history),
            "kept_patches_per_image": torch.cat([s["per_image"] for s in result.states]).tolist(),
            "stages": [
                {"iteration": it, "ratio": r, "kept_patches": k}
                for (it, r), k in zip(config.schedule, history[1:], strict=True)
            ],
            "mask": "tracked",
            **result.record(),
        },
    )
