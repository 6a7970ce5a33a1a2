"""SMI's linear-probe KD with the real DeiT-Tiny (issue 12, acceptance 4).

The teacher is the pretrained DeiT-Tiny; the student is the same network with a freshly initialised
(seeded) classifier and everything else frozen (:func:`dfq.distill.linear_probe`), trained by KD at
T = 20 (:func:`dfq.distill.probe_defaults`) on the first N images of a synthetic set (an SMI set
forwards only its kept tokens through both ViTs). One run per ``--num-images`` value, resumable from
``OUT/probe-N.ckpt``; the curves (top-1, agreement and KL on the 500 ImageNet sample images against
the number of steps) go to ``OUT/report.json``::

    python benchmarks/distill_probe.py --set-dir runs/sets/smi500-dt-s1 --num-images 32 128 \\
        --steps 300 --out runs/probe-dt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _assets import default_assets, load  # noqa: E402
from _report import run_record, set_record, write_report  # noqa: E402
from _sets import first_images  # noqa: E402

from dfq.data import CalibrationSet  # noqa: E402
from dfq.distill import EvalData, distill, linear_probe, probe_defaults  # noqa: E402
from dfq.distill.config import DistillConfig  # noqa: E402
from dfq.inversion.overrides import parse_overrides  # noqa: E402
from dfq.loadcheck import snapshot  # noqa: E402
from dfq.models import load_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--set-dir", type=Path, required=True, help="a synthetic set of DeiT-Tiny (dfq invert)")
    ap.add_argument("--num-images", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kd", action="append", default=[], help="other DistillConfig KEY=VALUE")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    start = snapshot()
    teacher, _, images, labels = load("deit_tiny", args.assets, 500)
    calib = CalibrationSet.load(args.set_dir)
    ev = EvalData.from_tensors(images, labels, teacher)
    extra = parse_overrides(DistillConfig, args.kd)
    dcfg = probe_defaults(steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every, seed=args.seed,
                          **extra)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for n in args.num_images:
        student = load_model("deit_tiny", checkpoint=args.assets / "weights" / "deit_tiny_patch16_224.pth",
                             pretrained=False).eval()
        linear_probe(student, 1000, seed=args.seed)
        t0 = time.perf_counter()
        train = first_images(calib, n)
        result = distill(teacher, student, dcfg, calib=train, eval_data=ev, checkpoint=args.out / f"probe-{n}.ckpt")
        runs.append({"num_images": len(train), "wall_this_process": round(time.perf_counter() - t0, 1),
                     **run_record(result)})  # fmt: skip
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "curve"}, default=str), flush=True)
    report = {"machine_load_start": start, "set": set_record(calib, args.set_dir), "config": dcfg.to_dict(), "runs": runs}
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
