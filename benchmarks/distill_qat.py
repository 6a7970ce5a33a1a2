"""Data-free QAT of a real model on synthetic images only, through the Python API (issue 12, acceptance 1-2).

1. a synthetic set made from the model alone (``dfq invert``'s job, resumable: ``--set-dir`` is reused
   when it exists), in the model's own input space;
2. W4A8 (or W8A8) fake-quant calibrated on the first ``--calib-images`` of that set (no real image);
3. data-free QAT (:func:`dfq.distill.distill`) against the float model on the same set, resumable from
   ``OUT/qat.ckpt``; the 500 ImageNet sample images are used only to score the curve.

Prints the float, calibration-alone and QAT figures (top-1, agreement, KL) with the wall times and the
machine load at the start::

    python benchmarks/distill_qat.py --model mobilenet_v1_025 --method deepinversion --num-images 256 \\
        --set iterations=500 --steps 600 --out runs/qat-mbv1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _assets import load  # noqa: E402
from _report import run_record, set_record, write_report  # noqa: E402
from _sets import add_set_options, first_images, set_from_args  # noqa: E402

from dfq.distill import EvalData, distill, qat_defaults  # noqa: E402
from dfq.distill.config import DistillConfig  # noqa: E402
from dfq.distill.loop import evaluate_student  # noqa: E402
from dfq.inversion.overrides import parse_overrides  # noqa: E402
from dfq.jobs import quant_config_from_options  # noqa: E402
from dfq.loadcheck import snapshot  # noqa: E402
from dfq.quant.reconstruct import ReconstructConfig, reconstruct  # noqa: E402
from dfq.quant.variants import calibrated_copy  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_set_options(ap, "mobilenet_v1_025", "deepinversion", 256, 32)
    ap.add_argument("--train-images", type=int, default=None, help="train on the first N images only (default: all)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--range-lr", type=float, default=1e-4)
    ap.add_argument("--weight-ranges", default="learn")
    ap.add_argument("--act-ranges", default="frozen")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--kd", action="append", default=[], help="other DistillConfig KEY=VALUE")
    ap.add_argument("--reconstruct-iters", type=int, default=0,
                    help="block reconstruction (AdaRound per block) on the calibration images before QAT, this many "
                         "steps per unit (0: none), as dfq calibrate --reconstruct")  # fmt: skip
    ap.add_argument("--reconstruct-option", action="append", default=[], metavar="KEY=VALUE",
                    help="other ReconstructConfig KEY=VALUE (batch_size, views, act_ranges, ...)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    start = snapshot()
    model, cfg, images, labels = load(args.model, args.assets, 500)
    t0 = time.perf_counter()
    calib, set_dir = set_from_args(args, model, cfg)
    config = quant_config_from_options(args.scheme)
    head = calib.images[: args.calib_images]
    t1 = time.perf_counter()
    qmodel = calibrated_copy(model, config, lambda m: [m(x) for x in head.split(16)])
    ev = EvalData.from_tensors(images, labels, model)
    fp = evaluate_student(model, ev)
    calibrated = evaluate_student(qmodel, ev)
    reconstructed = None
    if args.reconstruct_iters:
        rcfg = ReconstructConfig(iters=args.reconstruct_iters, **parse_overrides(ReconstructConfig, args.reconstruct_option))
        reconstruct(qmodel, head, rcfg,
                    checkpoint=args.out / "reconstruct.ckpt")  # fmt: skip
        reconstructed = evaluate_student(qmodel, ev)
        print("reconstructed", reconstructed, flush=True)
    extra = parse_overrides(DistillConfig, args.kd)
    dcfg = qat_defaults(steps=args.steps, batch_size=args.batch_size, lr=args.lr, range_lr=args.range_lr,
                        weight_ranges=args.weight_ranges, act_ranges=args.act_ranges, eval_every=args.eval_every,
                        **extra)  # fmt: skip
    t2 = time.perf_counter()
    train = calib if args.train_images is None else first_images(calib, args.train_images)
    result = distill(model, qmodel, dcfg, calib=train, eval_data=ev, qat=True, checkpoint=args.out / "qat.ckpt")
    final = evaluate_student(result.student, ev)
    report = {
        "model": args.model, "scheme": args.scheme, "machine_load_start": start,
        "set": set_record(calib, set_dir, trained_on=len(train)),
        "config": dcfg.to_dict(), "fp": fp, "calibration_alone": calibrated,
        "reconstructed": reconstructed, "qat": final,
        "wall": {"set_or_load": round(t1 - t0, 1), "calibrate_and_baseline": round(t2 - t1, 1),
                 "qat_this_process": round(time.perf_counter() - t2, 1)},
        **run_record(result),
    }  # fmt: skip
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
