"""The one optimisation skeleton of the inverters (DeepInversion, SMI, CMI) and its neutral parts.

Every inverter optimises a batch at a time for a fixed number of iterations and keeps the iterate of
the lowest loss; they differ in *what* is optimised (pixels for DeepInversion and SMI, a generator
and its latent for CMI), in the loss of one iteration, and in what happens at a few scheduled
iterations. A method supplies those as a :class:`Task`; :func:`run_batches` owns the rest:

* batches, iterations, the optimizers' ``zero_grad``/``step``, bf16 autocast on CUDA;
* best-iterate tracking with a real copy and no host synchronisation (:func:`keep_best`; the SMI and
  DataFree references alias ``inputs.data`` and so keep the last iterate, ALGORITHMS.md §1.8.2),
  restarted at chosen iterations (SMI's prunes);
* the NaN/Inf watch (:class:`NonFiniteWatch`: recorded on the device, checked every ``log_every``
  iterations), a tqdm bar with the loss and the method's own fields;
* an atomic, resumable checkpoint (:mod:`dfq.inversion._checkpoint` on
  :class:`dfq.checkpointing.StateFile`): every ``checkpoint_every`` iterations, at the end of each
  batch and on ``KeyboardInterrupt`` (then re-raised); an existing file is resumed, and the resumed
  run repeats the uninterrupted one exactly when the task saves all it draws from (its random
  streams included);
* under ``torchrun`` (a :func:`dfq.distributed.session`), each rank runs its share of the batches
  and every rank returns the whole result (:mod:`dfq.inversion._shards`).

The neutral parts every method uses (:func:`frozen_eval`, :func:`pixel_bounds`, :func:`keep_best`,
:class:`NonFiniteWatch`) live in :mod:`dfq.inversion._parts` and are re-exported here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dfq.checkpointing import StateFile, to_cpu, to_device
from dfq.inversion._checkpoint import resume_point, write_checkpoint
from dfq.inversion._parts import NonFiniteWatch, frozen_eval, keep_best, pixel_bounds
from dfq.signals import deferred_interrupts

__all__ = [
    "frozen_eval",
    "pixel_bounds",
    "keep_best",
    "NonFiniteWatch",
    "Task",
    "LoopSpec",
    "BatchResult",
    "run_batches",
]


class Task:
    """One method's side of :func:`run_batches`: what is optimised and the loss of one iteration.

    Subclasses implement :meth:`start_batch`, :meth:`optimizers` and :meth:`loss`; the other hooks
    default to doing nothing. The loop calls, per batch: ``start_batch``; per iteration:
    ``begin_iteration``, ``zero_grad`` of every optimizer, ``loss`` (under autocast), backward, the
    best-iterate update, ``step`` of every optimizer in order, ``after_step``; at the end:
    ``finish_batch`` with the best iterate.
    """

    def start_batch(self, batch: int, size: int) -> dict[str, Any]:
        """Set up the variables and optimizers of batch ``batch`` (``size`` images); return the
        method's per-batch state (a dict of tensors, numbers, lists or None; checkpointed)."""
        raise NotImplementedError

    def optimizers(self) -> Sequence[torch.optim.Optimizer]:
        """The optimizers of the current batch, stepped in this order."""
        raise NotImplementedError

    def begin_iteration(self, iteration: int) -> None:
        """Before the iteration (e.g. set the learning rate, start a fresh optimizer)."""

    def loss(self, iteration: int, state: dict[str, Any]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The scalar loss of one iteration and the tensors kept when it is the lowest (images first).

        ``state`` is a shallow copy of the per-batch state, kept only once the iteration completes:
        assign new values to its keys, never mutate them in place (an interrupted iteration leaves no trace).
        """
        raise NotImplementedError

    def after_step(self) -> None:
        """After the optimizer steps (e.g. clip the pixels)."""

    def finish_batch(self, state: dict[str, Any], best: tuple[Tensor, ...]) -> Tensor:
        """The batch's kept images (normalized space) from its best iterate; by default ``best[0]``."""
        return best[0]

    def postfix(self, state: dict[str, Any]) -> dict[str, Any]:
        """Extra progress-bar fields (e.g. kept tokens)."""
        return {}

    def advice(self) -> str:
        """What to try when the loss became NaN/Inf."""
        return "lower the learning rate or the loss weights"

    def state_dict(self, in_batch: bool) -> dict[str, Any]:
        """What a checkpoint must hold to continue: the state kept across batches and, with
        ``in_batch``, the current batch's variables and optimizers (as of the last completed step)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (CPU tensors). The loop calls it after :meth:`start_batch`
        when resuming mid-batch, before it at a batch boundary."""

    shares: bool = False
    """Whether later batches depend on what earlier ones made (CMI's memory bank). Such a task implements
    the four methods below; the loop calls :meth:`remember` after every batch (with several ranks, after
    every round with every rank's contribution: :mod:`dfq.inversion._shards`)."""

    def shared(self, best: tuple[Tensor, ...]) -> Any:
        """What a finished batch adds to the state later batches see (from its best iterate)."""
        return None

    def remember(self, parts: Sequence[Any]) -> None:
        """Add the :meth:`shared` parts of finished batches, in batch order."""

    def shared_state(self, task_state: dict[str, Any]) -> Any:
        """The part of a :meth:`state_dict` built by :meth:`remember` (equal on every rank)."""
        return None

    def load_shared_state(self, state: Any) -> None:
        """Adopt :meth:`shared_state` of another rank (a resumed rank one exchange behind)."""


@dataclass(frozen=True)
class LoopSpec:
    """The loop's settings.

    Attributes:
        method: registry name (progress bar, messages).
        num_images: images in total.
        batch_size: images per batch (the last batch may be smaller).
        iterations: optimisation steps per batch.
        log_every: iterations between NaN checks and progress-bar updates (host synchronisations).
        amp: bf16 autocast of the loss on CUDA (ignored elsewhere).
        checkpoint: the resumable state file (:func:`dfq.inversion._checkpoint.state_file`), or None.
        checkpoint_every: iterations between checkpoints.
        reset_best_at: iterations where best-loss tracking restarts (SMI prunes: losses of different
            kept-token counts are not comparable, and the returned index is the final one).
    """

    method: str
    num_images: int
    batch_size: int
    iterations: int
    log_every: int = 50
    amp: bool = False
    checkpoint: StateFile | None = None
    checkpoint_every: int = 200
    reset_best_at: frozenset[int] = frozenset()


@dataclass
class BatchResult:
    """Output of :func:`run_batches`: kept images and final method state per batch."""

    images: Tensor  # float32, CPU, normalized space
    states: list[dict[str, Any]]
    best_losses: list[float]
    final_losses: list[float]
    seconds: float  # over every run that led here (a resumed run adds its predecessors' time)
    seconds_this_run: float
    resumed_from: tuple[int, int] | None
    shards: dict[str, Any] | None = None  # several ranks: world size, each rank's batches, seconds, resume

    def record(self) -> dict[str, Any]:
        """The run's facts for a set's provenance: times, losses per batch, where it resumed (and with
        several ranks, ``distributed``: the world size and each rank's batches, seconds and resume)."""
        record = {
            "seconds": self.seconds,
            "seconds_this_run": self.seconds_this_run,
            "best_loss": self.best_losses,
            "final_loss": self.final_losses,
            "resumed_from": list(self.resumed_from) if self.resumed_from else None,
        }
        if self.shards is not None:
            record["distributed"] = self.shards
        return record


def run_batches(spec: LoopSpec, task: Task, *, device: torch.device, progress: bool) -> BatchResult:
    """Optimise ``spec.num_images`` images in batches of ``spec.batch_size`` (see the module docstring).

    Args:
        spec: loop settings.
        task: the method (variables, optimizers, loss).
        device: where to run.
        progress: show a tqdm bar.

    Returns:
        The kept images and the method state of every batch.

    Raises:
        DfqError: a non-finite loss, or a checkpoint from another run.
    """
    from dfq import distributed
    from dfq._progress import progress_bar
    from dfq.inversion._shards import Shards

    start_time = time.perf_counter()
    num_batches = math.ceil(spec.num_images / spec.batch_size)
    shards = Shards(num_batches, task)
    ckpt = spec.checkpoint.load() if spec.checkpoint is not None else None
    done, (start_pos, start_it), seconds_before = resume_point(ckpt)  # positions count this rank's batches
    resumed_from = None if ckpt is None else (start_pos, start_it)
    live = None if ckpt is None else ckpt["live"]
    if ckpt is not None and live is None:
        task.load_state_dict(ckpt["task"])
    if shards.exchanging:  # several ranks sharing state: agree where to resume
        shards.catch_up(task, start_pos, ckpt["task"] if ckpt is not None else task.state_dict(False))

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - start_time

    def save(pos: int, iteration: int, in_batch: dict[str, Any] | None) -> None:
        assert spec.checkpoint is not None
        write_checkpoint(spec.checkpoint, pos, iteration, task=to_cpu(task.state_dict(in_batch is not None)),
                         live=in_batch, done=done, seconds=elapsed())  # fmt: skip

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if spec.amp and device.type == "cuda" else nullcontext()
    bar = progress_bar(total=shards.mine * spec.iterations, initial=start_pos * spec.iterations + start_it,
                       progress=progress, desc=spec.method, dynamic_ncols=True)  # fmt: skip
    try:
        for pos in range(start_pos, shards.rounds):
            b = shards.batch(pos)
            if b is None:  # no batch of this rank in the last round: it still takes part in the exchange
                shards.share(task, pos, None)
                continue
            size = min(spec.batch_size, spec.num_images - b * spec.batch_size)
            state = task.start_batch(b, size)
            best: tuple[Tensor, ...] = ()
            best_loss = torch.full((), math.inf, device=device)
            last_loss = torch.full((), math.nan, device=device)
            it0 = 0
            if live is not None:  # resuming this batch mid-way
                task.load_state_dict(ckpt["task"])
                state = to_device(live["state"], device)
                best = tuple(t.to(device) for t in live["best"])
                best_loss, it0 = live["best_loss"].to(device), start_it
                if live.get("last_loss") is not None:
                    last_loss = live["last_loss"].to(device)
                live = None
            watch = NonFiniteWatch(device)
            next_it = it0  # the next iteration to run: the position a checkpoint records
            try:
                for it in range(it0, spec.iterations):
                    task.begin_iteration(it)
                    if it in spec.reset_best_at:
                        best_loss = torch.full((), math.inf, device=device)
                    optimizers = task.optimizers()
                    for opt in optimizers:
                        opt.zero_grad(set_to_none=True)
                    trial = dict(state)  # committed only once the step is done (interrupt-safe)
                    with autocast:
                        loss, current = task.loss(it, trial)
                    loss = loss.float()
                    loss.backward()
                    with torch.no_grad():  # the iterate that produced the loss, before the step
                        last_loss = loss.detach()
                        best_loss, best = keep_best(best_loss, last_loss, best or current, current)
                    watch.update(loss, it)
                    with deferred_interrupts():  # an interrupt waits for the step to be committed
                        for opt in optimizers:
                            opt.step()
                        task.after_step()
                        state, next_it = trial, it + 1  # iteration `it` is committed
                    bar.update(1)
                    last = it == spec.iterations - 1
                    if (it + 1) % spec.log_every == 0 or last:
                        watch.check(spec.method, task.advice())
                        bar.set_postfix({"loss": f"{float(last_loss):.4g}", **task.postfix(state)}, refresh=False)
                    if spec.checkpoint is not None and (it + 1) % spec.checkpoint_every == 0 and not last:
                        save(pos, it + 1, _live(state, best, best_loss))
            except KeyboardInterrupt:
                if spec.checkpoint is not None and best:  # (before the first step there is nothing new to save)
                    save(pos, next_it, _live(state, best, best_loss))
                raise
            if spec.checkpoint is not None and shards.exchanging:  # the finished batch outlives a failed exchange
                save(pos, spec.iterations, _live(state, best, best_loss, last_loss))
            images = task.finish_batch(state, best).detach().float().cpu()
            shards.share(task, pos, best)
            distributed.fault_point(f"inversion-shared-{b}")  # (test hook: between an exchange and its checkpoint)
            done.images.append(images)
            done.states.append(to_cpu(state))
            done.best_losses.append(float(best_loss))
            done.final_losses.append(float(last_loss))
            if spec.checkpoint is not None:
                save(pos + 1, 0, None)
            distributed.fault_point(f"inversion-batch-{b}")
            distributed.check_peers()  # a failed peer stops this rank now, not at the final merge
    finally:
        bar.close()
    result = BatchResult(
        images=torch.cat(done.images) if done.images else torch.empty(0),
        states=done.states,
        best_losses=done.best_losses,
        final_losses=done.final_losses,
        seconds=elapsed(),
        seconds_this_run=time.perf_counter() - start_time,
        resumed_from=resumed_from,
    )
    return shards.merge(result, done, resumed_from)


def _live(state: dict[str, Any], best: tuple[Tensor, ...], best_loss: Tensor, last_loss: Tensor | None = None) -> dict[str, Any]:
    """The loop's part of a mid-batch checkpoint (``last_loss``: at the end of a batch, its final loss)."""
    live = {"state": to_cpu(state), "best": [t.detach().cpu() for t in best], "best_loss": best_loss.cpu()}
    if last_loss is not None:
        live["last_loss"] = last_loss.cpu()
    return live
