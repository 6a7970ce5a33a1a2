"""dfq.inversion.generator: CMI's generator (shape, range, size check) and the statistics of its
re-initialisation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dfq.inversion.generator import Generator, reset_generator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("size", [32, 64, (32, 48)])
def test_generator_shape_and_range(size: int | tuple[int, int]) -> None:
    gen = Generator(nz=16, ngf=8, img_size=size)
    out = gen(torch.randn(3, 16))
    h, w = (size, size) if isinstance(size, int) else size
    assert out.shape == (3, 3, h, w)
    assert out.min() >= 0 and out.max() <= 1
    assert gen.l1.out_features == 2 * 8 * (h // 4) * (w // 4)


def test_generator_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        Generator(img_size=30)


def test_reset_generator_statistics() -> None:
    gen = Generator(nz=256, ngf=64, img_size=32)
    for p in gen.parameters():
        nn.init.constant_(p, 5.0)
    reset_generator(gen, torch.Generator().manual_seed(1))
    w = gen.l1.weight  # 8192 × 256
    assert abs(w.std().item() - 0.02) < 5e-4 and abs(w.mean().item()) < 5e-4
    assert torch.all(gen.l1.bias == 0)
    bns = [m for m in gen.modules() if isinstance(m, nn.BatchNorm2d)]
    all_bn_w = torch.cat([m.weight for m in bns])
    assert abs(all_bn_w.mean().item() - 1) < 0.01 and 0.01 < all_bn_w.std().item() < 0.03
    assert all(torch.all(m.bias == 0) for m in bns)
    assert torch.all(gen.conv_blocks[-2].bias == 0)
    conv = gen.conv_blocks[2].weight
    assert abs(conv.std().item() - 0.02) < 1e-3
    a = reset_generator(copy.deepcopy(gen), torch.Generator().manual_seed(3))
    b = reset_generator(copy.deepcopy(gen), torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
