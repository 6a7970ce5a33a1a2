"""Where to run: the default device and a one-line refusal of an unavailable one."""

from __future__ import annotations

import torch

from dfq.errors import DfqError

__all__ = ["default_device", "check_device"]


def default_device() -> str:
    """``cuda`` when a CUDA device is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | None) -> str:
    """``device`` (None: :func:`default_device`), refused with one line when it cannot run here.

    >>> check_device("cpu")
    'cpu'

    Raises:
        DfqError: an unknown device, or CUDA asked for where there is none.
    """
    device = device or default_device()
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda", "meta"):
        raise DfqError(f"unknown device {device!r}; use cpu or cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        raise DfqError(f"--device {device} requested but CUDA is not available; use --device cpu")
    return device
