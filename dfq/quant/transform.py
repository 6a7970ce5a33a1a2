"""``quantize_(model, config)``: swap a model's layers for fake-quant ones, in place.

Two placements, chosen by the model family:

* **timm ViT with a CLS token** -- quantizers at the activation *sites* enabled in
  ``config.act_sites`` (names in :data:`dfq.config.VIT_SITES`), weights of patch-embed conv, qkv,
  proj, fc1, fc2 and head per output channel. The ``trt`` preset observes the inputs of every
  weighted op and of both attention matmuls; the ``paper`` preset reproduces the PSAQ-ViT/SMI
  observer list (ALGORITHMS.md section 1.5). The model stays a timm ``VisionTransformer``: its own
  ``forward`` and :func:`dfq.vit.forward_tokens` (token-sparse) both run the quantized graph.
  The embedding-stage sites use PyTorch mechanisms rather than a new forward: ``cls_token`` and
  ``pos_embed`` get a parametrization (``torch.nn.utils.parametrize``) and the patch-embed norm and
  ``pos_drop`` slots get ``nn.Sequential(original, quantizer)``.
* **any other model (CNNs)** -- every ``nn.Conv2d``/``nn.Linear`` (and subclasses) gets a
  per-channel weight quantizer and, for sites ``conv_in``/``linear_in``, an input quantizer.

Softmax, LayerNorm and GELU always stay in float.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.nn.utils import parametrize

from dfq.checkpoints import check_finite
from dfq.config import QuantConfig
from dfq.models import is_cls_vit, model_family
from dfq.quant.modules import QuantAttention, QuantBlock, QuantLayer, quantizers
from dfq.quant.quantizer import FakeQuantizer, Role

__all__ = ["quantize_", "FilterFn"]

FilterFn = Callable[[nn.Module, str], bool]
"""``filter_fn(layer, qualified_name) -> bool``: False leaves that weighted layer in float."""


def quantize_(model: nn.Module, config: QuantConfig, filter_fn: FilterFn | None = None) -> nn.Module:
    """Insert fake quantizers into ``model`` in place and return it.

    Weight ranges are computed immediately; activation quantizers are uncalibrated until
    :func:`dfq.quant.calibrate.calibrate` runs (a forward before that raises).

    Args:
        model: a timm ViT with a CLS token, or any model built of Conv2d/Linear layers.
        config: the recipe (see :data:`dfq.config.presets`).
        filter_fn: optional predicate on ``(layer, name)``; False keeps that layer in float.

    Raises:
        ValueError: the model is already quantized, or its ViT blocks are of an unsupported kind.
        DfqError: a weight or buffer of the model holds NaN or infinity.
    """
    if quantizers(model):
        raise ValueError("model is already quantized (it contains FakeQuantizer modules)")
    check_finite(model.state_dict().items(), f"model {type(model).__name__}")
    keep = filter_fn or (lambda _m, _n: True)
    f = _Factory(config, cnn=not is_cls_vit(model) and model_family(model) == "cnn")
    if is_cls_vit(model):
        _quantize_vit(model, config, keep, f)
    else:
        _quantize_generic(model, config, keep, f)
    f.check_widths()
    return model


class _Factory:
    """Builds quantizers for the enabled sites of one config."""

    def __init__(self, config: QuantConfig, cnn: bool) -> None:
        self.config = config
        self.bias_correction = config.bias_correction.enabled(cnn=cnn)
        self.named: set[str] = set()  # layers given a weight quantizer

    def check_widths(self) -> None:
        """Every layer of ``layer_weight_bits`` got a quantizer (a misspelt name must not pass silently)."""
        unknown = sorted({k for k, _ in self.config.layer_weight_bits} - self.named)
        if unknown:
            raise ValueError(f"layer_weight_bits names layer(s) that are not quantized in this model: {', '.join(unknown[:5])}")

    def act(self, site: str) -> FakeQuantizer | None:
        if site not in self.config.act_sites:
            return None
        return FakeQuantizer(self.config.act_spec(site), site=site, role=Role.ACTIVATION)

    def weight(self, name: str) -> FakeQuantizer:
        self.named.add(name)
        return FakeQuantizer(self.config.weight_spec(name), axis=0, site="weight", role=Role.WEIGHT)

    def layer(
        self, layer: nn.Module, name: str, keep: FilterFn, in_site: str, out_site: str | None = None
    ) -> nn.Module:
        if not keep(layer, name):
            return layer
        out = self.act(out_site) if out_site else None
        return QuantLayer(layer, self.weight(name), self.act(in_site), out, bias_correction=self.bias_correction)


def _quantize_vit(model: nn.Module, config: QuantConfig, keep: FilterFn, f: _Factory) -> None:
    pe = model.patch_embed
    if config.quantize_patch_embed:
        pe.proj = f.layer(pe.proj, "patch_embed.proj", keep, "image")

    tail = [q for q in (f.act("embed"),) if q is not None]
    cls_q = f.act("cls_concat")
    if cls_q is not None:  # one range over the CLS token and the patch tokens it is concatenated with
        parametrize.register_parametrization(model, "cls_token", cls_q, unsafe=True)
        tail.append(cls_q)
    if tail:
        pe.norm = nn.Sequential(pe.norm, *tail)
    pos_q = f.act("pos_embed")
    if pos_q is not None:
        parametrize.register_parametrization(model, "pos_embed", pos_q, unsafe=True)
    add_q = f.act("pos_add")
    if add_q is not None:
        model.pos_drop = nn.Sequential(model.pos_drop, add_q)

    for i, blk in enumerate(model.blocks):
        attn, mlp, p = blk.attn, blk.mlp, f"blocks.{i}"
        for needed in ("qkv", "proj", "num_heads", "head_dim", "scale"):
            if not hasattr(attn, needed):
                raise ValueError(f"{p}.attn ({type(attn).__name__}) is not a timm Attention; cannot quantize")
        attn.qkv = f.layer(attn.qkv, f"{p}.attn.qkv", keep, "qkv_in")
        attn.proj = f.layer(attn.proj, f"{p}.attn.proj", keep, "proj_in", "proj_out")
        blk.attn = QuantAttention(
            attn,
            qkv_out=f.act("qkv_out"),
            q=f.act("q"),
            k=f.act("k"),
            v=f.act("v"),
            scores=f.act("scores"),
            softmax=f.act("softmax"),
        )
        mlp.fc1 = f.layer(mlp.fc1, f"{p}.mlp.fc1", keep, "fc1_in")
        mlp.fc2 = f.layer(mlp.fc2, f"{p}.mlp.fc2", keep, "fc2_in", "fc2_out")
        if "residual" in config.act_sites:
            model.blocks[i] = QuantBlock(blk, f.act("residual"), f.act("residual"))

    if config.quantize_head and isinstance(model.head, nn.Linear):
        model.head = f.layer(model.head, "head", keep, "head_in", "logits")


def _quantize_generic(model: nn.Module, config: QuantConfig, keep: FilterFn, f: _Factory) -> None:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if child is head and not config.quantize_head:
                continue
            if isinstance(child, nn.Conv2d):
                setattr(parent, child_name, f.layer(child, name, keep, "conv_in"))
            elif isinstance(child, nn.Linear):
                setattr(parent, child_name, f.layer(child, name, keep, "linear_in"))
