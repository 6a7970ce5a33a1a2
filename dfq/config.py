"""Frozen quantization configs and the named presets (W8A8 / W4A8 in ``trt`` and ``paper`` numerics).

A :class:`QuantSpec` says how one kind of tensor is quantized (bits, symmetry, granularity, range
calibrator by registry name); a :class:`QuantConfig` pairs a weight spec with an activation spec and
names the *sites* where activations are observed. Configs validate by raising, round-trip through
JSON with an allow-list and carry a version. Variants are made with :func:`dataclasses.replace`.

This module imports no calibrator: calibrators are referred to by name and resolved by the quantizer.

Activation sites (see ``docs/quantization.md`` for the full table)::

    ViT     image embed cls_concat pos_embed pos_add qkv_in qkv_out q k v scores softmax
            proj_in proj_out residual fc1_in fc2_in fc2_out head_in logits
    CNN     conv_in linear_in
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "BiasCorrection",
    "QuantSpec",
    "QuantConfig",
    "VIT_SITES",
    "CNN_SITES",
    "TRT_VIT_SITES",
    "PAPER_VIT_SITES",
    "presets",
    "preset",
    "for_onnxruntime",
    "CONFIG_VERSION",
    "FORMATS",
    "FP8_CALIBRATORS",
    "NUMERICS",
    "check_keys",
]

CONFIG_VERSION = 1

FORMATS: tuple[str, ...] = ("int", "e4m3")
"""Number formats of :attr:`QuantSpec.format`: integer codes, or FP8 E4M3 (:mod:`dfq.fp8`)."""
NUMERICS: tuple[str, ...] = ("trt", "paper", "fp8", "custom")
"""Labels of :attr:`QuantConfig.numerics`."""
FP8_CALIBRATORS: tuple[str, ...] = ("minmax", "percentile")
"""Calibrators whose range does not assume an integer grid (mse and entropy search one), so FP8 can use them."""

VIT_SITES: tuple[str, ...] = (
    "image",  # normalized input image = patch-embed conv input
    "embed",  # patch-embed output
    "cls_concat",  # tokens after CLS concatenation (shared range with the CLS token)
    "pos_embed",  # the position-embedding parameter
    "pos_add",  # tokens after adding the position embedding
    "qkv_in",  # LayerNorm1 output = qkv Linear input
    "qkv_out",  # qkv Linear output, one range shared by q, k, v (PSAQ-ViT)
    "q",  # scaled query, input of q @ k^T
    "k",  # key, input of q @ k^T
    "v",  # value, input of attn @ v
    "scores",  # q @ k^T scores before softmax (PSAQ-ViT)
    "softmax",  # attention probabilities, input of attn @ v
    "proj_in",  # attn @ v output = proj Linear input
    "proj_out",  # proj Linear output
    "residual",  # both residual sums of every block
    "fc1_in",  # LayerNorm2 output = fc1 input
    "fc2_in",  # GELU output = fc2 input
    "fc2_out",  # fc2 output
    "head_in",  # final LayerNorm output (CLS) = classifier input
    "logits",  # classifier output
)
CNN_SITES: tuple[str, ...] = ("conv_in", "linear_in")

# What TensorRT needs for INT8 kernels: inputs of every weighted op and of both attention matmuls.
TRT_VIT_SITES = frozenset({"image", "qkv_in", "q", "k", "v", "softmax", "proj_in", "fc1_in", "fc2_in", "head_in"})
# PSAQ-ViT / SMI observer placement (ALGORITHMS.md section 1.5).
PAPER_VIT_SITES = frozenset(
    {
        "image", "embed", "cls_concat", "pos_embed", "pos_add", "qkv_in", "qkv_out", "scores",
        "proj_in", "proj_out", "residual", "fc1_in", "fc2_in", "fc2_out", "head_in", "logits",
    }
)  # fmt: skip


class BiasCorrection(str, Enum):
    """When :func:`dfq.quantize_` adds bias correction (:mod:`dfq.quant.bias_correction`) to its layers.

    String-valued, so recipes on disk, the CLI and ``QuantConfig(bias_correction="on")`` keep
    their plain strings; :class:`QuantConfig` turns those into members.

    >>> BiasCorrection("auto").enabled(cnn=True), BiasCorrection.AUTO.enabled(cnn=False), str(BiasCorrection.ON)
    (True, False, 'on')
    """

    AUTO = "auto"  # on for CNNs (BatchNorm models), off for ViTs
    ON = "on"
    OFF = "off"

    def __str__(self) -> str:
        return self.value

    def enabled(self, cnn: bool) -> bool:
        """Whether a model of this family gets bias correction (the one place ``auto`` is resolved)."""
        return self is BiasCorrection.ON or (self is BiasCorrection.AUTO and cnn)


@dataclass(frozen=True)
class QuantSpec:
    """How one kind of tensor is quantized.

    Attributes:
        num_bits: integer code width (2..16).
        symmetric: signed code, zero-point 0, range ``[-amax, amax]``; else unsigned affine.
        per_channel: one range per output channel (axis 0 of a weight); else one per tensor.
        paper_scale: symmetric divisor ``(2^b - 1) / 2`` (PSAQ-ViT) instead of ``2^(b-1) - 1``.
        calibrator: registry name in :mod:`dfq.calibrators` (minmax, percentile, mse, entropy).
        calibrator_args: extra keyword arguments for the calibrator, as sorted ``(key, value)`` pairs.
        format: number format of the quantized values: ``int`` (an integer code, the default) or
            ``e4m3`` (FP8 E4M3, :mod:`dfq.fp8`: 8 bits, symmetric, scale ``amax / 448``); written to a
            recipe only when not ``int``, so older recipes round-trip unchanged.
    """

    num_bits: int = 8
    symmetric: bool = True
    per_channel: bool = False
    paper_scale: bool = False
    calibrator: str = "minmax"
    calibrator_args: tuple[tuple[str, Any], ...] = ()
    format: str = "int"

    def __post_init__(self) -> None:
        if not isinstance(self.num_bits, int) or not 2 <= self.num_bits <= 16:
            raise ValueError(f"num_bits must be an integer in [2, 16], got {self.num_bits!r}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.format == "e4m3":
            if self.num_bits != 8 or not self.symmetric or self.paper_scale:
                raise ValueError("format e4m3 is 8-bit and symmetric (num_bits=8, symmetric=True, paper_scale=False)")
            if self.calibrator not in FP8_CALIBRATORS:
                raise ValueError(
                    f"calibrator {self.calibrator!r} searches an integer grid; format e4m3 takes "
                    f"{' or '.join(FP8_CALIBRATORS)}"
                )
        if self.paper_scale and not self.symmetric:
            raise ValueError("paper_scale applies to symmetric specs only")
        if not self.calibrator or not isinstance(self.calibrator, str):
            raise ValueError("calibrator must be a registry name such as 'minmax'")
        args = self.calibrator_args
        if isinstance(args, Mapping):
            args = tuple(args.items())
        object.__setattr__(self, "calibrator_args", tuple(sorted((str(k), v) for k, v in args)))

    def trt_runnable(self, activation: bool) -> bool:
        """Whether TensorRT can execute this spec: symmetric with the standard divisor (zero-point 0),
        and 8-bit when it quantizes an activation. The one rule behind :attr:`QuantConfig.trt_compatible`
        and :func:`dfq.export.onnx.target_of`.

        >>> QuantSpec(num_bits=4).trt_runnable(activation=False), QuantSpec(num_bits=4).trt_runnable(activation=True)
        (True, False)
        """
        return self.symmetric and not self.paper_scale and (self.num_bits == 8 or not activation)

    @property
    def calibrator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the calibrator constructor."""
        return {
            "num_bits": self.num_bits,
            "symmetric": self.symmetric,
            "paper": self.paper_scale,
            **dict(self.calibrator_args),
        }

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["calibrator_args"] = dict(self.calibrator_args)
        if self.format == "int":
            del d["format"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QuantSpec:
        check_keys(cls, d)
        return cls(**d)


@dataclass(frozen=True)
class QuantConfig:
    """A whole-model quantization recipe.

    Attributes:
        weight: spec for weights of quantized Linear/Conv layers.
        act: spec for activations at every enabled site.
        act_sites: enabled activation sites (names in ``VIT_SITES`` / ``CNN_SITES``).
        site_calibrators: per-site calibrator overrides, ``(site, calibrator name)`` pairs; e.g.
            ``(("softmax", "minmax"),)`` keeps the attention probabilities' full [0, 1] range while
            other sites use ``act.calibrator``.
        quantize_head: quantize the classifier (its weight and, where enabled, its input/output).
        quantize_patch_embed: quantize the ViT patch-embedding convolution (weight and input image).
        bias_correction: :class:`BiasCorrection` (or its string ``on`` | ``off`` | ``auto``; ``auto`` is
            on for CNNs with BatchNorm, off for ViTs): correct each layer's expected output shift from
            weight rounding with the calibration set's input means (Nagel et al. 2019); see
            :mod:`dfq.quant.bias_correction`.
        layer_weight_bits: per-layer weight widths that replace ``weight.num_bits`` for the named layers,
            ``(qualified layer name, bits)`` pairs (mixed precision, e.g. ``(("blocks.0.mlp.fc2", 8),)``);
            a name that matches no quantized layer is an error when the model is quantized.
        numerics: label of the numerics family, ``trt``, ``paper``, ``fp8`` or ``custom`` (reports, export checks).
        name: preset name, informational.
        version: schema version of this recipe.
    """

    weight: QuantSpec = field(default_factory=lambda: QuantSpec(per_channel=True))
    act: QuantSpec = field(default_factory=QuantSpec)
    act_sites: frozenset[str] = TRT_VIT_SITES | frozenset(CNN_SITES)
    site_calibrators: tuple[tuple[str, str], ...] = ()
    quantize_head: bool = True
    quantize_patch_embed: bool = True
    bias_correction: BiasCorrection = BiasCorrection.AUTO
    layer_weight_bits: tuple[tuple[str, int], ...] = ()
    numerics: str = "trt"
    name: str = ""
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        sites = frozenset(self.act_sites)
        unknown = sites - set(VIT_SITES) - set(CNN_SITES)
        if unknown:
            raise ValueError(
                f"unknown activation site(s) {sorted(unknown)}; valid: {', '.join(VIT_SITES + CNN_SITES)}"
            )
        if {"qkv_out"} & sites and {"q", "k", "v"} & sites:
            raise ValueError("'qkv_out' (one shared q/k/v range) and separate 'q'/'k'/'v' sites exclude each other")
        object.__setattr__(self, "act_sites", sites)
        overrides = self.site_calibrators
        if isinstance(overrides, Mapping):
            overrides = tuple(overrides.items())
        overrides = tuple(sorted((str(k), str(v)) for k, v in overrides))
        bad = {k for k, _ in overrides} - set(VIT_SITES) - set(CNN_SITES)
        if bad:
            raise ValueError(f"site_calibrators names unknown site(s) {sorted(bad)}")
        object.__setattr__(self, "site_calibrators", overrides)
        for _, name in overrides:
            dataclasses.replace(self.act, calibrator=name)  # the spec validates the calibrator (e4m3: no grid search)
        widths = self.layer_weight_bits
        if isinstance(widths, Mapping):
            widths = tuple(widths.items())
        widths = tuple(sorted((str(k), v) for k, v in widths))
        for _, bits in widths:
            dataclasses.replace(self.weight, num_bits=bits)  # the spec validates the width
        if len({k for k, _ in widths}) != len(widths):
            raise ValueError("layer_weight_bits names a layer twice")
        object.__setattr__(self, "layer_weight_bits", widths)
        if self.act.per_channel:
            raise ValueError("activations are quantized per tensor (TensorRT's rule); set act.per_channel=False")
        try:  # the CLI, JSON recipes and callers pass strings
            object.__setattr__(self, "bias_correction", BiasCorrection(self.bias_correction))
        except ValueError:
            raise ValueError(f"bias_correction must be auto, on or off, got {self.bias_correction!r}") from None
        if self.numerics not in NUMERICS:
            raise ValueError(f"numerics must be one of {', '.join(NUMERICS)}, got {self.numerics!r}")
        if self.version != CONFIG_VERSION:
            raise ValueError(f"recipe version {self.version} is not supported (this dfq reads {CONFIG_VERSION})")

    def weight_spec(self, layer: str) -> QuantSpec:
        """The weight spec of ``layer`` (``weight`` with the layer's width from ``layer_weight_bits``).

        >>> c = QuantConfig(weight=QuantSpec(num_bits=4, per_channel=True), layer_weight_bits={"head": 8})
        >>> c.weight_spec("head").num_bits, c.weight_spec("blocks.0.mlp.fc1").num_bits
        (8, 4)
        """
        bits = dict(self.layer_weight_bits).get(layer)
        return self.weight if bits is None or bits == self.weight.num_bits else dataclasses.replace(self.weight, num_bits=bits)

    def act_spec(self, site: str) -> QuantSpec:
        """The activation spec of ``site`` (``act`` with the site's calibrator override, if any)."""
        name = dict(self.site_calibrators).get(site)
        return self.act if name is None or name == self.act.calibrator else dataclasses.replace(self.act, calibrator=name)

    @property
    def trt_compatible(self) -> bool:
        """True when TensorRT can execute these numerics (symmetric INT8 Q/DQ, zero-point 0)."""
        return self.act.trt_runnable(activation=True) and self.weight.trt_runnable(activation=False)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-able data (``layer_weight_bits`` only when set: older recipes stay as written)."""
        widths = {"layer_weight_bits": dict(self.layer_weight_bits)} if self.layer_weight_bits else {}
        return {
            **widths,
            "weight": self.weight.to_dict(),
            "act": self.act.to_dict(),
            "act_sites": sorted(self.act_sites),
            "site_calibrators": dict(self.site_calibrators),
            "quantize_head": self.quantize_head,
            "quantize_patch_embed": self.quantize_patch_embed,
            "bias_correction": self.bias_correction.value,
            "numerics": self.numerics,
            "name": self.name,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QuantConfig:
        check_keys(cls, d)
        d = dict(d)
        d["weight"] = QuantSpec.from_dict(d["weight"])
        d["act"] = QuantSpec.from_dict(d["act"])
        d["act_sites"] = frozenset(d["act_sites"])
        return cls(**d)


def check_keys(cls: type, d: Mapping[str, Any]) -> None:
    """Allow-list: refuse keys that are not fields of ``cls``."""
    allowed = {f.name for f in dataclasses.fields(cls)}
    extra = set(d) - allowed
    if extra:
        raise ValueError(f"unknown {cls.__name__} key(s) {sorted(extra)}; allowed: {sorted(allowed)}")


def _trt(weight_bits: int) -> QuantConfig:
    # 4-bit weights: an MSE clipping search per channel (DeiT-Tiny W4A8 KL to FP 0.32 -> 0.20).
    return QuantConfig(
        weight=QuantSpec(
            num_bits=weight_bits, symmetric=True, per_channel=True, calibrator="mse" if weight_bits < 8 else "minmax"
        ),
        act=QuantSpec(num_bits=8, symmetric=True),
        act_sites=TRT_VIT_SITES | frozenset(CNN_SITES),
        # Attention probabilities lie in [0, 1] by construction, so min/max gives step 1/127 and rounds
        # most of a 197-token row to 0 or 1/127; an MSE range keeps them (DeiT-Tiny KL 0.0345 -> 0.0271).
        site_calibrators=(("softmax", "mse"),),
        numerics="trt",
        name=f"w{weight_bits}a8",
    )


def _paper(weight_bits: int) -> QuantConfig:
    return QuantConfig(
        weight=QuantSpec(num_bits=weight_bits, symmetric=True, per_channel=True, paper_scale=True),
        act=QuantSpec(num_bits=8, symmetric=False),
        act_sites=PAPER_VIT_SITES | frozenset(CNN_SITES),
        numerics="paper",
        name=f"w{weight_bits}a8-paper",
    )


def _fp8() -> QuantConfig:
    # E4M3 everywhere TensorRT quantizes INT8 (same sites); min/max ranges onto 448. FP8 keeps 3 mantissa
    # bits at every magnitude, so the softmax probabilities need no MSE range as they do on the INT8 grid.
    e4m3 = QuantSpec(num_bits=8, symmetric=True, format="e4m3")
    return QuantConfig(
        weight=dataclasses.replace(e4m3, per_channel=True),
        act=e4m3,
        act_sites=TRT_VIT_SITES | frozenset(CNN_SITES),
        numerics="fp8",
        name="w8a8-fp8",
    )


presets: dict[str, QuantConfig] = {
    "w8a8": _trt(8),
    "w4a8": _trt(4),
    "w8a8-paper": _paper(8),
    "w4a8-paper": _paper(4),
    "w8a8-fp8": _fp8(),
}


def for_onnxruntime(config: QuantConfig) -> QuantConfig:
    """``config`` with the ViT patch-embedding convolution and the classifier left in float.

    ONNX Runtime's CPU kernels fuse Q/DQ into Conv and Gemm only when the output is quantized too
    (``QLinearConv``/``QGemm``); our placement quantizes inputs only (what TensorRT fuses), so in ORT
    those two layers run float on dequantized inputs and their Q/DQ is pure overhead. Dropping it makes
    DeiT-Tiny W8A8 1.42x instead of 1.34x faster than FP32 at batch 8 (BENCHMARKS.md); both layers
    hold under 2% of the FLOPs. Keep the default placement for TensorRT, which fuses them.

    >>> cfg = for_onnxruntime(preset("w8a8")); cfg.quantize_head, cfg.quantize_patch_embed, cfg.name
    (False, False, 'w8a8-ort')
    """
    return dataclasses.replace(config, quantize_head=False, quantize_patch_embed=False, name=f"{config.name}-ort")


TARGETS: dict[str, Callable[[QuantConfig], QuantConfig]] = {"trt": lambda c: c, "ort": for_onnxruntime}
"""Q/DQ placements: TensorRT's (the presets' own) and ONNX Runtime CPU's (:func:`for_onnxruntime`)."""


def preset(scheme: str, numerics: str = "trt") -> QuantConfig:
    """The preset for ``scheme`` (``w8a8`` | ``w4a8``) in ``numerics`` (``trt`` | ``paper`` | ``fp8``, w8a8 only).

    >>> preset("w4a8").weight.num_bits, preset("w4a8", "paper").act.symmetric, preset("w8a8", "fp8").act.format
    (4, False, 'e4m3')
    """
    key = scheme.lower() if numerics == "trt" else f"{scheme.lower()}-{numerics}"
    if key not in presets:
        raise ValueError(f"unknown scheme/numerics {scheme!r}/{numerics!r}; presets: {', '.join(presets)} (scheme-numerics)")
    return presets[key]
