"""Quantized modules: weighted layers, the two attention matmuls, ViT attention and block.

Each module only holds :class:`FakeQuantizer` children and calls them; the math lives in
:mod:`dfq.numerics`. Wrapped layers keep their original submodule (``.layer``), so any Conv2d
subclass (timm's TF-"same" padded ``Conv2dSame``, for example) keeps its own forward.

* :class:`QuantLayer` -- Linear/Conv with optional input, weight and output quantizers.
* :class:`QuantMatMul` -- ``a @ b`` with a quantizer on each input (``q @ kᵀ`` and ``attn @ v``).
* :class:`QuantAttention` -- timm ``Attention`` rebuilt from its own submodules with quantizers at
  the sites ``qkv_out``, ``q``, ``k``, ``v``, ``scores``, ``softmax`` (unfused softmax when any of
  them is enabled, fused SDPA otherwise).
* :class:`QuantBlock` -- timm ``Block`` whose two residual sums are quantized (site ``residual``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from dfq.quant.bias_correction import channel_mean, expected_output_shift
from dfq.quant.quantizer import FakeQuantizer, Role

__all__ = ["QuantLayer", "QuantMatMul", "QuantAttention", "QuantBlock", "quantizers"]


def _maybe(q: FakeQuantizer | None, x: Tensor) -> Tensor:
    return x if q is None else q(x)


class QuantLayer(nn.Module):
    """A Linear or Conv layer with quantized input, weight and (optionally) output.

    Args:
        layer: the float layer (``nn.Linear``, ``nn.Conv2d`` or a subclass); its parameters are shared.
        weight_quantizer: per-channel weight quantizer; calibrated here from ``layer.weight``.
        input_quantizer: activation quantizer on the layer input, or None.
        output_quantizer: activation quantizer on the layer output, or None.
        bias_correction: keep a per-output-channel float correction of the weight-rounding error
            (:mod:`dfq.quant.bias_correction`), set at the end of calibration.

    Raises:
        ValueError: ``weight_quantizer`` is not a :attr:`Role.WEIGHT` quantizer, or an input/output
            quantizer is not a :attr:`Role.ACTIVATION` one.
    """

    def __init__(
        self,
        layer: nn.Module,
        weight_quantizer: FakeQuantizer | None,
        input_quantizer: FakeQuantizer | None = None,
        output_quantizer: FakeQuantizer | None = None,
        bias_correction: bool = False,
    ) -> None:
        super().__init__()
        if weight_quantizer is not None and weight_quantizer.role is not Role.WEIGHT:
            raise ValueError(f"weight_quantizer must have role Role.WEIGHT, not {weight_quantizer.role}")
        for q in (input_quantizer, output_quantizer):
            if q is not None and q.role is not Role.ACTIVATION:
                raise ValueError(f"input/output quantizers must have role Role.ACTIVATION, not {q.role}")
        self.layer = layer
        self.input_quantizer = input_quantizer
        self.weight_quantizer = weight_quantizer
        self.output_quantizer = output_quantizer
        if weight_quantizer is not None:
            weight_quantizer.calibrate_from(layer.weight)
        self.is_conv = layer.weight.dim() == 4
        self.bias_correction: Tensor | None
        if bias_correction and weight_quantizer is not None:
            self.register_buffer("bias_correction", torch.zeros(layer.weight.shape[0], device=layer.weight.device))
        else:
            self.bias_correction = None
        self.collecting_mean = False  # set by calibration_mode when bias correction is on
        self._mean_sum: Tensor | None = None
        self._mean_count = 0

    @property
    def weight(self) -> Tensor:
        return self.layer.weight

    @property
    def bias(self) -> Tensor | None:
        return self.layer.bias

    def quantized_weight(self) -> Tensor:
        w = self.layer.weight
        return w if self.weight_quantizer is None else self.weight_quantizer(w)

    # -- bias correction ---------------------------------------------------------------------
    def start_input_mean(self) -> None:
        self._mean_sum, self._mean_count = None, 0
        self.collecting_mean = True

    def finish_bias_correction(self) -> None:
        """Set the correction from the collected input mean and the current weight error."""
        self.collecting_mean = False
        if self.bias_correction is None or self._mean_sum is None:
            return
        mean = self._mean_sum / max(self._mean_count, 1)
        with torch.no_grad():
            delta = self.quantized_weight() - self.layer.weight
            groups = getattr(self.layer, "groups", 1)
            self.bias_correction.copy_(expected_output_shift(delta, mean.to(delta.device), groups))
        self._mean_sum, self._mean_count = None, 0

    def _collect_mean(self, x: Tensor) -> None:
        s, n = channel_mean(x, self.is_conv)
        self._mean_sum = s if self._mean_sum is None else self._mean_sum + s
        self._mean_count += n

    def forward(self, x: Tensor) -> Tensor:
        if self.collecting_mean:
            self._collect_mean(x)
        x = _maybe(self.input_quantizer, x)
        w = self.quantized_weight()
        layer = self.layer
        if type(layer) is nn.Linear:
            y = F.linear(x, w, layer.bias)
        elif type(layer) is nn.Conv2d:
            y = layer._conv_forward(x, w, layer.bias)
        elif self.weight_quantizer is None:
            y = layer(x)
        else:  # a subclass with its own forward (padding rules etc.): substitute the weight only
            y = functional_call(layer, {"weight": w}, (x,))
        if self.bias_correction is not None and self.weight_quantizer.mode == "quantize":
            y = y - (self.bias_correction.view(-1, 1, 1) if self.is_conv else self.bias_correction)
        return _maybe(self.output_quantizer, y)


class QuantMatMul(nn.Module):
    """``a @ b`` with a fake quantizer on each input (None = float)."""

    def __init__(self, a_quantizer: FakeQuantizer | None, b_quantizer: FakeQuantizer | None) -> None:
        super().__init__()
        self.a_quantizer = a_quantizer
        self.b_quantizer = b_quantizer

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return _maybe(self.a_quantizer, a) @ _maybe(self.b_quantizer, b)


class QuantAttention(nn.Module):
    """timm ``Attention`` with quantized matmuls, built from the float module's own submodules.

    The float module's ``qkv``/``proj`` should already be :class:`QuantLayer` where their inputs
    are quantized. ``q`` is quantized after the ``1/sqrt(d)`` scaling, i.e. exactly the tensor that
    enters ``q @ kᵀ`` (the tensor an exported graph's MatMul consumes).
    """

    def __init__(
        self,
        attn: nn.Module,
        qkv_out: FakeQuantizer | None = None,
        q: FakeQuantizer | None = None,
        k: FakeQuantizer | None = None,
        v: FakeQuantizer | None = None,
        scores: FakeQuantizer | None = None,
        softmax: FakeQuantizer | None = None,
    ) -> None:
        super().__init__()
        if getattr(attn, "gate", None) is not None:
            raise ValueError("gated attention is not supported by the quantizer")
        self.num_heads: int = attn.num_heads
        self.head_dim: int = attn.head_dim
        self.attn_dim: int = getattr(attn, "attn_dim", attn.num_heads * attn.head_dim)
        self.scale: float = attn.scale
        self.qkv = attn.qkv
        self.q_norm = attn.q_norm
        self.k_norm = attn.k_norm
        self.attn_drop = attn.attn_drop
        self.norm = getattr(attn, "norm", nn.Identity())
        self.proj = attn.proj
        self.proj_drop = attn.proj_drop
        self.qkv_quantizer = qkv_out
        self.scores_quantizer = scores
        self.matmul_qk = QuantMatMul(q, k)
        self.matmul_av = QuantMatMul(softmax, v)
        self.fused = all(m is None for m in (q, k, v, scores, softmax))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("QuantAttention does not take attention masks")
        B, N, _ = x.shape
        qkv = _maybe(self.qkv_quantizer, self.qkv(x))
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused:
            p = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            scores = self.matmul_qk(q * self.scale, k.transpose(-2, -1))
            scores = _maybe(self.scores_quantizer, scores)
            attn = self.attn_drop(scores.softmax(dim=-1))
            x = self.matmul_av(attn, v)
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        return self.proj_drop(self.proj(x))


class QuantBlock(nn.Module):
    """timm ``Block`` (pre-norm, LayerScale, drop-path) with both residual sums quantized."""

    def __init__(self, block: nn.Module, residual1: FakeQuantizer, residual2: FakeQuantizer) -> None:
        super().__init__()
        for name in ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2"):
            setattr(self, name, getattr(block, name))
        self.residual1 = residual1
        self.residual2 = residual2

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        x = self.residual1(x + self.drop_path1(self.ls1(self.attn(self.norm1(x)))))
        return self.residual2(x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))))


def quantizers(module: nn.Module) -> list[FakeQuantizer]:
    """Every distinct FakeQuantizer below ``module`` (shared ones once)."""
    return [m for m in module.modules() if isinstance(m, FakeQuantizer)]

