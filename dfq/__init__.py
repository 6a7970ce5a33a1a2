"""dfq: data-free quantization and deployment toolkit.

Public API (everything else is an implementation detail)::

    load_model, invert, quantize_, calibrate, calibration_mode, reconstruct, evaluate, load, presets

``import dfq`` stays lean: it never imports onnx, onnxruntime, tensorrt or pycuda and never
initializes CUDA. The heavy pieces are imported on first attribute access.
"""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# calibrators/ and export/ live beside dfq/ in the repository and are installed as dfq.calibrators
# and dfq.export. In a source checkout (repository root on sys.path, no install) the siblings are
# found through this path extension; installed, the package-dir mapping puts them inside dfq/.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "calibrators", "__init__.py")):
    __path__.append(_root)  # type: ignore[name-defined]  # noqa: F821

_LAZY = {
    "load_model": "dfq.models",
    "quantize_": "dfq.quant.transform",
    "calibrate": "dfq.quant.calibrate",
    "calibration_mode": "dfq.quant.calibrate",
    "reconstruct": "dfq.quant.reconstruct",
    "ReconstructConfig": "dfq.quant.reconstruct",
    "evaluate": "dfq.evaluation",
    "load": "dfq.runs",
    "presets": "dfq.config",
    "QuantConfig": "dfq.config",
    "QuantSpec": "dfq.config",
    "CalibrationSet": "dfq.data",
    "invert": "dfq.inversion",
    "DfqError": "dfq.errors",
}

__all__ = sorted(_LAZY)


from dfq._lazy import lazy_getattr  # noqa: E402  (after the __path__ extension)

__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
