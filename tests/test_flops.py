"""Tests for dfq.flops: attention FLOPs counted the same whichever SDPA kernel runs, uncounted ops reported."""

from __future__ import annotations

import doctest

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

import dfq.flops
from dfq.flops import FlopCount, attention_backward_flops, attention_flops, count_flops, sdpa_formulas

B, H, LQ, LK, E, EV = 2, 3, 11, 17, 8, 4  # the CPU flash kernel needs EV == E: kernel tests use (E, E)


@torch.library.custom_op("dfq_test::toy_attention", mutates_args=())
def _toy_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """An attention op with no FLOP formula anywhere (stands in for a kernel a later torch adds)."""
    return (q @ k.transpose(-2, -1)).softmax(-1) @ v


@_toy_attention.register_fake
def _(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


def _qkv(requires_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    shapes = ((B, H, LQ, E), (B, H, LK, E), (B, H, LK, E))
    return tuple(torch.randn(s, generator=gen).requires_grad_(requires_grad) for s in shapes)  # type: ignore[return-value]


def _manual(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return ((q * E**-0.5) @ k.transpose(-2, -1)).softmax(-1) @ v


def test_formulas_by_hand() -> None:
    fwd = 2 * B * H * LQ * LK * E + 2 * B * H * LQ * LK * EV  # q @ k^T, then p @ v
    assert attention_flops((B, H, LQ, E), (B, H, LK, E), (B, H, LK, EV)) == fwd
    assert attention_backward_flops((B, H, LQ, EV), (B, H, LQ, E), (B, H, LK, E), (B, H, LK, EV)) == 2 * fwd
    assert attention_flops((LQ, E), (LK, E), (LK, EV)) == fwd // (B * H)  # no leading dims
    # grouped-query attention: counted per query head
    assert attention_flops((B, H, LQ, E), (B, 1, LK, E), (B, 1, LK, EV)) == fwd


def test_cpu_flash_kernel_has_a_formula() -> None:
    ops = sdpa_formulas()
    assert torch.ops.aten._scaled_dot_product_flash_attention_for_cpu in ops
    assert torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward in ops


# every CPU path: the fused flash kernel, SDPA's math fallback, attention written by hand
_PATHS = {
    "flash": lambda q, k, v: _sdpa(SDPBackend.FLASH_ATTENTION, q, k, v),
    "math": lambda q, k, v: _sdpa(SDPBackend.MATH, q, k, v),
    "manual": _manual,
}


def _sdpa(backend: SDPBackend, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    with sdpa_kernel([backend]):
        return F.scaled_dot_product_attention(q, k, v)


@pytest.mark.parametrize("path", list(_PATHS))
def test_attention_counted_the_same_on_every_kernel(path: str) -> None:
    fwd = 4 * B * H * LQ * LK * E
    q, k, v = _qkv(requires_grad=False)
    with torch.no_grad():
        assert count_flops(lambda: _PATHS[path](q, k, v)) == fwd
    q, k, v = _qkv(requires_grad=True)
    assert count_flops(lambda: _PATHS[path](q, k, v).sum().backward()) == 3 * fwd
    assert q.grad is not None and k.grad is not None and v.grad is not None


def test_flash_kernel_really_ran_and_agrees_with_math() -> None:
    """The parametrized test above compares kernels only if the CPU flash kernel is what ran."""
    q, k, v = _qkv(requires_grad=False)
    with FlopCount() as flops:
        out = _sdpa(SDPBackend.FLASH_ATTENTION, q, k, v)
    by_op = flops.counter.get_flop_counts()["Global"]
    assert by_op == {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: flops.total}
    torch.testing.assert_close(out, _sdpa(SDPBackend.MATH, q, k, v), rtol=1e-5, atol=1e-5)


def test_uncounted_attention_op_is_reported() -> None:
    q, k, v = _qkv(requires_grad=False)
    with FlopCount() as flops:
        out = _toy_attention(q, k, v) + q @ q.transpose(-2, -1) @ v[:, :, :LQ]
    assert out.shape == (B, H, LQ, E)
    assert flops.uncounted == ("dfq_test.toy_attention",)
    assert flops.total == 4 * B * H * LQ * LQ * E  # the two plain matmuls, nothing for the toy op
    with pytest.raises(RuntimeError, match="no FLOP formula for dfq_test.toy_attention"):
        count_flops(lambda: _toy_attention(q, k, v))


def test_doctests() -> None:
    result = doctest.testmod(dfq.flops, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
