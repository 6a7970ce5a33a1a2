"""dfq.inversion._checkpoint: an inversion checkpoint of an older format (no record of the model weights)
or of a newer dfq is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import dfq
from dfq.errors import DfqError


def test_old_and_newer_inversion_checkpoints_are_refused(tmp_path: Path) -> None:
    model = dfq.load_model("test_vit", pretrained=False)
    ckpt = tmp_path / "c.ckpt"
    settings = {"num_images": 1, "iterations": 1, "checkpoint_path": str(ckpt), "progress": False}
    dfq.invert(model, "deepinversion", **settings)
    for version, message in ((1, "does not record the model weights"), (99, "newer dfq")):
        state = torch.load(ckpt, weights_only=True)
        state["version"] = version
        torch.save(state, ckpt)
        with pytest.raises(DfqError, match=message):
            dfq.invert(model, "deepinversion", **settings)
