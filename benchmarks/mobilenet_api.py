"""MobileNet-v1 0.25 W8A8 through the Python API: a model built by the caller, one ``run_calibrate``.

The shared MobileNet-v1 weights are not a timm pretrained tag: the caller builds the architecture
(TF "same" padding, BN eps 1e-3) and passes its preprocessing (``x / 127.5 - 1``, i.e. mean = std =
0.5). This is how a deployment pipeline embeds dfq for its own models.

    python benchmarks/mobilenet_api.py --out runs/mbv1-w8a8 [--calibrator mse] [--bias-correction off] [--json R.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _assets import default_assets, mobilenet_model  # noqa: E402

from dfq.jobs import CalibrateRequest, CalibrationSource, quant_config_from_options, run_calibrate  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=Path, default=default_assets())
    ap.add_argument("--out", default="runs/mbv1-w8a8")
    ap.add_argument("--scheme", default="w8a8", choices=["w8a8", "w4a8"])
    ap.add_argument("--calibrator", default="minmax")
    ap.add_argument("--bias-correction", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--json", type=Path, default=None, help="also write the run's report here")
    args = ap.parse_args()
    assets = Path(args.assets)

    model = mobilenet_model(assets)
    config = quant_config_from_options(args.scheme, calibrator=args.calibrator, bias_correction=args.bias_correction)
    folder = str(assets / "data" / "imagenet-sample" / "val")
    request = CalibrateRequest(
        out=args.out,
        config=config,
        source=CalibrationSource.folder(folder),
        model="mobilenet_v1_025 (caller-built)",
        num_images=32,
        eval_folder=folder,
        data_overrides={"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
        overwrite=True,
        device="cpu",
    )
    report = run_calibrate(request, model=model)
    print(json.dumps({k: report[k] for k in ("fp", "quant", "agreement", "kl")}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
