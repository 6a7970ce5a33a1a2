"""Block reconstruction (AdaRound rounding per block, BRECQ order) of a real model on synthetic images (issue 13).

1. a synthetic set made from the model alone (resumable; ``--set-dir`` is reused when it exists);
2. W4A8 (or W8A8) fake-quant calibrated on its first ``--calib-images`` images;
3. :func:`dfq.reconstruct` on the same images, resumable from ``OUT/reconstruct.ckpt``;

then the float model, calibration alone and the reconstructed model scored on the 500 ImageNet sample
images (top-1, agreement, KL to FP), with the wall times, the per-unit errors and the load at the start.
``--real-calib N`` is the reference with real data: the last N sample images replace the synthetic set
and the other 500 - N are scored::

    python benchmarks/reconstruct.py --model deit_tiny --set-dir runs/sets/smi500-dt-s1 --calib-images 64 \\
        --iters 300 --out runs/rec-dt
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _assets import load  # noqa: E402
from _report import set_record, write_report  # noqa: E402
from _sets import add_set_options, set_from_args  # noqa: E402

from dfq.distill import EvalData  # noqa: E402
from dfq.distill.loop import evaluate_student  # noqa: E402
from dfq.jobs import quant_config_from_options  # noqa: E402
from dfq.loadcheck import snapshot  # noqa: E402
from dfq.quant.calibrate import activation_quantizers  # noqa: E402
from dfq.quant.reconstruct import ReconstructConfig, reconstruct  # noqa: E402
from dfq.quant.variants import calibrated_copy  # noqa: E402
from dfq.vit import forward_tokens  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_set_options(ap, "deit_tiny", "smi", 64, 64)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=ReconstructConfig.lr)
    ap.add_argument("--reg-weight", type=float, default=ReconstructConfig.reg_weight)
    ap.add_argument("--act-ranges", default="frozen", choices=["frozen", "learn"])
    ap.add_argument("--site-calibrator", action="append", default=[], metavar="SITE=NAME",
                    help="per-site activation calibrator, as dfq calibrate's option")
    ap.add_argument("--range-lr", type=float, default=ReconstructConfig.range_lr)
    ap.add_argument("--drop", type=float, default=0.0)
    ap.add_argument("--views", type=int, default=0, help="augmented copies of each calibration image")
    ap.add_argument("--fisher", type=float, default=0.0, help="share of the loss weighted by the output's Fisher")
    ap.add_argument("--kept-tokens", action="store_true",
                    help="SMI sets: calibrate and reconstruct on each image's kept tokens only")  # fmt: skip
    ap.add_argument("--real-calib", type=int, default=0,
                    help="reference run: calibrate and reconstruct on the LAST N sample images instead of a "
                         "synthetic set, and score on the others")  # fmt: skip
    ap.add_argument("--range-images", type=int, default=0,
                    help="calibrate the activation ranges on the first N calibration images only (0: all); "
                         "min/max ranges widen with every synthetic image added")  # fmt: skip
    ap.add_argument("--score-weights-only", action="store_true",
                    help="also score the reconstructed model with every activation quantizer off (what the "
                         "learned 4-bit weights alone cost)")  # fmt: skip
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.range_images < 0:  # before the model, the images and OUT: nothing is loaded or written
        sys.exit(f"error: --range-images takes 0 (all) or a positive count, got {args.range_images}")
    start = snapshot()
    model, cfg, images, labels = load(args.model, args.assets, 500)
    t0 = time.perf_counter()
    if args.real_calib:
        args.out.mkdir(parents=True, exist_ok=True)
        head, images, labels = images[-args.real_calib :], images[: -args.real_calib], labels[: -args.real_calib]
        set_info = {"method": "real (sample images not scored)", "images": args.real_calib}
    else:
        calib, set_dir = set_from_args(args, model, cfg)
        head = calib.images[: args.calib_images]
        set_info = set_record(calib, set_dir, calibrated_on=len(head))
    keep = None
    if args.kept_tokens:
        if args.real_calib or calib.keep_index is None:
            sys.exit("error: --kept-tokens needs a sparse (SMI) set")
        keep = calib.keep_index[: args.calib_images]
        set_info["kept_tokens"] = keep.shape[1]
    t1 = time.perf_counter()

    if args.range_images > len(head):
        sys.exit(f"error: --range-images takes 0 (all) to {len(head)}, got {args.range_images}")
    n_ranges = args.range_images or len(head)
    if args.range_images:
        set_info["ranges_from"] = n_ranges

    def forward(m):
        if keep is None:
            return [m(x) for x in head[:n_ranges].split(16)]
        return [forward_tokens(m, x, k) for x, k in zip(head[:n_ranges].split(16), keep[:n_ranges].split(16),
                                                          strict=True)]  # fmt: skip

    qcfg = quant_config_from_options(args.scheme, site_calibrators=tuple(args.site_calibrator))
    qmodel = calibrated_copy(model, qcfg, forward)
    ev = EvalData.from_tensors(images, labels, model)
    fp = evaluate_student(model, ev)
    calibrated = evaluate_student(qmodel, ev)
    print("calibration alone", calibrated, flush=True)
    rcfg = ReconstructConfig(iters=args.iters, batch_size=args.batch_size, lr=args.lr, reg_weight=args.reg_weight,
                             act_ranges=args.act_ranges, range_lr=args.range_lr, drop=args.drop,
                             views=args.views, fisher=args.fisher)  # fmt: skip
    t2 = time.perf_counter()
    units = reconstruct(qmodel, head, rcfg, checkpoint=args.out / "reconstruct.ckpt",
                        on_unit=lambda r: print(r, flush=True), keep_index=keep)  # fmt: skip
    t3 = time.perf_counter()
    final = evaluate_student(qmodel, ev)
    weights_only = None
    if args.score_weights_only:
        acts = [q for q in activation_quantizers(qmodel) if q.mode == "quantize"]
        for q in acts:
            q.mode = "off"
        weights_only = evaluate_student(qmodel, ev)
        for q in acts:
            q.mode = "quantize"
    report = {
        "model": args.model, "scheme": args.scheme, "machine_load_start": start,
        "set": set_info, "scored_images": len(images),
        "site_calibrators": args.site_calibrator, "config": dataclasses.asdict(rcfg), "fp": fp, "calibration_alone": calibrated, "reconstructed": final,
        **({"reconstructed_weights_only": weights_only} if weights_only is not None else {}),
        "wall": {"set_or_load": round(t1 - t0, 1), "calibrate_and_baseline": round(t2 - t1, 1),
                 "reconstruct_this_process": round(t3 - t2, 1)},
        "reconstruct_seconds_total": round(sum(u.seconds for u in units), 1),
        "units": [dataclasses.asdict(u) for u in units],
    }  # fmt: skip
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
