"""Dense model inversion: DeepInversion (Yin et al., "Dreaming to Distill", CVPR 2020).

Images are optimised in the model's normalized input space with Adam to minimise

    ce * CE(f(aug(x)), y) + bn * sum_l w_l * BN_l + tv_l2 * TV_l2 + tv_l1 * TV_l1 + l2 * L2

with random roll + flip augmentation ``aug`` and clipping to the valid pixel range after every step.
Two families, two sets of defaults (every field left ``None`` is resolved by
:meth:`DeepInversionConfig.resolve` from the model family):

* ``"vit"`` - the dense baseline of SMI (Hu et al., ICML 2024; ALGORITHMS.md §1.3, §5): CE + TV_l2
  on the full *un-jittered* image, no BN term (ViTs have none), 4000 iterations, Adam 0.25 with
  betas (0.5, 0.99), jitter 1/8 of the side (28 px at 224). It is SMI without pruning.
* ``"cnn"`` (BatchNorm CNNs) - NVlabs' ImageNet code (ALGORITHMS.md §4): the BN-statistics term on
  every BN input with the first layer weighted ``first_bn_multiplier`` (10), bn 0.01 (README/logs),
  l2 1e-5, the priors on the *jittered* image, Adam betas (0.5, 0.9), jitter 30 px at 224 (scaled
  with the side). ``multi_resolution=False`` is NVlabs' setting 1 (2000 iterations at full
  resolution); ``True`` is setting 0 (the first 2/3 of the iterations on ``AvgPool2d(2)`` of the
  image with the jitter halved, then full resolution with a fresh Adam; 3000 iterations by default).
  ``cosine_lr`` adds NVlabs' cosine schedule with 100 warm-up steps per stage.

Unlike the SMI and DataFree references, the best-loss images are really kept (a copy), not the
last iterate (ALGORITHMS.md §1.8.2).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.inversion import priors
from dfq.inversion._loop import frozen_eval
from dfq.inversion._pixels import cosine_lr, random_labels, run_pixels
from dfq.inversion.pixel_config import PixelInversionConfig, vit_jitter
from dfq.inversion.registry import register_inverter
from dfq.losses import cross_entropy

__all__ = ["DeepInversionConfig", "deepinversion", "deepinversion_loss", "num_classes_of"]

_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "vit": {"iterations": 4000, "betas": (0.5, 0.99), "l2": 0.0, "bn": 0.0},
    "cnn": {"iterations": 2000, "betas": (0.5, 0.9), "l2": 1e-5, "bn": 0.01},
}


@dataclass(frozen=True)
class DeepInversionConfig(PixelInversionConfig):
    """Hyperparameters of DeepInversion; ``None`` fields take the model family's default.

    The shared fields are those of :class:`~dfq.inversion.pixel_config.PixelInversionConfig`, with
    these defaults left to the family (:meth:`resolve`): ``iterations`` (ViT 4000; CNN 2000, or 3000
    with multi_resolution), ``betas`` (ViT (0.5, 0.99); CNN (0.5, 0.9)), ``l2`` (ViT 0; CNN 1e-5) and
    ``jitter`` (ViT side // 8; CNN round(30 * side / 224)).

    Attributes:
        bn: weight of the BN-statistics term (None: ViT 0; CNN 0.01). Needs BatchNorm2d layers.
        first_bn_multiplier: weight of the first BN layer inside the BN term (10).
        multi_resolution: NVlabs setting 0 (CNNs only; see the module docstring).
        cosine_lr: NVlabs' cosine LR with 100 warm-up steps per stage (else constant).
    """

    iterations: int | None = None
    betas: tuple[float, float] | None = None
    l2: float | None = None
    bn: float | None = None
    first_bn_multiplier: float = 10.0
    multi_resolution: bool = False
    cosine_lr: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bn is not None and self.bn < 0:
            raise ValueError(f"bn must be >= 0, got {self.bn}")
        if self.first_bn_multiplier < 0:
            raise ValueError(f"first_bn_multiplier must be >= 0, got {self.first_bn_multiplier}")
        if self.multi_resolution and self.iterations is not None and self.iterations < 3:
            raise ValueError("multi_resolution needs iterations >= 3 (2/3 low resolution, 1/3 full)")

    def resolve(self, family: str) -> DeepInversionConfig:
        """This config with every ``None`` field set to the default of ``family`` (``vit``/``cnn``).

        ``jitter`` stays ``None`` here: it depends on the image side (see :func:`vit_jitter`).
        """
        base = _FAMILY_DEFAULTS["vit" if family == "vit" else "cnn"]
        values = {k: v for k, v in base.items() if getattr(self, k) is None}
        if "iterations" in values and family != "vit" and self.multi_resolution:
            values["iterations"] = 3000
        return replace(self, **values)


def _cnn_jitter(jitter: int | None, side: int) -> int:
    return max(1, round(30 * side / 224)) if jitter is None else jitter


def num_classes_of(model: nn.Module, input_size: tuple[int, int, int], device: torch.device) -> int:
    """The classifier's output width (timm's ``num_classes``, else one dummy forward)."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    with torch.no_grad():
        return int(model(torch.zeros((1, *input_size), device=device)).shape[1])


def deepinversion_loss(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    config: DeepInversionConfig,
    bn_stats: priors.BNStatistics | None = None,
    prior_input: Tensor | None = None,
) -> dict[str, Tensor]:
    """One DeepInversion loss evaluation on already-augmented images (no randomness inside).

    Args:
        model: the frozen model in eval mode.
        x: the model input (augmented images).
        labels: int64 targets.
        config: a resolved config (weights ``ce``, ``bn``, ``tv_l2``, ``tv_l1``, ``l2``).
        bn_stats: an active :class:`~dfq.inversion.priors.BNStatistics` on ``model`` (needed when
            ``config.bn > 0``; its ``first_multiplier`` weights the first layer).
        prior_input: the images the TV and L2 priors see (default ``x``; the ViT variant passes the
            un-jittered full image).

    Returns:
        ``{"total", "ce", "bn", "tv_l2", "tv_l1", "l2"}`` (unweighted parts, weighted total).
    """
    prior_x = x if prior_input is None else prior_input
    logits = model(x)
    zero = logits.new_zeros(()).float()
    parts = {"ce": cross_entropy(logits, labels)}
    parts["bn"] = bn_stats.loss() if (config.bn and bn_stats is not None) else zero
    parts["tv_l2"] = priors.tv_l2(prior_x) if config.tv_l2 else zero
    parts["tv_l1"] = priors.tv_l1(prior_x) if config.tv_l1 else zero
    parts["l2"] = priors.l2_prior(prior_x) if config.l2 else zero
    parts["total"] = (
        config.ce * parts["ce"]
        + (config.bn or 0.0) * parts["bn"]
        + config.tv_l2 * parts["tv_l2"]
        + config.tv_l1 * parts["tv_l1"]
        + (config.l2 or 0.0) * parts["l2"]
    )
    return parts


@register_inverter("deepinversion", DeepInversionConfig, families=("vit", "cnn"))
def deepinversion(
    model: nn.Module,
    config: DeepInversionConfig,
    *,
    data_cfg: dict[str, Any],
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CalibrationSet:
    """Synthesize ``config.num_images`` images from ``model`` with DeepInversion.

    The model is used frozen and in eval mode; its ``requires_grad`` flags and mode are restored.

    Args:
        model: a CLS ViT (family ``vit``) or a BatchNorm CNN (family ``cnn``).
        config: the hyperparameters; ``None`` fields are resolved from the family.
        data_cfg: the model's data config (:func:`dfq.models.data_config`, overrides applied):
            ``input_size`` of the images, ``mean``/``std`` of the clipping bounds.
        device: where to run (the model is moved there).
        progress: show a progress bar.

    Returns:
        A dense :class:`CalibrationSet` (``keep_index=None``), images in normalized space.

    Raises:
        DfqError: unsupported combination (multi-resolution on a ViT, BN term without BN layers) or
            a non-finite loss.
    """
    from dfq.models import model_family

    device = torch.device(device)
    family = model_family(model)
    cfg = config.resolve(family)
    assert cfg.iterations is not None and cfg.betas is not None
    if family == "vit" and cfg.multi_resolution:
        raise DfqError(
            "multi_resolution is NVlabs' CNN setting; ViTs invert at their native size (set it False)"
        )
    if cfg.bn and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        raise DfqError(f"bn={cfg.bn} needs BatchNorm2d layers; {type(model).__name__} has none (set bn=0)")
    input_size = tuple(data_cfg["input_size"])
    side = input_size[-1]
    jitter = vit_jitter(cfg.jitter, side) if family == "vit" else _cnn_jitter(cfg.jitter, side)
    model = model.to(device)
    low_res_until = (2 * cfg.iterations) // 3 if cfg.multi_resolution else 0
    stages = [(0, low_res_until), (low_res_until, cfg.iterations)] if low_res_until else [(0, cfg.iterations)]

    def lr_at(it: int) -> float:
        start, end = next(s for s in stages if s[0] <= it < s[1])
        return cosine_lr(cfg.lr, it - start, end - start)

    with frozen_eval(model):
        labels = random_labels(cfg.num_images, num_classes_of(model, input_size, device), cfg.seed)
        bn_ctx = priors.BNStatistics(model, cfg.first_bn_multiplier) if cfg.bn else None

        def loss_fn(x: Tensor, y: Tensor, it: int, state: dict[str, Any], gen: torch.Generator) -> Tensor:
            low = it < low_res_until
            inp = F.avg_pool2d(x, 2) if low else x
            lim = jitter // 2 if low else jitter
            aug, _ = priors.random_jitter_flip(inp, lim, cfg.flip, generator=gen)
            prior_input = x if family == "vit" else aug  # SMI: TV on the full un-jittered image
            return deepinversion_loss(model, aug, y, cfg, bn_ctx, prior_input)["total"]

        with bn_ctx if bn_ctx is not None else nullcontext():
            result = run_pixels(
                "deepinversion", cfg, model, data_cfg, loss_fn, labels, device=device, progress=progress,
                new_optimizer_at=frozenset({low_res_until} if low_res_until else ()),
                lr_at=lr_at if cfg.cosine_lr else None,
            )  # fmt: skip
    return CalibrationSet(
        images=result.images,
        labels=labels,
        keep_index=None,
        provenance={
            "method": "deepinversion",
            "family": family,
            "config": asdict(cfg),
            "seed": cfg.seed,
            "iterations": cfg.iterations,
            "jitter": jitter,
            **result.record(),
        },
    )
