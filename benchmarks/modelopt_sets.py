"""NVIDIA ModelOpt's INT8 PTQ calibrated on dfq's synthetic images, real images and noise (issue 15).

ModelOpt cannot make calibration data; dfq's sets feed it through :func:`dfq.interop.modelopt_forward_loop`.
DeiT-Tiny, ``mtq.INT8_DEFAULT_CFG``, 32 calibration images of each source (each ``--set-dir``, the last 32
sample images, Gaussian noise), scored on the other 468 sample
images (top-1, agreement and KL to the float model)::

    python benchmarks/modelopt_sets.py --set-dir runs/sets/smi500-dt-s1 runs/sets/di200-dt --out runs/modelopt-dt

Needs the ``interop`` extra (``pip install -e ".[interop]"``).
"""

from __future__ import annotations

import copy
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _toolkits import compare_sources, parse  # noqa: E402

from dfq.interop import modelopt_forward_loop  # noqa: E402


def main() -> int:
    args = parse(__doc__)
    import modelopt.torch.quantization as mtq

    def make(_i, calib, model):  # noqa: ANN001, ANN202
        return mtq.quantize(copy.deepcopy(model), mtq.INT8_DEFAULT_CFG, modelopt_forward_loop(calib, batch_size=16))

    compare_sources(args, make, config="mtq.INT8_DEFAULT_CFG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
