"""Helpers shared by the tests of dfq/export: the input shape, calibrated timm models, and a read-only view
of an ONNX graph."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx
import timm
import torch
from onnx import numpy_helper
from torch import nn

from dfq.config import QuantConfig, preset
from dfq.quant.calibrate import calibrate
from dfq.quant.transform import quantize_

SHAPE = (3, 160, 160)


def _config(scheme: str) -> QuantConfig:
    cfg = preset(*scheme.split("-")) if "-" in scheme else preset(scheme)
    if scheme == "w4a8":  # the preset's per-channel MSE search costs ~30 s here; the 4-bit grid is the same
        cfg = dataclasses.replace(cfg, weight=dataclasses.replace(cfg.weight, calibrator="minmax"))
    return cfg


def _calibrated(name: str, scheme: str) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    x = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(1))
    return calibrate(quantize_(model, _config(scheme)), lambda m: m(x))


class Graph:
    """Read-only view of an ONNX graph: producers, consumers, constants."""

    def __init__(self, path: Path | onnx.ModelProto) -> None:
        self.model = onnx.load(str(path)) if isinstance(path, Path) else path
        g = self.model.graph
        self.nodes = list(g.node)
        self.consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def op(self, op_type: str) -> list[onnx.NodeProto]:
        return [n for n in self.nodes if n.op_type == op_type]

    def src(self, name: str) -> str:
        n = self.producer.get(name)
        return n.op_type if n is not None else ("initializer" if name in self.consts else "input")

    def axis(self, node: onnx.NodeProto) -> int:
        return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _is_activation_dq(g: Graph, name: str) -> bool:
    dq = g.producer.get(name)
    return dq is not None and dq.op_type == "DequantizeLinear" and g.src(dq.input[0]) == "QuantizeLinear"
