"""Collectives of a session (:mod:`dfq.distributed`): each first waits in the heartbeat barrier, then
runs torch's own under the session's timeout; a lost peer is one ``DfqError``. Without a session each
returns what one process would have (``[value]``, ``value``, the tensor unchanged)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from dfq.distributed import _session as S
from dfq.distributed._session import _backend_error, _lost_peer, barrier
from dfq.errors import DfqError


@contextmanager
def agree() -> Iterator[None]:
    """Every rank runs the body; a :class:`DfqError` on any rank is raised on every rank.

    Use it around a step whose failure must stop all ranks together (checking the output, planning,
    writing the result), so no rank goes on alone. A no-op without a session.

    Raises:
        DfqError: this rank's own error, or ``rank R: ...`` of the first rank that failed.
    """
    if S._SESSION is None:
        yield
        return
    try:
        yield
    except DfqError as e:
        all_gather_object(str(e).splitlines()[0] if str(e) else "DfqError")
        raise
    errors = all_gather_object(None)
    first = next(((r, m) for r, m in enumerate(errors) if m is not None), None)
    if first is not None:
        raise DfqError(f"rank {first[0]}: {first[1]}")


def _collective(fn: Any) -> Any:
    barrier()
    try:
        return fn()
    except RuntimeError as e:
        if isinstance(e, torch.distributed.DistError) or _backend_error(e):
            raise DfqError(_lost_peer(e)) from e
        raise  # not a lost peer (out of memory, a bug): said as what it is


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable; tensors best on the CPU), in rank order; ``[value]`` without a session."""
    if S._SESSION is None:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * S._SESSION.world
    _collective(lambda: dist.all_gather_object(out, value))
    return out


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every rank (the others pass anything); ``value`` without a session."""
    if S._SESSION is None:
        return value
    import torch.distributed as dist

    box = [value if S._SESSION.rank == src else None]
    _collective(lambda: dist.broadcast_object_list(box, src=src))
    return box[0]


def all_gather_tensor(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape and dtype on every rank), in rank order."""
    if S._SESSION is None:
        return [tensor]
    import torch.distributed as dist

    out = [torch.empty_like(tensor) for _ in range(S._SESSION.world)]
    _collective(lambda: dist.all_gather(out, tensor.contiguous()))
    return out


def _all_reduce(tensor: torch.Tensor, op_name: str) -> torch.Tensor:
    if S._SESSION is None:
        return tensor
    import torch.distributed as dist

    op = getattr(dist.ReduceOp, op_name)
    _collective(lambda: dist.all_reduce(tensor, op=op))
    return tensor


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise minimum over ranks, in place (and returned)."""
    return _all_reduce(tensor, "MIN")


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over ranks, in place (and returned)."""
    return _all_reduce(tensor, "MAX")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks, in place (and returned)."""
    return _all_reduce(tensor, "SUM")


def gather_in_order(parts: Sequence[Sequence[Any]], owners: Sequence[int]) -> list[Any]:
    """Interleave per-rank lists back into global order: item ``i`` is the next one of ``parts[owners[i]]``.

    >>> gather_in_order([["a", "c"], ["b"]], [0, 1, 0])
    ['a', 'b', 'c']
    """
    cursors = [iter(p) for p in parts]
    return [next(cursors[o]) for o in owners]
