"""dfq.fp8 against torch's own ``float8_e4m3fn`` cast (the independent reference).

The reference is ``clamp(x, -448, 448).to(torch.float8_e4m3fn).float()``: the clamp makes it the
saturating cast whatever the torch version does above 448 (torch 2.14 saturates too; older versions
gave NaN), which is ONNX QuantizeLinear's ``saturate=1`` behaviour.
"""

from __future__ import annotations

import pytest
import torch

from dfq.fp8 import E4M3_MAX, E4M3_MIN_SUBNORMAL, fake_quantize_fp8, fp8_scale, round_to_e4m3

F8 = torch.float8_e4m3fn


def _ref(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x.float(), -E4M3_MAX, E4M3_MAX).to(F8).float()


def _grid() -> torch.Tensor:
    """Every E4M3FN bit pattern as float32 (NaNs dropped), both signed zeros included."""
    values = torch.arange(256, dtype=torch.uint8).view(F8).float()
    return values[~values.isnan()]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise float32 equality (tells -0 from +0, NaN equals NaN)."""
    return torch.equal(a.float().view(torch.int32), b.float().view(torch.int32))


def test_every_representable_value_round_trips():
    grid = _grid()
    assert grid.numel() == 254 and grid.abs().max() == E4M3_MAX
    assert _same(round_to_e4m3(grid), grid)


def test_matches_torch_cast_on_random_values_across_all_binades():
    g = torch.Generator().manual_seed(0)
    mag = torch.exp2(torch.empty(200_000).uniform_(-12, 10, generator=g))  # subnormals to beyond 448
    x = mag * torch.where(torch.rand(mag.shape, generator=g) < 0.5, -1.0, 1.0)
    assert _same(round_to_e4m3(x), _ref(x))


def test_ties_go_to_even_mantissa():
    pos = _grid()[_grid() > 0].sort().values
    mids = (pos[:-1].double() + pos[1:].double()) / 2  # exact in float32: one more mantissa bit
    mids = torch.cat([mids, -mids]).float()
    got = round_to_e4m3(mids)
    assert _same(got, _ref(mids))
    codes = got.to(F8).view(torch.uint8)
    assert bool((codes & 1 == 0).all())  # even mantissa (the code's last bit)


def test_saturates_at_448_without_inf_and_keeps_nan():
    x = torch.tensor([448.0, 449.0, 464.0, 465.0, 480.0, 1e6, float("inf")])
    assert torch.equal(round_to_e4m3(x), torch.full_like(x, E4M3_MAX))
    assert torch.equal(round_to_e4m3(-x), torch.full_like(x, -E4M3_MAX))
    assert _same(round_to_e4m3(x), _ref(x))
    assert round_to_e4m3(torch.tensor([float("nan")])).isnan().all()
    assert torch.tensor([float("nan")]).to(F8).float().isnan().all()


def test_subnormals_and_underflow():
    x = torch.arange(-80, 81, dtype=torch.float32) * 2.0**-13  # steps of 2^-13 across the subnormal range
    assert _same(round_to_e4m3(x), _ref(x))
    assert float(round_to_e4m3(torch.tensor(E4M3_MIN_SUBNORMAL))) == 2.0**-9
    assert float(round_to_e4m3(torch.tensor(2.0**-10))) == 0.0  # tie between 0 and 2^-9: even is 0
    assert float(round_to_e4m3(torch.tensor(2.0**-10 * 1.01))) == 2.0**-9


def test_negative_zero():
    x = torch.tensor([-0.0, -1e-6, 0.0, 1e-6])
    got = round_to_e4m3(x)
    assert _same(got, _ref(x))
    assert torch.signbit(got).tolist() == [True, True, False, False]


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_fake_quantize_fp8_is_dequant_of_the_torch_cast(axis):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, 4, generator=g) * 3
    if axis is None:
        amax = x.abs().max()
        s = fp8_scale(amax)
        ref = _ref(x / s) * s
    else:
        amax = (
            x.abs().amax(dim=[d for d in range(x.dim()) if d != axis]) * 0.5
        )  # half the range: some saturate
        s = fp8_scale(amax)
        shape = [1] * x.dim()
        shape[axis] = -1
        ref = _ref(x / s.reshape(shape)) * s.reshape(shape)
    assert _same(fake_quantize_fp8(x, s, axis), ref)


def test_fake_quantize_fp8_gradient_is_clipped_straight_through():
    x = torch.tensor([-500.0, -448.0, 0.1, 447.0, 449.0], requires_grad=True)
    fake_quantize_fp8(x, torch.tensor(1.0)).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_fp8_scale_maps_amax_onto_448():
    amax = torch.tensor([1.0, 3.5, 0.0])
    s = fp8_scale(amax)
    assert torch.equal(round_to_e4m3(amax / s)[:2], torch.tensor([E4M3_MAX, E4M3_MAX]))
    assert float(s[2]) == 1.0


def test_fake_quantize_fp8_keeps_float64_and_agrees_with_float32() -> None:
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3
    s = torch.tensor(0.01)
    y32, y64 = fake_quantize_fp8(x, s), fake_quantize_fp8(x.double(), s.double())
    assert y64.dtype == torch.float64 and y32.dtype == torch.float32
    torch.testing.assert_close(y64.float(), y32)  # the grid values are exact in both
