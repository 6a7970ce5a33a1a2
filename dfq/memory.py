"""Host memory: what the machine has free, and whether a calibration set of N images fits in it.

A set lives in host memory as float32 ``(N, C, H, W)``; a method works on one batch at a time (the
images, their gradients and two Adam moments: four copies). :func:`check_images_fit` compares that
lower bound with the memory available now (``psutil`` when installed, else ``/proc/meminfo``'s
``MemAvailable``) and refuses with one line before any work, instead of an allocation error hours in.
The estimate leaves the model and the activations out, so it never refuses a set that would fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dfq.errors import DfqError

__all__ = ["available_memory", "set_bytes", "check_images_fit"]

_WORKING_COPIES = 4
"""Copies of a batch an inversion holds while it works: images, gradients, two Adam moments."""


def available_memory() -> int | None:
    """Bytes of host memory available without swapping, or None where it cannot be read."""
    try:
        import psutil
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().available)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "MemAvailable":
                return int(value.split()[0]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def set_bytes(num_images: int, input_size: Sequence[int], batch_size: int = 0) -> int:
    """Bytes a set of ``num_images`` float32 images of ``input_size`` (C, H, W) needs, with a working batch.

    >>> set_bytes(10, (3, 4, 4), batch_size=2)
    3456
    """
    per_image = 4
    for d in input_size:
        per_image *= int(d)
    return (num_images + _WORKING_COPIES * min(max(batch_size, 0), num_images)) * per_image


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def check_images_fit(
    num_images: int, input_size: Sequence[int], *, batch_size: int = 0, available: int | None = None
) -> None:
    """Refuse a set that cannot fit in host memory, before any work.

    Args:
        num_images: images in the set.
        input_size: ``(C, H, W)`` of one image.
        batch_size: the batch the method works on (0: none).
        available: bytes available (None: :func:`available_memory`; nothing is checked when unknown).

    Raises:
        DfqError: the set (with its working batch) needs more than the available memory.

    >>> check_images_fit(10**8, (3, 224, 224), available=16 << 30)
    Traceback (most recent call last):
    ...
    dfq.errors.DfqError: 100000000 images need at least 54.8 TiB of memory (float32, 3x224x224 each), but 16.0 GiB is available; lower --num-images
    """
    need = set_bytes(num_images, input_size, batch_size)
    free = available_memory() if available is None else available
    if free is None or need <= free:
        return
    shape = "x".join(str(int(d)) for d in input_size)
    raise DfqError(
        f"{num_images} images need at least {_size(need)} of memory (float32, {shape} each), "
        f"but {_size(free)} is available; lower --num-images"
    )
