"""ONNX Runtime's ``quantize_static`` calibrated on dfq's synthetic images, real images and noise (issue 15).

DeiT-Tiny exported in FP32, quantized by ORT (QDQ, MatMul/Gemm/Conv inputs, INT8 symmetric, weights per
channel, min/max; as ``ort_speed.py``) with 32 calibration images of each source fed by
``dfq.interop.OrtCalibrationReader``, and scored in ORT on the 500 sample images (top-1, agreement and
KL to the torch float model)::

    python benchmarks/ort_sets.py --set-dir runs/sets/smi500-dt-s1 --out runs/ort-sets-dt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _assets import calibration_images, default_assets, load  # noqa: E402
from ort_speed import export_fp32  # noqa: E402

from dfq.data import CalibrationSet  # noqa: E402
from dfq.evaluation import batched_logits, classification_metrics  # noqa: E402
from dfq.interop import OrtCalibrationReader  # noqa: E402
from dfq.loadcheck import snapshot  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--set-dir", type=Path, default=Path("runs/sets/smi500-dt-s1"))
    ap.add_argument("--calib-images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from dfq.export.runtime import ort_predictor

    start = snapshot()
    args.out.mkdir(parents=True, exist_ok=True)
    model, cfg, images, labels = load("deit_tiny", args.assets, 500)
    fp = batched_logits(model, images, args.batch)
    fp32 = export_fp32(model, args.out / "fp32.onnx", tuple(images.shape[1:]))
    n = args.calib_images
    g = torch.Generator().manual_seed(0)
    sources = {
        f"synthetic ({args.set_dir.name})": CalibrationSet(CalibrationSet.load(args.set_dir).images[:n]),
        "real sample images": CalibrationSet(calibration_images("deit_tiny", args.assets, cfg, images, n)),
        "Gaussian noise": CalibrationSet(torch.randn(n, *images.shape[1:], generator=g)),
    }
    rows = []
    for i, (name, calib) in enumerate(sources.items()):
        t0 = time.perf_counter()
        out = args.out / f"int8-{i}.onnx"
        quantize_static(str(fp32), str(out), OrtCalibrationReader(calib, input_name="input", batch_size=8),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm", "Conv"], per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})  # fmt: skip
        m = classification_metrics(batched_logits(ort_predictor(out), images, args.batch), labels, fp)
        rows.append({"source": name, "top1": m["top1"], "agreement": m["agreement"], "kl": m["kl"],
                     "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    report = {"machine_load_start": start, "calib_images": n, "fp_top1": classification_metrics(fp, labels)["top1"],
              "rows": rows}  # fmt: skip
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
