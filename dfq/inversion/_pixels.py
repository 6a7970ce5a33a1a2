"""Pixel-space inversion on the shared loop: the :class:`~dfq.inversion._loop.Task` of DeepInversion
(Yin et al., CVPR 2020) and SMI (Hu et al., ICML 2024), which optimise a batch of images directly with
Adam and differ only in the loss of one iteration and in what happens at a few scheduled iterations
(a prune, a change of resolution).

* :func:`run_pixels`: optimise images in the model's normalized input space with a method's
  :data:`LossFn`, clipping them to the valid pixel range after every step;
* :func:`random_labels`: the sorted random targets; :func:`cosine_lr`: NVlabs' LR schedule.

Determinism and resume: the initial images of batch ``b`` and the augmentation of iteration ``i``
are drawn from fresh CPU generators seeded from ``(seed, b)`` and ``(seed, b, i)``
(:func:`iteration_generator`), so no random stream has to be carried across an interruption, and a
resumed run repeats the uninterrupted run exactly (same seed, same device): the checkpoint holds the
images, the Adam state, best-so-far, the method's per-batch state (e.g. SMI's kept tokens) and the
position ``(batch, iteration)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dfq.inversion._checkpoint import state_file
from dfq.inversion._loop import BatchResult, Task, pixel_bounds, run_batches

__all__ = ["LossFn", "random_labels", "iteration_generator", "cosine_lr", "PixelTask", "run_pixels"]

LossFn = Callable[[Tensor, Tensor, int, dict[str, Any], torch.Generator], Tensor]
"""``loss_fn(images, labels, iteration, state, generator) -> scalar loss``. ``state`` is the
method's per-batch dict (see :meth:`dfq.inversion._loop.Task.loss`), e.g. SMI's ``keep`` and ``attn``;
``generator`` is the iteration's own CPU generator for the augmentation draws."""


def random_labels(num_images: int, num_classes: int, seed: int) -> Tensor:
    """Uniform random target classes, sorted (the SMI/DeepInversion ``--random_label`` setting).

    Returns:
        int64 ``(num_images,)`` on the CPU.
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(num_classes, (num_images,), generator=gen).sort().values


def iteration_generator(seed: int, batch: int, iteration: int = -1) -> torch.Generator:
    """A CPU generator seeded from ``(seed, batch, iteration)``; ``iteration=-1`` for the init."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + batch) * 1_000_033 + iteration + 1) % (2**63))


def cosine_lr(base_lr: float, step: int, total: int, warmup: int = 100) -> float:
    """NVlabs' ``lr_cosine_policy``: linear warm-up over ``warmup`` steps, then cosine to 0.

    ``warmup`` is capped at ``total // 2`` so short runs still decay.

    >>> cosine_lr(1.0, 0, 400), cosine_lr(1.0, 100, 400), round(cosine_lr(1.0, 399, 400), 4)
    (0.01, 1.0, 0.0)
    """
    warmup = min(warmup, total // 2)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(total - warmup - 1, 1)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / span)) * base_lr


class PixelTask(Task):
    """Images optimised directly with Adam (one per batch, fresh again at ``new_optimizer_at``).

    Args:
        config: a resolved pixel-inversion config (``seed``, ``batch_size``, ``lr``, ``betas``, ``clip``).
        data_cfg: the model's data config (``input_size``; ``mean``/``std`` give the clipping bounds).
        loss_fn: the method's loss of one iteration.
        labels: int64 ``(num_images,)`` targets (CPU).
        device: where to run.
        new_optimizer_at: iterations (> 0) where a fresh Adam starts (multi-resolution stages).
        lr_at: ``lr_at(iteration) -> lr``; None keeps ``config.lr``.
        init_state: ``init_state(batch_size) -> dict`` of the method's per-batch state.
        kept_count: ``kept_count(state) -> int`` shown in the bar as ``tokens``, or None.
    """

    def __init__(
        self,
        config: Any,
        data_cfg: dict[str, Any],
        loss_fn: LossFn,
        labels: Tensor,
        device: torch.device,
        *,
        new_optimizer_at: frozenset[int] = frozenset(),
        lr_at: Callable[[int], float] | None = None,
        init_state: Callable[[int], dict[str, Any]] | None = None,
        kept_count: Callable[[dict[str, Any]], int] | None = None,
    ) -> None:
        self.config, self.loss_fn, self.labels, self.device = config, loss_fn, labels, device
        self.input_size = tuple(int(v) for v in data_cfg["input_size"])
        self.lo, self.hi = pixel_bounds(tuple(data_cfg["mean"]), tuple(data_cfg["std"]), device)
        self.new_optimizer_at, self.lr_at = new_optimizer_at, lr_at
        self.init_state, self.kept_count = init_state, kept_count
        self.lr = config.lr
        self.batch = 0

    def _adam(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([self.x], lr=self.config.lr, betas=self.config.betas, eps=1e-8)

    def start_batch(self, batch: int, size: int) -> dict[str, Any]:
        self.batch = batch
        first = batch * self.config.batch_size
        self.y = self.labels[first : first + size].to(self.device)
        init = torch.randn((size, *self.input_size), generator=iteration_generator(self.config.seed, batch))
        x = init.to(self.device)
        if self.config.clip:  # so every iterate, the first included, is a valid image (and so is the best)
            x = torch.maximum(torch.minimum(x, self.hi), self.lo)
        self.x = x.requires_grad_(True)
        self.optimizer = self._adam()
        return self.init_state(size) if self.init_state is not None else {}

    def optimizers(self) -> Sequence[torch.optim.Optimizer]:
        return (self.optimizer,)

    def begin_iteration(self, iteration: int) -> None:
        if iteration in self.new_optimizer_at:  # also right after a resume at the boundary
            self.optimizer = self._adam()
        self.lr = self.lr_at(iteration) if self.lr_at is not None else self.config.lr
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def loss(self, iteration: int, state: dict[str, Any]) -> tuple[Tensor, tuple[Tensor, ...]]:
        gen = iteration_generator(self.config.seed, self.batch, iteration)
        return self.loss_fn(self.x, self.y, iteration, state, gen), (self.x,)

    def after_step(self) -> None:
        if self.config.clip:
            with torch.no_grad():
                torch.clamp_(self.x, self.lo, self.hi)

    def postfix(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"tokens": self.kept_count(state)} if self.kept_count is not None else {}

    def advice(self) -> str:
        return f"lower lr (now {self.lr:g}), turn off amp, or lower the prior weights"

    def state_dict(self, in_batch: bool) -> dict[str, Any]:
        return {"images": self.x.detach(), "optimizer": self.optimizer.state_dict()} if in_batch else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "images" in state:
            with torch.no_grad():
                self.x.copy_(state["images"].to(self.device))
            self.optimizer.load_state_dict(state["optimizer"])


def run_pixels(
    method: str,
    config: Any,
    model: nn.Module,
    data_cfg: dict[str, Any],
    loss_fn: LossFn,
    labels: Tensor,
    *,
    device: torch.device,
    progress: bool,
    reset_best_at: frozenset[int] = frozenset(),
    **task_options: Any,
) -> BatchResult:
    """Optimise ``config.num_images`` images with ``loss_fn`` on the shared loop.

    Args:
        method: registry name (bar, messages, checkpoint identity).
        config: the method's resolved config (:class:`~dfq.inversion.pixel_config.PixelInversionConfig`).
        model: the model (its weights identify a checkpoint).
        data_cfg: the model's data config.
        loss_fn: the loss of one iteration.
        labels: int64 ``(num_images,)`` targets (CPU; part of a checkpoint's identity).
        device: where to run.
        progress: show a tqdm bar.
        reset_best_at: iterations where best-loss tracking restarts.
        **task_options: :class:`PixelTask` options (``new_optimizer_at``, ``lr_at``, ``init_state``, ``kept_count``).

    Returns:
        The best images (normalized space, float32, CPU) and the method state of every batch.
    """
    checkpoint = state_file(config, model, method, data_cfg, labels=labels)
    spec = config.loop_spec(method, amp=config.amp, checkpoint=checkpoint, reset_best_at=reset_best_at)
    task = PixelTask(config, data_cfg, loss_fn, labels, device, **task_options)
    return run_batches(spec, task, device=device, progress=progress)
