"""ONNX Runtime's ``quantize_static`` calibrated on dfq's synthetic images, real images and noise (issue 15).

DeiT-Tiny exported in FP32, quantized by ORT (QDQ, MatMul/Gemm/Conv inputs, INT8 symmetric, weights per
channel, min/max; as ``ort_speed.py``) with 32 calibration images of each source fed by
``dfq.interop.OrtCalibrationReader`` (each ``--set-dir``, the last 32 sample images, Gaussian noise), and
scored in ORT on the other 468 sample images (top-1, agreement and KL to the torch float model), in the
session ``dfq eval`` would use (Q/DQ unfused on an x86 CPU without VNNI, :func:`dfq.export.runtime.ort_predictor`)::

    python benchmarks/ort_sets.py --set-dir runs/sets/smi500-dt-s1 runs/sets/di200-dt --out runs/ort-sets-dt
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _toolkits import compare_sources, parse  # noqa: E402
from ort_speed import export_fp32  # noqa: E402

from dfq.interop import OrtCalibrationReader  # noqa: E402


def main() -> int:
    args = parse(__doc__)
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from dfq.export.runtime import ort_predictor

    def make(i, calib, model):  # noqa: ANN001, ANN202
        args.out.mkdir(parents=True, exist_ok=True)
        fp32 = args.out / "fp32.onnx"
        if not fp32.exists():
            export_fp32(model, fp32, tuple(calib.images.shape[1:]))
        out = args.out / f"int8-{i}.onnx"
        quantize_static(str(fp32), str(out), OrtCalibrationReader(calib, input_name="input", batch_size=8),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm", "Conv"], per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})  # fmt: skip
        return ort_predictor(out)

    compare_sources(args, make, config="ORT quantize_static QDQ, symmetric INT8, per-channel weights, min/max")
    return 0


if __name__ == "__main__":
    sys.exit(main())
