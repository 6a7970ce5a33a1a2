"""Helpers shared by test files in different folders: one definition each."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from dfq.config import preset
from dfq.errors import DfqError
from dfq.quant.calibrate import calibrate
from dfq.quant.transform import quantize_
from dfq.runs import RECIPE, save_quant_state, write_json


def _one_line(err: pytest.ExceptionInfo[DfqError]) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


SHAPE = (3, 64, 64)


def _timm_run(root: Path, scheme: str) -> tuple[nn.Module, Path]:
    """A run directory as ``dfq calibrate`` writes it for timm's ``test_vit`` (random weights)."""
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, img_size=SHAPE[1:]).eval()
    cfg = preset(*scheme.split("-")) if "-" in scheme else preset(scheme)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    qmodel = calibrate(quantize_(model, cfg), lambda m: m(x))
    run = root / f"run-{scheme}"
    run.mkdir()
    recipe = {
        "model": {"source": "timm", "name": "test_vit", "kwargs": {"img_size": list(SHAPE[1:])}},
        "quant": cfg.to_dict(),
        "data_config": {"input_size": list(SHAPE)},
    }
    write_json(run / RECIPE, recipe)
    save_quant_state(run, recipe, qmodel)
    return qmodel, run
