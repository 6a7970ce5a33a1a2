"""Paired comparison of calibrated runs on the same evaluation images: top-1 and KL differences with CIs.

On a few hundred images the top-1 of two calibrations differs by a handful of images, so a bare
"79.6 vs 78.8" says nothing. This script rebuilds each run (:func:`dfq.load`), evaluates all of them
and the FP model on the same images and prints, for every run against the first (the baseline), the
top-1 difference with a 95% bootstrap interval (2000 resamples of the images, seed 0), the exact
McNemar test on the discordant images, and the mean KL(FP ‖ run) difference with its interval.

    python benchmarks/paired_runs.py --model deit_tiny runs/dt-w8a8-di-trt runs/dt-w8a8-smi runs/dt-w8a8-noise
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _assets import MODELS, batched_logits, default_assets, load  # noqa: E402

import dfq  # noqa: E402
from dfq.evaluation import per_image_kl  # noqa: E402


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value (binomial test on the discordant pairs).

    >>> mcnemar_p(0, 0), round(mcnemar_p(9, 13), 3), round(mcnemar_p(0, 6), 4)
    (1.0, 0.523, 0.0312)
    """
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def interval(values: torch.Tensor, resamples: torch.Tensor) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values`` over the given resample indices."""
    means = values[resamples].mean(dim=1).sort().values
    lo, hi = int(0.025 * len(means)), int(0.975 * len(means)) - 1
    return float(means[lo]), float(means[hi])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories; the first is the baseline")
    ap.add_argument("--model", choices=MODELS, default="deit_tiny", help="which assets model/images")
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _, images, labels = load(args.model, args.assets, args.eval_images)

    fp = batched_logits(model, images)
    results = {}
    for run in args.runs:
        q = batched_logits(dfq.load(run), images)
        results[run.name] = (q.argmax(-1), per_image_kl(fp, q))
    resamples = torch.randint(0, len(labels), (2000, len(labels)), generator=torch.Generator().manual_seed(0))
    print(f"{len(labels)} images; FP top-1 {(fp.argmax(-1) == labels).float().mean():.4f}")
    for name, (pred, kl) in results.items():
        agree = (pred == fp.argmax(-1)).float().mean()
        print(f"{name}: top-1 {(pred == labels).float().mean():.4f}, agreement {agree:.4f}, KL {kl.mean():.4f}")
    base = args.runs[0].name
    print(f"\n| vs {base} | top-1 Δ (95% CI) | McNemar only run / only base right, p | KL Δ (95% CI) |")
    print("|---|---|---|---|")
    right_b, kl_b = results[base][0] == labels, results[base][1]
    for name, (pred, kl) in list(results.items())[1:]:
        right = pred == labels
        d_top1 = right.float() - right_b.float()
        (t_lo, t_hi), (k_lo, k_hi) = interval(d_top1, resamples), interval(kl - kl_b, resamples)
        only_a, only_b = int((right & ~right_b).sum()), int((~right & right_b).sum())
        print(
            f"| {name} | {100 * d_top1.mean():+.1f} pt ({100 * t_lo:+.1f}, {100 * t_hi:+.1f}) | "
            f"{only_a} / {only_b}, p = {mcnemar_p(only_a, only_b):.2f} | "
            f"{(kl - kl_b).mean():+.4f} ({k_lo:+.4f}, {k_hi:+.4f}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
