"""The settings of contrastive model inversion (CMI; Fang et al., IJCAI 2021): one frozen, validated
dataclass whose defaults are those of the zju-vipa/DataFree CIFAR scripts (ALGORITHMS.md §2.3), plus
the loop's bookkeeping (logging and the resumable checkpoint). Used by :mod:`dfq.inversion.cmi`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dfq.inversion.loop_config import LoopConfig

__all__ = ["CMIConfig"]


@dataclass(frozen=True)
class CMIConfig(LoopConfig):
    """Hyperparameters of contrastive model inversion (defaults: the DataFree CIFAR scripts).

    The loop's fields are those of :class:`~dfq.inversion.loop_config.LoopConfig` (``seed`` seeds the
    latents, labels, views, bank sampling and the generator/head weights; each batch re-initialises
    the generator) with the defaults ``batch_size=256``, ``iterations=200``, ``log_every=20``.

    Attributes:
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
    log_every: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("betas", "local_scale", "local_ratio"):  # JSON gives lists
            value = getattr(self, name)
            if not isinstance(value, Sequence) or len(value) != 2:
                raise ValueError(f"{name} must be a pair of numbers, got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        for name in ("nz", "ngf", "head_dim", "bank_size"):
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
