"""How much calibration quality depends on *which* images a set holds: KL over random subsets of each set.

``paired_runs.py`` gives intervals over the evaluation images for one fixed calibration set each. Two
calibration methods are compared fairly only if their gap also exceeds what another draw of images from
the same method would change. With one inversion per method (an inversion costs hours here), this script
estimates that spread from the sets at hand: for every source it calibrates on ``--draws`` random subsets
of ``--subset`` images (without replacement, the same index draws for every source) and on the whole set,
evaluates each on the same images and prints top-1, agreement and KL per draw, their mean and spread,
each source's mean KL difference to the first source over the same draws, and the activation sites
whose whole-set range differs most from the first source's.

    python benchmarks/calib_variance.py --model deit_tiny --subset 16 --draws 8 \
        di=runs/sets/di-dt-32 smi=runs/sets/smi-dt-32 smi-s1=runs/sets/smi-dt-32-s1 \
        smi-dense=runs/sets/smi-dt-32:dense real=real

A source is ``NAME=DIR`` (a calibration set; ``DIR:dense`` forwards every token of a sparse set) or
``NAME=real`` (the seed-0 draw of real images that ``dfq calibrate --calib-folder`` makes, as many as
the smallest set holds).

With ``--json`` the finished calibrations are kept in ``JSON.partial`` as they come (about a minute each
on one thread, 54 for six sources); a rerun with the same arguments resumes from it and removes it when
the report is written.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _assets import MODELS, calibration_images, default_assets, load  # noqa: E402

from dfq.atomic import write_json  # noqa: E402
from dfq.config import preset  # noqa: E402
from dfq.data import CalibrationSet  # noqa: E402
from dfq.jobs.calibrate import calibration_forward_loop  # noqa: E402
from dfq.quant.calibrate import activation_quantizers  # noqa: E402
from dfq.quant.variants import VariantEvaluator, calibrated_copy  # noqa: E402
from dfq.sets import select_images  # noqa: E402


def site_ranges(q: torch.nn.Module) -> dict[str, float]:
    """Largest magnitude of every calibrated activation range, by quantizer name."""
    names = {id(m): n.removesuffix("_quantizer") for n, m in q.named_modules()}
    return {names[id(a)]: max(-float(a.lo.min()), float(a.hi.max())) for a in activation_quantizers(q)}


def print_range_ratios(ranges: dict[str, dict[str, float]], threshold: float) -> None:
    base, *others = ranges
    print(f"\nActivation ranges (whole sets) relative to {base}'s, sites where a source is off by > {threshold:.2f}x:")
    print(f"{'site':32s} {base:>10s} " + " ".join(f"{n:>12s}" for n in others))
    for site, ref in ranges[base].items():
        ratios = [ranges[n][site] / ref for n in others]
        if any(r > threshold or r < 1 / threshold for r in ratios):
            print(f"{site:32s} {ref:10.3g} " + " ".join(f"{r:11.2f}x" for r in ratios))


def parse_sources(specs: list[str]) -> list[tuple[str, str, bool]]:
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            sys.exit(f"error: source {spec!r} is not NAME=DIR, NAME=DIR:dense or NAME=real")
        dense = path.endswith(":dense")
        out.append((name, path.removesuffix(":dense"), dense))
    return out


def print_row(row: dict, note: str) -> None:
    print(f"{row['source']:12s} {row['draw']!s:>4s} n={row['images']:3d} top-1 {row['top1']:.4f} "
          f"agree {row['agreement']:.4f} KL {row['kl']:.4f}  ({note})", flush=True)


def load_partial(path: Path | None, key: dict) -> tuple[dict[tuple[str, str], dict], dict[str, dict[str, float]]]:
    """The rows and whole-set ranges a killed run with the same ``key`` (the arguments that set the
    figures) left in ``path``; nothing when there is no such file or it was made with other arguments."""
    if path is None or not path.is_file():
        return {}, {}
    data = json.loads(path.read_text())
    if data.get("key") != key:
        print(f"{path} was made with other arguments; starting over", flush=True)
        return {}, {}
    print(f"resuming from {path}: {len(data['rows'])} calibrations done", flush=True)
    return {(r["source"], str(r["draw"])): r for r in data["rows"]}, data["ranges"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", help="NAME=DIR[:dense] or NAME=real; the first is the baseline")
    ap.add_argument("--model", choices=MODELS, default="deit_tiny")
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--scheme", default="w8a8")
    ap.add_argument("--numerics", default="trt")
    ap.add_argument("--subset", type=int, default=16, help="images per draw")
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--eval-images", type=int, default=500)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, help="also write every row here")
    ap.add_argument("--range-threshold", type=float, default=1.25,
                    help="list activation sites whose whole-set range differs from the baseline's by more than this")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sources = parse_sources(args.sources)

    model, cfg, images, labels = load(args.model, args.assets, args.eval_images)
    sets = {name: CalibrationSet.load(path) for name, path, _ in sources if path != "real"}
    smallest = min((len(s) for s in sets.values()), default=32)
    for name, path, _ in sources:
        if path == "real":
            sets[name] = CalibrationSet(calibration_images(args.model, args.assets, cfg, images, smallest))
    if not 1 <= args.subset <= smallest:
        sys.exit(f"error: --subset must be between 1 and the smallest set's {smallest} images")

    qcfg = preset(args.scheme, args.numerics)
    ev = VariantEvaluator(model, images, labels)
    fp_m = ev.reference_metrics
    print(f"{len(labels)} images; FP top-1 {fp_m['top1']:.4f}; {args.scheme}-{args.numerics}; "
          f"{args.draws} draws of {args.subset} images per source")
    g = torch.Generator().manual_seed(0)
    draws = [torch.randperm(smallest, generator=g)[: args.subset] for _ in range(args.draws)]

    key = {k: getattr(args, k) for k in ("sources", "model", "scheme", "numerics", "subset", "draws", "eval_images")}
    partial = args.json.with_name(args.json.name + ".partial") if args.json else None
    done, ranges = load_partial(partial, key)
    rows, kl_rows = [], {}
    for name, _, dense in sources:
        calib = sets[name]
        per_draw = []
        for d, index in enumerate([None, *draws]):
            row = done.get((name, "all" if index is None else str(d - 1)))
            if row is not None and (index is not None or name in ranges):
                rows.append(row)
                if index is not None:
                    per_draw.append(row["kl"])
                print_row(row, "resumed")
                continue
            t0 = time.perf_counter()
            part = calib if index is None else select_images(calib, index)
            q = calibrated_copy(model, qcfg, calibration_forward_loop(part, 32, "cpu", progress=False, dense=dense))
            if index is None:
                ranges[name] = site_ranges(q)
            m = ev.evaluate(name, q).metrics
            row = {"source": name, "draw": "all" if index is None else d - 1, "images": len(part),
                   "top1": m["top1"], "agreement": m["agreement"], "kl": m["kl"]}
            rows.append(row)
            if index is not None:
                per_draw.append(m["kl"])
            if partial is not None:
                write_json(partial, {"key": key, "rows": rows, "ranges": ranges})
            print_row(row, f"{time.perf_counter() - t0:.0f} s")
        kl_rows[name] = per_draw

    base = sources[0][0]
    print(f"\n| source | KL all images | KL over {args.draws} draws of {args.subset}: mean ± sd (min–max) "
          f"| mean KL − {base}, draws paired: mean (min–max) |")
    print("|---|---|---|---|")
    for name, _, _ in sources:
        kls = kl_rows[name]
        full = next(r["kl"] for r in rows if r["source"] == name and r["draw"] == "all")
        diffs = [a - b for a, b in zip(kls, kl_rows[base], strict=True)]
        sd = statistics.stdev(kls) if len(kls) > 1 else 0.0
        diff = "—" if name == base else f"{statistics.mean(diffs):+.4f} ({min(diffs):+.4f}…{max(diffs):+.4f})"
        print(f"| {name} | {full:.4f} | {statistics.mean(kls):.4f} ± {sd:.4f} ({min(kls):.4f}–{max(kls):.4f}) "
              f"| {diff} |")
    print_range_ratios(ranges, args.range_threshold)
    if args.json:
        write_json(args.json, {"args": vars(args) | {"assets": str(args.assets), "json": str(args.json)},
                               "rows": rows, "ranges": ranges, "range_threshold": args.range_threshold})
        partial.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
