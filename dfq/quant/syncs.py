"""Count device-to-host synchronisations of a block of PyTorch code (DESIGN.md §4: none per forward).

A host sync is an op whose result the Python side must wait for: ``aten._local_scalar_dense`` is the
op behind ``.item()``, ``bool(t)``, ``float(t)``, ``int(t)`` and ``if t:`` (under ``torch.inference_mode``
the dispatch mode sees the undecomposed ``aten.item``/``aten.is_nonzero`` instead, counted too);
``torch.equal``/``torch.allclose`` return a Python bool; ``aten.nonzero``, ``masked_select``, ``unique``
and boolean-mask indexing must read their result's size; a copy from an accelerator to the CPU
(``.cpu()``, ``.to("cpu")``, ``cpu_tensor.copy_(cuda_tensor)``) waits for the device. On the CPU none of
them stalls anything (and ``.cpu()``/``.tolist()`` of a CPU tensor dispatch nothing to count), but the
same code on a GPU would stall, so the count is what a CPU test can pin down. :class:`HostSyncCounter`
is a ``TorchDispatchMode`` that sees every ATen op the block dispatches and counts those.

>>> import torch
>>> with HostSyncCounter() as syncs:
...     _ = torch.ones(3).sum() * 2          # no sync
...     _ = torch.ones(3).sum().item()       # one sync
>>> syncs.count, dict(syncs.ops)
(1, {'aten._local_scalar_dense.default': 1})
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncCounter", "SYNC_OPS"]

_aten = torch.ops.aten
SYNC_OPS = frozenset(
    {
        _aten._local_scalar_dense.default,  # .item(), bool(t), float(t), int(t), `if t:`
        _aten.item.default,  # the same, as seen under inference_mode
        _aten.is_nonzero.default,  # bool(t) under inference_mode
        _aten.equal.default,
        _aten.allclose.default,
        _aten.nonzero.default,  # data-dependent output shape
        _aten.masked_select.default,
        _aten.unique_dim.default,
        _aten._unique2.default,
        _aten.unique_consecutive.default,
    }
)
"""Ops that always make the host wait for a result of the device."""

_COPIES = frozenset({_aten._to_copy, _aten.to, _aten.copy_})


def _waits_for_device(func: Any, args: tuple[Any, ...], out: Any) -> bool:
    """A copy from a non-CPU tensor to the CPU, or indexing with a boolean mask (its size is data)."""
    packet = func.overloadpacket
    if packet in _COPIES:
        sources = [a for a in args if isinstance(a, torch.Tensor)]
        return (
            isinstance(out, torch.Tensor)
            and out.device.type == "cpu"
            and any(t.device.type != "cpu" for t in sources)
        )
    if packet is _aten.index:
        indices = args[1] if len(args) > 1 else ()
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
    return False


class HostSyncCounter(TorchDispatchMode):
    """Count the host syncs dispatched inside a ``with`` block.

    Attributes:
        count: number of syncs seen.
        ops: ``op name -> count`` of the syncs seen (what to look for when the count is not 0).
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if func in SYNC_OPS or _waits_for_device(func, args, out):
            self.count += 1
            self.ops[str(func)] += 1
        return out
