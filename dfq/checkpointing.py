"""Resumable state files: one atomic, versioned file per interruptible loop, refused by any other run.

A loop that runs for hours (an inversion, a distillation) saves its state every few hundred steps, so
an interruption costs at most that many. This module owns what every such loop shares; the loop's own
layout (positions, finished parts, live tensors) sits on top of it (e.g. :mod:`dfq.inversion._checkpoint`).

* :class:`StateFile`: the file, replaced atomically (:func:`dfq.atomic.atomic_write`), holding a header
  (``format`` = ``"dfq.checkpoint"``, ``kind`` = whose layout, ``version`` of that layout, ``identity``)
  beside the loop's payload. :meth:`StateFile.load` refuses a file of another format, kind or version
  and one whose identity differs from this run's, each with a message saying what to do;
* :func:`run_identity`: what must match on resume -- the model weights' sha256
  (:func:`dfq.checkpoints.weights_sha256`), the method, its config without the fields that may change
  across a resume (:data:`VOLATILE_FIELDS`), the seed, and any extra entries (data config, labels, ...);
* :func:`to_cpu` / :func:`to_device`: move nested dicts, lists and tuples of tensors (module and
  optimizer states) for saving and restoring.
"""

from __future__ import annotations

import dataclasses
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dfq.atomic import atomic_write
from dfq.checkpoints import weights_sha256
from dfq.errors import DfqError

__all__ = ["FORMAT", "VOLATILE_FIELDS", "StateFile", "config_key", "run_identity", "to_cpu", "to_device"]

FORMAT = "dfq.checkpoint"
"""The ``format`` entry of every state file."""

VOLATILE_FIELDS = ("checkpoint_path", "checkpoint_every", "log_every")
"""Config fields a resumed run may change (where and how often it saves, how often it logs)."""


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor detached and on the CPU (dicts, lists and tuples walked).

    >>> to_cpu({"a": [torch.ones(1, requires_grad=True)], "b": 2})
    {'a': [tensor([1.])], 'b': 2}
    """
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_cpu(v) for v in value)
    return value


def to_device(value: Any, device: torch.device | str) -> Any:
    """``value`` with every tensor moved to ``device`` (dicts, lists and tuples walked)."""
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_device(v, device) for v in value)
    return value


def config_key(config: Any, volatile: tuple[str, ...] = VOLATILE_FIELDS) -> dict[str, Any]:
    """A config dataclass as a dict, without the ``volatile`` fields.

    >>> @dataclasses.dataclass
    ... class C:
    ...     lr: float = 0.1
    ...     checkpoint_path: str | None = None
    >>> config_key(C(checkpoint_path="a.ckpt"))
    {'lr': 0.1}
    """
    d = dataclasses.asdict(config)
    for key in volatile:
        d.pop(key, None)
    return d


def run_identity(model: nn.Module, method: str, config: Any, seed: int, **extra: Any) -> dict[str, Any]:
    """What a state file must match to be resumed: weights, method, settings, seed and ``extra``.

    Args:
        model: the model whose weights the run uses (hashed: :func:`dfq.checkpoints.weights_sha256`).
        method: the loop's method name.
        config: the method's frozen config dataclass (compared without :data:`VOLATILE_FIELDS`).
        seed: the run's seed.
        **extra: more entries that must match (tensors compare by value).
    """
    return {"model_sha256": weights_sha256(model), "method": method, "config": config_key(config), "seed": seed, **extra}


def _same(a: Any, b: Any) -> bool:
    """Equality for identity entries: tensors by shape, dtype and value; lists and tuples alike."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (
            isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and a.dtype == b.dtype
            and torch.equal(a.cpu(), b.cpu())
        )  # fmt: skip
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _read(path: Path) -> Any:
    """The object in a state file, read with ``weights_only=True``: a pickle that would run code is
    refused, never run.

    Raises:
        DfqError: the file cannot be read (a text file, a truncated file, a pickle of other objects),
            in one line that says what to do; torch's own advice (``weights_only=False``) is not repeated.
    """
    try:
        with warnings.catch_warnings():  # torch warns of the pickle protocol of files it did not write
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- any bytes may be here, and every failure means: unreadable
        why = type(e).__name__ + (", refused by torch's weights-only loader" if isinstance(e, pickle.UnpicklingError) else "")
        raise DfqError(f"{path} is not a readable dfq checkpoint ({why}), so nothing can resume from it; delete it to start over") from None


@dataclass(frozen=True)
class StateFile:
    """A resumable state file of one run.

    Attributes:
        path: the file.
        kind: whose layout the payload has (e.g. ``"inversion"``).
        version: the version of that layout this code writes.
        identity: what the file must match to be resumed (:func:`run_identity`).
        older: why each older version is refused (``{version: reason}``), for the message.

    >>> import tempfile
    >>> f = StateFile(Path(tempfile.mkdtemp()) / "run.ckpt", "demo", 1, {"method": "a", "seed": 0})
    >>> f.load() is None
    True
    >>> f.save({"step": 3}); f.load()["step"]
    3
    >>> StateFile(f.path, "demo", 1, {"method": "a", "seed": 1}).load()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dfq.errors.DfqError: checkpoint ... was written by a different 'a' run (seed differs); delete it or pick another checkpoint path
    """

    path: Path
    kind: str
    version: int
    identity: Mapping[str, Any]
    older: Mapping[int, str] = field(default_factory=dict)

    def save(self, payload: Mapping[str, Any]) -> None:
        """Write the header and ``payload`` atomically (the folder is created)."""
        state = {"format": FORMAT, "kind": self.kind, "version": self.version, "identity": dict(self.identity)}
        state.update(payload)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))

    def load(self) -> dict[str, Any] | None:
        """The saved state (header and payload), or None when the file does not exist.

        Raises:
            DfqError: an unreadable file (never unpickled beyond tensors and plain data), not a dfq
                state file, another kind or version, or another run's identity.
        """
        path = Path(self.path)
        if not path.exists():
            return None
        state = _read(path)
        fmt = state.get("format") if isinstance(state, dict) else None
        if fmt != FORMAT:
            if isinstance(fmt, str) and fmt.startswith("dfq."):
                raise DfqError(f"{path} was written by an older dfq ({fmt} version {state.get('version')}); delete it")
            raise DfqError(f"{path} is not a dfq checkpoint; delete it or pick another path")
        if state.get("kind") != self.kind:
            raise DfqError(f"{path} is a {state.get('kind')} checkpoint, not a {self.kind} one; pick another path")
        self._check_version(state.get("version"))
        self._check_identity(state.get("identity") or {})
        return state

    def _check_version(self, version: Any) -> None:
        if isinstance(version, int) and version > self.version:
            raise DfqError(f"{self.path} was written by a newer dfq (format {version}); upgrade dfq")
        if version != self.version:
            reason = self.older.get(version, "has an older layout") if isinstance(version, int) else "has no version"
            raise DfqError(
                f"{self.path} is a version-{version} {self.kind} checkpoint, which {reason} "
                f"(this dfq writes version {self.version}); delete it"
            )

    def _check_identity(self, saved: Mapping[str, Any]) -> None:
        mine, theirs = self.identity.get("model_sha256"), saved.get("model_sha256")
        if mine != theirs:
            raise DfqError(
                f"checkpoint {self.path} was written with other model weights (sha256 {str(theirs)[:12]}…, "
                f"these are {str(mine)[:12]}…); resume with the model it was made from, or delete it"
            )
        differ = [k for k in sorted({*saved, *self.identity}) if not _same(saved.get(k), self.identity.get(k))]
        if differ:
            raise DfqError(
                f"checkpoint {self.path} was written by a different {saved.get('method')!r} run "
                f"({', '.join(differ)} differ{'s' if len(differ) == 1 else ''}); delete it or pick another checkpoint path"
            )
