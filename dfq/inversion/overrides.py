"""``KEY=VALUE`` strings from the command line -> typed fields of a frozen inversion config.

Every hyperparameter of every inverter is a field of its frozen config dataclass, so the CLI exposes
them all generically (``--set lr=0.2 --set schedule=50:0.3,100:0.3``) without a flag per field.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from dfq.errors import DfqError

__all__ = ["parse_overrides"]


def _convert(text: str, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        errors = []
        for arg in options:
            try:
                return _convert(text, arg, key)
            except ValueError as e:  # DfqError included
                errors.append(e)
        if len(options) == 1 and isinstance(errors[0], DfqError):
            raise errors[0]  # X | None: say what is wrong with the X
        raise DfqError(f"--set {key}={text}: cannot convert to {hint}")
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise DfqError(f"--set {key}={text}: expected true or false")
    if hint in (int, float, str):
        try:
            value = hint(text)
        except ValueError:
            raise DfqError(f"--set {key}={text}: expected {hint.__name__}") from None
        if hint is float and not math.isfinite(value):  # no setting means anything by nan or inf
            raise DfqError(f"--set {key}={text}: expected a finite number")
        return value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: comma-separated items
            return tuple(_convert(item, args[0], key) for item in text.split(",") if item)
        parts = text.replace(":", ",").split(",") if len(args) > 1 else [text]
        if len(parts) != len(args):
            raise DfqError(f"--set {key}={text}: expected {len(args)} comma-separated values")
        return tuple(_convert(p, a, key) for p, a in zip(parts, args, strict=True))
    raise DfqError(f"--set {key}: fields of type {hint} cannot be set from the command line")


def parse_overrides(config_cls: type, items: typing.Iterable[str]) -> dict[str, Any]:
    """Typed keyword arguments for ``config_cls`` from ``KEY=VALUE`` strings.

    Raises:
        DfqError: malformed item, unknown field (the message lists the valid ones) or bad value
            (a float must be finite: ``nan`` and ``inf`` are refused).

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class C:
    ...     lr: float = 0.1
    ...     schedule: tuple[tuple[int, float], ...] = ()
    ...     betas: tuple[float, float] = (0.5, 0.99)
    ...     iterations: int | None = None
    >>> parse_overrides(C, ["lr=0.25", "schedule=50:0.3,100:0.3", "betas=0.9,0.999", "iterations=2000"])
    {'lr': 0.25, 'schedule': ((50, 0.3), (100, 0.3)), 'betas': (0.9, 0.999), 'iterations': 2000}
    >>> parse_overrides(C, ["iterations=none"])
    {'iterations': None}
    """
    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise DfqError(f"--set expects KEY=VALUE, got {item!r}")
        if key not in fields:
            raise DfqError(f"unknown setting {key!r} for {config_cls.__name__}; valid: {', '.join(sorted(fields))}")
        hint = hints[key]
        if typing.get_origin(hint) is tuple and typing.get_args(hint)[1:] == (Ellipsis,):
            inner = typing.get_args(hint)[0]
            if typing.get_origin(inner) is tuple:  # tuple of pairs: "50:0.3,100:0.3"
                out[key] = tuple(_convert(pair, inner, key) for pair in value.split(",") if pair)
                continue
        out[key] = _convert(value, hint, key)
    return out
