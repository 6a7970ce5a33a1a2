"""The session of one distributed job: the process group, this rank's place in it, the heartbeat and the
barrier that waits as long as every missing rank is alive, failures posted for the others, the test hooks
(:mod:`dfq.distributed`'s docstring says how they fit together)."""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dfq.distributed._env import KILL_ENV, STALL_ENV, TIMEOUT_ENV, _env_int, launched, timeout_seconds
from dfq.errors import DfqError


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
    if cuda and job_device != "cuda":
        raise DfqError(f"device {job_device} names one GPU, and under torchrun each process takes its own "
                       "(cuda:LOCAL_RANK); give the device as cuda")  # fmt: skip
    if cuda:
        per_node = _env_int("LOCAL_WORLD_SIZE", local + 1)  # every rank of the node refuses, not only the last
        if max(local + 1, per_node) > torch.cuda.device_count():
            raise DfqError(f"{max(local + 1, per_node)} process(es) per node, and this machine has "
                           f"{torch.cuda.device_count()} GPU(s); start at most that many (--nproc-per-node)")  # fmt: skip
        torch.cuda.set_device(local)
    delta = datetime.timedelta(seconds=timeout)
    owns = not dist.is_initialized()
    try:
        if owns:
            dist.init_process_group(
                "cpu:gloo,cuda:nccl" if cuda else "gloo", rank=r, world_size=world, timeout=delta
            )
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
    s = _Session(
        r, world, local, f"cuda:{local}" if cuda else job_device, timeout, prefix, store, owns_group=owns
    )
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
    line = f"rank {s.rank} {why}".removesuffix(_RESUME)
    relayed = f"rank {s.rank} failed: {_stopped(s.rank, '')}".removesuffix(_RESUME)
    if line.startswith(relayed):  # not this rank's failure but its news of another's: pass the cause on
        line = line[len(relayed) :]
    try:
        s.store.compare_set(f"{s.prefix}failed", "", line)
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
        raise DfqError(_stopped(_SESSION.rank, who))


def _stopped(rank: int, cause: str) -> str:
    """The one line a rank says when the job stopped because of ``cause`` (another rank's posted failure,
    or what this rank saw of it), with the advice to resume said once.

    >>> _stopped(0, "rank 1 failed: out of disk" + _RESUME) == "rank 0: the distributed job stopped: rank 1 failed: out of disk" + _RESUME
    True
    """
    return f"rank {rank}: the distributed job stopped: {cause.removesuffix(_RESUME)}{_RESUME}"


def _backend_error(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, RuntimeError) and any(
        k in text for k in ("gloo", "Gloo", "NCCL", "Connection closed", "Connection reset")
    )


def _lost_peer(e: BaseException) -> str:
    s = _SESSION
    who = None
    try:
        who = _failure() if s is not None else None
    except Exception:  # noqa: BLE001
        who = None
    detail = " ".join(str(e).split())[:120]
    cause = who or f"another process stopped ({type(e).__name__}: {detail})"
    if s is None:
        return f"the distributed job stopped: {cause.removesuffix(_RESUME)}{_RESUME}"
    return _stopped(s.rank, cause)


_RESUME = "; run the same command with --resume to continue it"


# ---------------------------------------------------------------------------------------- barrier
# -------------------------------------------------------------------------------------- collectives
def barrier() -> None:
    """Wait until every rank gets here, for as long as the missing ones are alive (:mod:`dfq.distributed`'s docstring).

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
        raise DfqError(_stopped(s.rank, failed))
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


def fault_point(event: str) -> None:
    """The test hooks (:mod:`dfq.distributed`'s docstring): leave at once if this rank should die at ``event``
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
            end = time.monotonic() + float(seconds)
            while time.monotonic() < end and _failure() is None:  # a posted failure ends the stall
                time.sleep(0.05)
