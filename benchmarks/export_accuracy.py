"""Torch fake-quant vs ONNX Runtime on the exported Q/DQ graph: accuracy and agreement per model and scheme.

For each model of ``../shared/assets`` (DeiT-Tiny, MobileNet-v1 0.25, CIFAR ResNet-20/56) and each
scheme, the float model is calibrated on real images (32 ImageNet / 64 CIFAR by default), exported
with :func:`dfq.export.onnx.export_onnx` (the TensorRT-rule checker runs on every export; its findings
are counted here), and both the torch fake-quant model and ONNX Runtime (CPU) are evaluated on the
sample images: top-1, agreement and KL to the FP model for each, and torch-vs-ORT top-1 agreement and
max |Δlogit|. ORT runs as ``dfq eval`` runs it (:func:`dfq.export.runtime.ort_predictor`): Q/DQ fused
into integer kernels, except on an x86 CPU without VNNI, where those may saturate and the nodes run
unfused (``ort_qdq_fused``); there the row also gives the fused session's figures (``ort_fused``). Two yardsticks measure how reproducible that agreement can be at all: the top-1
agreement of the same fake-quant model run in float32 and in float64, and of ONNX Runtime with and
without its graph optimizations on the same file (any ulp-level change of the arithmetic moves some
activations across a rounding tie, and the chained quantizers amplify it).

Each row gets a verdict (:func:`verdict`): torch–ORT agreement at least min(99%, the lower of the two
floors) − 1 pt, and torch and ORT top-1 and KL to FP equal within sampling noise (McNemar, paired
bootstrap). The exit code is 0 when every row passes and the checker found no error.

    python benchmarks/export_accuracy.py --json export_accuracy.json
    python benchmarks/export_accuracy.py --models resnet20 --schemes w8a8 --eval-images 200
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _assets import MODELS, calibration_images, default_assets, load  # noqa: E402

from dfq.config import preset  # noqa: E402
from dfq.evaluation import classification_metrics, per_image_kl  # noqa: E402
from dfq.export.checker import check_onnx  # noqa: E402
from dfq.export.onnx import export_onnx  # noqa: E402
from dfq.export.parity import compare_logits  # noqa: E402
from dfq.export.runtime import ort_predictor  # noqa: E402
from dfq.quant.variants import VariantEvaluator, calibrated_copy, image_batches_loop  # noqa: E402
from dfq.stats import paired_comparison  # noqa: E402


def _metrics(logits: torch.Tensor, labels: torch.Tensor, fp: torch.Tensor) -> dict[str, float]:
    m = classification_metrics(logits, labels, reference_logits=fp)
    # a non-finite logit leaves KL undefined (None): NaN here, so the row prints "nan" and its verdict fails
    return {k: round(m[k], 4) if m[k] is not None else float("nan") for k in ("top1", "agreement", "kl")}


def verdict(
    torch_ort: float, f32_f64: float, fused_unfused: float, top1_p: float, kl_ci: tuple[float, float]
) -> dict[str, object]:
    """The export criterion of one row (issue 10 §3).

    Torch–ORT top-1 agreement must reach ``min(99%, the lower reproducibility floor) - 1 pt``, where the
    floors are the agreement of the same fake-quant model with itself in float32 vs float64 and of ORT
    with itself fused vs unfused; and top-1 and KL to FP must be equal within sampling noise: the
    exact McNemar test on the images only one of torch/ORT gets right does not reject (p >= 0.05),
    and the 95% paired bootstrap interval of the per-image KL difference contains 0.

    >>> verdict(0.964, 0.972, 0.968, 0.52, (-0.001, 0.002))["pass"]
    True
    >>> v = verdict(0.95, 0.972, 0.968, 0.52, (-0.001, 0.002)); v["pass"], v["bound"]
    (False, 0.958)
    >>> verdict(0.999, 1.0, 1.0, 0.01, (-0.001, 0.002))["pass"]
    False
    """
    bound = round(min(0.99, f32_f64, fused_unfused) - 0.01, 4)
    checks = {
        "agreement": torch_ort >= bound,
        "top1_within_noise": top1_p >= 0.05,
        "kl_within_noise": kl_ci[0] <= 0.0 <= kl_ci[1],
    }
    return {"bound": bound, **checks, "pass": all(checks.values())}


def paired_noise(
    torch_logits: torch.Tensor, ort_logits: torch.Tensor, labels: torch.Tensor, fp: torch.Tensor
) -> tuple[float, tuple[float, float]]:
    """McNemar p of torch vs ORT top-1 and the 95% bootstrap CI of mean KL(FP‖ORT) − KL(FP‖torch)
    (:func:`dfq.stats.paired_comparison`, 2000 resamples, seed 0; ``(nan, nan)`` when a KL is not finite)."""
    c = paired_comparison(
        ort_logits.argmax(1) == labels, torch_logits.argmax(1) == labels,
        per_image_kl(fp, ort_logits), per_image_kl(fp, torch_logits),
    )
    return c.mcnemar_p, c.kl_ci


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--schemes", nargs="+", default=["w8a8", "w4a8"])
    ap.add_argument(
        "--eval-images", type=int, default=1000, help="at most this many (500 ImageNet, 846 CIFAR)"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="export_accuracy-"))
    rows = []
    for name in args.models:
        model, cfg, images, labels = load(name, args.assets, args.eval_images)
        calib = calibration_images(name, args.assets, cfg, images, 64 if name.startswith("resnet") else 32)
        ev = VariantEvaluator(model, images, labels)
        fp, fp_top1 = ev.reference_logits, ev.reference_metrics["top1"]
        print(f"{name}: FP top-1 {fp_top1:.4f} on {len(labels)} images", flush=True)
        for scheme in args.schemes:
            t0 = time.perf_counter()
            q = calibrated_copy(model, preset(scheme), image_batches_loop(calib, 32))
            path = export_onnx(q, tmp / f"{name}-{scheme}.onnx", input_shape=tuple(cfg["input_size"]))
            findings = check_onnx(path)
            fq = ev.logits(q)
            session = ort_predictor(path, threads=args.threads)  # Q/DQ unfused on x86 without VNNI
            ort = ev.logits(session)
            # where the default left the Q/DQ unfused, what ORT's fused integer kernels give on this CPU
            ort_fused = None if session.qdq_fused else ev.logits(ort_predictor(path, threads=args.threads, fuse_qdq=True))
            ort_plain = ev.logits(ort_predictor(path, threads=args.threads, optimize=False))
            gap = compare_logits(fq, ort)
            fq64 = ev.logits(copy.deepcopy(q).double())  # the same fake-quant model in float64 (float32 logits)
            errors = [f for f in findings if f.severity == "error"]
            agreement = {
                "torch_ort": round(gap["agreement"], 4),
                "f32_f64": round(compare_logits(fq, fq64)["agreement"], 4),
                "fused_unfused": round(compare_logits(ort, ort_plain)["agreement"], 4),
            }
            top1_p, kl_ci = paired_noise(fq, ort, labels, fp)
            row = {
                "model": name,
                "scheme": scheme,
                "num_images": len(labels),
                "fp_top1": round(fp_top1, 4),
                "torch": _metrics(fq, labels, fp),
                "ort": _metrics(ort, labels, fp),
                "ort_qdq_fused": session.qdq_fused,
                **({"ort_fused": _metrics(ort_fused, labels, fp)} if ort_fused is not None else {}),
                "torch_ort_agreement": agreement["torch_ort"],
                "max_abs_logit_diff": round(gap["max_abs_diff"], 4),
                "torch_f32_f64_agreement": agreement["f32_f64"],
                "ort_fused_unfused_agreement": agreement["fused_unfused"],
                "top1_mcnemar_p": round(top1_p, 4),
                "kl_diff_ci95": [round(v, 5) for v in kl_ci],
                "verdict": verdict(*agreement.values(), top1_p, kl_ci),
                "checker_errors": len(errors),
                "checker_findings": [str(f) for f in findings],
                "seconds": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        "\n| model | scheme | FP top-1 | torch top-1 / agr. / KL | ORT top-1 / agr. / KL | torch–ORT agreement "
        "| torch f32–f64 agreement | ORT fused–unfused agreement | bound | top-1 McNemar p | KL Δ 95% CI "
        "| max abs Δlogit | checker | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t, o, v = r["torch"], r["ort"], r["verdict"]
        print(
            f"| {r['model']} | {r['scheme']} | {100 * r['fp_top1']:.1f} | {100 * t['top1']:.1f} / {t['agreement']:.3f} / "
            f"{t['kl']:.4f} | {100 * o['top1']:.1f} / {o['agreement']:.3f} / {o['kl']:.4f} | "
            f"{100 * r['torch_ort_agreement']:.1f}% | {100 * r['torch_f32_f64_agreement']:.1f}% | "
            f"{100 * r['ort_fused_unfused_agreement']:.1f}% | {100 * v['bound']:.1f}% | {r['top1_mcnemar_p']:.2f} | "
            f"{r['kl_diff_ci95'][0]:+.4f}…{r['kl_diff_ci95'][1]:+.4f} | "
            f"{r['max_abs_logit_diff']:.3g} | {r['checker_errors']} errors, "
            f"{len(r['checker_findings']) - r['checker_errors']} warnings | {_verdict_text(v)} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["verdict"]["pass"] and not r["checker_errors"] for r in rows) else 1


def _verdict_text(v: dict[str, object]) -> str:
    failed = [k for k in ("agreement", "top1_within_noise", "kl_within_noise") if not v[k]]
    return "pass" if not failed else "FAIL (" + ", ".join(failed) + ")"


if __name__ == "__main__":
    sys.exit(main())
