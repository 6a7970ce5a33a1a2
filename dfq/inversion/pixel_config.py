"""The settings every pixel-space inversion shares (DeepInversion and SMI): one frozen base dataclass.

:class:`~dfq.inversion.deepinversion.DeepInversionConfig` and :class:`~dfq.inversion.smi.SMIConfig`
derive from :class:`PixelInversionConfig`, so the fields a user sets with ``--set KEY=VALUE``
(:mod:`dfq.inversion.overrides`) and the keys of ``dataclasses.asdict(config)`` in a set's provenance
are the same for both; each subclass adds its own fields and may change a default (DeepInversion
leaves ``iterations``, ``betas`` and ``l2`` to the model family).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dfq.inversion.loop_config import LoopConfig

__all__ = ["PixelInversionConfig", "vit_jitter"]


@dataclass(frozen=True)
class PixelInversionConfig(LoopConfig):
    """Optimisation and prior settings of a pixel-space inversion (defaults: SMI's ViT setting).

    The loop's fields are those of :class:`~dfq.inversion.loop_config.LoopConfig` (``seed`` seeds the
    labels, initial images and augmentation; ``iterations`` counts Adam steps; the priors are sums over
    the ``batch_size`` images of a batch).

    Attributes:
        lr: Adam learning rate (0.25).
        betas: Adam betas.
        tv_l2: weight of the non-squared L2 total variation (1e-4).
        tv_l1: weight of the L1 total variation (0).
        l2: weight of the mean per-image L2 norm.
        ce: weight of the cross-entropy to the random targets (1).
        jitter: max roll in pixels (None: the method's default for the image side); 0 disables.
        flip: probability of a horizontal flip per iteration.
        clip: clamp the images to the valid pixel range ``[-m/s, (1-m)/s]`` after every step.
        amp: bf16 autocast on CUDA (ignored on CPU).
    """

    lr: float = 0.25
    betas: tuple[float, float] = (0.5, 0.99)
    tv_l2: float = 1e-4
    tv_l1: float = 0.0
    l2: float = 0.0
    ce: float = 1.0
    jitter: int | None = None
    flip: float = 0.5
    clip: bool = True
    amp: bool = False

    def __post_init__(self) -> None:
        """Normalise ``betas`` to a float pair (JSON gives lists) and validate.

        Raises:
            ValueError: naming the bad field.
        """
        super().__post_init__()
        if self.betas is not None:  # None only where a subclass resolves it later (DeepInversion)
            object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.betas is not None and (len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas)):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("tv_l2", "tv_l1", "ce"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.l2 is not None and self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")
        if self.jitter is not None and not 0 <= self.jitter <= 2**31:
            raise ValueError(f"jitter must lie in [0, 2**31] pixels, got {self.jitter}")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip must be a probability in [0, 1], got {self.flip}")


def vit_jitter(jitter: int | None, side: int) -> int:
    """SMI's jitter: ``side // 8`` (28 px at 224) unless given.

    >>> vit_jitter(None, 224), vit_jitter(5, 224)
    (28, 5)
    """
    return side // 8 if jitter is None else jitter
