"""Legacy TensorRT <= 10 implicit-quantization artifacts: calibration cache and calibrator (DEPLOYMENT.md §c).

This module owns the TensorRT calibration-cache text format and the ``IInt8*Calibrator`` bridge, for
users stuck on TensorRT 10.x (Jetson/DriveOS) who still build with ``--int8 --calib``. Implicit
calibration was deprecated in TensorRT 10.1 and removed in 11.0; the Q/DQ ONNX is the primary path.

Cache format: line 1 ``TRT-<version number>-<algorithm>`` (e.g. ``TRT-100000-EntropyCalibration2``;
the number is ``NV_TENSORRT_VERSION``: major*10000 + minor*100 + patch from 10.0 on, major*1000 +
minor*100 + patch before), then one ``tensor_name: <8 hex digits>`` line per tensor, the big-endian
IEEE-754 float32 *scale* (amax/127). Keys are ONNX tensor names: dfq uses the float activation
tensors that enter the Q/DQ pairs, and :func:`strip_qdq` writes the matching float ONNX for the
implicit build (same tensor names, weights dequantized).

The calibrator's TensorRT names (base classes and the callbacks TensorRT calls) exist in the 10.0.1 and
10.16 bindings and not in 11.4's (``benchmarks/trt_api_check.py``); the class has never run.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from dfq.atomic import atomic_write, write_text
from dfq.errors import DfqError

__all__ = [
    "write_calibration_cache",
    "read_calibration_cache",
    "cache_from_model",
    "cache_header",
    "strip_qdq",
    "make_trt_calibrator",
]

_ALGOS = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration"}


def cache_header(version: str = "10.0.0", algo: str = "EntropyCalibration2") -> str:
    """First line of a cache: ``TRT-<NV_TENSORRT_VERSION>-<algo>``.

    >>> cache_header("10.0.0"), cache_header("8.6.1", "MinMaxCalibration")
    ('TRT-100000-EntropyCalibration2', 'TRT-8601-MinMaxCalibration')
    """
    parts = [int(p) for p in (str(version).split(".") + ["0", "0"])[:3]]
    major, minor, patch = parts
    number = major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch
    return f"TRT-{number}-{algo}"


def write_calibration_cache(
    path: str | Path, scales: Mapping[str, float], version: str = "10.0.0", algo: str = "EntropyCalibration2"
) -> Path:
    """Write a TensorRT calibration cache with one float32 scale per tensor.

    Args:
        path: output file.
        scales: ONNX tensor name -> positive scale (amax/127).
        version: TensorRT version the cache is for.
        algo: algorithm name in the header (``EntropyCalibration2`` or ``MinMaxCalibration``).
    """
    lines = [cache_header(version, algo)]
    for name, scale in scales.items():
        if not scale > 0 or scale != scale or scale == float("inf"):
            raise DfqError(f"scale of {name!r} must be positive and finite, got {scale}")
        lines.append(f"{name}: {struct.pack('>f', float(scale)).hex()}")
    return write_text(Path(path), "\n".join(lines) + "\n")


def read_calibration_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """``(header, {tensor name: scale})`` of a cache file."""
    text = Path(path).read_text().splitlines()
    if not text or not text[0].startswith("TRT-"):
        raise DfqError(f"{path} is not a TensorRT calibration cache (first line must start with 'TRT-')")
    scales: dict[str, float] = {}
    for line in text[1:]:
        if not line.strip():
            continue
        name, _, hexval = line.rpartition(":")
        scales[name.strip()] = struct.unpack(">f", bytes.fromhex(hexval.strip().rjust(8, "0")))[0]
    return text[0], scales


def cache_from_model(model: nn.Module, onnx_path: str | Path) -> dict[str, float]:
    """Activation scales of an exported model keyed by the ONNX tensors entering its QuantizeLinear nodes.

    Args:
        model: the calibrated model that was exported (must have TensorRT numerics).
        onnx_path: its Q/DQ export.

    Raises:
        DfqError: asymmetric numerics (TensorRT dynamic ranges are symmetric).
    """
    import onnx
    from onnx import numpy_helper

    from dfq.export.onnx import target_of

    if target_of(model) != "trt":
        raise DfqError("a TensorRT calibration cache needs symmetric INT8 activations (trt numerics)")
    proto = onnx.load(str(onnx_path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    scales: dict[str, float] = {}
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            scale = inits[node.input[1]]
            scales[node.input[0]] = float(scale.reshape(-1)[0])
    return scales


def strip_qdq(onnx_path: str | Path, out_path: str | Path) -> Path:
    """Write the float graph of a Q/DQ file: Q/DQ removed, weights dequantized, tensor names kept."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from dfq.export.onnx_passes import _remove_dead

    proto = onnx.load(str(onnx_path))
    g = proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    renames: dict[str, str] = {}
    for node in g.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            renames[node.output[0]] = node.input[0]
    for node in g.node:
        if node.op_type != "DequantizeLinear":
            continue
        if node.input[0] in renames:
            renames[node.output[0]] = renames[node.input[0]]
        elif node.input[0] in inits:
            codes, scale = inits[node.input[0]].astype(np.float32), inits[node.input[1]].astype(np.float32)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * codes.ndim
            if scale.ndim:
                shape[axis] = -1
            g.initializer.append(
                numpy_helper.from_array(codes * scale.reshape(shape), f"{node.output[0]}_float")
            )
            renames[node.output[0]] = f"{node.output[0]}_float"
    for node in g.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
    _remove_dead(proto)
    from dfq.export.onnx import save_onnx

    return save_onnx(proto, out_path)


def make_trt_calibrator(
    batches: Iterable[Tensor], cache_path: str | Path, algo: Literal["entropy", "minmax"] = "entropy",
    batch_size: int | None = None,
) -> Any:
    """A TensorRT <= 10 calibrator (``IInt8EntropyCalibrator2`` / ``IInt8MinMaxCalibrator``) over image batches.

    The class is created here, after ``import tensorrt``, so importing dfq never needs TensorRT.
    Batches are copied to torch CUDA buffers and handed to TensorRT as device pointers. When the cache
    file exists TensorRT reads it instead of calibrating (a dfq-written cache skips calibration).

    Args:
        batches: CPU float image batches of equal shape.
        cache_path: cache file read/written by TensorRT.
        algo: ``entropy`` or ``minmax``.
        batch_size: images per batch, answered by ``get_batch_size()`` from the start (TensorRT may
            ask before the first ``get_batch``); ``None``: the size of the latest batch (1 before the
            first). :func:`dfq.interop.trt_calibrator` feeds it from a calibration set.

    Raises:
        DfqError: tensorrt missing, TensorRT >= 11 (implicit calibration removed), no CUDA.
    """
    import torch

    from dfq.export.runtime import import_tensorrt
    from dfq.export.tensorrt import trt_major

    trt = import_tensorrt()
    if trt_major(trt) >= 11:
        raise DfqError(
            f"TensorRT {trt.__version__} removed implicit INT8 calibration; build from the Q/DQ ONNX (model.qdq.onnx)"
        )
    if algo not in _ALGOS:
        raise DfqError(f"unknown calibrator {algo!r}; choose entropy or minmax")
    if not torch.cuda.is_available():
        raise DfqError("a TensorRT calibrator needs a CUDA GPU, and torch sees none")
    base = trt.IInt8EntropyCalibrator2 if algo == "entropy" else trt.IInt8MinMaxCalibrator
    cache = Path(cache_path)

    class _Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._iter = iter(batches)
            self._buffer: Tensor | None = None
            self._batch_size = batch_size or 0

        def get_batch_size(self) -> int:
            return self._batch_size or 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                x = next(self._iter)
            except StopIteration:
                return None
            self._batch_size = int(x.shape[0])
            self._buffer = x.to("cuda", torch.float32).contiguous()  # kept alive until the next call
            return [int(self._buffer.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            atomic_write(cache, lambda tmp: tmp.write_bytes(bytes(data)))

    return _Calibrator()
