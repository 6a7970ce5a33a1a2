"""Calibration data from the model alone: the inversion registry and ``invert()``.

Each method module registers itself on import (``@register_inverter``); importing this package
imports them all, so ``inverter_names()`` lists every method.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Importing a method module registers it.
from dfq.inversion import cmi, deepinversion, folder, noise, smi  # noqa: F401
from dfq.inversion.registry import check_family, get_inverter, inverter_names, register_inverter

__all__ = ["invert", "inverter_names", "register_inverter", "get_inverter"]


def invert(
    model: nn.Module,
    method: str = "noise",
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    data_cfg: dict[str, Any] | None = None,
    **config: Any,
):  # noqa: ANN201  (returns dfq.data.CalibrationSet)
    """Synthesize a calibration set from ``model`` with the registered ``method``.

    Args:
        model: the float model (left unchanged).
        method: registry name (``dfq.inversion.inverter_names()``).
        device: where to run.
        progress: show a progress bar.
        data_cfg: the model's data config (:func:`dfq.models.data_config` with any overrides, e.g.
            ``data_config(model, mean=(0.5,) * 3, std=(0.5,) * 3)``); None: the model's own.
        **config: fields of the method's frozen config (e.g. ``num_images=32, seed=0``).
    """
    from dfq.models import data_config, model_family

    entry = get_inverter(method)
    check_family(entry, model, model_family(model))
    cfg = entry.make_config(**config)
    data_cfg = data_config(model) if data_cfg is None else data_cfg
    return entry.fn(model, cfg, data_cfg=data_cfg, device=device, progress=progress)
