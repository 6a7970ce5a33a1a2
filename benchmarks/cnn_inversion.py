"""Calibration on inverted images vs noise vs real images for BN CNNs (CIFAR ResNets, MobileNet-v1).

For each calibration source (``real``, ``noise``, ``deepinversion``, ``cmi``) the script builds the
calibration set once, then calibrates W8A8 and W4A8 (``trt`` numerics) and reports top-1, agreement
and KL against the FP model on the evaluation images, all in one process.

    python benchmarks/cnn_inversion.py --model resnet56 --sources real noise deepinversion cmi \
        --num-images 64 --set deepinversion:iterations=2000 --set cmi:iterations=200
    python benchmarks/cnn_inversion.py --model mobilenet_v1_025 --sources real noise deepinversion
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _assets import calibration_images, default_assets, load  # noqa: E402

import dfq  # noqa: E402
from dfq.config import preset  # noqa: E402
from dfq.inversion.overrides import parse_overrides  # noqa: E402
from dfq.inversion.registry import get_inverter  # noqa: E402
from dfq.quant.variants import VariantEvaluator, calibrated_copy, image_batches_loop  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--model", choices=["resnet20", "resnet56", "mobilenet_v1_025"], default="resnet56")
    ap.add_argument("--sources", nargs="+", default=["real", "noise", "deepinversion", "cmi"])
    ap.add_argument("--num-images", type=int, default=64)
    ap.add_argument("--eval-images", type=int, default=846)
    ap.add_argument("--set", dest="settings", action="append", default=[], help="METHOD:KEY=VALUE")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    assets = Path(args.assets)
    model, cfg, images, labels = load(args.model, assets, args.eval_images)
    real = calibration_images(args.model, assets, cfg, images, args.num_images)

    # every model runs on all evaluation images in one batch, as the figures in BENCHMARKS.md were made
    ev = VariantEvaluator(model, images, labels, batch_size=len(images))
    print(f"FP {args.model}: top-1 {ev.reference_metrics['top1']:.4f} on {len(labels)} images")
    rows = []
    for source in args.sources:
        t0 = time.perf_counter()
        items = [s.split(":", 1)[1] for s in args.settings if s.startswith(f"{source}:")]
        if source == "real":
            calib = real
        else:
            extra = parse_overrides(get_inverter(source).config_cls, items)
            calib = dfq.invert(model, source, num_images=args.num_images, seed=0, **extra).images
        made = time.perf_counter() - t0
        for scheme in ("w8a8", "w4a8"):
            m = ev.evaluate(scheme, calibrated_copy(model, preset(scheme), image_batches_loop(calib, 64))).metrics
            print(
                f"{source:14s} {scheme}: top-1 {m['top1']:.4f} agreement {m['agreement']:.4f} "
                f"KL {m['kl']:.4f} (set made in {made:.0f} s)",
                flush=True,
            )
            rows.append({"source": source, "settings": items, "scheme": scheme, **m, "seconds_to_make": round(made, 1)})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
