"""Calibrator protocol and registry (the ModelOpt ``_Calibrator`` contract, three methods).

A calibrator sees tensors and returns a range; it never walks a model. ``collect`` is called once
per observed tensor during calibration, ``compute_range`` returns ``(lo, hi)`` tensors (scalars for
per-tensor calibration, shape ``(C,)`` when constructed with ``axis``), ``reset`` forgets everything.

Every calibrator is constructed with the same keyword arguments, so the quantizer can build any of
them from a :class:`dfq.config.QuantSpec`:

* ``num_bits`` -- target bit width (range searches quantize with it),
* ``symmetric`` -- the range will be used as ``[-amax, amax]`` with zero-point 0; calibrators then
  return ``(-amax, amax)``,
* ``paper`` -- use the PSAQ-ViT scale divisor when simulating quantization (see :mod:`dfq.numerics`),
* ``axis`` -- per-channel statistics along this axis of the collected tensors, or None,

plus algorithm-specific keyword arguments (``percentile=99.99``, ``num_bins=2048``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Calibrator", "CALIBRATORS", "register_calibrator", "get_calibrator", "calibrator_names"]


@runtime_checkable
class Calibrator(Protocol):
    """What the quantizer asks of a calibrator."""

    def collect(self, x: Tensor) -> None:
        """Accumulate statistics of one observed tensor (detached, any device)."""

    def compute_range(self) -> tuple[Tensor, Tensor]:
        """Return ``(lo, hi)`` from everything collected since the last reset."""

    def reset(self) -> None:
        """Forget all collected statistics."""


CALIBRATORS: dict[str, Callable[..., Calibrator]] = {}


def register_calibrator(name: str) -> Callable[[type], type]:
    """Class decorator: register a calibrator under ``name`` (names are unique)."""

    def decorator(cls: type) -> type:
        if name in CALIBRATORS:
            raise ValueError(f"calibrator {name!r} is registered twice")
        CALIBRATORS[name] = cls
        return cls

    return decorator


def calibrator_names() -> list[str]:
    """Registered calibrator names, sorted (the CLI's ``--calibrator`` choices)."""
    return sorted(CALIBRATORS)


def get_calibrator(name: str, **kwargs: object) -> Calibrator:
    """Build the calibrator registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    try:
        cls = CALIBRATORS[name]
    except KeyError:
        raise ValueError(f"unknown calibrator {name!r}; choose from {', '.join(calibrator_names())}") from None
    return cls(**kwargs)
