"""Paired comparison of calibrated runs on the same evaluation images: top-1 and KL differences with CIs.

On a few hundred images the top-1 of two calibrations differs by a handful of images, so a bare
"79.6 vs 78.8" says nothing. This script rebuilds each run (:func:`dfq.load`), evaluates all of them
and the FP model on the same images and prints, for every run against the first (the baseline), the
top-1 difference with a 95% bootstrap interval (2000 resamples of the images, seed 0), the exact
McNemar test on the discordant images, and the mean KL(FP ‖ run) difference with its interval
(:func:`dfq.stats.paired_comparison`).

    python benchmarks/paired_runs.py --model deit_tiny runs/dt-w8a8-di-trt runs/dt-w8a8-smi runs/dt-w8a8-noise

``--json PATH`` also writes every run's figures and every comparison there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _assets import MODELS, default_assets, load  # noqa: E402

import dfq  # noqa: E402
from dfq.evaluation import per_image_kl  # noqa: E402
from dfq.quant.variants import VariantEvaluator  # noqa: E402
from dfq.stats import bootstrap_resamples, paired_comparison  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories; the first is the baseline")
    ap.add_argument("--model", choices=MODELS, default="deit_tiny", help="which assets model/images")
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures and comparisons here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _, images, labels = load(args.model, args.assets, args.eval_images)

    ev = VariantEvaluator(model, images, labels)
    fp = ev.reference_logits
    results = {r.name: r for r in ev.run((run.name, lambda run=run: dfq.load(run)) for run in args.runs)}
    kls = {name: per_image_kl(fp, r.logits) for name, r in results.items()}
    print(f"{len(labels)} images; FP top-1 {ev.reference_metrics['top1']:.4f}")
    for name, r in results.items():
        print(f"{name}: top-1 {r.metrics['top1']:.4f}, agreement {r.metrics['agreement']:.4f}, KL {kls[name].mean():.4f}")
    base = args.runs[0].name
    print(f"\n| vs {base} | top-1 Δ (95% CI) | McNemar only run / only base right, p | KL Δ (95% CI) |")
    print("|---|---|---|---|")
    resamples = bootstrap_resamples(len(labels))
    right_b = results[base].logits.argmax(-1) == labels
    comparisons = []
    for name, r in list(results.items())[1:]:
        c = paired_comparison(r.logits.argmax(-1) == labels, right_b, kls[name], kls[base], resamples)
        (t_lo, t_hi), (k_lo, k_hi) = c.top1_ci, c.kl_ci
        print(
            f"| {name} | {100 * c.top1_diff:+.1f} pt ({100 * t_lo:+.1f}, {100 * t_hi:+.1f}) | "
            f"{c.only_candidate} / {c.only_baseline}, p = {c.mcnemar_p:.2f} | "
            f"{c.kl_diff:+.4f} ({k_lo:+.4f}, {k_hi:+.4f}) |"
        )
        comparisons.append({"run": name, "baseline": base, "top1_diff": c.top1_diff, "top1_ci": [t_lo, t_hi],
                            "only_run": c.only_candidate, "only_baseline": c.only_baseline,
                            "mcnemar_p": c.mcnemar_p, "kl_diff": c.kl_diff, "kl_ci": [k_lo, k_hi]})  # fmt: skip
    if args.json:
        runs = {name: {**r.metrics, "kl": float(kls[name].mean())} for name, r in results.items()}
        report = {"num_images": len(labels), "fp": ev.reference_metrics, "runs": runs, "comparisons": comparisons}
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
