"""Concatenate calibration sets made for the same model (e.g. two seeds of one method) into one set.

The sets must share the model (name and checkpoint hash), the image shape and, for sparse sets, the
number of kept tokens. The merged provenance is the first set's, with ``merged_from`` listing every
source's path, seed and seconds, and ``seconds`` their sum.

    python benchmarks/merge_sets.py runs/sets/smi-dt-64 runs/sets/smi-dt-32 runs/sets/smi-dt-32-s1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dfq.data import CalibrationSet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("sets", nargs="+", type=Path)
    args = ap.parse_args(argv)
    sets = [CalibrationSet.load(p) for p in args.sets]
    first = sets[0]
    for path, s in zip(args.sets[1:], sets[1:], strict=True):
        model, model0 = s.provenance.get("model", {}), first.provenance.get("model", {})
        if model.get("checkpoint_sha256") != model0.get("checkpoint_sha256") or model.get("name") != model0.get("name"):
            sys.exit(f"error: {path} was made for another model than {args.sets[0]}")
        if s.images.shape[1:] != first.images.shape[1:]:
            sys.exit(f"error: {path} has images {tuple(s.images.shape[1:])}, {args.sets[0]} {tuple(first.images.shape[1:])}")
        if (s.keep_index is None) != (first.keep_index is None) or (
            s.keep_index is not None and s.keep_index.shape[1] != first.keep_index.shape[1]
        ):
            sys.exit(f"error: {path} keeps other tokens than {args.sets[0]}")
    labels = None if any(s.labels is None for s in sets) else torch.cat([s.labels for s in sets])
    keep = None if first.keep_index is None else torch.cat([s.keep_index for s in sets])
    provenance = dict(
        first.provenance,
        seconds=sum(float(s.provenance.get("seconds", 0.0)) for s in sets),
        merged_from=[
            {"path": str(p), "seed": s.provenance.get("seed"), "seconds": s.provenance.get("seconds"), "num_images": len(s)}
            for p, s in zip(args.sets, sets, strict=True)
        ],
    )
    merged = CalibrationSet(torch.cat([s.images for s in sets]), labels, keep, provenance)
    merged.save(args.out)
    print(f"{len(merged)} images from {len(sets)} sets -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
