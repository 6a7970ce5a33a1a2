"""Rule checker for Q/DQ ONNX graphs (spec: DEPLOYMENT.md §b5, TensorRT explicit quantization).

This module owns :func:`check_onnx`, run on every export. Each broken rule is a :class:`Finding`
(severity ``error`` | ``warning`` | ``info``, a readable message and the node name). Rules:

* QOperator ops (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger, ...) are errors: TensorRT
  parses Q/DQ only.
* Scales must be positive and finite constants; INT8 zero-points must be 0 for ``target="trt"``
  (UINT8 / non-zero zero-points are errors there, allowed for ``target="ort"``).
* Per-channel (axis) Q/DQ: the scale length must equal the consumer's output-channel dimension
  (Conv weight axis 0; MatMul B ``(in, out)`` axis 1; Gemm by ``transB``); activations per tensor.
* Q/DQ on the output of Conv/MatMul/Gemm is flagged (TensorRT fuses output Q only into a following
  quantized op; ``trt`` numerics never place one).
* Softmax, LayerNormalization and GELU must not be wrapped (DQ on their input *and* Q on their
  output), which would ask for an INT8 implementation of a float op.
* FP8: a FLOAT8E4M3FN zero-point makes a Q/DQ FP8; it needs opset >= 19, a float32 scale and a
  zero-point of 0; other FP8 types (E5M2, the FNUZ variants) are errors for ``target="trt"``
  (TensorRT's FP8 is E4M3FN). Placement, axis and per-tensor rules are those of INT8; the rules of
  FP8 GEMMs and attention (one precision per GEMM, DQ straight into the attention MatMuls,
  per-channel FP8 weights from TensorRT 10.6) are :mod:`dfq.export.checker_fp8`'s.
* Ops outside the supported list are warnings (TensorRT's ONNX parser may still handle them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = ["Finding", "check_onnx", "check_model", "format_findings", "QOPERATOR_OPS", "SUPPORTED_OPS"]

Severity = Literal["error", "warning", "info"]

QOPERATOR_OPS = frozenset(
    {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
     "QLinearGlobalAveragePool", "QLinearSoftmax", "QGemm", "QAttention", "MatMulIntegerToFloat", "DynamicQuantizeLinear"}
)  # fmt: skip
SUPPORTED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "Conv", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Relu", "Erf",
     "Gelu", "Sigmoid", "Tanh", "Softmax", "LayerNormalization", "BatchNormalization", "Reshape", "Transpose",
     "Flatten", "Concat", "Slice", "Gather", "Shape", "Unsqueeze", "Squeeze", "Expand", "MaxPool", "AveragePool",
     "GlobalAveragePool", "ReduceMean", "Identity", "Cast", "Constant", "ConstantOfShape", "Split", "Pow", "Sqrt",
     "Equal", "Where", "Clip", "HardSigmoid", "HardSwish", "Pad", "Range", "Tile", "Neg", "Resize"}
)  # fmt: skip
WEIGHTED_OPS = frozenset({"Conv", "MatMul", "Gemm"})
FP8_TYPES = frozenset({"float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"})
"""numpy (ml_dtypes) names of the ONNX FLOAT8 types; TensorRT runs ``float8_e4m3fn`` only."""
FP8_MIN_OPSET = 19
FLOAT_ONLY_OPS = frozenset({"Softmax", "LayerNormalization", "Gelu"})


@dataclass(frozen=True)
class Finding:
    """One broken rule: ``severity`` (error | warning | info), ``message`` and the offending ``node``."""

    severity: Severity
    message: str
    node: str = ""

    def __str__(self) -> str:
        where = f" [{self.node}]" if self.node else ""
        return f"{self.severity}: {self.message}{where}"


def format_findings(findings: Iterable[Finding]) -> str:
    """One finding per line."""
    return "\n".join(str(f) for f in findings)


def check_onnx(path: str | Path, target: Literal["trt", "ort"] = "trt") -> list[Finding]:
    """Check a Q/DQ ONNX file against the TensorRT explicit-quantization rules.

    Args:
        path: the ``.onnx`` file.
        target: ``trt`` (symmetric INT8, zero-point 0) or ``ort`` (asymmetric UINT8 allowed).

    Returns:
        Findings, errors first; an empty list means the graph follows every rule.
    """
    import onnx

    return check_model(onnx.load(str(path)), target=target)


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def check_model(model: onnx.ModelProto, target: Literal["trt", "ort"] = "trt") -> list[Finding]:
    """:func:`check_onnx` on an in-memory model."""
    from onnx import numpy_helper

    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out: list[Finding] = []
    unsupported: set[str] = set()
    for node in g.node:
        name = node.name or (node.output[0] if node.output else node.op_type)
        op = node.op_type
        if op in QOPERATOR_OPS:
            out.append(
                Finding(
                    "error",
                    f"QOperator op {op}: TensorRT parses Q/DQ only, export QuantizeLinear/DequantizeLinear",
                    name,
                )
            )
            continue
        if op not in SUPPORTED_OPS and node.domain in ("", "ai.onnx"):
            unsupported.add(op)
        if op in ("QuantizeLinear", "DequantizeLinear"):
            out += _check_qdq(node, name, consts, consumers, producer, target)
        if op in FLOAT_ONLY_OPS:
            src = producer.get(node.input[0])
            qs = [c for c in consumers.get(node.output[0], []) if c.op_type == "QuantizeLinear"]
            if src is not None and src.op_type == "DequantizeLinear" and qs:
                sev: Severity = "error" if target == "trt" else "warning"
                out.append(Finding(sev, f"{op} is wrapped between DQ and Q: it must stay in float", name))
    out += _check_fp8_opset(model, consts)
    if any(a.dtype.name in FP8_TYPES for a in consts.values()):
        from dfq.export.checker_fp8 import check_fp8_graph

        out += check_fp8_graph(g, consts, producer, target, FP8_TYPES)
    for op in sorted(unsupported):
        out.append(
            Finding("warning", f"op {op} is outside dfq's supported list (TensorRT may still parse it)", op)
        )
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda f: order[f.severity])


def _check_fp8_opset(model: onnx.ModelProto, consts: dict[str, np.ndarray]) -> list[Finding]:
    """FP8 Q/DQ exist from opset 19 on (one finding for the whole graph)."""
    if not any(a.dtype.name in FP8_TYPES for a in consts.values()):
        return []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= FP8_MIN_OPSET:
        return []
    return [Finding("error", f"FP8 tensors need opset >= {FP8_MIN_OPSET} (QuantizeLinear-19), got {opset}")]


def _check_fp8(op: str, name: str, scale: np.ndarray | None, zp: np.ndarray, target: str) -> list[Finding]:
    """An FP8 Q/DQ (``zp`` of a FLOAT8 type): E4M3FN for TensorRT, float32 scale, zero-point 0."""
    out: list[Finding] = []
    if zp.dtype.name != "float8_e4m3fn" and target == "trt":
        out.append(Finding("error", f"{op} is {zp.dtype.name}; TensorRT's FP8 is E4M3FN", name))
    if scale is not None and scale.dtype != np.float32:
        out.append(Finding("error", f"FP8 {op} scale must be float32, got {scale.dtype}", name))
    values = zp.astype(np.float32)
    if np.any(values != 0):
        out.append(Finding("error", f"FP8 {op} zero-point must be 0 (got {values.ravel()[:4].tolist()})", name))
    return out


def _check_qdq(
    node: onnx.NodeProto,
    name: str,
    consts: dict[str, np.ndarray],
    consumers: dict[str, list[onnx.NodeProto]],
    producer: dict[str, onnx.NodeProto],
    target: str,
) -> list[Finding]:
    out: list[Finding] = []
    op = node.op_type
    scale = consts.get(node.input[1]) if len(node.input) > 1 else None
    if scale is None:
        out.append(Finding("error", f"{op} scale is not a constant initializer", name))
    elif not np.all(np.isfinite(scale.astype(np.float64))) or not np.all(scale.astype(np.float64) > 0):
        out.append(
            Finding("error", f"{op} scale must be positive and finite (min {np.min(scale):.3g})", name)
        )
    zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zp is not None and zp.dtype.name in FP8_TYPES:
        out += _check_fp8(op, name, scale, zp, target)
    elif target == "trt":
        if zp is not None and zp.dtype == np.uint8:
            out.append(
                Finding(
                    "error",
                    f"{op} uses UINT8 (asymmetric) quantization; TensorRT needs INT8 with zero-point 0",
                    name,
                )
            )
        elif zp is not None and np.any(zp.astype(np.int64) != 0):
            out.append(
                Finding(
                    "error", f"{op} zero-point must be 0 for TensorRT (got {zp.ravel()[:4].tolist()})", name
                )
            )
    if op == "QuantizeLinear":
        src = producer.get(node.input[0])
        if src is not None and src.op_type in WEIGHTED_OPS:
            sev: Severity = "error" if target == "trt" else "warning"
            out.append(
                Finding(
                    sev,
                    f"Q/DQ on the output of {src.op_type} {src.name}: quantize inputs of weighted ops only",
                    name,
                )
            )
    if scale is not None and scale.size > 1 and _attr(node, "block_size", 0) in (0, None):
        out += _check_axis(node, name, scale.size, consts, consumers)
    return out


def _check_axis(
    node: onnx.NodeProto,
    name: str,
    channels: int,
    consts: dict[str, np.ndarray],
    consumers: dict[str, list[onnx.NodeProto]],
) -> list[Finding]:
    out: list[Finding] = []
    axis = int(_attr(node, "axis", 1))  # type: ignore[arg-type]
    weight = consts.get(node.input[0])
    if weight is None:
        return [
            Finding("error", f"per-channel {node.op_type} on an activation; activations are per tensor", name)
        ]
    if weight.shape[axis] != channels:
        out.append(
            Finding(
                "error",
                f"scale has {channels} entries but axis {axis} of the weight has {weight.shape[axis]}",
                name,
            )
        )
    if node.op_type != "DequantizeLinear":
        return out
    for user in consumers.get(node.output[0], []):
        if user.op_type == "Conv" and user.input[1] == node.output[0]:
            want = 0
        elif user.op_type == "MatMul" and user.input[1] == node.output[0]:
            want = weight.ndim - 1
        elif user.op_type == "Gemm" and user.input[1] == node.output[0]:
            want = 0 if _attr(user, "transB", 0) else 1
        else:
            continue
        if axis % weight.ndim != want:
            out.append(
                Finding(
                    "error",
                    f"weight DQ axis {axis} is not the output-channel axis {want} of {user.op_type}",
                    name,
                )
            )
    return out
