"""CIFAR-10 ResNet-56 -> ResNet-20 from scratch on synthetic images only (issue 12, acceptance 3).

One source per call, so the inverted set and its Gaussian-noise control run the same way:

1. the training set from the teacher alone (``dfq invert``'s job through the Python API, resumable:
   ``--set-dir`` is reused when it exists, continued from ``SET.ckpt`` when interrupted);
2. a ResNet-20 with a seeded random initialisation trained by KD (static loop) on that set with random
   resized crops and flips, resumable from ``OUT/kd.ckpt``;
3. the curve on the 846 lossless CIFAR-10 test images (top-1, agreement and KL to the teacher).

::

    python benchmarks/distill_cifar.py --source deepinversion --num-images 512 --set iterations=200 \\
        --steps 1500 --out runs/kd-cifar-di
    python benchmarks/distill_cifar.py --source noise --num-images 512 --steps 1500 --out runs/kd-cifar-noise
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _assets import cifar, default_assets  # noqa: E402
from _report import run_record, set_record, write_report  # noqa: E402
from _sets import synthetic_set  # noqa: E402

from dfq.distill import EvalData, distill  # noqa: E402
from dfq.distill.config import DistillConfig  # noqa: E402
from dfq.distill.loop import evaluate_student  # noqa: E402
from dfq.inversion.overrides import parse_overrides  # noqa: E402
from dfq.loadcheck import snapshot  # noqa: E402
from dfq.zoo.cifar_resnet import cifar_resnet  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--source", default="deepinversion", help="inversion method of the training set (or noise)")
    ap.add_argument("--num-images", type=int, default=512)
    ap.add_argument("--set", dest="settings", action="append", default=[], help="inversion KEY=VALUE")
    ap.add_argument("--set-dir", type=Path, default=None, help="the training set (made here when missing)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--temperature", type=float, default=20.0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kd", action="append", default=[], help="other DistillConfig KEY=VALUE")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    start = snapshot()
    teacher, cfg, images, labels = cifar(args.assets, 56, 846)
    set_dir = args.set_dir or args.out / "set"
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    calib = synthetic_set(set_dir, teacher, "resnet56", cfg, args.source, args.num_images, args.settings, args.seed)
    t1 = time.perf_counter()
    torch.manual_seed(args.seed)
    student = cifar_resnet(20)
    ev = EvalData.from_tensors(images, labels, teacher)
    extra = parse_overrides(DistillConfig, args.kd)
    dcfg = DistillConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, optimizer="sgd", momentum=0.9,
                         weight_decay=5e-4, schedule="cosine", temperature=args.temperature,
                         eval_every=args.eval_every, seed=args.seed, **extra)  # fmt: skip
    result = distill(teacher, student, dcfg, calib=calib, eval_data=ev, checkpoint=args.out / "kd.ckpt")
    report = {
        "teacher": "resnet56", "student": "resnet20 (random init)", "machine_load_start": start,
        "set": set_record(calib, set_dir, iterations=calib.provenance.get("iterations")), "config": dcfg.to_dict(), "teacher_metrics": evaluate_student(teacher, ev),
        "final": evaluate_student(result.student, ev),
        "wall": {"set_or_load": round(t1 - t0, 1), "kd_this_process": round(time.perf_counter() - t1, 1)},
        **run_record(result),
    }  # fmt: skip
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
