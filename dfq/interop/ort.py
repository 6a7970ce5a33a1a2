"""ONNX Runtime ``CalibrationDataReader`` over a dfq set, for ``onnxruntime.quantization.quantize_static``.

The class subclasses onnxruntime's, so it is made on first use (:func:`reader_class`, reached as
``dfq.interop.OrtCalibrationReader``): importing dfq never imports onnxruntime.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.interop.files import numpy_images

__all__ = ["reader_class"]


@functools.cache
def reader_class() -> type:
    """The ``OrtCalibrationReader`` class (onnxruntime is imported here)."""
    try:
        from onnxruntime.quantization import CalibrationDataReader
    except ImportError as e:
        if e.name != "onnxruntime":
            raise
        raise DfqError("onnxruntime is not installed: pip install onnxruntime") from None

    class OrtCalibrationReader(CalibrationDataReader):
        """ONNX Runtime ``CalibrationDataReader`` over a dfq set, for ``quantize_static``.

        Each :meth:`get_next` returns ``{input_name: float32 array (b, 3, H, W)}``: consecutive
        batches in set order (the last holds the remainder), then ``None``; :meth:`rewind` starts
        again; :meth:`set_range` (ORT's ``CalibStridedMinMax``) restricts a pass to batches
        ``[start, end)``. Every image is yielded exactly once per pass. A sparse (SMI) set is fed
        dense: the stopped patches as they are in the images.

        Args:
            calib: the calibration set.
            input_name: the ONNX graph input; ``None``: the single input of ``model`` when given,
                else ``"input"`` (the name of dfq exports).
            batch_size: images per item; must match a static batch dimension of the model.
            model: the float ONNX model (path or ``ModelProto``); when given, it sets the default
                name, the dtype (float16 inputs get float16 arrays) and checks a static batch size.

        Raises:
            DfqError: the model has several inputs and no name was given, or a static batch size
                other than ``batch_size`` or one that does not divide the set.
        """

        def __init__(self, calib: CalibrationSet, input_name: str | None = None, batch_size: int = 1,
                     model: Any = None) -> None:  # fmt: skip
            if batch_size < 1:
                raise DfqError(f"batch size must be at least 1, got {batch_size}")
            array, name = numpy_images(calib), input_name or "input"
            if model is not None:
                name, array = _match_model(model, input_name, array, batch_size)
            self.input_name: str = name
            self.batch_size = batch_size
            self._images = array
            self._count = -(-len(array) // batch_size)
            self._start, self._stop = 0, self._count
            self._next = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._next >= self._stop:
                return None
            lo = self._next * self.batch_size
            self._next += 1
            return {self.input_name: self._images[lo : lo + self.batch_size]}

        def rewind(self) -> None:
            """Start the current range (the whole set unless :meth:`set_range` narrowed it) again."""
            self._next = self._start

        def set_range(self, start_index: int, end_index: int) -> None:
            """Yield only batches ``[start_index, end_index)`` (clipped to the set), from the first."""
            self._start, self._stop = max(0, start_index), min(end_index, self._count)
            self._next = self._start

        def __len__(self) -> int:
            return self._count

    OrtCalibrationReader.__qualname__ = "OrtCalibrationReader"
    OrtCalibrationReader.__module__ = "dfq.interop"  # reached as dfq.interop.OrtCalibrationReader
    return OrtCalibrationReader


def _match_model(model: Any, input_name: str | None, array: np.ndarray, batch_size: int) -> tuple[str, np.ndarray]:
    import onnx

    proto = onnx.load(str(model), load_external_data=False) if isinstance(model, (str, Path)) else model
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if input_name is None:
        if len(inputs) != 1:
            raise DfqError(f"the model has {len(inputs)} inputs; pass input_name (one of {[i.name for i in inputs]})")
        input_name = inputs[0].name
    found = next((i for i in inputs if i.name == input_name), None)
    if found is None:
        raise DfqError(f"the model has no input {input_name!r}; its inputs are {[i.name for i in inputs]}")
    tensor_type = found.type.tensor_type
    if tensor_type.elem_type == onnx.TensorProto.FLOAT16:
        array = array.astype(np.float16)
    dims = tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value"):
        static = dims[0].dim_value
        if static != batch_size or len(array) % static:
            raise DfqError(f"the model's batch dimension is {static}: use batch_size={static} on a set of a "
                           f"multiple of {static} images (it holds {len(array)})")  # fmt: skip
    return input_name, array
