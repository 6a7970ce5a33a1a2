"""TensorRT <= 10 legacy implicit INT8 calibration from a dfq set: equal-shape batches for
:func:`dfq.export.trt_calibrator.make_trt_calibrator` (``IInt8EntropyCalibrator2`` / MinMax).

Deprecated in TensorRT 10.1, removed in 11.0 (DEPLOYMENT.md §0); the Q/DQ ONNX is the primary path.
The calibrator has never run against TensorRT (the libraries are not installable here); the batching
is tested.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from dfq.data import CalibrationSet
from dfq.errors import DfqError

__all__ = ["trt_calibration_batches", "trt_calibrator"]


def trt_calibration_batches(calib: CalibrationSet, batch_size: int) -> Iterator[Tensor]:
    """Equal-shape CPU float32 batches for a TensorRT calibrator: ``len // batch_size`` of them.

    TensorRT reads ``batch_size`` images from the buffer of every batch, so a short last batch would
    be read past its end: the remainder is left out, with a warning. A sparse (SMI) set is fed dense.

    Raises:
        DfqError: ``batch_size`` < 1 or larger than the set.
    """
    if not 1 <= batch_size <= len(calib):
        raise DfqError(f"TensorRT calibration batch size must be 1..{len(calib)} (the set's size), got {batch_size}")
    full = len(calib) // batch_size * batch_size
    if full < len(calib):
        warnings.warn(f"TensorRT calibration leaves out the last {len(calib) - full} of {len(calib)} images "
                      f"(batches of {batch_size} must be full)", stacklevel=2)  # fmt: skip
    images = calib.images.detach().cpu().float()
    return (images[start : start + batch_size].contiguous() for start in range(0, full, batch_size))


def trt_calibrator(
    calib: CalibrationSet, cache_path: str | Path, batch_size: int = 8, algo: Literal["entropy", "minmax"] = "entropy"
) -> Any:
    """A TensorRT <= 10 ``IInt8EntropyCalibrator2`` (or MinMax) fed from the set.

    :func:`dfq.export.trt_calibrator.make_trt_calibrator` over :func:`trt_calibration_batches`; build
    with ``config.int8_calibrator = trt_calibrator(calib, "model.cache", batch_size)`` and an input
    (or calibration profile) of batch ``batch_size``. Never run against TensorRT (not installable here).

    Raises:
        DfqError: bad batch size, tensorrt missing, TensorRT >= 11, no CUDA.
    """
    from dfq.export.trt_calibrator import make_trt_calibrator

    batches = trt_calibration_batches(calib, batch_size)
    return make_trt_calibrator(batches, cache_path, algo=algo, batch_size=batch_size)
