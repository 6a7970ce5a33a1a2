"""The inversion loop on several processes (``torchrun``, :mod:`dfq.distributed`): which batches a rank
runs, what the ranks share while they run, and the merge of their results.

Batch ``b`` belongs to rank ``b % world`` (round-robin), so the batches of round ``r`` are
``r·world … r·world + world − 1`` and every rank has one batch per round except perhaps in the last. A
batch is made exactly as one process makes it: every method seeds its per-batch draws from the batch's
global position (pixel methods: :func:`dfq.inversion._pixels.iteration_generator`; the labels come from
the run's seed), so a sharded run of a pixel method gives the images of a one-process run bit for bit
on the same device. At the end every rank gathers every rank's finished batches, in batch order, and
returns the whole result (rank 0 writes it; a distillation trains on it on every rank).

Methods that carry state from batch to batch (CMI's memory bank: :attr:`~dfq.inversion._loop.Task.shares`)
exchange it after each round: every rank's contribution (:meth:`~dfq.inversion._loop.Task.shared`) is
gathered and added in batch order on every rank (:meth:`~dfq.inversion._loop.Task.remember`), so the banks
stay identical and hold negatives from every rank. A batch of round ``r`` therefore sees the bank of
rounds ``< r``, not of the batches just before it as in one process.

Resume: each rank keeps its own checkpoint (``PATH.rankR``, :func:`dfq.distributed.shard_path`). Before an
exchange a rank saves its finished batch (position ``(pos, iterations)``), after it the next position.
A rank killed between the two is one exchange behind the others; on resume :meth:`Shards.catch_up` gives
it the shared state of a rank that is ahead, and it skips that exchange.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from dfq import distributed
from dfq.checkpointing import to_cpu
from dfq.errors import DfqError

if TYPE_CHECKING:
    from dfq.inversion._checkpoint import Done
    from dfq.inversion._loop import BatchResult, Task

__all__ = ["Shards"]


class Shards:
    """One rank's part of :func:`dfq.inversion._loop.run_batches` (one process: every batch, no exchange).

    Args:
        num_batches: batches of the whole run.
        task: the method (does it share state across batches?).
    """

    def __init__(self, num_batches: int, task: Task) -> None:
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.num_batches = num_batches
        self.rounds = math.ceil(num_batches / self.world)
        self.mine = len(distributed.shard(num_batches))
        self.shares = bool(task.shares)
        self.exchanging = self.world > 1 and self.shares
        self._adopt: tuple[int, Any] | None = None

    def batch(self, pos: int) -> int | None:
        """The global batch this rank runs at its position ``pos`` (None: none in this last round)."""
        b = pos * self.world + self.rank
        return b if b < self.num_batches else None

    def catch_up(self, task: Task, pos: int, task_state: dict[str, Any]) -> None:
        """Agree on the round to resume at (a collective when exchanging; see the module docstring);
        ``task_state`` is the method's state this rank resumes from (its checkpoint's, or a fresh one).

        Raises:
            DfqError: the ranks' checkpoints are more than one exchange apart (one was deleted or replaced).
        """
        if not self.exchanging:
            return
        positions = distributed.all_gather_object(pos)
        ahead = max(positions)
        if min(positions) < ahead - 1:
            raise DfqError(
                f"the ranks' inversion checkpoints disagree (batch positions {positions} per rank); "
                "delete every PATH.rank* checkpoint to start over"
            )
        if min(positions) == ahead:  # every rank stopped after the same exchange: nothing to hand over
            return
        src = positions.index(ahead)
        state = distributed.broadcast_object(to_cpu(task.shared_state(task_state)) if self.rank == src else None, src)
        if pos < ahead:
            self._adopt = (pos, state)

    def share(self, task: Task, pos: int, best: tuple[Any, ...] | None) -> None:
        """After the batch at ``pos`` (``best``: its best iterate; None: no batch this round): add what the
        batch contributes to the shared state; with several ranks, everyone's, in batch order."""
        if not self.shares:
            return
        if not self.exchanging:
            if best is not None:
                task.remember([task.shared(best)])
            return
        if self._adopt is not None and self._adopt[0] == pos:
            task.load_shared_state(self._adopt[1])  # the ranks ahead already hold this round's rows
            self._adopt = None
            return
        mine = to_cpu(task.shared(best)) if best is not None else None
        task.remember([rows for rows in distributed.all_gather_object(mine) if rows is not None])

    def merge(self, result: BatchResult, done: Done, resumed_from: tuple[int, int] | None) -> BatchResult:
        """Every rank's batches in batch order (one process: ``result`` itself); the ranks' facts go to
        ``result.shards`` (the provenance's ``distributed`` record)."""
        if self.world == 1:
            return result
        import torch

        from dfq.inversion._loop import BatchResult

        mine = {
            "images": done.images, "states": done.states, "best": done.best_losses, "final": done.final_losses,
            "seconds": result.seconds, "this_run": result.seconds_this_run,
            "resumed_from": None if resumed_from is None else [resumed_from[0] * self.world + self.rank, resumed_from[1]],
        }  # fmt: skip
        parts = distributed.all_gather_object(mine)
        owners = [b % self.world for b in range(self.num_batches)]

        def ordered(key: str) -> list[Any]:
            return distributed.gather_in_order([p[key] for p in parts], owners)

        resumed = [p["resumed_from"] for p in parts if p["resumed_from"] is not None]
        return BatchResult(
            images=torch.cat(ordered("images")),
            states=ordered("states"),
            best_losses=ordered("best"),
            final_losses=ordered("final"),
            seconds=max(p["seconds"] for p in parts),
            seconds_this_run=max(p["this_run"] for p in parts),
            resumed_from=tuple(min(resumed)) if resumed else None,
            shards={
                "world_size": self.world,
                "assignment": "round-robin: batch b on rank b % world_size",
                "ranks": [
                    {"rank": r, "batches": list(range(r, self.num_batches, self.world)), "seconds": p["seconds"],
                     "resumed_from": p["resumed_from"]}
                    for r, p in enumerate(parts)
                ],
            },  # fmt: skip
        )
