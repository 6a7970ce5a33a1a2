"""Pure FP8 (E4M3, ONNX/torch ``float8_e4m3fn``) quantization math: rounding onto the grid, scale, fake quantization.

E4M3FN (OCP FP8 spec; ONNX ``FLOAT8E4M3FN``; what TensorRT's FP8 Q/DQ and Hopper tensor cores use) has
1 sign, 4 exponent (bias 7) and 3 mantissa bits, no infinities and one NaN pattern per sign:

* normals ``(1 + m/8) * 2^e`` for ``e`` in ``[-6, 8]``, largest ``1.75 * 2^8 = 448``;
* subnormals ``m/8 * 2^-6`` (multiples of ``2^-9``, the smallest positive value);
* so within the binade ``[2^e, 2^(e+1))`` the step is ``2^(e-3)``, and below ``2^-6`` it is ``2^-9``.

Rounding is to nearest with ties to even mantissa; magnitudes above 448 (infinities included)
saturate to +-448, the ``saturate=1`` default of ONNX QuantizeLinear and what ``torch``'s cast does;
NaN stays NaN and the sign of zero is kept. Unlike INT8 there is no integer code: the quantized value
is the E4M3 number itself, and the scale maps the calibrated ``amax`` onto 448 (per tensor or per
output channel), as ModelOpt and TensorRT do. Computed with float32 arithmetic that is exact here
(powers of two and integers below 2^24), independently of torch's own float8 cast, against which
the tests check it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dfq.numerics import _positive, _shape_for

__all__ = ["E4M3_MAX", "E4M3_MIN_SUBNORMAL", "round_to_e4m3", "fp8_scale", "fake_quantize_fp8"]

E4M3_MAX = 448.0
"""Largest finite E4M3FN magnitude (``1.75 * 2^8``)."""
E4M3_MIN_SUBNORMAL = 2.0**-9
"""Smallest positive E4M3FN value (subnormal ``1/8 * 2^-6``)."""
_MIN_NORMAL_EXP = -6
_MANTISSA_BITS = 3


def round_to_e4m3(x: Tensor) -> Tensor:
    """Round ``x`` to the nearest E4M3FN value (ties to even), saturating at +-448, as float32
    (float64 for a float64 ``x``, so a double-precision reference model rounds its own values).

    >>> round_to_e4m3(torch.tensor([1.0625, 1.1875, 300.0, 1000.0, -float("inf")]))  # ties to even mantissa
    tensor([   1.0000,    1.2500,  288.0000,  448.0000, -448.0000])
    >>> round_to_e4m3(torch.tensor([2.0**-10 * 1.5])) == 2.0**-9  # subnormal step 2^-9
    tensor([True])
    >>> round_to_e4m3(torch.tensor([-1e-4, float("nan")]))  # the sign of zero is kept; NaN stays NaN
    tensor([-0., nan])
    """
    x = x if x.dtype == torch.float64 else x.float()
    a = torch.clamp(x.abs(), max=E4M3_MAX)  # NaN passes through clamp
    _, exp = torch.frexp(a)  # a = m * 2^exp with m in [0.5, 1): the binade is 2^(exp - 1)
    binade = torch.clamp(exp - 1, min=_MIN_NORMAL_EXP)  # below 2^-6 the subnormal step 2^-9 applies
    step = torch.ldexp(torch.ones_like(a), binade - _MANTISSA_BITS)
    q = torch.round(a / step) * step  # round half to even; a carry into the next binade stays exact
    return torch.copysign(q, x)


def fp8_scale(amax: Tensor) -> Tensor:
    """Scale that maps ``amax`` onto the largest E4M3 value: ``amax / 448`` (1 where ``amax`` is 0).

    >>> fp8_scale(torch.tensor([448.0, 0.0, 4.48]))
    tensor([1.0000, 1.0000, 0.0100])
    """
    return _positive(amax.float() / E4M3_MAX)


def fake_quantize_fp8(x: Tensor, scale: Tensor, axis: int | None = None) -> Tensor:
    """``round_to_e4m3(x / scale) * scale`` with the clipped straight-through gradient.

    The value is what ONNX ``QuantizeLinear -> DequantizeLinear`` with a FLOAT8E4M3FN zero-point
    computes. The gradient with respect to ``x`` is 1 on ``[-448 s, 448 s]`` and 0 where ``x`` saturates
    (as :func:`dfq.numerics.fake_quantize`); the scale gets none.

    Args:
        x: input tensor.
        scale: positive scale, scalar or per-channel.
        axis: channel axis of ``x`` for a per-channel scale, or None.

    >>> x = torch.tensor([0.3, -1.0, 9.0], requires_grad=True)
    >>> y = fake_quantize_fp8(x, torch.tensor(0.01))  # x/s = 30 (on the grid), -100 (tie: -96), 900 (saturates)
    >>> y
    tensor([ 0.3000, -0.9600,  4.4800], grad_fn=<AddBackward0>)
    >>> y.sum().backward(); x.grad
    tensor([1., 1., 0.])
    """
    s = _shape_for(scale, x, axis).detach()
    y = (round_to_e4m3(x.detach() / s) * s).to(x.dtype)
    if not (x.requires_grad and torch.is_grad_enabled()):
        return y
    inside = x.detach().abs() <= E4M3_MAX * s
    return y + (x - x.detach()) * inside
