"""TensorRT engine build from a Q/DQ ONNX file, for TensorRT 10.x and 11.x (spec: DEPLOYMENT.md §0, §c).

This module owns :func:`build_engine`. Explicit quantization is the only INT8 path that works on both
major versions, so the build is the same apart from the network flags:

* 10.x: ``create_network(1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))`` -- every layer runs
  in the dtype the ONNX says (INT8 where Q/DQ are, FP16 where the remainder was cast, else FP32); no
  precision BuilderFlags (deprecated in 10.12).
* 11.x: networks are always strongly typed (the flag is deprecated and ignored) and the precision
  flags are gone, so ``create_network(0)``.

The ``fp16`` argument therefore does not set a builder flag; it only checks the ONNX (an FP32 remainder
runs in FP32 under strong typing -- export with ``fp16_remainder=True`` to get FP16 layers) and warns.
A timing cache file is read before and written after each build (``create_timing_cache`` /
``set_timing_cache`` / ``serialize``), so repeated builds skip kernel timing, and a per-layer
precision report from ``IEngineInspector`` is written next to the plan.
tensorrt is imported lazily; its absence is a one-line :class:`dfq.errors.DfqError`. Every TensorRT
name used here exists in the bindings of 10.0.1, 10.16 and 11.4 (``benchmarks/trt_api_check.py``,
names only: the build has never run).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dfq.atomic import atomic_write, write_json
from dfq.errors import DfqError
from dfq.export.runtime import import_tensorrt

__all__ = ["build_engine", "trt_major", "network_flags", "layer_report"]

log = logging.getLogger(__name__)


def trt_major(trt: Any) -> int:
    """Major version of an imported tensorrt module (``trt.__version__`` = "10.13.0.35" -> 10)."""
    return int(str(trt.__version__).split(".")[0])


def network_flags(trt: Any) -> int:
    """``create_network`` flags: STRONGLY_TYPED on 10.x, 0 on 11.x (always strongly typed)."""
    major = trt_major(trt)
    if major < 10:
        raise DfqError(
            f"TensorRT {trt.__version__} is too old: dfq builds explicit-quantization engines with 10.x or 11.x"
        )
    if major == 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _onnx_has_fp16(onnx_path: Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    *,
    workspace_gib: float = 4,
    timing_cache: str | Path | None = None,
    fp16: bool = True,
    max_batch: int = 32,
) -> Path:
    """Build and serialize a TensorRT engine from a Q/DQ ONNX file.

    Args:
        onnx_path: the exported ``model.qdq.onnx``.
        plan_path: where to write the serialized plan.
        workspace_gib: workspace memory-pool limit.
        timing_cache: timing cache file, read if present and rewritten after the build
            (default: ``<plan dir>/timing.cache``).
        fp16: expect an FP16 remainder; warns when the ONNX has none (strong typing runs it in FP32).
        max_batch: largest batch of the optimization profile (opt = 8 or ``max_batch``).

    Returns:
        ``plan_path``; a per-layer report ``<plan>.layers.json`` is written beside it.

    Raises:
        DfqError: tensorrt missing, ONNX parse errors (listed), or a failed build.
    """
    trt = import_tensorrt()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if fp16 and not _onnx_has_fp16(onnx_path):
        log.warning(
            "%s has an FP32 remainder: a strongly typed engine runs it in FP32 (export with fp16_remainder=True)",
            onnx_path,
        )
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise DfqError(f"TensorRT cannot parse {onnx_path}: " + " | ".join(errors[:5]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer names and precisions in the report
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shape = list(inp.shape)
        if shape and shape[0] == -1:
            rest = shape[1:]
            profile.set_shape(inp.name, [1, *rest], [min(8, max_batch), *rest], [max_batch, *rest])
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else plan_path.with_name("timing.cache")
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DfqError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_bytes, cache_bytes = bytes(serialized), bytes(config.get_timing_cache().serialize())
    atomic_write(plan_path, lambda tmp: tmp.write_bytes(plan_bytes))
    atomic_write(cache_path, lambda tmp: tmp.write_bytes(cache_bytes))
    report = layer_report(trt, plan_bytes, logger)
    if report is not None:
        write_json(plan_path.with_suffix(".layers.json"), report)
    return plan_path


def layer_report(trt: Any, plan: bytes, logger: Any) -> dict[str, Any] | None:
    """Per-layer information (precisions, tactics) via ``IEngineInspector``; None when the plan does not load."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        return None
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    layers = info.get("Layers", [])
    precisions: dict[str, int] = {}
    for layer in layers:
        if isinstance(layer, dict):
            for out in layer.get("Outputs", []):
                fmt = str(out.get("Format/Datatype", "?"))
                precisions[fmt] = precisions.get(fmt, 0) + 1
    return {"trt_version": str(trt.__version__), "output_formats": precisions, "layers": layers}
