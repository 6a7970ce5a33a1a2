"""The neutral parts every inverter uses beside the shared loop (:mod:`dfq.inversion._loop`).

:func:`frozen_eval` (parameters frozen, eval mode, the caller's state restored), :func:`pixel_bounds`
(the valid pixel range in normalized space), :func:`keep_best` (the best iterate kept as a real copy,
with no host synchronisation) and :class:`NonFiniteWatch` (the first NaN/Inf iteration, recorded on
the device).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from dfq.errors import DfqError

__all__ = ["frozen_eval", "pixel_bounds", "keep_best", "NonFiniteWatch"]


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


def keep_best(
    best_loss: Tensor, loss: Tensor, best: Sequence[Tensor], current: Sequence[Tensor]
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Keep the tensors of the lowest loss seen so far, without a host synchronisation.

    Returns new tensors (``torch.where``), never views of ``current``, so later in-place changes of the
    current iterate (an optimizer step on the pixels) cannot alter the kept one. A NaN loss never
    replaces the best.

    >>> loss, (kept,) = keep_best(torch.tensor(2.0), torch.tensor(1.0), (torch.zeros(2),), (torch.ones(2),))
    >>> float(loss), kept.tolist()
    (1.0, [1.0, 1.0])

    Args:
        best_loss: Scalar best loss so far (``inf`` at the start).
        loss: Scalar loss of the current iterate (detached).
        best: Kept tensors.
        current: Tensors of the current iterate, shaped like ``best``.
    """
    better = loss < best_loss
    kept = tuple(torch.where(better, c.detach(), b) for b, c in zip(best, current, strict=True))
    return torch.where(better, loss, best_loss), kept


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

    def check(self, method: str, advice: str) -> None:
        """Raise :class:`DfqError` if a non-finite loss was seen.

        Raises:
            DfqError: naming the first bad iteration and ``advice`` (what to try).
        """
        first = int(self.first_bad)
        if first >= 0:
            raise DfqError(f"{method} loss became NaN/Inf at iteration {first}; {advice}")
