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
late (a failure another rank posts meanwhile ends the sleep).
"""

from __future__ import annotations

from dfq.distributed._env import KILL_ENV, STALL_ENV, TIMEOUT_ENV, launched, ranked, reports, timeout_seconds
from dfq.distributed._session import (
    active,
    barrier,
    check_peers,
    device,
    fault_point,
    is_main,
    local_rank,
    rank,
    rank_seed,
    session,
    shard,
    shard_path,
    world_size,
)
from dfq.distributed.collectives import (
    agree,
    all_gather_object,
    all_gather_tensor,
    all_reduce_max,
    all_reduce_min,
    all_reduce_sum,
    broadcast_object,
    gather_in_order,
)

__all__ = [
    "TIMEOUT_ENV",
    "KILL_ENV",
    "STALL_ENV",
    "launched",
    "reports",
    "ranked",
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
    "check_peers",
    "barrier",
    "fault_point",
    "agree",
    "all_gather_object",
    "broadcast_object",
    "all_gather_tensor",
    "all_reduce_min",
    "all_reduce_max",
    "all_reduce_sum",
    "gather_in_order",
]
