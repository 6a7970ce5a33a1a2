"""Accuracy of many quantization variants of one model on the ImageNet sample, in one run.

Loads the model and the evaluation images once, computes FP logits once, then for every variant
(preset x calibrator x calibration source x site changes) calibrates a fresh copy and reports
top-1, top-1 agreement with FP and mean KL(FP || quant). Used for the tables in BENCHMARKS.md and
the placement study in docs/quantization.md.

    python benchmarks/ablate.py --model deit_tiny --variants w8a8 w8a8:act=percentile w8a8:calib=noise
    python benchmarks/ablate.py --model deit_tiny --study noise-placement
    python benchmarks/ablate.py --model deit_tiny --study sites   # one activation site at a time

``--study sites`` (:func:`site_study`): W8A8 with only one activation site quantized (min/max, the rest
float; weights W8), for each site of the preset, then W8 weights alone and W4 weights alone (min/max).

Variant syntax: ``PRESET[:key=value[,key=value...]]`` with keys ``act`` (activation calibrator),
``weight`` (weight calibrator), ``calib`` (``real`` | ``noise``), ``seed`` (calibration subset), ``drop`` (sites to remove,
``+``-separated), ``add`` (sites to add), ``head`` (0/1), ``pe`` (0/1: patch-embed), ``bc`` (0/1: bias correction; default auto),
``site`` (per-site calibrators, ``softmax/mse+fc2_in/mse``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _assets import mobilenet_model  # noqa: E402

import dfq  # noqa: E402
from dfq.config import CNN_SITES, VIT_SITES, QuantConfig, preset  # noqa: E402
from dfq.data import labelled_imagenet_folder, load_image_tensor, make_loader  # noqa: E402
from dfq.models import data_config, eval_transform, load_model, model_family  # noqa: E402
from dfq.quant.variants import VariantEvaluator, calibrated_copy, image_batches_loop  # noqa: E402


def _deit_tiny(assets: Path) -> torch.nn.Module:
    return load_model("deit_tiny", checkpoint=assets / "weights" / "deit_tiny_patch16_224.pth", pretrained=False)


# name -> (float model from the assets folder, preprocessing overrides)
MODELS = {
    "deit_tiny": (_deit_tiny, {}),
    "mobilenet_v1_025": (mobilenet_model, {"mean": (0.5,) * 3, "std": (0.5,) * 3}),
}


def parse_variant(text: str) -> tuple[QuantConfig, dict[str, str]]:
    name, _, rest = text.partition(":")
    scheme, _, numerics = name.partition("-")
    cfg = preset(scheme, numerics or "trt")
    opts = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    if "act" in opts:
        cfg = dataclasses.replace(cfg, act=dataclasses.replace(cfg.act, calibrator=opts["act"]))
    if "weight" in opts:
        cfg = dataclasses.replace(cfg, weight=dataclasses.replace(cfg.weight, calibrator=opts["weight"]))
    if "site" in opts:  # site=softmax/minmax+fc2_in/mse
        pairs = [item.split("/") for item in opts["site"].split("+")]
        cfg = dataclasses.replace(cfg, site_calibrators=tuple((a, b) for a, b in pairs))
    sites = set(cfg.act_sites)
    sites -= set(filter(None, opts.get("drop", "").split("+")))
    sites |= set(filter(None, opts.get("add", "").split("+")))
    cfg = dataclasses.replace(
        cfg,
        act_sites=frozenset(sites),
        quantize_head=opts.get("head", "1") == "1",
        quantize_patch_embed=opts.get("pe", "1") == "1",
        bias_correction={"0": "off", "1": "on"}.get(opts.get("bc", ""), "auto"),
    )
    return cfg, opts


NOISE_STUDY = [
    # paper placement with noise, then one site family restored to float at a time
    "w8a8-paper:calib=noise",
    "w8a8-paper:calib=real",
    "w8a8-paper:calib=noise,drop=image",
    "w8a8-paper:calib=noise,drop=pos_embed+pos_add+cls_concat+embed",
    "w8a8-paper:calib=noise,drop=residual",
    "w8a8-paper:calib=noise,drop=logits",
    "w8a8-paper:calib=noise,drop=scores",
    "w8a8-paper:calib=noise,drop=head_in+logits",
    "w8a8-paper:calib=noise,drop=proj_out+fc2_out",
    "w8a8-paper:calib=noise,drop=qkv_out+scores+residual+proj_out+fc2_out+logits",
    "w8a8:calib=noise",
    "w8a8:calib=real",
]


def site_study(family: str = "vit", scheme: str = "w8a8") -> list[str]:
    """One variant per activation site the model's family uses (``vit``: :data:`dfq.config.VIT_SITES`,
    else ``CNN_SITES``; :func:`dfq.models.model_family` of the loaded model) with every other site of
    ``scheme`` dropped (min/max, the softmax too), then the weights alone at 8 and at 4 bits (min/max).

    >>> v = site_study()
    >>> len(v) - 2, v[0].startswith("w8a8:site=softmax/minmax,drop=conv_in+")  # 10 ViT sites; fc1_in first
    (10, True)
    >>> v[-2:] == [f"w8a8:drop={v[-1].split('drop=')[1]}", f"w4a8:weight=minmax,drop={v[-1].split('drop=')[1]}"]
    True
    """
    sites = sorted(preset(scheme).act_sites)
    own = VIT_SITES if family == "vit" else CNN_SITES
    one = [f"{scheme}:site=softmax/minmax,drop={'+'.join(x for x in sites if x != site)}" for site in sites if site in own]
    every = "+".join(sites)
    return [*one, f"w8a8:drop={every}", f"w4a8:weight=minmax,drop={every}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", default=os.environ.get("DFQ_ASSETS", "../shared/assets"))
    ap.add_argument("--model", default="deit_tiny", choices=sorted(MODELS))
    ap.add_argument("--variants", nargs="*", default=[])
    ap.add_argument("--study", choices=["noise-placement", "sites"], default=None)
    ap.add_argument("--crop-pct", type=float, default=None, help="override the model's crop_pct")
    ap.add_argument("--num-calib", type=int, default=32)
    ap.add_argument("--limit", type=int, default=None, help="evaluate on at most this many images")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()

    assets = Path(args.assets)
    folder = assets / "data" / "imagenet-sample" / "val"
    build, overrides = MODELS[args.model]
    model = build(assets).eval()
    if args.crop_pct:
        overrides = {**overrides, "crop_pct": args.crop_pct}
    cfg = data_config(model, **overrides)
    tf = eval_transform(cfg)
    dataset = labelled_imagenet_folder(folder, tf)
    if args.limit:
        dataset = torch.utils.data.Subset(dataset, range(args.limit))
    images, labels = [], []
    for x, y in make_loader(dataset, batch_size=100, num_workers=2):
        images.append(x)
        labels.append(y)
    images, labels = torch.cat(images), torch.cat(labels)
    real_sets: dict[int, torch.Tensor] = {}

    def real(seed: int) -> torch.Tensor:
        if seed not in real_sets:
            real_sets[seed] = load_image_tensor(folder, tf, args.num_calib, seed=seed)
        return real_sets[seed]

    noise = dfq.invert(model, "noise", num_images=args.num_calib, seed=0).images

    def build(variant: str) -> torch.nn.Module:
        qcfg, opts = parse_variant(variant)
        calib = noise if opts.get("calib", "real") == "noise" else real(int(opts.get("seed", 0)))
        return calibrated_copy(model, qcfg, image_batches_loop(calib, 32))

    ev = VariantEvaluator(model, images, labels, batch_size=100)
    fp_m = ev.reference_metrics
    print(f"FP {args.model}: top-1 {fp_m['top1']:.4f} top-5 {fp_m['top5']:.4f} on {len(labels)} images")
    rows = [{"variant": "fp", **fp_m}]
    variants = args.variants + {"noise-placement": NOISE_STUDY, "sites": site_study(model_family(model)), None: []}[args.study]
    print(f"{'variant':60s} {'top1':>7s} {'Δtop1':>7s} {'agree':>7s} {'KL':>7s} {'sec':>5s}")
    for r in ev.run((v, lambda v=v: build(v)) for v in variants):
        m, dt = r.metrics, r.seconds
        print(
            f"{r.name:60s} {m['top1']:7.4f} {100 * (m['top1'] - fp_m['top1']):+7.2f} {m['agreement']:7.4f} "
            f"{m['kl']:7.4f} {dt:5.0f}",
            flush=True,
        )
        rows.append({"variant": r.name, **m, "seconds": round(dt, 1)})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
