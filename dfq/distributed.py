"""Several processes of one job with PyTorch's own ``torch.distributed`` (``torchrun``); no job system of ours.

``torchrun --nproc-per-node N -m dfq invert ...`` starts N copies of the command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment. A job opens a
:func:`session` around its work: when the environment says it was launched that way, the process group
is initialised there (gloo on the CPU; ``cpu:gloo,cuda:nccl`` on CUDA, each process on ``cuda:LOCAL_RANK``)
and destroyed when the block ends, also on error. Without a session (one plain process) every helper
here is a no-op: :func:`world_size` is 1, :func:`rank` 0, the gathers return ``[value]``.

Waiting without hanging. Ranks reach a collective at different times: one may still optimise its last
batch, or evaluate while the others wait, for longer than any fixed timeout should allow. So every
collective here first waits in :func:`barrier`, on the rendezvous store: each rank announces its arrival
and, from a background thread, bumps a heartbeat counter every second. A waiting rank waits as long as
every missing rank keeps beating, and raises :class:`~dfq.errors.DfqError` (one ``error:`` line, exit 2)
as soon as a rank reports a failure (a rank whose job raises writes its message to the store before it
exits) or stops beating for ``DFQ_DIST_TIMEOUT`` seconds (default 60: a killed or crashed process). The
collective proper then starts with every rank present and runs under the same timeout, which is also
the process group's ``init_process_group`` timeout. Errors of the backend (a peer that vanished during
a gloo collective or DistributedDataParallel's all-reduce) end the session as one ``DfqError`` too.

``DFQ_DIST_KILL=RANK:EVENT`` is a test hook: that rank leaves with ``os._exit(1)`` when it reaches
:func:`fault_point` ``(EVENT)`` (``inversion-batch-B``, ``inversion-shared-B``, ``distill-start``,
``distill-step-S``), as a killed process would (``RANK:EVENT:raise``: it raises a ``DfqError`` there,
as a failing job does); ``DFQ_DIST_STALL=RANK:EVENT:SECONDS`` makes it sleep there instead, alive but
late.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dfq.errors import DfqError

__all__ = [
    "TIMEOUT_ENV",
    "KILL_ENV",
    "check_peers",
    "STALL_ENV",
    "launched",
    "reports",
    "timeout_seconds",
    "session",
    "active",
    "rank",
    "world_size",
    "local_rank",
    "is_main",
    "device",
    "shard",
    "shard_path",
    "rank_seed",
    "barrier",
    "agree",
    "all_gather_object",
    "broadcast_object",
    "all_gather_tensor",
    "all_reduce_min",
    "all_reduce_max",
    "all_reduce_sum",
    "fault_point",
    "gather_in_order",
]

TIMEOUT_ENV = "DFQ_DIST_TIMEOUT"
"""Seconds a rank may stay silent (no heartbeat) before the others give up; also the process group's timeout."""
KILL_ENV = "DFQ_DIST_KILL"
"""Test hook ``RANK:EVENT[:raise]``: that rank exits at once (or raises) at :func:`fault_point` ``(EVENT)``."""
STALL_ENV = "DFQ_DIST_STALL"
"""Test hook ``RANK:EVENT:SECONDS``: that rank sleeps at :func:`fault_point` ``(EVENT)``, alive (its
heartbeat goes on) but late, as a rank busy evaluating or writing is."""
_DEFAULT_TIMEOUT = 60.0
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


_MAX_TIMEOUT = 7 * 24 * 3600.0
"""The longest ``DFQ_DIST_TIMEOUT`` taken (a week): far past any silence worth waiting for, and inside
what the process group's ``timedelta`` holds."""


def _env_int(key: str, default: int | None = None) -> int:
    """The launcher's integer ``key`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_PORT``).

    Raises:
        DfqError: set but not a non-negative integer.
    """
    raw = os.environ.get(key)
    if raw is None and default is not None:
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = -1
    if value < 0:
        raise DfqError(f"{key}={raw!r} must be a non-negative integer (torchrun sets it)")
    return value


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or an equivalent launcher) as one of several.

    Raises:
        DfqError: the launcher's ``WORLD_SIZE`` is not an integer.
    """
    return all(k in os.environ for k in _ENV) and _env_int("WORLD_SIZE") > 1


def reports() -> bool:
    """Whether this process prints a job's result: a process on its own, or rank 0 of a launch (read
    from the environment, so it holds after the session closed)."""
    return not launched() or os.environ.get("RANK") == "0"


def timeout_seconds() -> float:
    """``DFQ_DIST_TIMEOUT`` in seconds (default 60).

    Raises:
        DfqError: not a positive number.
    """
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return _DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise DfqError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    if value > _MAX_TIMEOUT:
        raise DfqError(f"{TIMEOUT_ENV}={raw!r} is more than a week ({_MAX_TIMEOUT:g} s); give at most that")
    return value


@dataclass
class _Session:
    rank: int
    world: int
    local_rank: int
    device: str
    timeout: float
    prefix: str
    store: Any  # the main thread's client of the rendezvous store
    stop: threading.Event = field(default_factory=threading.Event)
    beat: threading.Thread | None = None
    seq: int = 0
    owns_group: bool = True  # False: the caller had initialised the process group (left to them)


_SESSION: _Session | None = None
_GENERATION = 0  # sessions opened by this process: keys of an earlier session never count in a later one


def active() -> bool:
    """Whether a session of several processes is open."""
    return _SESSION is not None


def rank() -> int:
    """This process's rank (0 without a session)."""
    return _SESSION.rank if _SESSION is not None else 0


def world_size() -> int:
    """Processes in the session (1 without one)."""
    return _SESSION.world if _SESSION is not None else 1


def local_rank() -> int:
    """This process's rank on its machine (0 without a session)."""
    return _SESSION.local_rank if _SESSION is not None else 0


def is_main() -> bool:
    """Whether this process writes the job's outputs (rank 0, or no session)."""
    return rank() == 0


def device(default: str) -> str:
    """Where this process runs: ``cuda:LOCAL_RANK`` for ``cuda`` in a session, else ``default``."""
    return _SESSION.device if _SESSION is not None and default.split(":")[0] == "cuda" else default


def shard(count: int) -> range:
    """The items of ``count`` this rank owns: ``rank, rank + world, ...`` (all of them without a session).

    >>> list(shard(5))
    [0, 1, 2, 3, 4]
    """
    return range(rank(), count, world_size())


def shard_path(path: str | Path) -> Path:
    """This rank's file for ``path``: ``PATH.rankR`` in a session, ``path`` itself without one."""
    path = Path(path)
    return path if _SESSION is None else path.with_name(f"{path.name}.rank{_SESSION.rank}")


def rank_seed(seed: int) -> int:
    """A seed of this rank derived from ``seed``: ``seed`` itself without a session (one process is unchanged),
    distinct and reproducible per rank in one.

    >>> rank_seed(7)
    7
    """
    if _SESSION is None:
        return seed
    return (seed * 1_000_003 + 7919 * (_SESSION.rank + 1)) % (2**63)


# ------------------------------------------------------------------------------------------ session
@contextmanager
def session(job_device: str) -> Iterator[None]:
    """Open the process group for the body when launched by ``torchrun``; a no-op otherwise.

    Args:
        job_device: the job's device (``cpu`` or ``cuda``); on CUDA each rank uses ``cuda:LOCAL_RANK``
            (:func:`device`) and NCCL carries its tensors, gloo the CPU ones.

    Raises:
        DfqError: a bad ``DFQ_DIST_TIMEOUT``, a rendezvous that fails, or (leaving the body) a
            collective that failed because another rank stopped.
    """
    if not launched() or _SESSION is not None:
        yield
        return
    _open(job_device)
    try:
        yield
    except BaseException as e:
        if isinstance(e, torch.distributed.DistError) or _backend_error(e):
            lost = DfqError(_lost_peer(e))  # another rank's report, read before this rank writes its own
            _report_failure(lost)
            raise lost from e
        _report_failure(e)
        raise
    finally:
        _close()


def _open(job_device: str) -> None:
    import torch.distributed as dist

    global _SESSION, _GENERATION
    timeout = timeout_seconds()
    r, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local = _env_int("LOCAL_RANK", r)
    if r >= world:
        raise DfqError(f"RANK={r} must be below WORLD_SIZE={world} (torchrun sets both)")
    cuda = job_device.split(":")[0] == "cuda"
    if cuda:
        if local >= torch.cuda.device_count():
            raise DfqError(f"LOCAL_RANK={local} has no GPU: this machine has {torch.cuda.device_count()}; "
                           "start at most that many processes per node (--nproc-per-node)")  # fmt: skip
        torch.cuda.set_device(local)
    delta = datetime.timedelta(seconds=timeout)
    owns = not dist.is_initialized()
    try:
        if owns:
            dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", rank=r, world_size=world, timeout=delta)
        host, port = os.environ["MASTER_ADDR"], _env_int("MASTER_PORT")
        store, beat_store = (dist.TCPStore(host, port, is_master=False, timeout=delta, wait_for_workers=False)
                             for _ in range(2))  # fmt: skip
    except (RuntimeError, ValueError) as e:
        if owns and dist.is_initialized():
            dist.destroy_process_group()
        raise DfqError(f"rank {r}: cannot join the other {world - 1} process(es) at {os.environ['MASTER_ADDR']}:"
                       f"{os.environ['MASTER_PORT']} within {timeout:g} s ({type(e).__name__})") from e  # fmt: skip
    _GENERATION += 1
    run = os.environ.get("TORCHELASTIC_RUN_ID", "")
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefix = f"dfq/{run}/{restart}/{_GENERATION}/"
    s = _Session(r, world, local, f"cuda:{local}" if cuda else job_device, timeout, prefix, store, owns_group=owns)
    s.beat = threading.Thread(target=_heartbeat, args=(s, beat_store), name="dfq-heartbeat", daemon=True)
    s.beat.start()
    _SESSION = s


def _heartbeat(s: _Session, store: Any) -> None:
    """Bump this rank's heartbeat counter every ``min(1, timeout / 10)`` seconds until the session ends."""
    key = f"{s.prefix}hb/{s.rank}"
    while not s.stop.is_set():
        try:
            store.add(key, 1)
        except Exception:  # noqa: BLE001 -- the store is gone (rank 0 died): the waiters will say so
            return
        s.stop.wait(min(1.0, s.timeout / 10))


def _close() -> None:
    import torch.distributed as dist

    global _SESSION
    s, _SESSION = _SESSION, None
    if s is None:
        return
    s.stop.set()
    if s.beat is not None:
        s.beat.join(timeout=5)
    if s.owns_group and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 -- tearing down after a peer vanished may fail; nothing to keep
            pass


def _report_failure(error: BaseException) -> None:
    """Tell the other ranks why this one stops (the first report wins)."""
    s = _SESSION
    if s is None:
        return
    if isinstance(error, KeyboardInterrupt):
        why = "was interrupted"
    elif isinstance(error, DfqError):
        why = f"failed: {str(error).splitlines()[0] if str(error) else 'DfqError'}"
    else:
        why = f"failed with {type(error).__name__}"
    try:
        s.store.compare_set(f"{s.prefix}failed", "", f"rank {s.rank} {why}")
    except Exception:  # noqa: BLE001 -- the store may be gone too
        pass


def _failure() -> str | None:
    s = _SESSION
    assert s is not None
    key = f"{s.prefix}failed"
    if not s.store.check([key]):
        return None
    return s.store.get(key).decode(errors="replace")


def check_peers() -> None:
    """Stop now if another rank has posted a failure (a no-op without a session): a rank with work of
    its own left calls it between units of work, so it does not run on until its next collective.

    Raises:
        DfqError: a peer failed; its message, with the advice to resume.
    """
    if _SESSION is None:
        return
    who = _failure()
    if who is not None:
        raise DfqError(f"rank {_SESSION.rank}: the distributed job stopped: {who.removesuffix(_RESUME)}{_RESUME}")


def _backend_error(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, RuntimeError) and any(k in text for k in ("gloo", "Gloo", "NCCL", "Connection closed", "Connection reset"))


def _lost_peer(e: BaseException) -> str:
    s = _SESSION
    who = None
    try:
        who = _failure() if s is not None else None
    except Exception:  # noqa: BLE001
        who = None
    detail = " ".join(str(e).split())[:120]
    cause = (who or f"another process stopped ({type(e).__name__}: {detail})").removesuffix(_RESUME)
    here = f"rank {s.rank}: " if s is not None else ""
    return f"{here}the distributed job stopped: {cause}{_RESUME}"


_RESUME = "; run the same command with --resume to continue it"


# -------------------------------------------------------------------------------------- collectives
def barrier() -> None:
    """Wait until every rank gets here, for as long as the missing ones are alive (module docstring).

    Raises:
        DfqError: a rank reported a failure or stopped beating for ``DFQ_DIST_TIMEOUT`` seconds.
    """
    s = _SESSION
    if s is None:
        return
    key = f"{s.prefix}arrive/{s.seq}"
    s.seq += 1
    try:
        arrived = s.store.add(key, 1)
        seen: dict[int, tuple[int, float]] = {}
        delay, next_check = 0.0005, 0.0
        while arrived < s.world:
            now = time.monotonic()
            if now >= next_check:
                _check_peers(s, seen, now)
                next_check = now + 0.5
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
            arrived = s.store.add(key, 0)
    except DfqError:
        raise
    except RuntimeError as e:  # the store itself is gone: the rank hosting it (rank 0) died
        raise DfqError(f"rank {s.rank}: lost the rendezvous store ({type(e).__name__}); another process stopped; "
                       "run the same command with --resume to continue it") from e  # fmt: skip


def _check_peers(s: _Session, seen: dict[int, tuple[int, float]], now: float) -> None:
    failed = _failure()
    if failed:
        raise DfqError(f"rank {s.rank}: the distributed job stopped because {failed}; "
                       "run the same command with --resume to continue it")  # fmt: skip
    for r in range(s.world):
        count = s.store.add(f"{s.prefix}hb/{r}", 0)  # a rank that never beat yet is timed from the first look
        last = seen.get(r)
        if last is None or last[0] != count:
            seen[r] = (count, now)
        elif now - last[1] > s.timeout:
            raise DfqError(
                f"rank {s.rank}: rank {r} has not answered for {s.timeout:g} s (killed or crashed; "
                f"{TIMEOUT_ENV} sets the limit); run the same command with --resume to continue it"
            )


@contextmanager
def agree() -> Iterator[None]:
    """Every rank runs the body; a :class:`DfqError` on any rank is raised on every rank.

    Use it around a step whose failure must stop all ranks together (checking the output, planning,
    writing the result), so no rank goes on alone. A no-op without a session.

    Raises:
        DfqError: this rank's own error, or ``rank R: ...`` of the first rank that failed.
    """
    if _SESSION is None:
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
    if _SESSION is None:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * _SESSION.world
    _collective(lambda: dist.all_gather_object(out, value))
    return out


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every rank (the others pass anything); ``value`` without a session."""
    if _SESSION is None:
        return value
    import torch.distributed as dist

    box = [value if _SESSION.rank == src else None]
    _collective(lambda: dist.broadcast_object_list(box, src=src))
    return box[0]


def all_gather_tensor(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape and dtype on every rank), in rank order."""
    if _SESSION is None:
        return [tensor]
    import torch.distributed as dist

    out = [torch.empty_like(tensor) for _ in range(_SESSION.world)]
    _collective(lambda: dist.all_gather(out, tensor.contiguous()))
    return out


def _all_reduce(tensor: torch.Tensor, op_name: str) -> torch.Tensor:
    if _SESSION is None:
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


def fault_point(event: str) -> None:
    """The test hooks (module docstring): leave at once if this rank should die at ``event``
    (``DFQ_DIST_KILL``), or stand still there for a while (``DFQ_DIST_STALL``)."""
    if _SESSION is None:
        return
    spec = os.environ.get(KILL_ENV)
    if spec:
        who, _, where = spec.partition(":")
        where, _, how = where.partition(":")
        if who.strip() == str(_SESSION.rank) and where.strip() == event:
            if how.strip() == "raise":
                raise DfqError(f"test hook: rank {_SESSION.rank} fails at {event}")
            os._exit(1)
    spec = os.environ.get(STALL_ENV)
    if spec:
        who, _, rest = spec.partition(":")
        where, _, seconds = rest.rpartition(":")
        if who.strip() == str(_SESSION.rank) and where.strip() == event:
            time.sleep(float(seconds))


def gather_in_order(parts: Sequence[Sequence[Any]], owners: Sequence[int]) -> list[Any]:
    """Interleave per-rank lists back into global order: item ``i`` is the next one of ``parts[owners[i]]``.

    >>> gather_in_order([["a", "c"], ["b"]], [0, 1, 0])
    ['a', 'b', 'c']
    """
    cursors = [iter(p) for p in parts]
    return [next(cursors[o]) for o in owners]
