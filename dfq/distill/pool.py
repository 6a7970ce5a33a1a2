"""The training images of a distillation run: a pool that grows by whole calibration sets.

The static loop fills it once (a set from ``dfq invert``, or real images); the alternating loop adds
one synthesized batch per round, and the pool is part of the run's resumable state. Images stay in the
teacher's input space (where they were made); each batch is drawn with replacement from the whole pool
by the run's seeded generator (SMI's recipe: one random batch from everything synthesized so far).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from dfq.checkpoints import tensors_sha256
from dfq.data import CalibrationSet
from dfq.errors import DfqError

__all__ = ["Pool", "Batch", "set_digest"]


class Batch(NamedTuple):
    """Images ``(B, C, H, W)``, labels ``(B,)`` (-1: none) and kept-token ids ``(B, k)`` or None."""

    images: Tensor
    labels: Tensor
    keep: Tensor | None


def set_digest(calib: CalibrationSet) -> str:
    """sha256 of a set's images, labels and kept-token ids (what a resumed run must train on again;
    :func:`dfq.checkpoints.tensors_sha256`).

    >>> a = CalibrationSet(torch.zeros(1, 3, 2, 2))
    >>> set_digest(a) == set_digest(CalibrationSet(torch.zeros(1, 3, 2, 2))), len(set_digest(a))
    (True, 64)
    """
    return tensors_sha256([("images", calib.images), ("labels", calib.labels), ("keep_index", calib.keep_index)])


class Pool:
    """A growing pool of training images.

    >>> p = Pool()
    >>> p.add(CalibrationSet(torch.zeros(3, 3, 4, 4), labels=torch.tensor([0, 1, 2])))
    >>> b = p.sample(5, torch.Generator().manual_seed(0))
    >>> len(p), tuple(b.images.shape), b.keep is None
    (3, (5, 3, 4, 4), True)
    """

    def __init__(self) -> None:
        self.images: Tensor | None = None
        self.labels: Tensor | None = None
        self.keep: Tensor | None = None
        self.rounds = 0  # sets added

    def __len__(self) -> int:
        return 0 if self.images is None else int(self.images.shape[0])

    @property
    def sparse(self) -> bool:
        return self.keep is not None

    def add(self, calib: CalibrationSet) -> None:
        """Append a set (labels -1 where it has none).

        Raises:
            DfqError: its image size, or its sparsity (kept-token count), differs from the pool's.
        """
        images = calib.images.detach().cpu().float()
        labels = calib.labels if calib.labels is not None else torch.full((len(calib),), -1, dtype=torch.int64)
        keep = calib.keep_index
        if self.images is None:
            self.images, self.labels, self.keep = images, labels.cpu(), None if keep is None else keep.cpu()
        else:
            if images.shape[1:] != self.images.shape[1:]:
                raise DfqError(f"a set of {tuple(images.shape[1:])} images cannot join a pool of {tuple(self.images.shape[1:])}")
            if (keep is None) != (self.keep is None) or (keep is not None and keep.shape[1] != self.keep.shape[1]):
                raise DfqError("sparse sets join a pool only with the same number of kept tokens (and dense with dense)")
            self.images = torch.cat([self.images, images])
            self.labels = torch.cat([self.labels, labels.cpu()])
            if keep is not None:
                self.keep = torch.cat([self.keep, keep.cpu()])
        self.rounds += 1

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` images drawn uniformly with replacement.

        Raises:
            DfqError: the pool is empty.
        """
        if self.images is None:
            raise DfqError("the training pool is empty: give a calibration set or an inversion method")
        idx = torch.randint(0, len(self), (n,), generator=generator)
        keep = None if self.keep is None else self.keep[idx]
        return Batch(self.images[idx], self.labels[idx], keep)

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images, "labels": self.labels, "keep": self.keep, "rounds": self.rounds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images, self.labels, self.keep = state["images"], state["labels"], state["keep"]
        self.rounds = int(state["rounds"])
