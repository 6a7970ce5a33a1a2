"""What :func:`dfq.quant.reconstruct.reconstruct` is told (:class:`ReconstructConfig`) and what it reports
per unit (:class:`UnitReport`); the method itself is described in :mod:`dfq.quant.reconstruct`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ReconstructConfig", "UnitReport"]

_MAX_COUNT = 2**31
"""Largest step count or batch: far past any run, and inside the 64-bit sizes torch takes."""


@dataclass(frozen=True)
class ReconstructConfig:
    """How :func:`dfq.quant.reconstruct.reconstruct` trains each unit.

    Attributes:
        iters: Adam steps per unit.
        batch_size: calibration images per step.
        lr: Adam's rate for the rounding variables (AdaRound: 1e-3 over 10-20k steps).
        reg_weight: weight of the rounding penalty. The loss here is the *relative* output error plus
            ``reg_weight`` times the *mean* penalty per weight, so the value is not AdaRound's 0.01 (which
            weighs a summed penalty against a summed error). The defaults (0.1, 10) come from a sweep on
            DeiT-Tiny W4A8 blocks at 300 steps (BENCHMARKS.md): lr 1e-2 with reg 1 left 42-44% of the
            roundings undecided when they were made hard, lr 0.1 with reg 10 left 0.1%, and the block's
            error was 17% (blocks.3) and 10% (blocks.8) lower.
        warmup: fraction of ``iters`` without the penalty.
        beta: the penalty exponent's start and end (annealed linearly after the warm-up).
        act_ranges: ``frozen`` or ``learn`` (LSQ on the activation ranges inside the unit).
        range_lr: Adam's rate for learned activation ranges (BRECQ: 4e-5).
        drop: QDrop's probability of keeping an activation float during training (0: off; QDrop: 0.5).
        inputs: ``quant`` (the unit sees the quantized model's activations, BRECQ) or ``fp``.
        units: ``block`` (:data:`dfq.quant.reconstruct.BLOCK_TYPES` and the layers outside them) or ``layer`` (every layer alone).
        views: augmented copies of each calibration image added to the images reconstructed on (0:
            none): each a random resized crop (area 35-100%) and flip of the image
            (:func:`dfq.augment.resized_crop_flip`), drawn once from ``seed``. Few images fit a block's
            rounding to themselves; the views widen what it is fitted to at no cost per step.
        fisher: share of each unit's loss weighted by the diagonal Fisher of its output
            (:mod:`dfq.quant.fisher`: squared gradients of the KL from the float to the quantized
            prediction, taken once on the calibrated model; 0: plain relative error, BRECQ's
            objective as 1). The error per element becomes ``w (q - f)²`` with ``w`` of mean 1.
        seed: seed of the batch draws, the drop masks and the views.
    """

    iters: int = 1000
    batch_size: int = 32
    lr: float = 0.1
    reg_weight: float = 10.0
    warmup: float = 0.2
    beta: tuple[float, float] = (20.0, 2.0)
    act_ranges: Literal["frozen", "learn"] = "frozen"
    range_lr: float = 4e-5
    drop: float = 0.0
    inputs: Literal["quant", "fp"] = "quant"
    units: Literal["block", "layer"] = "block"
    views: int = 0
    fisher: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.iters <= _MAX_COUNT or not 1 <= self.batch_size <= _MAX_COUNT:
            raise ValueError(f"iters and batch_size must lie in [1, 2**31], got {self.iters} and {self.batch_size}")
        if self.lr <= 0 or self.range_lr <= 0 or self.reg_weight < 0:
            raise ValueError("lr and range_lr must be positive and reg_weight not negative")
        if not 0 <= self.warmup < 1 or not 0 <= self.drop < 1:
            raise ValueError(f"warmup and drop must lie in [0, 1), got {self.warmup} and {self.drop}")
        if self.act_ranges not in ("frozen", "learn"):
            raise ValueError(f"act_ranges must be frozen or learn, got {self.act_ranges!r}")
        if self.inputs not in ("quant", "fp"):
            raise ValueError(f"inputs must be quant or fp, got {self.inputs!r}")
        if not 0 <= self.fisher <= 1:
            raise ValueError(f"fisher must lie in [0, 1], got {self.fisher}")
        if self.views < 0:
            raise ValueError(f"views must not be negative, got {self.views}")
        if self.units not in ("block", "layer"):
            raise ValueError(f"units must be block or layer, got {self.units!r}")
        object.__setattr__(self, "beta", tuple(float(b) for b in self.beta))


@dataclass(frozen=True)
class UnitReport:
    """One reconstructed unit: its name, its layer count, the relative output error (the relative error of :mod:`dfq.quant.reconstruct`)
    before and after, the share of weights whose rounding differs from round-to-nearest, and the share
    whose soft rounding was still undecided (``0.01 < h < 0.99``) when it was made hard."""

    name: str
    layers: int
    error_before: float
    error_after: float
    flipped: float
    undecided: float
    seconds: float
