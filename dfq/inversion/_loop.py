"""The shared optimisation engine of the pixel-space inverters (DeepInversion and SMI).

DeepInversion (Yin et al., CVPR 2020) and Sparse Model Inversion (Hu et al., ICML 2024) both
optimise a batch of images directly with Adam; they differ only in the loss of one iteration and in
what happens at a few scheduled iterations (a prune, a change of resolution). This module owns what
they share, so each method file holds only its loss and its schedule:

* :func:`frozen_eval`: parameters frozen and eval mode for the run, the caller's state restored;
* :func:`pixel_bounds`: the valid pixel range ``[-m/s, (1-m)/s]`` in normalized space (clipping);
* :class:`NonFiniteWatch`: records the first iteration with a NaN/Inf loss on the device (no host
  synchronisation per iteration) and raises :class:`DfqError` when checked;
* :func:`run_batches`: the loop itself - batches, Adam, LR schedule, clipping, best-loss tracking
  with a real copy (the SMI and DataFree references alias ``inputs.data`` and so keep the last
  iterate, ALGORITHMS.md §1.8.2), a tqdm bar with loss and kept-token count, and an atomic,
  resumable checkpoint (:mod:`dfq.inversion._checkpoint`).

Determinism and resume: the initial images of batch ``b`` and the augmentation of iteration ``i``
are drawn from fresh CPU generators seeded from ``(seed, b)`` and ``(seed, b, i)``, so no RNG stream
has to be carried across an interruption. A resumed run therefore repeats exactly the uninterrupted
run (same seed, same device): the checkpoint holds the images, Adam state, best-so-far, the
method's per-batch state (e.g. SMI's kept tokens) and the position ``(batch, iteration)``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dfq.errors import DfqError
from dfq.inversion._checkpoint import (
    live_state,
    load_checkpoint,
    restore_live,
    resume_point,
    to_cpu,
    write_checkpoint,
)

__all__ = [
    "frozen_eval",
    "pixel_bounds",
    "NonFiniteWatch",
    "random_labels",
    "iteration_generator",
    "cosine_lr",
    "LoopSpec",
    "BatchResult",
    "run_batches",
]


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Freeze every parameter and switch to eval mode for the body; restore both afterwards.

    The backward then computes input gradients only. The caller's ``requires_grad`` flags and
    train/eval mode come back even when the body raises.

    Args:
        model: the model to run.

    Yields:
        The same model, frozen and in eval mode.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def pixel_bounds(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Per-channel bounds of ``[0, 1]`` pixels in normalized space: ``(-m/s, (1-m)/s)``.

    >>> lo, hi = pixel_bounds((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    >>> lo.flatten().tolist(), hi.flatten().tolist()
    ([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0])

    Returns:
        ``(lo, hi)``, each float32 ``(1, C, 1, 1)`` on ``device``.
    """
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return -m / s, (1 - m) / s


class NonFiniteWatch:
    """Remembers, on the device, the first iteration whose loss was NaN or Inf.

    ``update`` costs a few device ops and no synchronisation; ``check`` synchronises once and raises.
    """

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def update(self, loss: Tensor, iteration: int) -> None:
        """Record ``iteration`` if ``loss`` is not finite and nothing was recorded before."""
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, iteration), self.first_bad)

    def check(self, lr: float) -> None:
        """Raise :class:`DfqError` if a non-finite loss was seen.

        Raises:
            DfqError: naming the first bad iteration and what to try.
        """
        first = int(self.first_bad)
        if first >= 0:
            raise DfqError(
                f"inversion loss became NaN/Inf at iteration {first}; lower lr (now {lr:g}), turn off amp, "
                "or lower the prior weights"
            )


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


# --------------------------------------------------------------------------------------- the loop
LossFn = Callable[[Tensor, Tensor, int, dict[str, Any], torch.Generator], Tensor]
"""``loss_fn(images, labels, iteration, state, generator) -> scalar loss``. ``state`` is the
method's per-batch dict (tensors, numbers, lists or None; checkpointed), e.g. SMI's ``keep`` and
``attn``: assign new values to its keys, never mutate them in place (the loop passes a shallow copy
and keeps it only when the iteration completes, so an interrupted iteration leaves no trace); ``generator`` is the iteration's own CPU generator for the augmentation draws."""


@dataclass
class LoopSpec:
    """Everything :func:`run_batches` needs besides the loss.

    Attributes:
        method: registry name (in progress bar, provenance and checkpoint).
        config: the method's resolved frozen config (stored in the checkpoint and compared on resume).
        seed, num_images, batch_size, iterations, lr, betas, clip, amp, log_every: as in the configs.
        input_size: ``(C, H, W)`` of the optimised images.
        mean, std: the model's normalization (clipping bounds).
        checkpoint_path, checkpoint_every: resumable checkpoint; None disables it.
        new_optimizer_at: iterations (> 0) where a fresh Adam starts (multi-resolution stages).
        reset_best_at: iterations where best-loss tracking restarts (SMI prunes: losses of different
            kept-token counts are not comparable, and the returned index is the final one).
        lr_at: ``lr_at(iteration) -> lr``; None keeps ``lr`` constant.
        init_state: ``init_state(batch_size) -> dict`` of the method's per-batch state.
        kept_count: ``kept_count(state) -> int`` shown in the bar (tokens, CLS included), or None.
        model_sha256: the weights' identity (:func:`dfq.checkpoints.weights_sha256`), checked on resume.
    """

    method: str
    config: Any
    seed: int
    num_images: int
    batch_size: int
    iterations: int
    lr: float
    betas: tuple[float, float]
    clip: bool
    amp: bool
    log_every: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    checkpoint_path: str | None = None
    checkpoint_every: int = 200
    new_optimizer_at: frozenset[int] = frozenset()
    reset_best_at: frozenset[int] = frozenset()
    lr_at: Callable[[int], float] | None = None
    init_state: Callable[[int], dict[str, Any]] = field(default=lambda _b: {})
    kept_count: Callable[[dict[str, Any]], int] | None = None
    model_sha256: str | None = None

    @classmethod
    def from_config(
        cls, method: str, config: Any, input_size: tuple[int, int, int], data_cfg: dict[str, Any], model: nn.Module,
        **extra: Any,
    ) -> LoopSpec:  # fmt: skip
        """A spec whose shared optimisation fields come from ``config`` (DeepInversion/SMI configs);
        ``model``'s weights are hashed when there is a checkpoint."""
        from dfq.checkpoints import weights_sha256

        return cls(
            model_sha256=weights_sha256(model) if config.checkpoint_path is not None else None,
            method=method,
            config=config,
            seed=config.seed,
            num_images=config.num_images,
            batch_size=config.batch_size,
            iterations=config.iterations,
            lr=config.lr,
            betas=config.betas,
            clip=config.clip,
            amp=config.amp,
            log_every=config.log_every,
            input_size=input_size,
            mean=tuple(data_cfg["mean"]),
            std=tuple(data_cfg["std"]),
            checkpoint_path=config.checkpoint_path,
            checkpoint_every=config.checkpoint_every,
            **extra,
        )


@dataclass
class BatchResult:
    """Output of :func:`run_batches`: best images and final method state per batch."""

    images: Tensor
    labels: Tensor
    states: list[dict[str, Any]]
    best_losses: list[float]
    final_losses: list[float]
    seconds: float  # over every run that led here (a resumed run adds its predecessors' time)
    seconds_this_run: float
    resumed_from: tuple[int, int] | None


def run_batches(
    spec: LoopSpec,
    loss_fn: LossFn,
    labels: Tensor,
    *,
    device: torch.device,
    progress: bool,
) -> BatchResult:
    """Optimise ``spec.num_images`` images in batches of ``spec.batch_size`` with Adam.

    Per iteration: set the LR, ``loss_fn`` (forward), backward, note the pre-step images if the loss
    is the lowest so far (a copy, via ``torch.where`` so nothing synchronises), Adam step, clip. Every
    ``log_every`` iterations (and at the end of a batch) the NaN check runs and the bar shows loss and
    kept tokens. With a checkpoint path the state is saved every ``checkpoint_every`` iterations, at
    the end of each batch and on ``KeyboardInterrupt`` (then re-raised); an existing file is resumed.

    Args:
        spec: loop settings.
        loss_fn: the method's loss of one iteration (see :data:`LossFn`).
        labels: int64 ``(num_images,)`` targets (CPU).
        device: where to run.
        progress: show a tqdm bar.

    Returns:
        The best images (normalized space, float32, CPU) and the method state of every batch.

    Raises:
        DfqError: a non-finite loss, or a checkpoint from another run.
    """
    from tqdm.auto import tqdm

    start_time = time.perf_counter()
    lo, hi = pixel_bounds(spec.mean, spec.std, device)
    num_batches = math.ceil(spec.num_images / spec.batch_size)
    ckpt = load_checkpoint(spec, labels)
    done, (start_batch, start_it), seconds_before = resume_point(ckpt)
    done_images, done_states, best_losses, final_losses = done  # appended to in place below
    resumed_from = None if ckpt is None else (start_batch, start_it)

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - start_time

    cuda_amp = spec.amp and device.type == "cuda"
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if cuda_amp else nullcontext()
    bar = tqdm(total=num_batches * spec.iterations, initial=start_batch * spec.iterations + start_it,
               disable=not progress, desc=spec.method, dynamic_ncols=True)  # fmt: skip
    watch = NonFiniteWatch(device)
    try:
        for b in range(start_batch, num_batches):
            lo_i, hi_i = b * spec.batch_size, min((b + 1) * spec.batch_size, spec.num_images)
            bs = hi_i - lo_i
            y = labels[lo_i:hi_i].to(device)
            init = torch.randn((bs, *spec.input_size), generator=iteration_generator(spec.seed, b))
            x = init.to(device)
            if spec.clip:  # so every iterate, the first included, is a valid image (and so is `best`)
                x = torch.maximum(torch.minimum(x, hi), lo)
            x.requires_grad_(True)
            optimizer = torch.optim.Adam([x], lr=spec.lr, betas=spec.betas, eps=1e-8)
            state = spec.init_state(bs)
            best_images = x.detach().clone()
            best_loss = torch.full((), math.inf, device=device)
            last_loss = torch.full((), math.nan, device=device)
            it0 = 0
            if ckpt is not None and b == start_batch and ckpt["live"] is not None:
                state, best_images, best_loss = restore_live(ckpt["live"], x, optimizer, device)
                it0 = start_it
            watch = NonFiniteWatch(device)
            it = it0  # next iteration to run: the position a checkpoint records
            updating = False
            path = Path(spec.checkpoint_path) if spec.checkpoint_path is not None else None

            try:
                for it in range(it0, spec.iterations):
                    if it in spec.new_optimizer_at:  # also right after a resume at the boundary
                        optimizer = torch.optim.Adam([x], lr=spec.lr, betas=spec.betas, eps=1e-8)
                    if it in spec.reset_best_at:
                        best_loss = torch.full((), math.inf, device=device)
                    lr = spec.lr_at(it) if spec.lr_at is not None else spec.lr
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    optimizer.zero_grad(set_to_none=True)
                    trial = dict(state)  # committed only once the step is done (interrupt-safe)
                    with autocast:
                        loss = loss_fn(x, y, it, trial, iteration_generator(spec.seed, b, it))
                    loss = loss.float()
                    loss.backward()
                    with torch.no_grad():  # best = the pre-step images that produced the lowest loss
                        better = loss.detach() < best_loss
                        best_images = torch.where(better, x.detach(), best_images)
                        best_loss = torch.where(better, loss.detach(), best_loss)
                        last_loss = loss.detach()
                    watch.update(loss, it)
                    updating = True
                    optimizer.step()
                    if spec.clip:
                        with torch.no_grad():
                            torch.clamp_(x, lo, hi)
                    state = trial
                    updating = False
                    bar.update(1)
                    last = it == spec.iterations - 1
                    if (it + 1) % spec.log_every == 0 or last:
                        watch.check(lr)
                        postfix: dict[str, Any] = {"loss": f"{float(last_loss):.4g}"}
                        if spec.kept_count is not None:
                            postfix["tokens"] = spec.kept_count(state)
                        bar.set_postfix(postfix, refresh=False)
                    if path is not None and (it + 1) % spec.checkpoint_every == 0 and not last:
                        live = live_state(x, optimizer, state, best_images, best_loss)
                        write_checkpoint(path, spec, labels, b, it + 1, live, done, elapsed())
            except KeyboardInterrupt:
                if path is not None:
                    if updating:
                        warnings.warn(
                            "interrupted inside the Adam step: the last periodic checkpoint is kept",
                            stacklevel=2,
                        )
                    else:
                        live = live_state(x, optimizer, state, best_images, best_loss)
                        write_checkpoint(path, spec, labels, b, it, live, done, elapsed())
                raise
            done_images.append(best_images.float().cpu())
            done_states.append(to_cpu(state))
            best_losses.append(float(best_loss))
            final_losses.append(float(last_loss))
            if path is not None:
                write_checkpoint(path, spec, labels, b + 1, 0, None, done, elapsed())
            ckpt = None
    finally:
        bar.close()
    return BatchResult(
        images=torch.cat(done_images),
        labels=labels,
        states=done_states,
        best_losses=best_losses,
        final_losses=final_losses,
        seconds=elapsed(),
        seconds_this_run=time.perf_counter() - start_time,
        resumed_from=resumed_from,
    )
