"""FLOP counting that sees attention whichever scaled-dot-product-attention (SDPA) kernel runs.

``torch.utils.flop_counter.FlopCounterMode`` counts matmuls and convolutions by the aten op that
reaches the dispatcher, and it has formulas for only some SDPA kernels: on the CPU a fused attention
(timm's default, ``F.scaled_dot_product_attention``) dispatches to
``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward, which it does not know, so the
whole ``q @ k^T`` / ``attn @ v`` term — the one that grows with the square of the token count — is
silently counted as zero there, while the same model with ``TIMM_FUSED_ATTN=0`` (or on the ``meta``
device, where SDPA falls back to the math path) counts it through ``bmm``. A FLOP figure that depends
on which kernel the machine picked is no figure.

:class:`FlopCount` is ``FlopCounterMode`` with formulas of its own (``custom_mapping``) for every SDPA
kernel op this torch has (:data:`SDPA_FORWARD_OPS`, :data:`SDPA_BACKWARD_OPS`: the CPU flash kernel,
CUDA flash / memory-efficient / cuDNN, the overrideable fused op of out-of-tree backends, the MPS math
op), and the formulas count the attention's *arithmetic*, not a kernel's schedule:

* forward: the two matmuls ``q @ k^T`` and ``p @ v``, ``2·B·Lq·Lk·(Eq + Ev)`` (B = every leading
  dimension of the query: batch × query heads, so grouped-query attention is counted per query head);
* backward: the four gradient matmuls ``dp = g @ v^T``, ``dv = p^T @ g``, ``dq = ds @ k``,
  ``dk = ds^T @ q``, twice the forward. A flash backward that *recomputes* ``q @ k^T`` does a fifth
  matmul (torch's own formulas count it); it is left out on purpose, so the count is the same for a
  fused kernel, a flash kernel and the unfused math path (``bmm`` ops, counted by torch), which is
  what makes dense-vs-sparse FLOP ratios comparable between machines.

Masks, scaling, softmax and dropout are not counted (``FlopCounterMode`` counts no element-wise op).
As a guard, :class:`FlopCount` also records every op whose name contains ``attention`` that ran
without a formula (:attr:`FlopCount.uncounted`, e.g. a kernel a later torch adds, or
``_native_multi_head_attention``); :func:`count_flops` raises on one instead of returning a number
that silently leaves attention out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from types import TracebackType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "SDPA_BACKWARD_OPS",
    "SDPA_FORWARD_OPS",
    "FlopCount",
    "attention_flops",
    "attention_backward_flops",
    "count_flops",
    "sdpa_formulas",
]

SDPA_FORWARD_OPS: tuple[str, ...] = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
    "_scaled_dot_product_attention_math_for_mps",
)
"""SDPA kernel ops whose first three arguments are ``query, key, value`` (``(..., L, E)``)."""

SDPA_BACKWARD_OPS: tuple[str, ...] = tuple(f"{name}_backward" for name in SDPA_FORWARD_OPS[:5])
"""Their backward ops, whose first four arguments are ``grad_out, query, key, value``."""

Shape = Sequence[int]


def attention_flops(query: Shape, key: Shape, value: Shape, *args: Any, **kwargs: Any) -> int:
    """FLOPs of one attention forward: ``q @ k^T`` and ``p @ v`` (a multiply-add counts 2).

    Args:
        query: query shape ``(..., Lq, Eq)``; every leading dimension (batch, heads) multiplies.
        key: key shape ``(..., Lk, Eq)``.
        value: value shape ``(..., Lk, Ev)``.
        *args: the kernel's other arguments (ignored).
        **kwargs: likewise (``out_shape`` from ``FlopCounterMode``, ``scale``, ``attn_mask``).

    Returns:
        ``2·B·Lq·Lk·Eq + 2·B·Lq·Lk·Ev`` with ``B`` the product of the query's leading dimensions.

    Example:
        >>> attention_flops((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 4))
        5040
    """
    batch = math.prod(query[:-2])
    l_q, e_q = query[-2:]
    l_k, e_v = key[-2], value[-1]
    return 2 * batch * l_q * l_k * (e_q + e_v)


def attention_backward_flops(
    grad_out: Shape, query: Shape, key: Shape, value: Shape, *args: Any, **kwargs: Any
) -> int:
    """FLOPs of one attention backward: the four gradient matmuls, twice :func:`attention_flops`.

    Args:
        grad_out: gradient of the output (unused: its shape follows from the others).
        query: query shape ``(..., Lq, Eq)``.
        key: key shape ``(..., Lk, Eq)``.
        value: value shape ``(..., Lk, Ev)``.
        *args: the kernel's other arguments (ignored).
        **kwargs: likewise.

    Returns:
        ``2 * attention_flops(query, key, value)``; a kernel's recomputation of ``q @ k^T`` is not
        counted (see the module docstring).
    """
    return 2 * attention_flops(query, key, value)


def sdpa_formulas() -> dict[Any, Callable[..., int]]:
    """``custom_mapping`` for ``FlopCounterMode``: every SDPA kernel op this torch has → its formula.

    Returns:
        A dict from ``torch.ops.aten`` op packets to :func:`attention_flops` /
        :func:`attention_backward_flops`; ops a torch build lacks are left out.
    """
    formulas: dict[Any, Callable[..., int]] = {}
    for names, formula in (
        (SDPA_FORWARD_OPS, attention_flops),
        (SDPA_BACKWARD_OPS, attention_backward_flops),
    ):
        for name in names:
            if hasattr(torch.ops.aten, name):
                formulas[getattr(torch.ops.aten, name)] = formula
    return formulas


class _AttentionWatch(TorchDispatchMode):
    """Records the attention ops that reach the dispatcher without a FLOP formula."""

    def __init__(self, known: Any) -> None:
        super().__init__()
        self.known = known
        self.missed: set[str] = set()

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        packet = func.overloadpacket
        if "attention" in packet.__name__ and packet not in self.known:
            self.missed.add(str(packet))
        return func(*args, **(kwargs or {}))


class FlopCount:
    """Context manager counting matmul/conv FLOPs, attention included for every SDPA kernel.

    Attributes:
        counter: the underlying ``FlopCounterMode`` (per-module and per-op counts).

    Example:
        >>> q = torch.randn(1, 2, 5, 8)
        >>> with FlopCount() as flops:
        ...     _ = torch.nn.functional.scaled_dot_product_attention(q, q, q)
        >>> flops.total, flops.uncounted
        (1600, ())
    """

    def __init__(self) -> None:
        self.counter = FlopCounterMode(display=False, custom_mapping=sdpa_formulas())
        self._watch = _AttentionWatch(self.counter.flop_registry)
        self._stack = ExitStack()

    def __enter__(self) -> FlopCount:
        self._stack.enter_context(self.counter)
        self._stack.enter_context(self._watch)  # innermost: sees every op before the counter does
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.__exit__(exc_type, exc, tb)

    @property
    def total(self) -> int:
        """FLOPs counted so far."""
        return int(self.counter.get_total_flops())

    @property
    def uncounted(self) -> tuple[str, ...]:
        """Names of attention ops that ran without a formula (sorted; empty when all were counted)."""
        return tuple(sorted(self._watch.missed))


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of running ``fn()`` (forward and, if ``fn`` calls it, backward).

    Args:
        fn: the work to count; run once.

    Returns:
        Matmul and convolution FLOPs, attention counted whichever SDPA kernel ran.

    Raises:
        RuntimeError: an attention op without a FLOP formula ran (the count would leave it out).
    """
    with FlopCount() as flops:
        fn()
    if flops.uncounted:
        raise RuntimeError(f"no FLOP formula for {', '.join(flops.uncounted)}: the count would leave it out")
    return flops.total
