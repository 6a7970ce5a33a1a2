"""Precision planning on the real models (issue 13): mixed precision against uniform widths, and how well
the data-free estimate (KL to FP on held-out synthetic images) ranks configurations by their real KL.

``mixed``: W4A8 calibrated on the first ``--calib-images`` of a synthetic set; weight sensitivity on the
set's last ``--holdout`` images (never calibrated on); per-layer widths chosen greedily for each
``--budgets`` value (:func:`dfq.quant.sensitivity.choose_widths`), each recalibrated and scored on the
500 sample images beside uniform W4A8 and W8A8::

    python benchmarks/precision.py mixed --model deit_tiny --set-dir runs/sets/smi500-dt-s1 --out runs/mixed-dt

``calibrators``: W8A8 with per-site activation calibrators on the same calibration images.

``estimate``: a list of configurations of DeiT-Tiny and MobileNet-v1 0.25 (schemes, calibrators,
calibration sources, reconstruction, mixed precision), each scored by the held-out synthetic KL and by
the KL on the real sample images; the Spearman rank correlation of the two, pooled and per model::

    python benchmarks/precision.py estimate --out runs/estimate

Calibration forwards every token (dense), as reconstruction does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _assets import calibration_images, default_assets, load  # noqa: E402

from dfq.config import QuantConfig  # noqa: E402
from dfq.data import CalibrationSet  # noqa: E402
from dfq.evaluation import batched_logits, classification_metrics  # noqa: E402
from dfq.jobs import quant_config_from_options  # noqa: E402
from dfq.jobs.plan import mixed_precision_record, plan_mixed_precision, widths_config  # noqa: E402
from dfq.loadcheck import snapshot  # noqa: E402
from dfq.quant.reconstruct import ReconstructConfig, reconstruct  # noqa: E402
from dfq.quant.sensitivity import Sensitivity, choose_widths  # noqa: E402
from dfq.quant.variants import calibrated_copy  # noqa: E402
from dfq.stats import spearman  # noqa: E402

SETS = {"deit_tiny": "runs/sets/smi500-dt-s1", "mobilenet_v1_025": "runs/sets/di200-mb"}


class Bench:
    """One model: its real images, its synthetic set split into calibration and held-out images, and the
    float logits on both, computed once."""

    def __init__(self, name: str, assets: Path, set_dir: Path, calib_images: int, holdout: int, batch: int) -> None:
        self.name = name
        self.model, self.cfg, self.images, self.labels = load(name, assets, 500)
        self.assets = assets
        synth = CalibrationSet.load(set_dir)
        if calib_images + holdout > len(synth):
            raise SystemExit(f"{set_dir} holds {len(synth)} images, fewer than {calib_images} + {holdout}")
        self.calib, self.held = synth.images[:calib_images], synth.images[-holdout:]
        self.batch = batch
        self.fp_real = batched_logits(self.model, self.images, batch)
        self.fp_held = batched_logits(self.model, self.held, batch)

    def calibrated(self, config: QuantConfig, images: torch.Tensor) -> torch.nn.Module:
        return calibrated_copy(self.model, config, lambda m: [m(x) for x in images.split(self.batch)])

    def score(self, q: torch.nn.Module) -> dict[str, Any]:
        unl = torch.full((len(self.held),), -1, dtype=torch.int64)
        real = classification_metrics(batched_logits(q, self.images, self.batch), self.labels, self.fp_real)
        held = classification_metrics(batched_logits(q, self.held, self.batch), unl, self.fp_held)
        return {"top1": real["top1"], "agreement": real["agreement"], "kl": real["kl"],
                "held_agreement": held["agreement"], "held_kl": held["kl"]}  # fmt: skip

    def mixed(self, config: QuantConfig, images: torch.Tensor, budget: float) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The plan ``dfq calibrate --weight-bits-budget`` makes (:func:`dfq.jobs.plan.plan_mixed_precision`)."""
        q = self.calibrated(config, images)
        held = CalibrationSet(self.held)
        widths, model, baseline, rows, plans = plan_mixed_precision(
            q, self.fp_held, held, budget, lambda w: self.calibrated(widths_config(config, w), images), self.batch, False
        )
        record = mixed_precision_record(widths, rows, budget, config.weight.num_bits)
        return model, {**record, "uniform_held_kl": baseline, "plans": plans,
                       "sensitivity": [dataclasses.asdict(r) for r in rows]}  # fmt: skip


def run_mixed(args: argparse.Namespace) -> dict[str, Any]:
    b = Bench(args.model, args.assets, args.set_dir or Path(SETS[args.model]), args.calib_images, args.holdout, args.batch)
    w4 = quant_config_from_options("w4a8")
    rows_out = [{"config": "uniform w4a8", "average_bits": 4.0, **b.score(b.calibrated(w4, b.calib))}]
    for budget in args.budgets:
        t0 = time.perf_counter()
        q, plan = b.mixed(w4, b.calib, budget)
        rows_out.append({"config": f"mixed, budget {budget:g}", **plan, **b.score(q),
                         "plan_seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        if args.score_plans:  # every ordering's plan on the real images too (the planner sees only held-out KL)
            rows = [Sensitivity(**r) for r in plan["sensitivity"]]
            for p in plan["plans"]:
                widths = choose_widths(rows, budget, plan["uniform_held_kl"], by=p["by"], per_bit=p["per_bit"])
                p["real"] = b.score(b.calibrated(widths_config(w4, widths), b.calib))
        print({k: v for k, v in rows_out[-1].items() if k not in ("sensitivity", "layers")}, flush=True)
    rows_out.append({"config": "uniform w8a8", "average_bits": 8.0, **b.score(b.calibrated(quant_config_from_options("w8a8"), b.calib))})
    return {"model": args.model, "rows": rows_out}


def _configs(name: str) -> list[dict[str, Any]]:
    """The configurations scored for one model: (label, scheme, calibrator, source, reconstruct iters, budget)."""
    rec = 100 if name == "deit_tiny" else 200
    return [
        {"label": "w8a8 minmax, synthetic", "scheme": "w8a8", "calibrator": "minmax", "source": "synthetic"},
        {"label": "w8a8 percentile, synthetic", "scheme": "w8a8", "calibrator": "percentile", "source": "synthetic"},
        {"label": "w8a8 minmax, noise", "scheme": "w8a8", "calibrator": "minmax", "source": "noise"},
        {"label": "w8a8 minmax, real", "scheme": "w8a8", "calibrator": "minmax", "source": "real"},
        {"label": "w4a8 minmax, synthetic", "scheme": "w4a8", "calibrator": "minmax", "source": "synthetic"},
        {"label": "w4a8 minmax, noise", "scheme": "w4a8", "calibrator": "minmax", "source": "noise"},
        {"label": f"w4a8 + reconstruction ({rec} steps/unit), synthetic", "scheme": "w4a8", "calibrator": "minmax",
         "source": "synthetic", "reconstruct": rec},
        {"label": "w4a8 mixed, budget 5, synthetic", "scheme": "w4a8", "calibrator": "minmax", "source": "synthetic",
         "budget": 5.0},
    ]  # fmt: skip


def _sets(args: argparse.Namespace) -> dict[str, str]:
    """The synthetic set of each model: :data:`SETS` with ``--model-set MODEL=DIR`` overrides."""
    out = dict(SETS)
    for item in args.model_set:
        name, sep, path = item.partition("=")
        if not sep or name not in SETS:
            raise SystemExit(f"error: --model-set takes MODEL=DIR with MODEL one of {sorted(SETS)}, got {item!r}")
        out[name] = path
    return out


def run_estimate(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    sets = _sets(args)
    for name in args.models:
        b = Bench(name, args.assets, Path(sets[name]), args.calib_images, args.holdout, args.batch)
        g = torch.Generator().manual_seed(0)
        sources = {"synthetic": b.calib, "noise": torch.randn(b.calib.shape, generator=g),
                   "real": calibration_images(name, args.assets, b.cfg, b.images, len(b.calib))}  # fmt: skip
        for c in _configs(name):
            t0 = time.perf_counter()
            config = quant_config_from_options(c["scheme"], calibrator=c["calibrator"])
            if c.get("budget"):
                q, _ = b.mixed(config, sources[c["source"]], c["budget"])
            else:
                q = b.calibrated(config, sources[c["source"]])
            if c.get("reconstruct"):
                reconstruct(q, sources[c["source"]], ReconstructConfig(iters=c["reconstruct"], batch_size=16), progress=False)
            results.append({"model": name, **c, **b.score(q), "seconds": round(time.perf_counter() - t0, 1)})
            print(results[-1], flush=True)
    by_model = {
        name: spearman([r["held_kl"] for r in results if r["model"] == name], [r["kl"] for r in results if r["model"] == name])
        for name in args.models
    }  # fmt: skip
    return {"sets": {name: sets[name] for name in args.models}, "configs": results,
            "spearman_pooled": spearman([r["held_kl"] for r in results], [r["kl"] for r in results]),
            "spearman_by_model": by_model}  # fmt: skip


CALIBRATOR_ROWS = [
    ("preset (minmax; softmax mse)", {}),
    ("fc2_in mse", {"site_calibrators": ("fc2_in=mse",)}),
    ("fc2_in percentile", {"site_calibrators": ("fc2_in=percentile",)}),
    ("every site mse", {"calibrator": "mse"}),
    ("every site entropy", {"calibrator": "entropy"}),
    ("softmax minmax", {"site_calibrators": ("softmax=minmax",)}),
]


def run_calibrators(args: argparse.Namespace) -> dict[str, Any]:
    """W8A8 with per-site calibrator choices on the same synthetic images: real and held-out KL."""
    b = Bench(args.model, args.assets, args.set_dir or Path(SETS[args.model]), args.calib_images, args.holdout, args.batch)
    rows = []
    for label, options in CALIBRATOR_ROWS:
        rows.append({"config": label, **b.score(b.calibrated(quant_config_from_options("w8a8", **options), b.calib))})
        print(rows[-1], flush=True)
    return {"model": args.model, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["mixed", "estimate", "calibrators"])
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--model", default="deit_tiny", choices=list(SETS))
    ap.add_argument("--models", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--set-dir", type=Path, default=None)
    ap.add_argument("--model-set", action="append", default=[], metavar="MODEL=DIR",
                    help="estimate: this model's synthetic set instead of the default (calibration on its first "
                         "--calib-images, held out its last --holdout)")  # fmt: skip
    ap.add_argument("--calib-images", type=int, default=32)
    ap.add_argument("--holdout", type=int, default=32, help="the set's last N images, never calibrated on")
    ap.add_argument("--budgets", type=float, nargs="+", default=[4.5, 5.0, 6.0])
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--score-plans", action="store_true", help="mixed: also score every ordering's plan on real images")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    start = snapshot()
    t0 = time.perf_counter()
    report = {"mixed": run_mixed, "estimate": run_estimate, "calibrators": run_calibrators}[args.what](args)
    report = {"machine_load_start": start, "wall_seconds": round(time.perf_counter() - t0, 1),
              "calib_images": args.calib_images, "holdout": args.holdout, **report}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("rows", "configs")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
