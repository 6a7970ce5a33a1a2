"""NVIDIA ModelOpt's INT8 PTQ calibrated on dfq's synthetic images, real images and noise (issue 15).

ModelOpt cannot make calibration data; dfq's sets feed it through :func:`dfq.interop.modelopt_forward_loop`.
DeiT-Tiny, ``mtq.INT8_DEFAULT_CFG``, 32 calibration images of each source, scored on the 500 sample
images (top-1, agreement and KL to the float model)::

    python benchmarks/modelopt_sets.py --set-dir runs/sets/smi500-dt-s1 --out runs/modelopt-dt

Needs the ``interop`` extra (``pip install -e ".[interop]"``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _assets import calibration_images, default_assets, load  # noqa: E402

from dfq.data import CalibrationSet  # noqa: E402
from dfq.evaluation import batched_logits, classification_metrics  # noqa: E402
from dfq.interop import modelopt_forward_loop  # noqa: E402
from dfq.loadcheck import snapshot  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--set-dir", type=Path, default=Path("runs/sets/smi500-dt-s1"))
    ap.add_argument("--calib-images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import modelopt.torch.quantization as mtq

    start = snapshot()
    model, cfg, images, labels = load("deit_tiny", args.assets, 500)
    fp = batched_logits(model, images, args.batch)
    n = args.calib_images
    g = torch.Generator().manual_seed(0)
    sources = {
        f"synthetic ({args.set_dir.name})": CalibrationSet(CalibrationSet.load(args.set_dir).images[:n]),
        "real sample images": CalibrationSet(calibration_images("deit_tiny", args.assets, cfg, images, n)),
        "Gaussian noise": CalibrationSet(torch.randn(n, *images.shape[1:], generator=g)),
    }
    rows = []
    for name, calib in sources.items():
        t0 = time.perf_counter()
        q = mtq.quantize(copy.deepcopy(model), mtq.INT8_DEFAULT_CFG, modelopt_forward_loop(calib, batch_size=16))
        m = classification_metrics(batched_logits(q, images, args.batch), labels, fp)
        rows.append({"source": name, "top1": m["top1"], "agreement": m["agreement"], "kl": m["kl"],
                     "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    report = {"machine_load_start": start, "config": "mtq.INT8_DEFAULT_CFG", "calib_images": n,
              "fp_top1": classification_metrics(fp, labels)["top1"], "rows": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
