"""dfq.preview: the masked preview blackens the patches SMI stopped optimising."""

from __future__ import annotations

import pytest
import torch

from dfq.preview import masked_preview

pytestmark = pytest.mark.usefixtures("one_thread")


def test_masked_preview_blackens_stopped_patches() -> None:
    images = torch.zeros(1, 3, 4, 4)  # normalized 0 with mean .5 / std .5 -> pixel .5
    keep = torch.tensor([[0, 1, 4]])  # patches (0,0) and (1,1) of a 2x2 grid of 2-px patches
    out = masked_preview(images, keep, (0.5,) * 3, (0.5,) * 3, patch=2)
    expected = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])
    assert torch.equal(out[0, 1], expected)
    assert torch.equal(masked_preview(images, None, (0.5,) * 3, (0.5,) * 3, 2), torch.full_like(images, 0.5))
