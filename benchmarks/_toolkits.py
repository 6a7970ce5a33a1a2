"""Shared by the scripts that calibrate another toolkit's quantizer on dfq's images, real images and noise
(``modelopt_sets.py``, ``ort_sets.py``): their options, the three calibration sources, the scoring and the report."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _assets import default_assets, load

from dfq.data import CalibrationSet
from dfq.evaluation import batched_logits, classification_metrics
from dfq.loadcheck import snapshot


def parse(doc: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--set-dir", type=Path, nargs="+", default=[Path("runs/sets/smi500-dt-s1")],
                    help="one or more synthetic sets (dfq invert outputs), each a calibration source")  # fmt: skip
    ap.add_argument("--calib-images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--out", type=Path, required=True)
    return ap.parse_args()


def compare_sources(args: argparse.Namespace, make: Callable[[int, CalibrationSet, torch.nn.Module], Any],
                    **record: Any) -> None:  # fmt: skip
    """DeiT-Tiny and its 500 sample images; ``make(i, calib, model)`` returns the quantized predictor or
    module calibrated on source ``i`` (``--calib-images`` images of each synthetic set, real images or
    Gaussian noise); each is scored against the float model and ``OUT/report.json`` written. The real
    source is the *last* ``n`` sample images, and every source is scored on the others, so no score
    counts an image that was calibrated on."""
    start = snapshot()
    args.out.mkdir(parents=True, exist_ok=True)
    model, _, images, labels = load("deit_tiny", args.assets, 500)
    n = args.calib_images
    real, images, labels = images[-n:], images[:-n], labels[:-n]
    fp = batched_logits(model, images, args.batch)
    g = torch.Generator().manual_seed(0)
    sources = {}
    for set_dir in args.set_dir:
        calib = CalibrationSet.load(set_dir)
        sources[f"{calib.provenance.get('method', 'synthetic')} ({set_dir.name})"] = CalibrationSet(calib.images[:n])
    sources["real sample images (not scored)"] = CalibrationSet(real)
    sources["Gaussian noise"] = CalibrationSet(torch.randn(n, *images.shape[1:], generator=g))
    rows = []
    for i, (name, calib) in enumerate(sources.items()):
        t0 = time.perf_counter()
        m = classification_metrics(batched_logits(make(i, calib, model), images, args.batch), labels, fp)
        rows.append({"source": name, "top1": m["top1"], "agreement": m["agreement"], "kl": m["kl"],
                     "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    report = {"machine_load_start": start, **record, "calib_images": n, "scored_images": len(labels),
              "fp_top1": classification_metrics(fp, labels)["top1"], "rows": rows}  # fmt: skip
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
