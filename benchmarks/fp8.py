"""FP8 (E4M3) W8A8 against INT8 W8A8 on the same synthetic calibration images (issue 17).

Both presets (``w8a8-fp8`` and ``w8a8``, min/max ranges except INT8's MSE softmax range) are calibrated
on the first ``--calib-images`` of a synthetic set and scored on the real sample images (top-1, top-1
agreement with the float model, KL to its predictions)::

    python benchmarks/fp8.py --model deit_tiny --set-dir runs/sets/smi500-dt-s1 --out runs/fp8-dt

``--real-calib N`` is the reference with real data (the last N sample images calibrate, the others are
scored); a ``--set-dir`` that does not exist is made with ``--method``/``--num-images``/``--set``.
Calibration forwards every token (dense). FP8 here is the fake-quant simulation (:mod:`dfq.fp8`),
which an exported FP8 Q/DQ graph reproduces in ONNX Runtime (``tests/export/test_fp8.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _assets import default_assets, load  # noqa: E402
from _sets import synthetic_set  # noqa: E402

from dfq.evaluation import batched_logits, classification_metrics  # noqa: E402
from dfq.jobs import quant_config_from_options  # noqa: E402
from dfq.loadcheck import snapshot  # noqa: E402
from dfq.quant.variants import calibrated_copy  # noqa: E402

SCHEMES = {"int8 w8a8": ("w8a8", "trt"), "fp8 w8a8": ("w8a8", "fp8")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    model, cfg, images, labels = load(args.model, args.assets, args.images)
    held = args.real_calib or args.hold_out  # the last images are never scored, whatever calibrates
    if held:
        real, images, labels = images[-held:], images[:-held], labels[:-held]
    if args.real_calib:  # reference: the last N sample images calibrate
        calib = real
        source = f"real: the last {args.real_calib} sample images (not scored)"
    else:
        calib = synthetic_set(args.set_dir, model, args.model, cfg, args.method, args.num_images, args.settings,
                              assets=args.assets).images[: args.calib_images]  # fmt: skip
        source = str(args.set_dir)
    fp = batched_logits(model, images, args.batch)
    rows = [{"config": "float", **classification_metrics(fp, labels, fp)}]
    for label, (scheme, numerics) in SCHEMES.items():
        t0 = time.perf_counter()
        config = quant_config_from_options(scheme, numerics)
        q = calibrated_copy(model, config, lambda m: [m(x) for x in calib.split(args.batch)])
        metrics = classification_metrics(batched_logits(q, images, args.batch), labels, fp)
        rows.append(
            {"config": label, "preset": config.name, **metrics, "seconds": round(time.perf_counter() - t0, 1)}
        )
        print(rows[-1], flush=True)
    return {"model": args.model, "set_dir": source, "scored_images": len(images), "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--model", default="deit_tiny")
    ap.add_argument("--set-dir", type=Path, default=Path("runs/sets/smi500-dt-s1"))
    ap.add_argument("--calib-images", type=int, default=32)
    ap.add_argument("--method", default="smi", help="inversion method when --set-dir does not exist yet")
    ap.add_argument("--num-images", type=int, default=32, help="images of a set made here")
    ap.add_argument("--set", dest="settings", action="append", default=[], help="inversion KEY=VALUE")
    ap.add_argument("--hold-out", type=int, default=32,
                    help="the last N sample images are not scored (so synthetic and real rows share their images)")
    ap.add_argument("--real-calib", type=int, default=0,
                    help="reference: calibrate on the LAST N sample images instead, score on the others")  # fmt: skip
    ap.add_argument("--images", type=int, default=500, help="real sample images scored")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    start = snapshot()
    t0 = time.perf_counter()
    report = {"machine_load_start": start, **run(args), "wall_seconds": round(time.perf_counter() - t0, 1),
              "calib_images": args.calib_images}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for r in report["rows"]:
        print(f"{r['config']:>10}: top-1 {r['top1']:.4f}  agreement {r['agreement']:.4f}  KL {r['kl']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
