"""A synthetic calibration set of one of the benchmark models (the shared weights), made when missing.

``dfq invert``'s job through :func:`_sets.synthetic_set`, so MobileNet-v1 (built in Python) works as DeiT-Tiny
does; an existing set is left as it is, and an interrupted one (Ctrl-C, or SIGTERM as ``make bench``'s
stop or a session's end sends it: exit 130/143 after the checkpoint is written) continues from ``OUT.ckpt``::

    python benchmarks/make_set.py --model deit_tiny --method deepinversion --num-images 32 --set iterations=200 \\
        --out runs/sets/di200-dt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _assets import MODELS, default_assets, load  # noqa: E402
from _sets import synthetic_set  # noqa: E402

from dfq.signals import Terminated, terminate_as_interrupt  # noqa: E402  (the CLI's SIGTERM-as-interrupt)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--model", required=True, choices=MODELS)
    ap.add_argument("--method", required=True)
    ap.add_argument("--num-images", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="settings", action="append", default=[], help="inversion KEY=VALUE")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    model, cfg, _, _ = load(args.model, args.assets, 1)
    calib = synthetic_set(args.out, model, args.model, cfg, args.method, args.num_images, args.settings, args.seed,
                          assets=args.assets)  # fmt: skip
    print(f"{args.out}: {len(calib)} images by {calib.provenance.get('method')}")
    return 0


if __name__ == "__main__":
    terminate_as_interrupt()
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        print("make_set: stopped; run the same command again to continue from the checkpoint", file=sys.stderr)
        sys.exit(143 if isinstance(e, Terminated) else 130)
