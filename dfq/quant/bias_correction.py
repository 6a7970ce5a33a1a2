"""Bias correction of weight-quantization error (Nagel et al., "Data-Free Quantization Through
Weight Equalization and Bias Correction", ICCV 2019, section 4.2, empirical variant).

Quantizing a weight ``W`` to ``W + dW`` shifts the expected output of the layer by
``dW @ E[x]``. When an input channel has a large mean (a positive ReLU/GELU output, a constant
region of an image) that shift is systematic, and per-channel rounding cannot see it: MobileNet-v1's
``blocks.1.1.conv_dw`` has a near zero-sum 3x3 kernel fed by an input of mean ~2.8, whose rounding
error becomes a DC offset of ~0.1 sigma after its BatchNorm. Subtracting the expected shift from the
layer's output (a float bias, which TensorRT folds into the kernel's bias) removes it.

``E[x]`` is the per-channel mean of the layer's float input over the calibration set (real or
synthetic images); it is collected during :func:`dfq.quant.calibrate.calibrate`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["expected_output_shift", "channel_mean"]


def channel_mean(x: Tensor, conv: bool) -> tuple[Tensor, int]:
    """Sum over everything but the channel axis and the number of summed elements per channel.

    ``conv`` inputs are ``(N, C, H, W)`` (channel axis 1); linear inputs ``(..., C)`` (last axis).

    >>> s, n = channel_mean(torch.ones(2, 3, 4, 4), conv=True)
    >>> s.tolist(), n
    ([32.0, 32.0, 32.0], 32)
    """
    x = x.detach().float()
    if conv:
        return x.sum(dim=(0, 2, 3)), x.numel() // x.shape[1]
    return x.reshape(-1, x.shape[-1]).sum(dim=0), x.numel() // x.shape[-1]


def expected_output_shift(delta_w: Tensor, input_mean: Tensor, groups: int = 1) -> Tensor:
    """``E[(W + dW) x] - E[W x] = dW · E[x]`` per output channel (padding effects ignored).

    Args:
        delta_w: weight error, ``(out, in)`` for Linear or ``(out, in/groups, kh, kw)`` for Conv.
        input_mean: per-input-channel mean of the layer input, ``(in,)``.
        groups: convolution groups.

    Returns:
        ``(out,)`` expected shift of each output channel.

    >>> dw = torch.tensor([[[[0.5, -0.5]]], [[[1.0, 1.0]]]])   # depthwise, 2 channels, 1x2 kernels
    >>> expected_output_shift(dw, torch.tensor([3.0, 2.0]), groups=2).tolist()
    [0.0, 4.0]
    >>> expected_output_shift(torch.tensor([[1.0, -2.0]]), torch.tensor([3.0, 1.0])).tolist()
    [1.0]
    """
    if delta_w.dim() == 2:
        return delta_w.float() @ input_mean.float()
    out_ch, in_per_group = delta_w.shape[:2]
    summed = delta_w.float().sum(dim=tuple(range(2, delta_w.dim())))  # (out, in/groups)
    means = input_mean.float().reshape(groups, in_per_group)  # (groups, in/groups)
    group_of_out = torch.arange(out_ch, device=delta_w.device) // (out_ch // groups)
    return (summed * means[group_of_out]).sum(dim=1)
