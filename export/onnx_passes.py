"""Graph passes on an exported Q/DQ ONNX model (spec: DEPLOYMENT.md §b, TensorRT explicit quantization).

This module owns the clean-up after tracing: Constant nodes become initializers, Identity nodes go,
weight QuantizeLinear nodes are folded into pre-quantized integer initializers (DequantizeLinear
only), duplicate Q/DQ of one tensor are merged, and the optional FP16 remainder and INT4 weight-only
DQ blocks are applied. Pure functions of an ``onnx.ModelProto``; :mod:`dfq.export.onnx` calls
:func:`postprocess`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dfq.errors import DfqError

if TYPE_CHECKING:
    import onnx

def postprocess(
    proto: onnx.ModelProto,
    *,
    opset: int,
    fp16_remainder: bool = False,
    int4_weights: bool = False,
    fp8: bool = False,
) -> onnx.ModelProto:
    """Constants to initializers, weight Q folded into integer (or FP8) initializers, Q/DQ deduplicated, options.

    ``fp8``: every Q/DQ pair becomes FLOAT8E4M3FN (:func:`_to_fp8`) before the weights are folded, so
    weights are stored as E4M3 initializers feeding DequantizeLinear.
    """
    _constants_to_initializers(proto)
    _remove_identity(proto)
    if fp8:
        _to_fp8(proto)
    _fold_weight_quantize(proto)
    _dedupe(proto, "QuantizeLinear")
    _dedupe(proto, "DequantizeLinear")
    if opset > _opset(proto):
        _set_opset(proto, opset)
    if int4_weights:
        _int4_weights(proto)
    if fp16_remainder:
        _to_fp16(proto)
    _prune(proto)
    if fp8:  # FLOAT8 types need IR >= 9; ONNX Runtime 1.31 refuses the newest IR (14) that onnx may stamp
        import onnx

        proto.ir_version = max(FP8_IR_VERSION, onnx.helper.find_min_ir_version_for(list(proto.opset_import), True))
    return proto


FP8_IR_VERSION = 9
"""The first ONNX IR version with FLOAT8 types (onnx 1.14); what an opset-19 FP8 export is stamped with."""


def _to_fp8(proto: onnx.ModelProto) -> None:
    """Every QuantizeLinear/DequantizeLinear gets a FLOAT8E4M3FN zero-point 0 of its old zero-point's shape.

    The tracer wrote the FP8 quantizers as INT8 Q/DQ with their FP8 scales (``amax / 448``); the
    zero-point's type is what makes ONNX Q/DQ FP8 (opset >= 19; ``saturate=1``, the default, clamps at
    +-448 as :mod:`dfq.fp8` does).
    """
    import onnx

    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    for node in g.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        old = inits.get(node.input[2])
        if old is None:
            raise DfqError(f"{node.op_type} {node.name} has no constant zero-point to make FP8")
        name = f"{old.name}_e4m3"
        if name not in inits:
            n = int(np.prod(old.dims)) if old.dims else 1
            t = onnx.helper.make_tensor(name, onnx.TensorProto.FLOAT8E4M3FN, list(old.dims), [0.0] * n)
            g.initializer.append(t)
            inits[name] = t
        node.input[2] = name


def _remove_identity(proto: onnx.ModelProto) -> None:
    """Drop Identity nodes (dropout/identity modules) that do not produce a graph output."""
    g = proto.graph
    outputs = {o.name for o in g.output}
    renames = {
        n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity" and n.output[0] not in outputs
    }
    keep = [n for n in g.node if not (n.op_type == "Identity" and n.output[0] in renames)]
    for node in keep:
        for i, name in enumerate(node.input):
            while name in renames:
                name = renames[name]
            node.input[i] = name
    del g.node[:]
    g.node.extend(keep)


def _opset(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _set_opset(proto: onnx.ModelProto, opset: int) -> None:
    """Raise the default-domain opset; ops whose signature changed are converted by onnx's converter."""
    from onnx import version_converter

    converted = version_converter.convert_version(proto, opset)
    proto.CopyFrom(converted)


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _constants_to_initializers(proto: onnx.ModelProto) -> None:
    g = proto.graph
    keep = []
    for node in g.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            t = node.attribute[0].t
            t.name = node.output[0]
            g.initializer.append(t)
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)


def _broadcast(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if param.ndim == 0:
        return param
    shape = [1] * ndim
    shape[axis] = -1
    return param.reshape(shape)


def quantize_array(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear in numpy: ``saturate(round_half_even(x / scale) + zp)`` in zp's dtype
    (integer, or FP8 E4M3FN with zero-point 0: saturated at +-448, then ml_dtypes' nearest-even cast)."""
    axis = axis % max(x.ndim, 1)
    s = _broadcast(scale.astype(np.float32), x.ndim, axis)
    if zp.dtype.name == "float8_e4m3fn":
        return np.clip(x.astype(np.float32) / s, -448.0, 448.0).astype(zp.dtype)
    z = _broadcast(zp.astype(np.int32), x.ndim, axis)
    info = np.iinfo(zp.dtype)
    return np.clip(np.rint(x.astype(np.float32) / s) + z, info.min, info.max).astype(zp.dtype)


def _fold_weight_quantize(proto: onnx.ModelProto) -> None:
    """``Q(float initializer) -> DQ`` becomes ``integer initializer -> DQ``."""
    from onnx import numpy_helper

    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    renames: dict[str, str] = {}
    for node in g.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in inits and len(node.input) == 3:
            x = numpy_helper.to_array(inits[node.input[0]])
            scale = numpy_helper.to_array(inits[node.input[1]])
            zp = numpy_helper.to_array(inits[node.input[2]])
            q = quantize_array(x, scale, zp, _attr(node, "axis", 1))
            name = f"{node.input[0]}_quantized"
            g.initializer.append(numpy_helper.from_array(q, name))
            inits[name] = g.initializer[-1]
            renames[node.output[0]] = name
        else:
            keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    del g.node[:]
    g.node.extend(keep)


def _param_key(proto: onnx.ModelProto, name: str) -> bytes:
    from onnx import numpy_helper

    for t in proto.graph.initializer:
        if t.name == name:
            arr = numpy_helper.to_array(t)
            return arr.dtype.str.encode() + arr.tobytes()
    return name.encode()


def _dedupe(proto: onnx.ModelProto, op: str) -> None:
    """Merge Q (or DQ) nodes reading the same tensor with equal scale, zero-point and axis."""
    g = proto.graph
    seen: dict[tuple[Any, ...], str] = {}
    renames: dict[str, str] = {}
    keep = []
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        if node.op_type == op:
            key = (node.input[0], *(_param_key(proto, n) for n in node.input[1:]), _attr(node, "axis", 1))
            if key in seen:
                renames[node.output[0]] = seen[key]
                continue
            seen[key] = node.output[0]
        keep.append(node)
    for out in g.output:
        if out.name in renames:  # never happens for our graphs (no Q/DQ on the output)
            raise DfqError("a graph output is produced by a duplicate Q/DQ node")
    del g.node[:]
    g.node.extend(keep)


def _prune(proto: onnx.ModelProto) -> None:
    """Drop initializers no node reads."""
    g = proto.graph
    used = {n for node in g.node for n in node.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def _consumers(proto: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _int4_weights(proto: onnx.ModelProto) -> None:
    """INT8 weight DQ of MatMul/Gemm B inputs -> INT4 blocked DQ (weight-only: activation Q/DQ dropped)."""
    import onnx
    from onnx import numpy_helper

    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers = _consumers(proto)
    converted = 0
    for node in list(g.node):
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        users = consumers.get(node.output[0], [])
        if not users or any(
            u.op_type not in ("MatMul", "Gemm") or u.input[1] != node.output[0] for u in users
        ):
            continue
        codes = numpy_helper.to_array(inits[node.input[0]])
        scale = numpy_helper.to_array(inits[node.input[1]])
        if codes.ndim != 2 or codes.min() < -8 or codes.max() > 7:
            continue
        k = codes.shape[0]
        block = next((b for b in (128, 64, 32) if k % b == 0), 0)
        name = f"{node.input[0]}_int4"
        g.initializer.append(
            onnx.helper.make_tensor(name, onnx.TensorProto.INT4, codes.shape, codes.flatten().tolist())
        )
        zp_name = f"{name}_zero_point"
        if block:  # per-channel scale repeated per block: same numbers, TensorRT's blocked INT4 layout
            s = np.repeat(scale.reshape(1, -1), k // block, axis=0).astype(np.float32)
            zp_shape: tuple[int, ...] = s.shape
        else:
            s, zp_shape = scale.astype(np.float32), scale.shape
        g.initializer.append(numpy_helper.from_array(s, f"{name}_scale"))
        g.initializer.append(
            onnx.helper.make_tensor(zp_name, onnx.TensorProto.INT4, zp_shape, [0] * int(np.prod(zp_shape)))
        )
        del node.input[:]
        node.input.extend([name, f"{name}_scale", zp_name])
        del node.attribute[:]
        node.attribute.append(onnx.helper.make_attribute("axis", 0 if block else 1))
        if block:
            node.attribute.append(onnx.helper.make_attribute("block_size", block))
        converted += 1
        for user in users:  # weight-only: the activation input goes back to float
            dq = producer.get(user.input[0])
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    user.input[0] = q.input[0]
    if not converted:
        raise DfqError("int4_weights: no MatMul/Gemm weight lies on the 4-bit grid")
    _remove_dead(proto)


def _remove_dead(proto: onnx.ModelProto) -> None:
    g = proto.graph
    while True:
        used = {n for node in g.node for n in node.input} | {o.name for o in g.output}
        keep = [n for n in g.node if any(o in used for o in n.output)]
        if len(keep) == len(g.node):
            return
        del g.node[:]
        g.node.extend(keep)


def _to_fp16(proto: onnx.ModelProto) -> None:
    """FP16 remainder (opset >= 19): float initializers, attributes and Casts become FP16; I/O stay FP32."""
    import onnx
    from onnx import TensorProto, numpy_helper

    g = proto.graph
    for i, t in enumerate(list(g.initializer)):
        if t.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(t).astype(np.float16)
            g.initializer[i].CopyFrom(numpy_helper.from_array(arr, t.name))
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
    inp, out = g.input[0].name, g.output[0].name
    cast_in = onnx.helper.make_node(
        "Cast", [inp], [f"{inp}_fp16"], to=TensorProto.FLOAT16, name="input_to_fp16"
    )
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == inp:
                node.input[i] = f"{inp}_fp16"
        for i, name in enumerate(node.output):
            if name == out:
                node.output[i] = f"{out}_fp16"
    cast_out = onnx.helper.make_node(
        "Cast", [f"{out}_fp16"], [out], to=TensorProto.FLOAT, name="logits_to_fp32"
    )
    nodes = [cast_in, *g.node, cast_out]
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]


# -- run directories ------------------------------------------------------------------------------
