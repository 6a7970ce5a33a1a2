"""The small convolutional image generator of CMI (Fang et al., IJCAI 2021; zju-vipa/DataFree).

``Generator(nz, ngf, img_size, nc)``: ``Linear(nz → 2·ngf·(H/4)·(W/4))`` → reshape → BN → ×2 upsample →
Conv3×3 (no bias) → BN → LeakyReLU(0.2) → ×2 upsample → Conv3×3 (2·ngf → ngf, no bias) → BN →
LeakyReLU(0.2) → Conv3×3 (ngf → nc) → Sigmoid, so images come out in [0, 1] (ALGORITHMS.md §2.2).
:func:`reset_generator` is the DataFree ``reset_model``: Conv/Linear weights N(0, 0.02), biases 0,
BN weight N(1, 0.02), BN bias 0; CMI calls it before every synthesis batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Generator", "reset_generator"]


class Generator(nn.Module):
    """Latent code ``(B, nz)`` → images ``(B, nc, H, W)`` in [0, 1].

    Args:
        nz: Latent size.
        ngf: Base width (the trunk has ``2·ngf`` channels, the last hidden layer ``ngf``).
        img_size: Output side ``S`` or ``(H, W)``; each must be divisible by 4.
        nc: Output channels.
    """

    def __init__(
        self, nz: int = 256, ngf: int = 64, img_size: int | tuple[int, int] = 32, nc: int = 3
    ) -> None:
        super().__init__()
        height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if min(nz, ngf, nc) < 1:
            raise ValueError(f"nz, ngf and nc must be >= 1, got {nz}, {ngf}, {nc}")
        if height < 4 or width < 4 or height % 4 or width % 4:
            raise ValueError(f"generator image size must be divisible by 4, got {height}×{width}")
        self.nz, self.ngf, self.nc = nz, ngf, nc
        self.init_size = (height // 4, width // 4)
        self.l1 = nn.Linear(nz, 2 * ngf * self.init_size[0] * self.init_size[1])
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(2 * ngf),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, 2 * ngf, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, nc, 3, stride=1, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: Tensor) -> Tensor:
        out = self.l1(z.flatten(1))
        out = out.view(out.shape[0], 2 * self.ngf, *self.init_size)
        return self.conv_blocks(out)


@torch.no_grad()
def reset_generator(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialise every Conv/ConvTranspose/Linear and BatchNorm layer of ``module`` in place.

    Conv and Linear weights ~ N(0, 0.02) with zero bias; BatchNorm weights ~ N(1, 0.02) with zero bias
    (running statistics are reset too). Draws come from ``generator`` (a CPU generator) when given.

    Returns:
        ``module``.
    """

    def normal_(param: Tensor, mean: float) -> None:
        draw = torch.empty(param.shape, dtype=param.dtype).normal_(mean, 0.02, generator=generator)
        param.copy_(draw)

    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            normal_(m.weight, 0.0)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            if m.affine:
                normal_(m.weight, 1.0)
                m.bias.zero_()
            m.reset_running_stats()
    return module
