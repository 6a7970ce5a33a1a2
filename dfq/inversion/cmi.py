"""Contrastive model inversion (CMI; Fang et al., "Contrastive Model Inversion for Data-Free Knowledge
Distillation", IJCAI 2021), following zju-vipa/DataFree's ``CMISynthesizer`` (ALGORITHMS.md §2.3).

Owns the CMI synthesizer for BatchNorm CNNs and its parts:

* :class:`CMIConfig`: every hyperparameter of the reference, validated;
* views in plain torch: the *global* view (random crop with zero padding + horizontal flip) and the
  *local* view (random resized crop + horizontal flip), per-sample and on-device;
* :func:`adversarial_loss`: the decision-adversarial term ``-mean(KL(t‖s) · [argmax s == argmax t])``;
* :class:`MLPHead` and :func:`contrastive_loss`: instance discrimination between the local and the
  (stop-gradient) global view of the current batch and of cached instances;
* :class:`MemoryBank`: a ring buffer of raw ``[f_local, f_global]`` teacher features;
* :class:`CMISynthesizer`: per batch, a re-initialised :class:`~dfq.inversion.generator.Generator` and
  a fresh latent are optimized jointly; the MLP head and the bank persist across batches;
* :func:`synthesize_cmi` (optionally with a student for the adversarial term) and the registered
  inverter ``cmi``.

Differences from the reference, on purpose: the memory bank samples without replacement from its
filled part and never returns zero negatives when it is exactly full; it lives on the synthesis device
(no host→device copy per step); the best iterate is selected on the device (no ``.item()`` per step);
the random-resized crop samples a continuous box (clamped to the image) instead of kornia's integer
box with retries.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.inversion._loop import frozen_eval
from dfq.inversion.contrastive import (
    MemoryBank,
    MLPHead,
    adversarial_loss,
    contrastive_loss,
    global_view,
    keep_best,
    local_view,
)
from dfq.inversion.generator import Generator, reset_generator
from dfq.inversion.priors import BNStatistics
from dfq.inversion.registry import register_inverter

__all__ = [
    "CMIConfig",
    "CMISynthesizer",
    "MLPHead",
    "MemoryBank",
    "adversarial_loss",
    "cmi_images",
    "contrastive_loss",
    "global_view",
    "keep_best",
    "local_view",
    "synthesize_cmi",
]

_LOG_EVERY = 20  # iterations between host synchronisations (progress postfix, NaN check)


@dataclass(frozen=True)
class CMIConfig:
    """Hyperparameters of contrastive model inversion (defaults: the DataFree CIFAR scripts).

    Attributes:
        num_images: How many images to synthesize in total.
        seed: Seed of the latents, labels, views, bank sampling and of the generator/head weights.
        batch_size: Images per synthesis batch (one generator re-initialisation each).
        iterations: Optimization steps per batch.
        lr_g: Adam learning rate of the generator, the latent and the MLP head.
        betas: Adam betas of the generator + latent optimizer (the head uses Adam's defaults).
        nz: Latent size.
        ngf: Generator base width.
        bn: Weight of the BN-statistics prior.
        oh: Weight of the cross-entropy to the random target labels.
        adv: Weight of the decision-adversarial term (active only with a student).
        cr: Weight of the contrastive loss.
        cr_T: Contrastive temperature.
        head_dim: Output size of the MLP head.
        bank_size: Capacity of the feature memory bank (instances).
        n_neg: Cached instances drawn from the bank per step.
        local_scale: Area range of the local view's random resized crop.
        local_ratio: Aspect-ratio range of the local view's random resized crop.
        padding: Zero padding of the global view's random crop.
    """

    num_images: int = 32
    seed: int = 0
    batch_size: int = 256
    iterations: int = 200
    lr_g: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    nz: int = 256
    ngf: int = 64
    bn: float = 1.0
    oh: float = 1.0
    adv: float = 0.5
    cr: float = 0.8
    cr_T: float = 0.1
    head_dim: int = 256
    bank_size: int = 40960
    n_neg: int = 4096
    local_scale: tuple[float, float] = (0.25, 1.0)
    local_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    padding: int = 4

    def __post_init__(self) -> None:
        for name in ("betas", "local_scale", "local_ratio"):  # JSON gives lists
            value = getattr(self, name)
            if not isinstance(value, Sequence) or len(value) != 2:
                raise ValueError(f"{name} must be a pair of numbers, got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        for name in ("num_images", "batch_size", "iterations", "nz", "ngf", "head_dim", "bank_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("bn", "oh", "adv", "cr", "n_neg", "padding"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr_g > 0:
            raise ValueError(f"lr_g must be > 0, got {self.lr_g}")
        if not self.cr_T > 0:
            raise ValueError(f"cr_T must be > 0, got {self.cr_T}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        lo, hi = self.local_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"local_scale must satisfy 0 < low <= high <= 1, got {self.local_scale}")
        lo, hi = self.local_ratio
        if not 0 < lo <= hi:
            raise ValueError(f"local_ratio must satisfy 0 < low <= high, got {self.local_ratio}")


# --------------------------------------------------------------------------------------------- views
@contextmanager
def _frozen_eval(*modules: nn.Module | None) -> Iterator[None]:
    """:func:`dfq.inversion._loop.frozen_eval` for each module given (None entries skipped)."""
    with ExitStack() as stack:
        for m in modules:
            if m is not None:
                stack.enter_context(frozen_eval(m))
        yield


class CMISynthesizer:
    """Batch-by-batch contrastive model inversion with a persistent MLP head and memory bank.

    Args:
        teacher: BatchNorm CNN to invert (left unchanged: eval mode and frozen only while synthesizing).
        config: Hyperparameters.
        student: Optional student for the decision-adversarial term.
        input_size: ``(C, H, W)`` of the teacher's input; ``H`` and ``W`` divisible by 4.
        mean: Per-channel normalization mean of the teacher's input.
        std: Per-channel normalization std.
        device: Where to run.
    """

    def __init__(
        self,
        teacher: nn.Module,
        config: CMIConfig,
        *,
        student: nn.Module | None = None,
        input_size: tuple[int, int, int] = (3, 32, 32),
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        device: str | torch.device = "cpu",
    ) -> None:
        if not any(isinstance(m, nn.BatchNorm2d) for m in teacher.modules()):
            raise DfqError(f"cmi needs a model with BatchNorm2d layers; {type(teacher).__name__} has none")
        c, h, w = input_size
        if h % 4 or w % 4:
            raise DfqError(f"cmi's generator needs an input size divisible by 4, got {h}×{w}")
        self.teacher, self.student, self.config = teacher, student, config
        self.input_size = (int(c), int(h), int(w))
        self.device = torch.device(device)
        for name, module in (("model", teacher), ("student", student)):
            param = next(iter(module.parameters()), None) if module is not None else None
            if param is not None and param.device.type != self.device.type:
                raise DfqError(
                    f"the {name} is on {param.device} but cmi runs on {self.device}; move it there first"
                )
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.rng = torch.Generator(device=self.device).manual_seed(config.seed)
        self.cpu_rng = torch.Generator().manual_seed(config.seed)
        self.stats = BNStatistics(teacher)
        with torch.no_grad(), _frozen_eval(teacher), self.stats:
            logits = teacher(torch.zeros((2, *self.input_size), device=self.device))
            self.num_classes = int(logits.shape[1])
            feat_dim = int(self.stats.features().shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.generator = Generator(config.nz, config.ngf, (h, w), c).to(self.device)
            self.head = MLPHead(feat_dim, config.head_dim).to(self.device)
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=config.lr_g)
        self.bank = MemoryBank(config.bank_size, self.device)
        self.last_terms: dict[str, Tensor] = {}

    def normalize(self, x: Tensor) -> Tensor:
        """[0, 1] images → the teacher's normalized input space."""
        return (x - self.mean) / self.std

    def synthesize(
        self, batch_size: int | None = None, bar: Any | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Synthesize one batch and add its features to the memory bank.

        Args:
            batch_size: Images in this batch (default ``config.batch_size``).
            bar: A tqdm bar advanced once per iteration, or ``None``.

        Returns:
            ``(images, labels, best_loss)``: normalized images of the lowest-loss iterate ``(B, C, H, W)``,
            their int64 target labels ``(B,)`` and that loss (scalar tensor), all on the device.

        Raises:
            DfqError: The loss became NaN or infinite.
        """
        cfg, dev = self.config, self.device
        b = batch_size or cfg.batch_size
        use_adv = self.student is not None and cfg.adv > 0
        reset_generator(self.generator, self.cpu_rng)
        self.generator.train()
        z = torch.randn((b, cfg.nz), generator=self.rng, device=dev).requires_grad_(True)
        optimizer = torch.optim.Adam([*self.generator.parameters(), z], lr=cfg.lr_g, betas=cfg.betas)
        labels = torch.randint(0, self.num_classes, (b,), generator=self.rng, device=dev).sort().values
        best_loss = torch.full((), math.inf, device=dev)
        best: tuple[Tensor, ...] = ()
        bad = torch.zeros((), dtype=torch.bool, device=dev)
        zero = torch.zeros((), device=dev)
        with _frozen_eval(self.teacher, self.student), self.stats:
            for it in range(cfg.iterations):
                x = self.generator(z)
                x_global = self.normalize(global_view(x, cfg.padding, self.rng))
                x_local = self.normalize(local_view(x, cfg.local_scale, cfg.local_ratio, self.rng))
                t_global = self.teacher(x_global)
                loss_bn = self.stats.loss()
                f_global = self.stats.features()
                self.teacher(x_local)
                f_local = self.stats.features()
                loss_oh = F.cross_entropy(t_global, labels)
                loss_adv = adversarial_loss(t_global, self.student(x_global)) if use_adv else zero
                cached = self.bank.sample(cfg.n_neg, self.rng)
                cached_local, cached_global = cached.chunk(2, dim=1) if cached is not None else (None, None)
                loss_cr = contrastive_loss(
                    self.head, f_local, f_global, cached_local, cached_global, cfg.cr_T
                )
                loss = cfg.bn * loss_bn + cfg.oh * loss_oh + cfg.adv * loss_adv + cfg.cr * loss_cr
                optimizer.zero_grad(set_to_none=True)
                self.head_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                self.head_optimizer.step()
                current = loss.detach()
                bad = bad | ~torch.isfinite(current)
                iterate = (x.detach(), torch.cat([f_local, f_global], dim=1).detach())
                best_loss, best = keep_best(best_loss, current, best or iterate, iterate)
                if bar is not None:
                    bar.update(1)
                if (it + 1) % _LOG_EVERY == 0 or it + 1 == cfg.iterations:
                    if bool(bad):
                        raise DfqError(
                            f"cmi loss became NaN/Inf at iteration {it + 1}; lower lr_g or the loss weights"
                        )
                    if bar is not None:
                        bar.set_postfix(loss=f"{float(current):.4f}")
        self.last_terms = {
            "bn": loss_bn.detach(),
            "oh": loss_oh.detach(),
            "adv": loss_adv.detach(),
            "cr": loss_cr.detach(),
            "total": current,
        }
        self.stats.terms = [None] * len(self.stats.layers)  # drop the last forward's tensors
        self.stats.input_means = [None] * len(self.stats.layers)
        self.bank.add(best[1])
        return self.normalize(best[0]), labels, best_loss


def synthesize_cmi(
    teacher: nn.Module,
    config: CMIConfig,
    *,
    student: nn.Module | None = None,
    input_size: tuple[int, int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CalibrationSet:
    """Synthesize ``config.num_images`` images from ``teacher`` with CMI, batch by batch.

    Args:
        teacher: BatchNorm CNN (unchanged on return).
        config: Hyperparameters.
        student: Optional student; enables the decision-adversarial term (weight ``config.adv``).
        input_size: ``(C, H, W)``; default from :func:`dfq.models.data_config`.
        mean: Normalization mean; default from the model's data config.
        std: Normalization std; default from the model's data config.
        device: Where to run.
        progress: Show a tqdm bar with the loss.

    Returns:
        A :class:`CalibrationSet` of normalized images with their target labels.

    Raises:
        DfqError: No BatchNorm2d layer, an input size not divisible by 4, or a NaN/Inf loss.
    """
    from tqdm.auto import tqdm

    if input_size is None or mean is None or std is None:
        from dfq.models import data_config

        resolved = data_config(teacher)
        input_size = resolved["input_size"] if input_size is None else input_size
        mean = resolved["mean"] if mean is None else mean
        std = resolved["std"] if std is None else std
    start = time.perf_counter()
    synth = CMISynthesizer(
        teacher, config, student=student, input_size=input_size, mean=mean, std=std, device=device
    )
    sizes = [
        min(config.batch_size, config.num_images - s) for s in range(0, config.num_images, config.batch_size)
    ]
    images, labels, losses = [], [], []
    bar_cm = (
        tqdm(total=len(sizes) * config.iterations, desc="cmi", disable=not progress)
        if progress
        else nullcontext()
    )
    with bar_cm as bar:
        for size in sizes:
            x, y, loss = synth.synthesize(size, bar)
            images.append(x.detach().float().cpu())
            labels.append(y.cpu())
            losses.append(float(loss))
    return CalibrationSet(
        images=torch.cat(images).contiguous(),
        labels=torch.cat(labels).long(),
        keep_index=None,
        provenance={
            "method": "cmi",
            "config": dataclasses.asdict(config),
            "seed": config.seed,
            "student": student is not None,
            "seconds": round(time.perf_counter() - start, 3),
            "losses": losses,
        },
    )


@register_inverter("cmi", CMIConfig, families=("cnn",))
def cmi_images(
    model: nn.Module,
    config: CMIConfig,
    *,
    input_size: tuple[int, int, int] = (3, 32, 32),
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CalibrationSet:
    """Registered ``cmi`` inverter: :func:`synthesize_cmi` without a student (no adversarial term)."""
    from dfq.models import data_config

    cfg = data_config(model)
    return synthesize_cmi(
        model,
        config,
        input_size=input_size,
        mean=cfg["mean"],
        std=cfg["std"],
        device=device,
        progress=progress,
    )
