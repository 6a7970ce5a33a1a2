"""The settings of a distillation run: one frozen, validated dataclass shared by the three loops.

:class:`DistillConfig` holds the optimisation (optimizer, learning rate, cosine schedule, EMA), the
KD loss (temperature, optional hard-label cross-entropy), the augmentation of the training images, the
alternating loop's rhythm (``kd_steps`` student steps per synthesized batch), the evaluation and
checkpoint intervals, and for data-free QAT how the quantizer ranges train. Defaults follow the
papers where they agree (ALGORITHMS.md §1.6, §2.6): SGD 0.1 with momentum 0.9 and weight decay 1e-4 for
students; :func:`qat_defaults` gives the QAT setting measured in BENCHMARKS.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from dfq.config import check_keys

__all__ = ["DistillConfig", "qat_defaults", "probe_defaults", "RANGE_MODES"]

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["cosine", "constant"]
Select = Literal["kl", "top1", "agreement"]

RANGE_MODES = {
    "weight": ("frozen", "rederive", "learn"),
    "act": ("frozen", "learn"),
}
"""How QAT treats the quantizer ranges: weight ranges stay as calibrated, are re-derived from the
trained weights before every step, or are learned (LSQ); activation ranges stay or are learned."""


@dataclass(frozen=True)
class DistillConfig:
    """Hyperparameters of one distillation run.

    Attributes:
        steps: optimizer steps in total.
        batch_size: images per step.
        lr: peak learning rate.
        optimizer: ``sgd`` (momentum, Nesterov off) or ``adamw``.
        momentum: SGD momentum.
        weight_decay: weight decay (decoupled for AdamW).
        schedule: ``cosine`` (to 0 at ``steps``, after ``warmup_steps`` of linear warm-up) or ``constant``.
        warmup_steps: linear warm-up steps.
        temperature: KD temperature ``T`` (loss ``T²·KL``).
        ce: weight of the hard-label cross-entropy to the set's labels (the teacher's argmax where a
            set has none); 0 turns it off.
        ema: decay of an exponential moving average of the student evaluated and saved instead of
            the raw weights; 0 turns it off.
        clip_grad: clip the gradient's global norm to this value (None: no clipping).
        crop_scale: area range of the random resized crop; ``(1, 1)`` turns it off.
        flip: probability of a horizontal flip per image.
        mixup: probability that a batch is mixed (each image with a shuffled partner, weight drawn
            from Beta(1, 1)); the teacher sees the same mixed images. Dense batches only.
        dense: forward every token of sparse (SMI) sets; off, only the kept tokens go through the
            blocks of both ViTs (the SMI paper's recipe) and the crop is skipped.
        kd_steps: alternating loop: student steps per synthesized batch.
        synth_batch: alternating loop: images synthesized per round.
        eval_every: steps between evaluations (and checkpoints).
        checkpoint_every: steps between resumable checkpoints (None: ``eval_every``).
        log_every: steps between progress updates and NaN checks (host synchronisations).
        select: metric that picks the best checkpoint (``kl`` lowest; ``top1``/``agreement`` highest).
        patience: stop early after this many evaluations in a row without a better score by ``select``
            (None: run every step); needs evaluation data.
        weight_ranges: QAT: ``frozen``, ``rederive`` or ``learn`` (see :data:`RANGE_MODES`).
        act_ranges: QAT: ``frozen`` or ``learn``.
        range_lr: learning rate of learned ranges (None: ``lr``).
        student_train_mode: the student runs in train mode (BatchNorm batch statistics, dropout);
            None: on for a student trained from its weights, off for QAT and linear probes.
        seed: seed of the batch sampling, augmentation and synthesis.
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 0.1
    optimizer: Optimizer = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: Schedule = "cosine"
    warmup_steps: int = 0
    temperature: float = 1.0
    ce: float = 0.0
    ema: float = 0.0
    clip_grad: float | None = None
    crop_scale: tuple[float, float] = (0.25, 1.0)
    flip: float = 0.5
    mixup: float = 0.0
    dense: bool = False
    kd_steps: int = 50
    synth_batch: int = 32
    eval_every: int = 100
    checkpoint_every: int | None = None
    log_every: int = 10
    select: Select = "kl"
    patience: int | None = None
    weight_ranges: str = "learn"
    act_ranges: str = "frozen"
    range_lr: float | None = None
    student_train_mode: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        """Normalise pairs (JSON gives lists) and validate.

        Raises:
            ValueError: naming the bad field.
        """
        object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))
        for name in ("steps", "batch_size", "kd_steps", "synth_batch", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 evaluations (or None), got {self.patience}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.range_lr is not None and not (self.range_lr >= 0 and math.isfinite(self.range_lr)):
            raise ValueError(f"range_lr must be >= 0, got {self.range_lr}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must lie in [0, steps={self.steps}), got {self.warmup_steps}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("ce", "momentum", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be a decay in [0, 1), got {self.ema}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"clip_grad must be > 0, got {self.clip_grad}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be two numbers 0 < low <= high <= 1, got {self.crop_scale}")
        for name in ("flip", "mixup"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.select not in ("kl", "top1", "agreement"):
            raise ValueError(f"select must be 'kl', 'top1' or 'agreement', got {self.select!r}")
        if self.weight_ranges not in RANGE_MODES["weight"]:
            raise ValueError(f"weight_ranges must be one of {', '.join(RANGE_MODES['weight'])}, got {self.weight_ranges!r}")
        if self.act_ranges not in RANGE_MODES["act"]:
            raise ValueError(f"act_ranges must be one of {', '.join(RANGE_MODES['act'])}, got {self.act_ranges!r}")

    @property
    def save_every(self) -> int:
        """Steps between resumable checkpoints."""
        return self.checkpoint_every or self.eval_every

    def lr_at(self, step: int) -> float:
        """The learning-rate factor (times the base rate) used for optimizer step ``step`` (0-based).

        >>> c = DistillConfig(steps=10, warmup_steps=2)
        >>> [round(c.lr_at(s), 3) for s in (0, 1, 2, 6, 9)]
        [0.5, 1.0, 1.0, 0.5, 0.038]
        """
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        span = self.steps - self.warmup_steps
        return 0.5 * (1.0 + math.cos(math.pi * (step - self.warmup_steps) / span))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        d = dataclasses.asdict(self)
        d["crop_scale"] = list(self.crop_scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are refused.

        Raises:
            ValueError: unknown keys or a bad value.
        """
        check_keys(cls, d)
        return cls(**d)


def qat_defaults(**changes: Any) -> DistillConfig:
    """The data-free QAT setting: AdamW at 3e-5 for the weights and 1e-4 for learned ranges, KL at T = 1,
    the student in eval mode (normalization statistics kept), LSQ weight ranges, frozen activation ranges.

    >>> qat_defaults(steps=5).optimizer
    'adamw'
    """
    base = dict(optimizer="adamw", lr=3e-5, weight_decay=0.0, temperature=1.0, range_lr=1e-4,
                weight_ranges="learn", act_ranges="frozen", student_train_mode=False)  # fmt: skip
    base.update(changes)
    return DistillConfig(**base)


def probe_defaults(**changes: Any) -> DistillConfig:
    """SMI's linear-probe setting (ALGORITHMS.md §1.6): SGD 0.1, momentum 0.9, wd 1e-4, T = 20, no schedule.

    >>> probe_defaults().temperature
    20.0
    """
    base = dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, temperature=20.0, schedule="constant",
                student_train_mode=False)  # fmt: skip
    base.update(changes)
    return DistillConfig(**base)
