"""Calibration on inverted images vs noise vs real images for BN CNNs (CIFAR ResNets, MobileNet-v1).

For each calibration source (``real``, ``noise``, ``deepinversion``, ``cmi``) the script builds the
calibration set once, then calibrates W8A8 and W4A8 (``trt`` numerics) and reports top-1, agreement
and KL against the FP model on the evaluation images, all in one process.

    python benchmarks/cnn_inversion.py --model resnet56 --sources real noise deepinversion cmi \
        --num-images 64 --set deepinversion:iterations=2000 --set cmi:iterations=200
    python benchmarks/cnn_inversion.py --model mobilenet_v1_025 --sources real noise deepinversion
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import dfq  # noqa: E402
from dfq.config import preset  # noqa: E402
from dfq.data import labelled_imagenet_folder, load_image_tensor, make_loader  # noqa: E402
from dfq.evaluation import classification_metrics  # noqa: E402
from dfq.inversion.overrides import parse_overrides  # noqa: E402
from dfq.inversion.registry import get_inverter  # noqa: E402
from dfq.models import data_config, eval_transform, load_checkpoint_state, load_state_into  # noqa: E402
from dfq.quant.calibrate import calibrate  # noqa: E402
from dfq.quant.transform import quantize_  # noqa: E402


def cifar(assets: Path, depth: int, limit: int) -> tuple[torch.nn.Module, dict, torch.Tensor, torch.Tensor]:
    from dfq.zoo.cifar_resnet import load_cifar_resnet

    names = {20: "cifar10_resnet20-12fca82f.th", 56: "cifar10_resnet56-4bfd9763.th"}
    model = load_cifar_resnet(assets / "weights" / names[depth], depth).eval()
    cfg = data_config(model)
    data = np.load(assets / "data" / "cifar10" / "test_lossless_first846.npz")
    x = torch.from_numpy(data["x_test"][:limit]).float() / 255.0
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    return model, cfg, (x - mean) / std, torch.from_numpy(data["y_test_prefix"][:limit]).long()


def mobilenet(assets: Path, limit: int) -> tuple[torch.nn.Module, dict, torch.Tensor, torch.Tensor]:
    from timm.models.efficientnet import _gen_mobilenet_v1

    model = _gen_mobilenet_v1("mobilenetv1_100", 0.25, pad_type="same", bn_eps=1e-3)
    load_state_into(model, load_checkpoint_state(assets / "weights" / "mobilenet_v1_025_224.pth"))
    model.eval()
    cfg = data_config(model, mean=(0.5,) * 3, std=(0.5,) * 3)
    ds = labelled_imagenet_folder(assets / "data" / "imagenet-sample" / "val", eval_transform(cfg))
    ds = torch.utils.data.Subset(ds, range(min(limit, len(ds))))
    xs, ys = zip(*make_loader(ds, batch_size=100, num_workers=2), strict=True)
    return model, cfg, torch.cat(xs), torch.cat(ys)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", default=os.environ.get("DFQ_ASSETS", "../shared/assets"))
    ap.add_argument("--model", choices=["resnet20", "resnet56", "mobilenet_v1_025"], default="resnet56")
    ap.add_argument("--sources", nargs="+", default=["real", "noise", "deepinversion", "cmi"])
    ap.add_argument("--num-images", type=int, default=64)
    ap.add_argument("--eval-images", type=int, default=846)
    ap.add_argument("--set", dest="settings", action="append", default=[], help="METHOD:KEY=VALUE")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    assets = Path(args.assets)
    if args.model.startswith("resnet"):
        model, cfg, images, labels = cifar(assets, int(args.model[6:]), args.eval_images)
        real = images[-args.num_images :]  # calibration images taken from the end, disjoint when eval is short
    else:
        model, cfg, images, labels = mobilenet(assets, args.eval_images)
        real = load_image_tensor(assets / "data" / "imagenet-sample" / "val", eval_transform(cfg), args.num_images)

    with torch.inference_mode():
        fp = model(images)
    print(f"FP {args.model}: top-1 {classification_metrics(fp, labels)['top1']:.4f} on {len(labels)} images")
    rows = []
    for source in args.sources:
        t0 = time.perf_counter()
        if source == "real":
            calib = real
        else:
            items = [s.split(":", 1)[1] for s in args.settings if s.startswith(f"{source}:")]
            extra = parse_overrides(get_inverter(source).config_cls, items)
            calib = dfq.invert(model, source, num_images=args.num_images, seed=0, **extra).images
        made = time.perf_counter() - t0
        for scheme in ("w8a8", "w4a8"):
            q = quantize_(copy.deepcopy(model), preset(scheme))
            calibrate(q, lambda m, c=calib: [m(c[i : i + 64]) for i in range(0, len(c), 64)])
            with torch.inference_mode():
                m = classification_metrics(q(images), labels, reference_logits=fp)
            print(
                f"{source:14s} {scheme}: top-1 {m['top1']:.4f} agreement {m['agreement']:.4f} "
                f"KL {m['kl']:.4f} (set made in {made:.0f} s)",
                flush=True,
            )
            rows.append({"source": source, "scheme": scheme, **m, "seconds_to_make": round(made, 1)})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
