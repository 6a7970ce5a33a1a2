"""The ModelOpt ONNX PTQ calibration-data file of a dfq set (``.npz`` / ``.npy``), and ``dfq export-set``.

``python -m modelopt.onnx.quantization --calibration_data_path FILE`` (ModelOpt 0.47,
``modelopt/onnx/quantization/__main__.py``) reads the file with ``np.load(path, allow_pickle=False)``;
a name ending in ``.npz`` becomes ``{key: array}`` with one key per ONNX graph input, anything else a
single array for a single-input model. ``CalibrationDataProvider`` then splits the ``N`` images into
``N / batch`` calibration steps by the model's batch dimension.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from dfq.atomic import atomic_write
from dfq.data import META_FILE, CalibrationSet
from dfq.errors import DfqError

__all__ = ["FORMATS", "RUN_SET_DIR", "read_set", "write_calibration_data", "export_set", "numpy_images"]

FORMATS = ("npz", "npy")
"""File formats of :func:`write_calibration_data` (ModelOpt ONNX PTQ reads both)."""

RUN_SET_DIR = "calibration"
"""The folder of a run directory that holds its set (``dfq.runs.CALIBRATION_DIR``, on the same floor
and so not imported; a test checks the two agree)."""


def read_set(path: str | Path) -> CalibrationSet:
    """The calibration set in ``path``: a set folder (``dfq invert``) or a run directory (its ``calibration/``).

    Raises:
        DfqError: neither holds a set, or the set is corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise DfqError(f"{path} does not exist; pass a calibration set (dfq invert) or a run directory")
    if not (path / META_FILE).is_file() and (path / RUN_SET_DIR / META_FILE).is_file():
        path = path / RUN_SET_DIR
    return CalibrationSet.load(path)


def numpy_images(calib: CalibrationSet) -> np.ndarray:
    """The set's images as one C-contiguous float32 ``(N, 3, H, W)`` array."""
    return np.ascontiguousarray(calib.images.detach().cpu().numpy())


def write_calibration_data(
    calib: CalibrationSet, path: str | Path, input_name: str = "input", fmt: Literal["npz", "npy"] = "npz"
) -> Path:
    """Write the set as ModelOpt ONNX PTQ's ``calibration_data`` file, atomically.

    ``npz``: one float32 ``(N, 3, H, W)`` array under the key ``input_name`` (the ONNX graph input;
    dfq exports name it ``input``). ``npy``: the bare array, for single-input models (``input_name``
    is not stored). Both load with ``allow_pickle=False``. ModelOpt runs ``N / batch`` steps, ``batch``
    being the model's input batch dimension, so make ``N`` a multiple of it. A sparse (SMI) set is
    written dense: the stopped patches as they are in the images.

    Use: ``python -m modelopt.onnx.quantization --onnx_path model.onnx --quantize_mode int8
    --calibration_data_path calib.npz``.

    Raises:
        DfqError: unknown format, or a file name whose suffix is not ``.<fmt>`` (ModelOpt reads a
            file as a dict only when its name ends in ``.npz``).
    """
    if fmt not in FORMATS:
        raise DfqError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if path.suffix != f".{fmt}":
        raise DfqError(f"{path.name} must end in .{fmt} (ModelOpt picks the reader by the suffix)")
    if not input_name:
        raise DfqError("input name must not be empty; pass the ONNX model's input name")
    array = numpy_images(calib)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: numpy would append a suffix to a bare path
            if fmt == "npz":
                np.savez(f, **{input_name: array})
            else:
                np.save(f, array, allow_pickle=False)

    return atomic_write(path, write)


def export_set(
    source: str | Path, out: str | Path, fmt: Literal["npz", "npy"] = "npz", input_name: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """``dfq export-set``: read a set (or a run's set) and write it with :func:`write_calibration_data`.

    Returns:
        ``{"path", "format", "key", "num_images", "shape", "sparse"}`` (``key`` is None for npy).

    Raises:
        DfqError: no set, ``out`` exists (without ``overwrite``) or is a folder, ``input_name`` with npy.
    """
    if fmt == "npy" and input_name is not None:
        raise DfqError("--input-name applies to npz only (an npy file holds one unnamed array)")
    out = Path(out)
    if out.is_dir():
        raise DfqError(f"{out} is a folder; pass a file name ending in .{fmt}")
    if out.exists() and not overwrite:
        raise DfqError(f"{out} exists; pass --force to replace it")
    calib = read_set(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    key = (input_name or "input") if fmt == "npz" else None
    write_calibration_data(calib, out, input_name=key or "input", fmt=fmt)
    return {"path": str(out), "format": fmt, "key": key, "num_images": len(calib),
            "shape": list(calib.images.shape), "sparse": calib.keep_index is not None}  # fmt: skip
