"""Copy a dense ViT calibration set with a kept-token index, to separate token count from image content.

Calibration on an SMI set forwards only the kept tokens (46 patches + CLS by default). To tell how much
of a KL difference between an SMI set and a dense set comes from calibrating on fewer tokens rather
than from the images, give the dense images the same number of kept tokens, chosen at random or by
the model's last-layer CLS attention on the final images (SMI's criterion, applied once at the end),
and calibrate on the copy with ``dfq calibrate --calib-set`` (the selection is :mod:`dfq.sets`).

    python benchmarks/keep_subset.py runs/sets/di-dt-32 runs/sets/di-dt-32-rand46 --keep 46 --by random \
        --model deit_tiny --checkpoint ../shared/assets/weights/deit_tiny_patch16_224.pth
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dfq.data import CalibrationSet  # noqa: E402
from dfq.models import load_model  # noqa: E402
from dfq.sets import attention_patches, random_patches, with_kept_patches  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="a dense calibration set")
    ap.add_argument("out", type=Path)
    ap.add_argument("--keep", type=int, default=46, help="patches kept per image (CLS is always kept)")
    ap.add_argument("--by", choices=["random", "attention"], default="random")
    ap.add_argument("--model", default="deit_tiny")
    ap.add_argument("--checkpoint")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    src = CalibrationSet.load(args.source)
    if src.keep_index is not None:
        sys.exit(f"error: {args.source} already has a kept-token index")
    model = load_model(args.model, checkpoint=args.checkpoint, pretrained=args.checkpoint is None).eval()
    num_patches = model.patch_embed.num_patches
    if args.by == "attention":
        patches = attention_patches(model, src.images, args.keep)
    else:
        patches = random_patches(len(src), num_patches, args.keep, args.seed)
    note = {"source": str(args.source), "keep": args.keep, "by": args.by}
    with_kept_patches(src, patches, note).save(args.out)
    print(f"{len(src)} images with {args.keep} of {num_patches} patches kept ({args.by}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
