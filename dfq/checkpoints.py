"""Local checkpoint files: hashing, reading a state_dict safely, loading it with a readable diff.

``.pth``/``.pt``/``.bin``/any torch file is read with ``torch.load(weights_only=True)`` (no code in the
file runs) and ``.safetensors`` with safetensors; the usual training wrappers and a ``module.`` /
``_orig_mod.`` prefix are unwrapped; a mismatch is reported as counts and the first keys, in one line.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfq.errors import DfqError

__all__ = ["checkpoint_sha256", "load_checkpoint_state", "load_state_into", "nonfinite_names", "check_finite", "weights_sha256", "tensors_sha256"]

_WRAPPER_KEYS = ("model", "state_dict", "model_state", "model_state_dict")
_STRIP_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile


def checkpoint_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks (constant memory).

    Args:
        path: The file to hash.
        chunk_size: Bytes read per chunk.

    Returns:
        The hex digest.

    Raises:
        DfqError: The file does not exist or cannot be read.
    """
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(chunk_size):
                digest.update(chunk)
    except OSError as e:
        raise DfqError(f"cannot read checkpoint {path}: {e.strerror or e}; check the path") from e
    return digest.hexdigest()


def nonfinite_names(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity.

    >>> nonfinite_names([("a", torch.ones(2)), ("b", torch.tensor([1.0, float("inf")])), ("c", torch.arange(3))])
    ['b']
    """
    return [
        name
        for name, t in named
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def check_finite(
    named: Iterable[tuple[str, torch.Tensor]],
    what: str,
    consequence: str = "a model with non-finite weights cannot be quantized or evaluated",
) -> None:
    """Refuse tensors holding NaN or infinity (a model would score garbage and export nonsense ranges).

    Args:
        named: ``(name, tensor)`` pairs, e.g. ``state.items()`` or ``model.named_parameters()``.
        what: what the tensors are, for the message (e.g. ``"checkpoint w.pth"``).
        consequence: the end of the message: why it matters.

    Raises:
        DfqError: some tensor is not finite; the message counts them and names the first three.
    """
    bad = nonfinite_names(named)
    if bad:
        more = f", … +{len(bad) - 3}" if len(bad) > 3 else ""
        raise DfqError(
            f"{what} holds NaN or infinite values in {len(bad)} tensor(s) ({', '.join(bad[:3])}{more}); {consequence}"
        )


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's state (:func:`tensors_sha256` of its ``state_dict``, in order).

    The identity of the weights themselves, whatever file (or none) they came from; used to refuse
    resuming an inversion with other weights. One pass over the weights (about a second for DeiT-Base
    on a CPU).
    """
    return tensors_sha256(model.state_dict().items())


def tensors_sha256(named: Iterable[tuple[str, Any]]) -> str:
    """SHA-256 of named values: every entry's name, dtype, shape and bytes in the given order
    (non-tensors by their ``repr``, e.g. a module's extra state or a missing tensor's None).

    >>> tensors_sha256([("a", torch.zeros(2))]) == tensors_sha256([("a", torch.zeros(2))])
    True
    >>> tensors_sha256([("a", torch.zeros(2))]) == tensors_sha256([("a", torch.zeros(2, dtype=torch.int64))])
    False
    """
    digest = hashlib.sha256()
    for name, tensor in named:
        if not isinstance(tensor, torch.Tensor):  # a module's extra state
            digest.update(f"{name}|{tensor!r}|".encode())
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def load_checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from a local checkpoint file onto the CPU.

    ``.safetensors`` files are read with safetensors; anything else (``.pth``, ``.pt``, ``.bin``,
    ``.th``, …) with ``torch.load(map_location="cpu", weights_only=True)``, so no code in the file runs.
    Training wrappers ``{"model": …}``, ``{"state_dict": …}``, ``{"model_state": …}`` (and
    ``{"model_state_dict": …}``) are unwrapped, and a ``module.`` (DataParallel) or ``_orig_mod.``
    (torch.compile) prefix is stripped when every key carries it.

    Args:
        path: The checkpoint file.

    Returns:
        The state_dict, parameter name → tensor.

    Raises:
        DfqError: The file is missing, corrupt, holds no state_dict or non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise DfqError(f"checkpoint {path} does not exist or is not a file; check the path")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to decode means a bad file, reported in one line
        if isinstance(e, pickle.UnpicklingError):  # torch's own text advises weights_only=False: don't
            reason = "not a torch file of plain tensors; dfq loads with weights_only=True"
        else:
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}" if str(e).strip() else type(e).__name__
        raise DfqError(
            f"cannot read checkpoint {path} ({reason}); pass an intact state_dict file "
            "(torch.save(model.state_dict(), ...) or .safetensors)"
        ) from e
    state = _as_state_dict(obj, path)
    check_finite(state.items(), f"checkpoint {path}")
    return state


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap training wrappers and DataParallel prefixes; require a flat name → tensor mapping."""
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise DfqError(f"checkpoint {path} holds no state_dict (found {type(obj).__name__}); save model.state_dict()")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        shown = ", ".join(map(str, list(obj)[:6]))
        raise DfqError(
            f"checkpoint {path} is not a state_dict (top-level keys: {shown}); save model.state_dict(), "
            f"or one under {'/'.join(_WRAPPER_KEYS[:3])}"
        )
    state = {str(k): v for k, v in obj.items()}
    for prefix in _STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _state_dict_diff(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """Missing keys, unexpected keys and ``name (ckpt shape vs model shape)`` mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    return missing, unexpected, mismatched


def _format_diff(missing: list[str], unexpected: list[str], mismatched: list[str], first: int = 3) -> str:
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched)):
        if items:
            more = f", … +{len(items) - first}" if len(items) > first else ""
            parts.append(f"{len(items)} {label} ({', '.join(items[:first])}{more})")
    return "; ".join(parts)


def load_state_into(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True, source: str = "") -> None:
    """Load ``state`` into ``model`` with a readable diff instead of PyTorch's wall of keys.

    Args:
        model: The module to fill.
        state: Parameter name → tensor.
        strict: Every key must match by name and shape; otherwise only matching entries are loaded and
            the diff becomes a warning.
        source: Where ``state`` came from, for messages (e.g. the checkpoint path).

    Raises:
        DfqError: ``strict`` and the keys or shapes differ.
    """
    missing, unexpected, mismatched = _state_dict_diff(model, state)
    if missing or unexpected or mismatched:
        where = f" from {source}" if source else ""
        msg = f"state_dict{where} does not fit {type(model).__name__}: {_format_diff(missing, unexpected, mismatched)}"
        if strict:
            raise DfqError(f"{msg}; pass the checkpoint that matches this model (or a matching model name)")
        warnings.warn(msg, stacklevel=3)
        bad = {m.split(" ", 1)[0] for m in mismatched}
        state = {k: v for k, v in state.items() if k not in bad and k not in unexpected}
    model.load_state_dict(state, strict=strict)
