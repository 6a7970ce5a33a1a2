"""dfq calibration sets as the calibration step of other toolchains' pipelines.

This package owns the adapters from a :class:`dfq.data.CalibrationSet` to the calibration inputs of
NVIDIA ModelOpt, ONNX Runtime and the legacy TensorRT <= 10 calibrator (DEPLOYMENT.md §a1, §c):

* :func:`modelopt_forward_loop` -- the ``forward_loop(model)`` of
  ``modelopt.torch.quantization.quantize(model, config, forward_loop)``;
* :func:`write_calibration_data` -- the ``--calibration_data_path`` file of ModelOpt ONNX PTQ
  (``python -m modelopt.onnx.quantization``), which reads it with ``np.load(path, allow_pickle=False)``:
  an ``.npz`` becomes ``{key: array}`` with one key per ONNX graph input, an ``.npy`` a single array
  for a single-input model; ModelOpt splits the ``N`` images into ``N / batch`` calibration steps by
  the model's batch dimension;
* ``OrtCalibrationReader`` -- an ``onnxruntime.quantization.CalibrationDataReader`` for
  ``quantize_static``; the class is made on first access (package ``__getattr__``), so importing this
  package never imports onnxruntime (for the same reason it is left out of ``__all__``);
* :func:`trt_calibration_batches` / :func:`trt_calibrator` -- equal-shape batches for
  :func:`dfq.export.trt_calibrator.make_trt_calibrator` (``IInt8EntropyCalibrator2``).

Sparse (SMI) sets: these consumers are dense. They get the images exactly as stored, every patch
included; the patches SMI stopped optimizing (pruned from the sequence) keep the values they had when
they were pruned. The per-image ``keep_index`` is not passed on (dfq's own ``calibrate`` can use it).
"""

from __future__ import annotations

from typing import Any

from dfq.interop.files import FORMATS, RUN_SET_DIR, export_set, read_set, write_calibration_data
from dfq.interop.forward_loop import modelopt_forward_loop
from dfq.interop.trt import trt_calibration_batches, trt_calibrator

__all__ = [
    "FORMATS",
    "RUN_SET_DIR",
    "read_set",
    "modelopt_forward_loop",
    "write_calibration_data",
    "export_set",
    "trt_calibration_batches",
    "trt_calibrator",
]


def __getattr__(name: str) -> Any:
    if name == "OrtCalibrationReader":
        from dfq.interop.ort import reader_class

        return reader_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
