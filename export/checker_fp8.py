"""TensorRT's FP8 conventions beyond one Q/DQ pair, for :func:`dfq.export.checker.check_model`.

Run on graphs that hold FLOAT8 tensors. Each rule looks at a GEMM (Conv, MatMul, Gemm) and the
DequantizeLinear nodes that feed it:

* **one precision per GEMM**: a GEMM whose inputs are dequantized from different types (FP8 activations
  with INT8 weights, say) has no kernel in TensorRT — error for ``target="trt"``, warning for ``ort``;
* **FP8 attention**: TensorRT fuses an FP8 attention block (the two activation-by-activation MatMuls,
  ``q·kᵀ`` and ``softmax·v``) only when every input comes from an FP8 DequantizeLinear *directly*;
  NVIDIA ModelOpt's FP8 exporter moves the key's Transpose and the attention-scale Mul above the
  Q/DQ for that reason, and quantizes the softmax output. A Transpose, Reshape or Mul between the DQ and
  the MatMul, or an input left in float, is a warning: the block still builds, in higher precision or
  unfused;
* **per-channel FP8 weights** (one scale per output channel): TensorRT added per-channel FP8 GEMM
  scales in 10.6 (Hopper); older versions need per-tensor FP8 weights. One info finding per graph.

What stays in higher precision is the INT8 rule set's (LayerNorm, Softmax, GELU, residual Adds are
never wrapped between DQ and Q): :mod:`dfq.export.checker` applies it to FP8 graphs unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

    from dfq.export.checker import Finding

__all__ = ["check_fp8_graph", "PASS_THROUGH_OPS"]

PASS_THROUGH_OPS = frozenset({"Transpose", "Reshape", "Mul", "Div", "Squeeze", "Unsqueeze", "Cast"})
"""Ops that may sit between a DequantizeLinear and an attention MatMul without changing its precision
question (data movement and scaling): TensorRT's FP8 attention fusion wants none of them there."""

_GEMMS = frozenset({"Conv", "MatMul", "Gemm"})


def _qtype(dq: onnx.NodeProto, consts: dict[str, np.ndarray], producer: dict[str, onnx.NodeProto]) -> str:
    """The quantized type a DequantizeLinear reads: its zero-point's, else its constant input's (a
    weight), else the zero-point of the QuantizeLinear feeding it; ONNX's default is uint8."""
    if len(dq.input) > 2 and dq.input[2] in consts:
        return consts[dq.input[2]].dtype.name
    if dq.input[0] in consts:
        return consts[dq.input[0]].dtype.name
    q = producer.get(dq.input[0])
    if q is not None and q.op_type == "QuantizeLinear" and len(q.input) > 2 and q.input[2] in consts:
        return consts[q.input[2]].dtype.name
    return "uint8"


def _source(name: str, producer: dict[str, onnx.NodeProto]) -> tuple[onnx.NodeProto | None, list[str]]:
    """The DequantizeLinear behind ``name`` through pass-through ops, and the ops passed (None if none)."""
    passed: list[str] = []
    node = producer.get(name)
    while node is not None and node.op_type in PASS_THROUGH_OPS:
        passed.append(node.op_type)
        node = producer.get(node.input[0])
    return (node if node is not None and node.op_type == "DequantizeLinear" else None), passed


def _reaches_constant(name: str, consts: dict[str, np.ndarray], producer: dict[str, onnx.NodeProto]) -> bool:
    node = producer.get(name)
    while node is not None and node.op_type in PASS_THROUGH_OPS | {"DequantizeLinear"}:
        name = node.input[0]
        node = producer.get(name)
    return name in consts


def check_fp8_graph(
    graph: onnx.GraphProto,
    consts: dict[str, np.ndarray],
    producer: dict[str, onnx.NodeProto],
    target: str,
    fp8_types: frozenset[str],
) -> list[Finding]:
    """The FP8 findings of one graph (see the module docstring); empty when it holds no FP8 Q/DQ."""
    from dfq.export.checker import Finding

    out: list[Finding] = []
    per_channel = False
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            scale = consts.get(node.input[1])
            if scale is not None and scale.size > 1 and _qtype(node, consts, producer) in fp8_types:
                per_channel = True
        if node.op_type not in _GEMMS:
            continue
        name = node.name or node.output[0]
        sources = [_source(i, producer) for i in node.input[:2]]
        types = [_qtype(dq, consts, producer) if dq is not None else None for dq, _ in sources]
        if not any(t in fp8_types for t in types if t):
            continue
        found = sorted({t for t in types if t})
        if len(found) > 1:
            sev = "error" if target == "trt" else "warning"
            out.append(Finding(sev, f"{node.op_type} mixes {' and '.join(found)} inputs: TensorRT runs a GEMM "
                                    "in one precision", name))  # fmt: skip
        attention = node.op_type == "MatMul" and not any(_reaches_constant(i, consts, producer) for i in node.input[:2])
        if not attention:
            continue
        for dq, passed in sources:
            if dq is None:
                out.append(Finding("warning", "FP8 attention MatMul has an input in float: the block runs in "
                                              "higher precision (quantize q, k, the softmax output and v)", name))  # fmt: skip
            elif passed:
                out.append(Finding("warning", f"FP8 attention MatMul input passes {'/'.join(passed)} after its "
                                              "DequantizeLinear: TensorRT's FP8 attention fusion wants DQ -> MatMul "
                                              "directly", name))  # fmt: skip
    if per_channel:
        out.append(Finding("info", "per-channel FP8 weight scales: TensorRT runs them from 10.6 on (Hopper); "
                                   "older versions need per-tensor FP8 weights"))  # fmt: skip
    return out
