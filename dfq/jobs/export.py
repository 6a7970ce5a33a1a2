"""``dfq export`` as one call: a calibrated run -> ``RUN/model.qdq.onnx`` (checked) and optionally a
TensorRT engine ``RUN/model.plan``.

:data:`EXPORT_FORMATS` lists the formats (the CLI's choices). The graph itself is built by
:func:`dfq.export.onnx.export_onnx`, the engine by :func:`dfq.export.tensorrt.build_engine`; this
module only reads the run and writes into it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from dfq.errors import DfqError

__all__ = ["EXPORT_FORMATS", "QDQ_ONNX", "PLAN", "export_run", "check_format", "check_export_available"]

QDQ_ONNX = "model.qdq.onnx"
"""The exported Q/DQ graph inside a run directory."""
PLAN = "model.plan"
"""The TensorRT engine inside a run directory."""
EXPORT_FORMATS: dict[str, str] = {"onnx": QDQ_ONNX, "trt": PLAN}
"""Export format -> the file it leaves in the run (``trt`` writes the ONNX file too)."""
_ONNX_KEYS = frozenset({"fp16_remainder", "int4_weights", "opset"})
_TRT_KEYS = frozenset({"workspace_gib", "timing_cache", "fp16"})


def export_run(run_dir: str | Path, fmt: str = "onnx", model: nn.Module | None = None, **opts: Any) -> Path:
    """Export a run directory's calibrated model.

    Args:
        run_dir: a directory written by ``dfq calibrate`` (:func:`dfq.jobs.calibrate.run_calibrate`).
        fmt: a key of :data:`EXPORT_FORMATS`: ``onnx``, or ``trt`` (the ONNX file, then an engine).
        model: the float architecture, for runs of models built in Python (see :func:`dfq.load`);
            None rebuilds the timm model named in the recipe.
        **opts: ``fp16_remainder`` (default True for ``trt``), ``int4_weights``, ``opset`` for the
            ONNX export; ``workspace_gib``, ``timing_cache``, ``fp16`` for the engine build.

    Returns:
        The ONNX path for ``onnx``, the plan path for ``trt``.

    Raises:
        DfqError: ``trt`` for numerics TensorRT cannot run, an unknown format or option, an opset
            outside the supported range (:func:`dfq.export.onnx.check_opset`), a format whose
            packages are not installed (:func:`check_export_available`), all before the run is loaded.
    """
    from dfq.config import QuantConfig
    from dfq.export.onnx import check_opset, export_onnx
    from dfq.models import data_config
    from dfq.runs import load, read_recipe

    if fmt not in EXPORT_FORMATS:
        raise DfqError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
    unknown = set(opts) - _ONNX_KEYS - _TRT_KEYS
    if unknown:
        raise DfqError(f"unknown export option(s) {sorted(unknown)}; valid: {sorted(_ONNX_KEYS | _TRT_KEYS)}")
    if opts.get("opset") is not None:  # the range every export allows, before the run is loaded
        check_opset(opts["opset"])
    run = Path(run_dir)
    recipe = read_recipe(run)
    check_format(QuantConfig.from_dict(recipe["quant"]), fmt)
    check_export_available(fmt)
    if fmt == "trt":  # strong typing runs an FP32 remainder in FP32: TensorRT wants it in FP16
        opts.setdefault("fp16_remainder", True)
    qmodel = load(run, model=model)
    size = recipe.get("data_config", {}).get("input_size") or data_config(qmodel)["input_size"]
    shape = tuple(int(s) for s in size)
    onnx_opts = {k: v for k, v in opts.items() if k in _ONNX_KEYS}
    onnx_path = export_onnx(qmodel, run / QDQ_ONNX, input_shape=shape, **onnx_opts)
    if fmt == "onnx":
        return onnx_path
    from dfq.export.tensorrt import build_engine

    return build_engine(onnx_path, run / PLAN, **{k: v for k, v in opts.items() if k in _TRT_KEYS})


def check_format(config: Any, fmt: str) -> None:
    """Refuse a TensorRT export of numerics TensorRT cannot run (the one place this is decided).

    Raises:
        DfqError: ``fmt`` is ``trt`` and the config is not TensorRT-compatible.
    """
    if fmt == "trt" and not config.trt_compatible:
        raise DfqError(
            f"'{config.name or config.numerics}' uses {config.numerics} numerics (asymmetric/UINT8 activations) "
            "that TensorRT cannot run; export --format onnx for ONNX Runtime, or calibrate with trt numerics"
        )



def check_export_available(fmt: str) -> None:
    """Refuse an export whose runtime is not installed, before any work (``dfq calibrate --export trt``
    used to calibrate fully and only then find TensorRT missing). Looked up with
    ``importlib.util.find_spec``: nothing is imported, so it is quick and never initializes a GPU.

    Raises:
        DfqError: ``trt`` without the ``tensorrt`` module (:data:`dfq.export.runtime.TRT_MISSING`).
    """
    import importlib.util

    if fmt != "trt":
        return  # onnx is a dependency of dfq itself
    try:
        found = importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        found = False
    if not found:
        from dfq.export.runtime import TRT_MISSING

        raise DfqError(TRT_MISSING)
