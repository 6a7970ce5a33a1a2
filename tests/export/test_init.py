"""The dfq.export package: importing it and every module in it imports none of onnx, onnxruntime,
tensorrt, pycuda."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_import_dfq_export_does_not_import_heavy_modules():
    code = (
        "import sys, dfq, dfq.export, dfq.export.onnx, dfq.export.checker, dfq.export.runtime, "
        "dfq.export.tensorrt, dfq.export.trt_calibrator, dfq.export.parity, dfq.export.latency; "
        "bad = [m for m in ('onnx', 'onnxruntime', 'tensorrt', 'pycuda') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
