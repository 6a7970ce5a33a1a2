"""Q/DQ ONNX export of a calibrated fake-quant model (spec: DEPLOYMENT.md §b1-b5, the TensorRT explicit-quantization rules).

This module owns the ONNX artifact ``model.qdq.onnx``:

* **How.** The TorchScript exporter (``torch.onnx.export(dynamo=False)``) runs on the fake-quant model
  while :func:`export_mode` temporarily swaps, from the outside, every ``QuantLayer`` for an
  ``_ExportLayer`` and every remaining ``FakeQuantizer`` for an ``_ExportQDQ``. Those call
  ``torch.fake_quantize_per_tensor_affine`` / ``fake_quantize_per_channel_affine``, which the exporter
  writes as ``QuantizeLinear -> DequantizeLinear`` pairs. The quantizer classes hold no export code.
* **Where.** Q/DQ sit on the *inputs* of Conv/MatMul (incl. ``q @ kᵀ`` and ``attn @ v``), never on
  their outputs (``trt`` numerics place no output quantizers); LayerNorm, Softmax and GELU stay float.
  ``paper`` numerics export every observer they have (asymmetric UINT8), for ONNX Runtime only.
* **Weights.** Pre-quantized INT8 initializers feeding ``DequantizeLinear`` only (no weight Q node):
  half the file size, no float copy for TensorRT/ORT to constant-fold, and the integer codes are
  inspectable. Per output channel: Conv weights ``(O, I, kh, kw)`` axis 0, MatMul weights stored
  ``(in, out)`` axis 1. Bias (minus any bias-correction term, folded here) stays float.
* **FP8.** A model whose quantizers are all ``e4m3`` is traced the same way (INT8 stand-ins carrying
  the FP8 scales ``amax / 448``); post-processing gives every Q/DQ a FLOAT8E4M3FN zero-point 0 and
  stores the weights as E4M3 initializers feeding ``DequantizeLinear`` (opset 19, IR version 9).
* **Opset.** 17 by default: the first with ``LayerNormalization`` (one TensorRT layer instead of a
  ReduceMean chain) and per-axis Q/DQ (since 13). ``fp16_remainder`` uses 19 (Q/DQ take FP16 inputs
  and scales, so no Cast pairs around each Q/DQ); ``int4_weights`` uses 21 (INT4 and blocked DQ).
* **Post-processing** with ``onnx``: Constant nodes become initializers, weight Q nodes are folded
  into integer initializers, duplicate Q/DQ of the same tensor are merged, optional FP16 remainder and
  INT4 weight-only DQ, then :func:`dfq.export.checker.check_onnx` runs and errors abort the export.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from dfq.errors import DfqError
from dfq.quant.modules import QuantLayer, quantizers
from dfq.quant.quantizer import FakeQuantizer, Role

if TYPE_CHECKING:
    import onnx

__all__ = ["export_onnx", "save_onnx", "export_mode", "target_of", "check_opset", "DEFAULT_OPSET"]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
FP16_OPSET = 19
FP8_OPSET = 19
INT4_OPSET = 21
_EXPORTER_RANGES = {(-128, 127), (0, 255)}


def check_opset(opset: int | None, minimum: int = DEFAULT_OPSET) -> int:
    """The opset an export writes: ``minimum`` when None, else ``opset`` once it is supported.

    The supported range runs from ``minimum`` (:data:`DEFAULT_OPSET`, or more for some options) to the
    newest opset the installed ``onnx`` knows: the graph is traced at opset <= 20 and raised by onnx's
    version converter, which knows no later one.

    Raises:
        DfqError: ``opset`` outside that range; the message gives the range.
    """
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        return minimum
    if not minimum <= opset <= newest:
        options = " with these options" if minimum > DEFAULT_OPSET else ""
        raise DfqError(
            f"opset {opset} is not supported{options}: choose {minimum} to {newest} (the newest onnx {onnx.__version__} knows)"
        )
    return opset


# -- export-time stand-ins ------------------------------------------------------------------------
class _ExportQDQ(nn.Module):
    """A calibrated per-tensor activation quantizer as ``fake_quantize_per_tensor_affine`` (exports as Q/DQ)."""

    def __init__(self, fq: FakeQuantizer) -> None:
        super().__init__()
        self.enabled = fq.mode == "quantize"
        self.site = fq.site
        if not self.enabled:
            return
        if fq.axis is not None:
            raise DfqError(
                f"activation quantizer {fq.site!r} is per-channel; ONNX export needs per-tensor activations"
            )
        scale, zp, qmin, qmax = fq.qparams()
        if fq.spec.format == "e4m3":  # traced as INT8 Q/DQ with the FP8 scale; postprocess retypes it
            qmin, qmax = -128, 127
        if (qmin, qmax) not in _EXPORTER_RANGES:
            raise DfqError(
                f"activation quantizer {fq.site!r} has a {fq.spec.num_bits}-bit range; only 8-bit activations export"
            )
        self.scale, self.zero_point = float(scale), int(zp)
        self.qmin, self.qmax = qmin, qmax

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.qmin, self.qmax)


def _weight_qdq(w: Tensor, scale: Tensor, axis: int) -> Tensor:
    zp = torch.zeros(scale.numel(), dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale.reshape(-1).float(), zp, axis, -128, 127)


class _ExportLayer(nn.Module):
    """A ``QuantLayer`` with its weight already on the integer grid and the bias correction folded.

    The weight buffer holds the fake-quantized weight (exactly ``code * scale``), so re-quantizing it
    with the same per-channel scale and the INT8 range gives back the calibrated codes, also for 4-bit
    grids and MSE-clipped ranges (the codes stay in [-8, 7]).
    """

    def __init__(self, ql: QuantLayer, swap: dict[int, nn.Module]) -> None:
        super().__init__()
        self.layer = ql.layer
        self.input_quantizer = swap.get(id(ql.input_quantizer)) if ql.input_quantizer is not None else None
        self.output_quantizer = swap.get(id(ql.output_quantizer)) if ql.output_quantizer is not None else None
        wq = ql.weight_quantizer
        self.quantized = wq is not None and wq.mode == "quantize"
        self.kind = (
            "linear" if type(ql.layer) is nn.Linear else "conv" if type(ql.layer) is nn.Conv2d else "other"
        )
        with torch.no_grad():
            w = ql.quantized_weight().detach().float()
            bias = None if ql.layer.bias is None else ql.layer.bias.detach().float()
            if ql.bias_correction is not None and self.quantized:
                corr = ql.bias_correction.detach().float()
                bias = -corr if bias is None else bias - corr
            scale = wq.qparams()[0].detach().float().reshape(-1) if self.quantized else torch.ones(1)
            if self.quantized and wq.qparams()[1].abs().max() > 0:
                raise DfqError("weight quantizers must be symmetric (zero-point 0) to export")
        if self.kind == "linear":
            w = w.t().contiguous()  # (in, out): the MatMul's B input, output channels on axis 1
        self.register_buffer("w", w)
        self.register_buffer("b", bias)
        self.register_buffer("scale", scale)

    def _weight(self) -> Tensor:
        if not self.quantized:
            return self.w
        return _weight_qdq(self.w, self.scale, 1 if self.kind == "linear" else 0)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        w = self._weight()
        if self.kind == "linear":
            y = x @ w
            y = y if self.b is None else y + self.b
        elif self.kind == "conv":
            y = self.layer._conv_forward(x, w, self.b)
        else:  # Conv/Linear subclasses with their own forward (e.g. timm's Conv2dSame)
            y = _call_with(self.layer, {"weight": w, "bias": self.b}, x)
        if self.output_quantizer is not None:
            y = self.output_quantizer(y)
        return y


def _call_with(layer: nn.Module, tensors: dict[str, Tensor | None], x: Tensor) -> Tensor:
    """``layer(x)`` with its own forward but the given weight/bias tensors (restored afterwards).

    ``torch.func.functional_call`` refuses to run under the ONNX tracer, so the parameter slots are
    swapped directly; the tracer then records the exported (Q/DQ) weight.
    """
    saved = {k: layer._parameters[k] for k in tensors if k in layer._parameters}
    try:
        for k in saved:
            layer._parameters[k] = tensors[k]
        return layer(x)
    finally:
        layer._parameters.update(saved)


def _replace_children(
    model: nn.Module, mapping: dict[int, nn.Module]
) -> list[tuple[nn.Module, str, nn.Module]]:
    """Swap every child whose id is in ``mapping``; returns the undo list."""
    undo: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = mapping.get(id(child))
            if new is not None and new is not child:
                parent._modules[name] = new
                undo.append((parent, name, child))
    return undo


@contextmanager
def export_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model's quantizers are exporter-friendly stand-ins; restored on exit.

    Every FakeQuantizer (also shared ones and those inside parametrizations) becomes an
    ``_ExportQDQ``; every ``QuantLayer`` becomes an ``_ExportLayer``. The original modules are put
    back even when the block raises.
    """
    fqs = [q for q in quantizers(model) if q.role is Role.ACTIVATION]
    swap: dict[int, nn.Module] = {id(q): _ExportQDQ(q) for q in fqs}
    layers = {id(m): _ExportLayer(m, swap) for m in model.modules() if isinstance(m, QuantLayer)}
    undo: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        undo += _replace_children(model, layers)
        undo += _replace_children(model, swap)
        yield model
    finally:
        for parent, name, child in reversed(undo):
            parent._modules[name] = child


def target_of(model: nn.Module) -> Literal["trt", "ort"]:
    """``trt`` when every quantizer is symmetric 8-bit-activation (TensorRT numerics), else ``ort``."""
    runnable = (q.spec.trt_runnable(activation=q.role is Role.ACTIVATION) for q in quantizers(model) if q.mode == "quantize")
    return "trt" if all(runnable) else "ort"


def _is_fp8(model: nn.Module) -> bool:
    """True when every active quantizer is E4M3 (an FP8 export), False when all are integer.

    Raises:
        DfqError: FP8 and integer quantizers mixed in one model.
    """
    formats = {q.spec.format for q in quantizers(model) if q.mode == "quantize"}
    if len(formats) > 1:
        raise DfqError(f"the model mixes quantization formats {sorted(formats)}; export supports one per model")
    return formats == {"e4m3"}


def _weight_bits(model: nn.Module) -> int:
    bits = [q.spec.num_bits for q in quantizers(model) if q.role is Role.WEIGHT and q.mode == "quantize"]
    return max(bits) if bits else 32


# -- export ---------------------------------------------------------------------------------------
def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    input_shape: Sequence[int],
    opset: int | None = None,
    fp16_remainder: bool = False,
    int4_weights: bool = False,
    check: bool = True,
) -> Path:
    """Export a calibrated fake-quant model to a Q/DQ ONNX file with a dynamic batch dimension.

    Args:
        model: a model prepared by ``dfq.quantize_`` and calibrated (CPU or CUDA; exported on CPU).
        path: output ``.onnx`` file.
        input_shape: ``(C, H, W)`` of one image (the batch dimension is dynamic).
        opset: ONNX opset; default 17 (19 with ``fp16_remainder`` or FP8, 21 with ``int4_weights``).
        fp16_remainder: store the unquantized remainder (activations, biases, LayerNorm, scales) in FP16.
        int4_weights: Linear/MatMul weights as INT4 weight-only DQ (needs <= 4-bit weights; the inputs
            of those MatMuls lose their activation Q/DQ: W4A16, what TensorRT can run).
        check: run :func:`dfq.export.checker.check_onnx` and raise on errors.

    Returns:
        The written path.

    Raises:
        DfqError: uncalibrated model, unsupported numerics, or checker errors.
    """
    import onnx

    path = Path(path)
    if not quantizers(model):
        raise DfqError("model has no quantizers: run dfq.quantize_ and dfq.calibrate before exporting")
    if any(not q.is_calibrated for q in quantizers(model) if q.mode == "quantize"):
        raise DfqError("model is not calibrated: run dfq.calibrate(model, forward_loop) before exporting")
    if int4_weights and _weight_bits(model) > 4:
        raise DfqError("int4_weights needs a model with <= 4-bit weights (e.g. the w4a8 preset)")
    target = target_of(model)
    if fp16_remainder and target != "trt":
        raise DfqError("fp16_remainder is for TensorRT (trt numerics); paper numerics export in FP32")
    fp8 = _is_fp8(model)
    if fp8 and fp16_remainder:
        raise DfqError("fp16_remainder is not supported for FP8 exports yet (FP8 Q/DQ keep float32 scales)")
    want = INT4_OPSET if int4_weights else FP16_OPSET if fp16_remainder else FP8_OPSET if fp8 else DEFAULT_OPSET
    opset = check_opset(opset, want)
    proto = _trace(model, tuple(input_shape), min(opset, 20))
    from dfq.export.onnx_passes import postprocess

    proto = postprocess(proto, opset=opset, fp16_remainder=fp16_remainder, int4_weights=int4_weights, fp8=fp8)
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_onnx(proto, path)
    if check:
        from dfq.export.checker import check_onnx, format_findings

        findings = check_onnx(path, target=target)
        errors = [f for f in findings if f.severity == "error"]
        warned = [f for f in findings if f.severity == "warning"]
        if warned:
            log.warning("%s: %d checker warning(s), e.g. %s", path.name, len(warned), warned[0])
        if errors:
            raise DfqError(
                f"exported graph breaks {len(errors)} rule(s): "
                + format_findings(errors[:3]).replace("\n", "; ")
            )
    return path


def save_onnx(proto: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``proto`` to ``path`` atomically (:func:`dfq.atomic.atomic_write`): a temporary file in the
    same folder, renamed only once complete, so a failed or interrupted save (a full disk) leaves the
    previous file, or none, and never a truncated graph that fails to parse later."""
    import onnx

    from dfq.atomic import atomic_write

    return atomic_write(Path(path), lambda tmp: onnx.save(proto, str(tmp), format="protobuf"))  # not by the .tmp suffix


def _trace(model: nn.Module, input_shape: tuple[int, ...], opset: int) -> onnx.ModelProto:
    import onnx

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.cpu().eval()
    buf = io.BytesIO()
    try:
        with export_mode(model), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.zeros(2, *input_shape),),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                do_constant_folding=True,
            )
    finally:
        model.to(device).train(was_training)
    return onnx.load_from_string(buf.getvalue())


# -- graph post-processing ------------------------------------------------------------------------
