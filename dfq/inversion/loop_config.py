"""The settings of the shared inversion loop (:func:`dfq.inversion._loop.run_batches`): one frozen
base dataclass of every method that runs on it (DeepInversion, SMI, CMI).

How many images, from which seed, in batches of how many, for how many iterations, how often the
loop synchronises with the host to log and check for NaN, and where and how often it saves its
resumable checkpoint. Each method's config derives from :class:`LoopConfig`, adds its own fields and
may change a default; :meth:`LoopConfig.loop_spec` turns it into the loop's
:class:`~dfq.inversion._loop.LoopSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dfq.inversion._loop import LoopSpec

__all__ = ["LoopConfig"]


@dataclass(frozen=True)
class LoopConfig:
    """Loop settings shared by every inverter on the shared loop.

    Attributes:
        num_images: how many images to synthesize in total.
        seed: seed of everything the method draws (labels, initial values, augmentation, ...).
        batch_size: images optimised together.
        iterations: optimisation steps per batch.
        log_every: iterations between NaN checks and progress-bar updates (host synchronisations).
        checkpoint_path: resumable checkpoint file (None: off). An existing file is resumed.
        checkpoint_every: iterations between checkpoints.
    """

    num_images: int = 32
    seed: int = 0
    batch_size: int = 32
    iterations: int = 4000
    log_every: int = 50
    checkpoint_path: str | None = None
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        """Raises: ValueError naming the bad field (``iterations`` may be None where a subclass
        resolves it later)."""
        for name in ("num_images", "batch_size", "iterations", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")

    def loop_spec(self, method: str, **options: Any) -> LoopSpec:
        """The :class:`~dfq.inversion._loop.LoopSpec` of these settings (``options``: its other fields,
        e.g. ``checkpoint``, ``amp``, ``reset_best_at``).

        >>> spec = LoopConfig(num_images=3, iterations=5).loop_spec("demo")
        >>> spec.num_images, spec.batch_size, spec.iterations, spec.checkpoint
        (3, 32, 5, None)
        """
        from dfq.inversion._loop import LoopSpec

        return LoopSpec(
            method=method,
            num_images=self.num_images,
            batch_size=self.batch_size,
            iterations=self.iterations,
            log_every=self.log_every,
            checkpoint_every=self.checkpoint_every,
            **options,
        )
