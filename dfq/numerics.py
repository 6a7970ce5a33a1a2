"""Pure quantization math: integer ranges, scale/zero-point from a range, fake quantization.

Everything here is a function of tensors and integers, with no module state, so both
:mod:`dfq.quant` and :mod:`dfq.calibrators` build on it and neither imports the other.

Two numerics are supported (see ``docs/quantization.md``):

* ``trt`` -- what TensorRT executes: symmetric, zero-point 0, ``scale = amax / (2^(b-1) - 1)``
  (amax/127 at 8 bits, amax/7 at 4 bits), values clamped to ``[-2^(b-1), 2^(b-1) - 1]`` with
  round-half-to-even (TensorRT's IQuantizeLayer rule).
* ``paper`` -- PSAQ-ViT/SMI: weights symmetric with ``scale = amax / ((2^b - 1) / 2)``
  (amax/127.5 at 8 bits), activations asymmetric unsigned with
  ``scale = (max - min) / (2^b - 1)`` and ``zp = -round(min / scale)``. Unlike the reference code we
  always include 0 in an asymmetric range, so an all-positive tensor is not clipped at its top.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "int_range",
    "symmetric_scale",
    "asymmetric_qparams",
    "qparams_from_range",
    "fake_quantize",
    "fake_quantize_learned",
    "quantize_to_int",
]


def int_range(num_bits: int, signed: bool = True) -> tuple[int, int]:
    """Integer range of a ``num_bits`` code.

    Args:
        num_bits: bit width, 2..16.
        signed: two's-complement range if True, else ``[0, 2^b - 1]``.

    Returns:
        ``(qmin, qmax)``.

    >>> int_range(8)
    (-128, 127)
    >>> int_range(4)
    (-8, 7)
    >>> int_range(8, signed=False)
    (0, 255)
    """
    if not 2 <= num_bits <= 16:
        raise ValueError(f"num_bits must be in [2, 16], got {num_bits}")
    if signed:
        return -(2 ** (num_bits - 1)), 2 ** (num_bits - 1) - 1
    return 0, 2**num_bits - 1


def _positive(scale: Tensor) -> Tensor:
    """Replace non-positive (all-zero tensor) scales by 1.0: any positive scale represents zeros exactly."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def symmetric_scale(amax: Tensor, num_bits: int, paper: bool = False) -> Tensor:
    """Scale of a symmetric (zero-point 0) quantizer for the range ``[-amax, amax]``.

    Args:
        amax: non-negative absolute maximum, any shape (per-tensor or per-channel).
        num_bits: bit width.
        paper: use the PSAQ-ViT/SMI divisor ``(2^b - 1) / 2`` instead of ``2^(b-1) - 1``.

    Returns:
        Strictly positive scale, same shape as ``amax``.

    >>> symmetric_scale(torch.tensor(127.0), 8)
    tensor(1.)
    >>> symmetric_scale(torch.tensor(127.5), 8, paper=True)
    tensor(1.)
    >>> symmetric_scale(torch.tensor([7.0, 0.0]), 4)
    tensor([1., 1.])
    """
    divisor = (2**num_bits - 1) / 2 if paper else 2 ** (num_bits - 1) - 1
    return _positive(amax.float() / divisor)


def asymmetric_qparams(lo: Tensor, hi: Tensor, num_bits: int) -> tuple[Tensor, Tensor]:
    """Scale and zero-point of an unsigned asymmetric quantizer for ``[lo, hi]``.

    The range is widened to include 0 so that zero is exactly representable and an all-positive
    tensor keeps its top (the PSAQ-ViT code clamps the zero-point instead and clips).

    Returns:
        ``(scale, zero_point)``; the zero-point is an integer-valued float tensor in ``[0, 2^b - 1]``.

    >>> s, z = asymmetric_qparams(torch.tensor(-1.0), torch.tensor(3.0), 8)
    >>> round(float(s) * 255, 6), float(z)
    (4.0, 64.0)
    >>> s, z = asymmetric_qparams(torch.tensor(2.0), torch.tensor(5.1), 8)   # widened to [0, 5.1]
    >>> round(float(s) * 255, 6), float(z)
    (5.1, 0.0)
    """
    lo = torch.clamp(lo.float(), max=0.0)
    hi = torch.clamp(hi.float(), min=0.0)
    qmax = 2**num_bits - 1
    scale = _positive((hi - lo) / qmax)
    zero_point = torch.clamp(torch.round(-lo / scale), 0, qmax) + 0.0  # no negative zero
    return scale, zero_point


def qparams_from_range(
    lo: Tensor, hi: Tensor, num_bits: int, symmetric: bool, paper: bool = False
) -> tuple[Tensor, Tensor, int, int]:
    """Scale, zero-point and integer range for a calibrated range ``[lo, hi]``.

    Args:
        lo: range minimum (ignored beyond its magnitude when symmetric).
        hi: range maximum.
        num_bits: bit width.
        symmetric: signed code with zero-point 0 and ``amax = max(|lo|, |hi|)``; else unsigned affine.
        paper: PSAQ-ViT/SMI scale divisor for symmetric codes.

    Returns:
        ``(scale, zero_point, qmin, qmax)``.

    >>> s, z, qmin, qmax = qparams_from_range(torch.tensor(-2.0), torch.tensor(1.27), 8, True)
    >>> float(s), float(z), qmin, qmax
    (0.015748031437397003, 0.0, -128, 127)
    """
    if symmetric:
        amax = torch.maximum(lo.float().abs(), hi.float().abs())
        scale = symmetric_scale(amax, num_bits, paper=paper)
        qmin, qmax = int_range(num_bits, signed=True)
        return scale, torch.zeros_like(scale), qmin, qmax
    scale, zero_point = asymmetric_qparams(lo, hi, num_bits)
    qmin, qmax = int_range(num_bits, signed=False)
    return scale, zero_point, qmin, qmax


def _shape_for(param: Tensor, x: Tensor, axis: int | None) -> Tensor:
    """Reshape a per-channel parameter so it broadcasts against ``x`` along ``axis``."""
    if axis is None or param.dim() == 0:
        return param
    shape = [1] * x.dim()
    shape[axis] = -1
    return param.reshape(shape)


def quantize_to_int(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None = None
) -> Tensor:
    """Integer codes ``clamp(round_half_even(x / scale) + zp, qmin, qmax)`` as a float tensor.

    >>> quantize_to_int(torch.tensor([0.5, 1.5, 2.5, 300.0]), torch.tensor(1.0), torch.tensor(0.0), -128, 127)
    tensor([  0.,   2.,   2., 127.])
    """
    s = _shape_for(scale, x, axis)
    z = _shape_for(zero_point, x, axis)
    return torch.clamp(torch.round(x / s) + z, qmin, qmax)


def fake_quantize(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None = None
) -> Tensor:
    """Quantize and dequantize ``x`` with a clipped straight-through gradient.

    The forward value is ``(clamp(round(x / s) + zp, qmin, qmax) - zp) * s``. The gradient with
    respect to ``x`` is 1 where ``x`` lies inside the representable range and 0 where it is clipped
    (the STE of pytorch-quantization / ModelOpt). Scale and zero-point get no gradient.

    Args:
        x: input tensor.
        scale: positive scale, scalar or per-channel.
        zero_point: integer-valued zero-point, same shape as ``scale``.
        qmin: smallest integer code.
        qmax: largest integer code.
        axis: channel axis of ``x`` for per-channel parameters, or None.

    >>> x = torch.tensor([-1.0, 0.26, 0.4, 2.0], requires_grad=True)
    >>> y = fake_quantize(x, torch.tensor(0.5), torch.tensor(0.0), -2, 1)
    >>> y
    tensor([-1.0000,  0.5000,  0.5000,  0.5000], grad_fn=<AddBackward0>)
    >>> y.sum().backward(); x.grad
    tensor([1., 1., 1., 0.])
    """
    s = _shape_for(scale, x, axis).detach()
    z = _shape_for(zero_point, x, axis).detach()
    q = torch.clamp(torch.round(x.detach() / s) + z, qmin, qmax)
    y = (q - z) * s
    if not (x.requires_grad and torch.is_grad_enabled()):
        return y  # inference: skip the straight-through bookkeeping
    inside = (x >= (qmin - z) * s) & (x <= (qmax - z) * s)  # gradient 1 on the closed range, 0 outside
    return y + (x - x.detach()) * inside


def fake_quantize_learned(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    grad_scale: float = 1.0,
) -> Tensor:
    """:func:`fake_quantize` whose scale is learned: the LSQ estimator (Esser et al., ICLR 2020).

    Same forward value. ``x`` gets the clipped straight-through gradient; ``scale`` gets LSQ's
    ``d y / d s = round(x/s) - x/s`` inside the range and ``qmin - zp`` / ``qmax - zp`` where ``x`` is
    clipped, times ``grad_scale`` (LSQ uses ``1 / sqrt(numel per scale * qmax)`` so step sizes and
    weights learn at comparable rates). The zero-point gets no gradient.

    >>> x = torch.tensor([-1.0, 0.3, 2.0], requires_grad=True)
    >>> s = torch.tensor(0.5, requires_grad=True)
    >>> y = fake_quantize_learned(x, s, torch.tensor(0.0), -2, 1)
    >>> y
    tensor([-1.0000,  0.5000,  0.5000], grad_fn=<MulBackward0>)
    >>> y.sum().backward(); x.grad, round(float(s.grad), 6)  # (-2 - (-2)) + (1 - 0.6) + 1
    (tensor([1., 1., 0.]), 1.4)
    """
    s = _shape_for(scale, x, axis)
    if grad_scale != 1.0:  # exactly the same value (s - s.detach() is 0), gradient times grad_scale
        s = s.detach() + (s - s.detach()) * grad_scale
    z = _shape_for(zero_point, x, axis).detach()
    v = x / s + z
    rounded = torch.round(v).detach() + (v - v.detach())  # exactly round(v), gradient 1
    # explicit branches: torch.clamp passes no gradient to a value sitting exactly on a bound
    q = torch.where(v < qmin, float(qmin), torch.where(v > qmax, float(qmax), rounded))
    return (q - z) * s
