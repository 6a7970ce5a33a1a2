"""Deployment exporters (ONNX Q/DQ, TensorRT), installed as ``dfq.export``.

Heavy dependencies (onnx, onnxruntime, tensorrt, pycuda) are imported inside the functions that
need them, never at package import.
"""

if __name__ != "dfq.export":
    raise ImportError(
        f"this package must be imported as 'dfq.export', not {__name__!r} "
        "(use `from dfq.export import ...`)"
    )
