"""Registry of calibration-data sources: name -> (frozen config class, inverter function).

An inverter turns a model into a :class:`dfq.data.CalibrationSet` without real data. The CLI's
``--inversion`` and ``dfq invert --method`` choices come from :func:`inverter_names`; an unknown
name fails with the list of valid ones.

Inverter signature::

    inverter(model, config, *, data_cfg: dict[str, Any], device="cpu", progress=True) -> CalibrationSet

``data_cfg`` is the model's full data config, ``dfq.models.data_config(model, **overrides)``
(``input_size``, ``mean``, ``std``, ``crop_pct``, ``interpolation``, ``crop_mode``), computed once by
the caller: an inverter never recomputes it, so a caller's overrides (e.g. mean/std 0.5) reach the
image size, the clipping bounds and the preprocessing alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from dfq.data import CalibrationSet
from dfq.errors import DfqError

__all__ = ["Inverter", "InverterEntry", "register_inverter", "get_inverter", "inverter_names"]

Inverter = Callable[..., CalibrationSet]


@dataclass(frozen=True)
class InverterEntry:
    name: str
    config_cls: type
    fn: Inverter
    families: tuple[str, ...]  # model families it supports: "vit", "cnn", "other"

    def make_config(self, **kwargs: Any) -> Any:
        return self.config_cls(**kwargs)


_INVERTERS: dict[str, InverterEntry] = {}


def register_inverter(name: str, config_cls: type, families: tuple[str, ...]) -> Callable[[Inverter], Inverter]:
    """Decorator registering ``fn`` as the inverter ``name`` with its frozen config class."""

    def decorator(fn: Inverter) -> Inverter:
        if name in _INVERTERS:
            raise ValueError(f"inverter {name!r} is registered twice")
        _INVERTERS[name] = InverterEntry(name, config_cls, fn, families)
        return fn

    return decorator


def inverter_names() -> list[str]:
    return sorted(_INVERTERS)


def get_inverter(name: str) -> InverterEntry:
    try:
        return _INVERTERS[name]
    except KeyError:
        raise DfqError(f"unknown inversion method {name!r}; choose from {', '.join(inverter_names())}") from None


def check_family(entry: InverterEntry, model: nn.Module, family: str) -> None:
    if family not in entry.families:
        raise DfqError(
            f"inversion {entry.name!r} supports {'/'.join(entry.families)} models, not {family} "
            f"({type(model).__name__})"
        )
