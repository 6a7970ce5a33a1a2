"""ONNX Runtime speed and accuracy: dfq Q/DQ export vs ORT ``quantize_static`` vs FP32 ONNX, in one run.

All graphs come from the same float model; the quantized ones are calibrated on the same real images
(dfq: its preset, minmax activations, in two placements: ``dfq``, TensorRT's, and ``dfq_ort``,
:func:`dfq.config.for_onnxruntime`, which leaves the patch-embedding conv and the classifier float;
ORT: ``quantize_static`` restricted to MatMul/Gemm/Conv inputs, QDQ format, per-channel symmetric
INT8 weights, symmetric INT8 activations, MinMax). Latency is measured interleaved (FP32, dfq,
dfq_ort, ORT, FP32, ...) at batch 1 and 8 and reported as the median per-call time and as ratios to
FP32 (:mod:`dfq.export.latency`), plus the quartiles of the per-round paired ratios (the spread a
single run's ratio carries on a machine whose speed drifts); the op counts of each graph after ORT's optimizations show what ORT
fused. Optional: top-1, agreement and KL to FP32 on labelled images. The load average and the other
busy processes before and after the timed rounds go into the JSON (``machine_load``, see
:mod:`dfq.loadcheck`), with a warning when the machine was not idle: such timings are not comparable.
The quantized graphs run with ORT's Q/DQ fusion on (``fuse_qdq=True``: its integer kernels are what is
timed) on every CPU; on an x86 CPU without VNNI those kernels may saturate (``int8_may_saturate`` in
the JSON), so the accuracy figures there are of the fused kernels, not of the graph as written.

    python benchmarks/ort_speed.py --model deit_tiny \
        --checkpoint ../shared/assets/weights/deit_tiny_patch16_224.pth \
        --images ../shared/assets/data/imagenet-sample/val --eval-images 200 --json ort_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from dfq.config import for_onnxruntime, preset  # noqa: E402
from dfq.data import Transform, labelled_imagenet_folder, load_image_tensor, make_loader  # noqa: E402
from dfq.evaluation import Predictor, classification_metrics  # noqa: E402
from dfq.export.latency import paired_quartiles, time_rounds  # noqa: E402
from dfq.export.onnx import export_onnx  # noqa: E402
from dfq.export.runtime import int8_dot_may_saturate, ort_predictor  # noqa: E402
from dfq.jobs.speed import export_float_onnx as export_fp32  # noqa: E402
from dfq.loadcheck import measure_load, snapshot  # noqa: E402
from dfq.models import data_config, eval_transform, load_model  # noqa: E402
from dfq.quant.variants import VariantEvaluator, calibrated_copy, image_batches_loop  # noqa: E402


def time_batch(result: dict, preds: dict, calib: torch.Tensor, bs: int, args: argparse.Namespace) -> None:
    """Time every graph at batch ``bs`` (interleaved rounds) into ``result["latency"]["batch{bs}"]``."""
    x = calib[:bs] if bs <= len(calib) else calib.repeat((bs + len(calib) - 1) // len(calib), 1, 1, 1)[:bs]
    t = time_rounds(preds, x, rounds=args.rounds, iters=args.iters, warmup=2)
    med = {k: statistics.median(v) for k, v in t.items()}
    result["latency"][f"batch{bs}"] = {
        **{f"{k}_ms": round(v * 1e3, 2) for k, v in med.items()},
        **{f"fp32/{k}": round(med["fp32"] / med[k], 3) for k in ("dfq", "dfq_ort", "ort_static")},
        **{f"fp32/{k}_per_round_q1_median_q3": paired_quartiles(t["fp32"], t[k]) for k in ("dfq", "dfq_ort")},
        **{f"ort_static/{k}": round(med["ort_static"] / med[k], 3) for k in ("dfq", "dfq_ort")},
    }
    print(f"batch {bs}: {result['latency'][f'batch{bs}']}", file=sys.stderr)


def ort_static(fp32: Path, out: Path, calib: torch.Tensor) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": b.numpy()} for b in calib.split(8)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gemm", "Conv"],
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return out


def fused_ops(path: Path, tmp: Path, threads: int) -> dict[str, int]:
    import onnx

    opt = tmp / f"{path.stem}.opt.onnx"
    ort_predictor(path, threads=threads, optimized_model_path=opt, fuse_qdq=True)
    counts = Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
    keep = (
        "MatMul",
        "Gemm",
        "Conv",
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinear",
        "Integer",
        "Attention",
        "Gelu",
        "Fused",
    )
    return {k: v for k, v in sorted(counts.items()) if any(s in k for s in keep)}


def accuracy(
    preds: dict[str, Predictor], qmodels: dict[str, torch.nn.Module], folder: str, transform: Transform, num_images: int
) -> dict:
    """Top-1, agreement and KL to the FP32 graph of every graph and of the torch fake-quant models, on a
    seed-0 draw of ``num_images`` labelled images of ``folder`` (batches of 16)."""
    ds = labelled_imagenet_folder(folder, transform)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:num_images].tolist()
    images, labels = zip(*make_loader(torch.utils.data.Subset(ds, idx), batch_size=16), strict=True)
    ev = VariantEvaluator(preds["fp32"], torch.cat(images), torch.cat([torch.as_tensor(y) for y in labels]), 16)
    fp32 = classification_metrics(ev.reference_logits, ev.labels, ev.reference_logits)
    results = {"fp32": fp32} | {
        r.name: r.metrics for r in ev.run((k, lambda p=p: p) for k, p in preds.items() if k != "fp32")
    }
    results |= {r.name: r.metrics for r in ev.run((f"{k}_torch_fake_quant", q) for k, q in qmodels.items())}
    picked = {k: {m: v for m, v in ms.items() if m in ("top1", "agreement", "kl")} for k, ms in results.items()}
    return {**picked, "num_images": len(ev.labels)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="deit_tiny")
    p.add_argument("--checkpoint")
    p.add_argument("--images", required=True, help="image folder for calibration (and evaluation)")
    p.add_argument("--scheme", default="w8a8")
    p.add_argument("--num-calib", type=int, default=32)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--eval-images", type=int, default=0, help="top-1/agreement on this many labelled images")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.rounds < 2:
        p.error("--rounds must be at least 2 (the per-round ratio quartiles need two rounds)")
    start = snapshot()  # the machine's load before this script's own work raises the load average
    torch.set_num_threads(args.threads)

    model = load_model(args.model, checkpoint=args.checkpoint, pretrained=args.checkpoint is None)
    cfg = data_config(model)
    shape = tuple(cfg["input_size"])
    transform = eval_transform(cfg)
    calib = load_image_tensor(args.images, transform, args.num_calib)
    result: dict = {
        "model": args.model,
        "scheme": args.scheme,
        "num_calib": len(calib),
        "threads": args.threads,
    }

    tmp = Path(tempfile.mkdtemp(prefix="ort_speed-"))
    t0 = time.perf_counter()
    fp32 = export_fp32(model, tmp / "fp32.onnx", shape)
    qmodels = {
        name: calibrated_copy(model, cfg, image_batches_loop(calib, 8))
        for name, cfg in (("dfq", preset(args.scheme)), ("dfq_ort", for_onnxruntime(preset(args.scheme))))
    }
    paths = {"fp32": fp32}
    paths.update({k: export_onnx(q, tmp / f"{k}.qdq.onnx", input_shape=shape) for k, q in qmodels.items()})
    paths["ort_static"] = ort_static(fp32, tmp / "ort.qdq.onnx", calib)
    result["prepare_s"] = round(time.perf_counter() - t0, 1)
    preds = {k: ort_predictor(v, threads=args.threads, fuse_qdq=True) for k, v in paths.items()}
    result["int8_may_saturate"] = int8_dot_may_saturate()
    result["fused_ops"] = {k: fused_ops(v, tmp, args.threads) for k, v in paths.items()}
    result["latency"] = {}
    with measure_load(start=start) as load:
        for bs in args.batches:
            time_batch(result, preds, calib, bs, args)
    result["machine_load"] = load
    if args.eval_images:
        result["accuracy"] = accuracy(preds, qmodels, args.images, transform, args.eval_images)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
