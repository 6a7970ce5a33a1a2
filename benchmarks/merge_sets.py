"""Concatenate calibration sets made for the same model (e.g. two seeds of one method) into one set.

The sets must share the model (name and checkpoint hash), the image shape and, for sparse sets, the
number of kept tokens. The merged provenance is the first set's, with ``merged_from`` listing every
source's path, seed and seconds, and ``seconds`` their sum (:func:`dfq.sets.merge_sets`).

    python benchmarks/merge_sets.py runs/sets/smi-dt-64 runs/sets/smi-dt-32 runs/sets/smi-dt-32-s1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.sets import merge_sets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("sets", nargs="+", type=Path)
    args = ap.parse_args(argv)
    try:
        merged = merge_sets([CalibrationSet.load(p) for p in args.sets], [str(p) for p in args.sets])
    except DfqError as e:
        sys.exit(f"error: {e}")
    merged.save(args.out)
    print(f"{len(merged)} images from {len(args.sets)} sets -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
