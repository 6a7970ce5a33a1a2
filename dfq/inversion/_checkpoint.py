"""The inversion loop's checkpoint layout (:func:`dfq.inversion._loop.run_batches`) on a
:class:`dfq.checkpointing.StateFile`.

One file, replaced atomically, holds the finished batches (images, method states, best and final
losses), the next ``(batch, iteration)`` to run, the optimisation seconds spent so far, the method's
own state (:meth:`dfq.inversion._loop.Task.state_dict`: the batch's variables and optimizers, plus
what lives across batches such as CMI's head, memory bank and random streams) and, mid-batch, the
loop's live state (the method's per-batch dict, best-so-far tensors and loss). It is accepted only by a
run of the same model weights, method, settings, seed, data config (input size, mean, std) and any
extra entry the method adds (e.g. the target labels). Under ``torchrun`` each rank keeps its own file,
``PATH.rankR`` (:func:`dfq.distributed.shard_path`), whose identity adds the rank and the world size;
its positions count that rank's batches (:mod:`dfq.inversion._shards`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from dfq import distributed
from dfq.checkpointing import StateFile, run_identity

__all__ = ["KIND", "VERSION", "Done", "state_file", "resume_point", "write_checkpoint"]

KIND = "inversion"
VERSION = 3  # 2: records the model weights' sha256; 3: the shared dfq.checkpoint header, the method's state
_OLDER = {
    1: "does not record the model weights it belongs to",
    2: "predates the shared checkpoint format",
}


def state_file(
    config: Any, model: nn.Module, method: str, data_cfg: dict[str, Any], **extra: Any
) -> StateFile | None:
    """The state file of an inversion run (None when ``config.checkpoint_path`` is None).

    The model's weights are hashed only when there is a file.
    """
    if getattr(config, "checkpoint_path", None) is None:
        return None
    data = {"input_size": tuple(data_cfg["input_size"]), "mean": tuple(data_cfg["mean"]), "std": tuple(data_cfg["std"])}
    if distributed.world_size() > 1:  # each rank its own file, refused by a run of another world size
        extra["shard"] = {"rank": distributed.rank(), "world_size": distributed.world_size()}
    identity = run_identity(model, method, config, config.seed, data=data, **extra)
    return StateFile(distributed.shard_path(config.checkpoint_path), KIND, VERSION, identity, _OLDER)


@dataclass
class Done:
    """Finished batches, one entry per batch: kept images, method states, best and final losses."""

    images: list[Tensor] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    best_losses: list[float] = field(default_factory=list)
    final_losses: list[float] = field(default_factory=list)


def resume_point(ckpt: dict[str, Any] | None) -> tuple[Done, tuple[int, int], float]:
    """What a loaded checkpoint (or None: a fresh run) restarts from: the finished batches, the next
    ``(batch, iteration)`` and the optimisation seconds already spent."""
    if ckpt is None:
        return Done(), (0, 0), 0.0
    done = Done(
        list(ckpt["done_images"]), list(ckpt["done_states"]), list(ckpt["best_losses"]), list(ckpt["final_losses"])
    )
    return done, (int(ckpt["batch"]), int(ckpt["iteration"])), float(ckpt["seconds"])


def write_checkpoint(
    file: StateFile,
    batch: int,
    iteration: int,
    *,
    task: dict[str, Any],
    live: dict[str, Any] | None,
    done: Done,
    seconds: float,
) -> None:
    """Save the resumable state: ``(batch, iteration)`` is the next step to run, ``task`` the method's
    state (on the CPU), ``live`` the loop's state of the batch in progress (None at a batch boundary),
    ``seconds`` the optimisation time spent so far over every run that led here."""
    file.save(
        {
            "batch": batch,
            "iteration": iteration,
            "seconds": seconds,
            "task": task,
            "live": live,
            "done_images": done.images,
            "done_states": done.states,
            "best_losses": done.best_losses,
            "final_losses": done.final_losses,
        }
    )
