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

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.inversion import priors
from dfq.inversion._loop import LoopSpec, cosine_lr, frozen_eval, random_labels, run_batches
from dfq.inversion.registry import register_inverter

__all__ = ["DeepInversionConfig", "deepinversion", "deepinversion_loss", "num_classes_of", "vit_jitter"]

_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "vit": {"iterations": 4000, "betas": (0.5, 0.99), "l2": 0.0, "bn": 0.0},
    "cnn": {"iterations": 2000, "betas": (0.5, 0.9), "l2": 1e-5, "bn": 0.01},
}


@dataclass(frozen=True)
class DeepInversionConfig:
    """Hyperparameters of DeepInversion; ``None`` fields take the model family's default.

    Attributes:
        num_images: how many images to synthesize.
        seed: seed of labels, initial images and augmentation.
        iterations: Adam steps per batch (None: ViT 4000; CNN 2000, or 3000 with multi_resolution).
        lr: Adam learning rate (0.25).
        betas: Adam betas (None: ViT (0.5, 0.99); CNN (0.5, 0.9)).
        batch_size: images optimised together (the priors are sums over the batch).
        tv_l2: weight of the non-squared L2 total variation (1e-4).
        tv_l1: weight of the L1 total variation (0).
        l2: weight of the mean per-image L2 norm (None: ViT 0; CNN 1e-5).
        ce: weight of the cross-entropy to the random targets (1).
        bn: weight of the BN-statistics term (None: ViT 0; CNN 0.01). Needs BatchNorm2d layers.
        first_bn_multiplier: weight of the first BN layer inside the BN term (10).
        jitter: max roll in pixels (None: ViT side // 8; CNN round(30 * side / 224)); 0 disables.
        flip: probability of a horizontal flip per iteration.
        clip: clamp the images to the valid pixel range ``[-m/s, (1-m)/s]`` after every step.
        multi_resolution: NVlabs setting 0 (CNNs only; see the module docstring).
        cosine_lr: NVlabs' cosine LR with 100 warm-up steps per stage (else constant).
        amp: bf16 autocast on CUDA (ignored on CPU).
        log_every: iterations between NaN checks and progress-bar updates (host synchronisations).
        checkpoint_path: resumable checkpoint file (None: off). An existing file is resumed.
        checkpoint_every: iterations between checkpoints.
    """

    num_images: int = 32
    seed: int = 0
    iterations: int | None = None
    lr: float = 0.25
    betas: tuple[float, float] | None = None
    batch_size: int = 32
    tv_l2: float = 1e-4
    tv_l1: float = 0.0
    l2: float | None = None
    ce: float = 1.0
    bn: float | None = None
    first_bn_multiplier: float = 10.0
    jitter: int | None = None
    flip: float = 0.5
    clip: bool = True
    multi_resolution: bool = False
    cosine_lr: bool = False
    amp: bool = False
    log_every: int = 50
    checkpoint_path: str | None = None
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        if self.betas is not None:
            object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        validate_common(self)
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


def validate_common(cfg: Any) -> None:
    """Checks shared by the DeepInversion and SMI configs.

    Raises:
        ValueError: naming the bad field.
    """
    if cfg.num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {cfg.num_images}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.iterations is not None and cfg.iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {cfg.iterations}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"lr must be a positive number, got {cfg.lr}")
    if cfg.betas is not None and (len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas)):
        raise ValueError(f"betas must be two numbers in [0, 1), got {cfg.betas}")
    for name in ("tv_l2", "tv_l1", "ce"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.l2 is not None and cfg.l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {cfg.l2}")
    if cfg.jitter is not None and cfg.jitter < 0:
        raise ValueError(f"jitter must be >= 0 pixels, got {cfg.jitter}")
    if not 0 <= cfg.flip <= 1:
        raise ValueError(f"flip must be a probability in [0, 1], got {cfg.flip}")
    if cfg.log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {cfg.log_every}")
    if cfg.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {cfg.checkpoint_every}")


def vit_jitter(jitter: int | None, side: int) -> int:
    """SMI's jitter: ``side // 8`` (28 px at 224) unless given."""
    return side // 8 if jitter is None else jitter


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
    parts = {"ce": F.cross_entropy(logits.float(), labels)}
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
    input_size: tuple[int, int, int] = (3, 224, 224),
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CalibrationSet:
    """Synthesize ``config.num_images`` images from ``model`` with DeepInversion.

    The model is used frozen and in eval mode; its ``requires_grad`` flags and mode are restored.

    Args:
        model: a CLS ViT (family ``vit``) or a BatchNorm CNN (family ``cnn``).
        config: the hyperparameters; ``None`` fields are resolved from the family.
        input_size: ``(C, H, W)`` of the model input.
        device: where to run (the model is moved there).
        progress: show a progress bar.

    Returns:
        A dense :class:`CalibrationSet` (``keep_index=None``), images in normalized space.

    Raises:
        DfqError: unsupported combination (multi-resolution on a ViT, BN term without BN layers) or
            a non-finite loss.
    """
    from dfq.models import data_config, model_family

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
    side = input_size[-1]
    jitter = vit_jitter(cfg.jitter, side) if family == "vit" else _cnn_jitter(cfg.jitter, side)
    dcfg = data_config(model)
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

        spec = LoopSpec.from_config(
            "deepinversion",
            cfg,
            input_size,
            dcfg,
            model,
            new_optimizer_at=frozenset({low_res_until} if low_res_until else ()),
            lr_at=lr_at if cfg.cosine_lr else None,
        )
        with bn_ctx if bn_ctx is not None else nullcontext():
            result = run_batches(spec, loss_fn, labels, device=device, progress=progress)
    return CalibrationSet(
        images=result.images,
        labels=result.labels,
        keep_index=None,
        provenance={
            "method": "deepinversion",
            "family": family,
            "config": asdict(cfg),
            "seed": cfg.seed,
            "iterations": cfg.iterations,
            "jitter": jitter,
            "seconds": result.seconds,
            "seconds_this_run": result.seconds_this_run,
            "best_loss": result.best_losses,
            "final_loss": result.final_losses,
            "resumed_from": list(result.resumed_from) if result.resumed_from else None,
        },
    )
