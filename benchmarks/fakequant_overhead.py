"""Fake-quant overhead: the calibrated fake-quant model's forward against the float model's, in one run.

Builds a model (a timm name or alias; weights from ``--checkpoint``, else random with
``--no-pretrained``), quantizes a copy with a preset, calibrates it on random images, then times the
float forward and the fake-quant forward interleaved over ``--rounds`` rounds (float, fake-quant,
float, ...) at ``--batch-size`` with ``--threads`` torch threads, and reports the median per-call
milliseconds of each and their ratio ``fakequant/float``. It also counts the host syncs of one forward
of each (``aten._local_scalar_dense``, the op behind ``.item()``/``bool(t)``, and device-to-host copies;
DESIGN.md §4 wants none in the quantizer's forward). The load of the machine before and after the
timed rounds goes into the JSON (``load``, :mod:`dfq.loadcheck`): time only on an idle machine.

    python benchmarks/fakequant_overhead.py --model deit_tiny --no-pretrained --scheme w8a8 \
        --batch-size 8 --threads 2 --rounds 15 --json fakequant_overhead.json

The script uses only APIs older than the sync counter (``load_model``, ``quantize_``, ``calibrate``,
``preset``); the counter is imported from ``dfq.quant.syncs`` when it exists and defined here
otherwise, so the same script measures an older checkout (the "before" of a change):
``git worktree add /tmp/before <commit> && PYTHONPATH=/tmp/before python benchmarks/fakequant_overhead.py ...``,
or ``--code <commit>``, which lays that commit's package out in a temporary folder (``git archive``, as it
installs: ``calibrators/`` and ``export/`` as ``dfq.calibrators`` / ``dfq.export``) and reruns the script
with it first on ``PYTHONPATH``. The JSON's ``code`` names the commit measured.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from dfq.config import preset  # noqa: E402
from dfq.loadcheck import measure_load, snapshot  # noqa: E402
from dfq.models import load_model  # noqa: E402
from dfq.quant.calibrate import calibrate  # noqa: E402
from dfq.quant.transform import quantize_  # noqa: E402

try:
    from dfq.quant.syncs import HostSyncCounter
except ModuleNotFoundError as e:  # an older dfq without the counter: the same counter, defined here
    if e.name != "dfq.quant.syncs":
        raise
    from torch.utils._python_dispatch import TorchDispatchMode

    _SCALAR_READS = {
        torch.ops.aten._local_scalar_dense.default,
        torch.ops.aten.item.default,
        torch.ops.aten.is_nonzero.default,
    }

    class HostSyncCounter(TorchDispatchMode):  # type: ignore[no-redef]
        """Counts scalar reads (``.item()``, ``bool(t)``), the syncs of the old quantizer, like ``dfq.quant.syncs``."""

        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.count += func in _SCALAR_READS
            return func(*args, **(kwargs or {}))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="deit_tiny", help="timm model name or dfq alias (default: deit_tiny)")
    p.add_argument("--checkpoint", default=None, help="local state_dict file with the model's weights")
    p.add_argument(
        "--no-pretrained", action="store_true", help="random weights when no --checkpoint is given"
    )
    p.add_argument("--scheme", default="w8a8", help="preset scheme: w8a8 | w4a8 (default: w8a8)")
    p.add_argument("--numerics", default="trt", help="preset numerics: trt | paper (default: trt)")
    p.add_argument("--batch-size", type=int, default=8, help="images per timed forward (default: 8)")
    p.add_argument("--calib-images", type=int, default=32, help="random calibration images (default: 32)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default: 15)")
    p.add_argument("--iters", type=int, default=3, help="forwards per round and model (default: 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed forwards of each model first (default: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    p.add_argument("--code", default=None, metavar="REV",
                   help="measure the dfq of this git revision instead of the one installed (see above)")  # fmt: skip
    args = p.parse_args(argv)
    if args.rounds < 1 or args.iters < 1 or args.batch_size < 1:
        p.error("--rounds, --iters and --batch-size must be at least 1")
    return args


def input_shape(model: nn.Module) -> tuple[int, int, int]:
    """``(C, H, W)`` the model takes (timm's pretrained_cfg, else a ViT's patch embed, else 224²)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "input_size" in cfg:
        return tuple(cfg["input_size"])  # type: ignore[return-value]
    size = getattr(getattr(model, "patch_embed", None), "img_size", (224, 224))
    return (3, *size)


def count_syncs(fn: Callable[[torch.Tensor], Any], x: torch.Tensor) -> int:
    """Host syncs of one call of ``fn`` on ``x``."""
    with HostSyncCounter() as syncs:
        fn(x)
    return syncs.count


def time_interleaved(
    fns: dict[str, Callable[[torch.Tensor], Any]], x: torch.Tensor, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Per-call seconds of each function, one entry per round, rounds interleaved across functions."""
    for fn in fns.values():
        for _ in range(args.warmup):
            fn(x)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(args.iters):
                fn(x)
            times[name].append((time.perf_counter() - t0) / args.iters)
    return times


REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def checkout_code() -> dict[str, Any]:
    """The commit of the checkout this script imports dfq from, and whether its package differs from it."""
    try:
        return {"commit": _git("rev-parse", "HEAD"),
                "dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", "dfq", "calibrators", "export"))}  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None}


def run_revision(rev: str, argv: list[str]) -> dict[str, Any] | None:
    """Run this script with the package of git revision ``rev`` first on ``PYTHONPATH``; its result, with
    ``code`` naming ``rev``."""
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    tar = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit, "dfq", "calibrators", "export"],
                         capture_output=True, check=True).stdout  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="dfq-code-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            members = t.getmembers()
            for m in members:  # calibrators/ and export/ install as dfq.calibrators and dfq.export
                top, _, rest = m.name.partition("/")
                if top in ("calibrators", "export"):
                    m.name = f"dfq/{top}/{rest}" if rest else f"dfq/{top}"
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12 / 3.11.4
            t.extractall(tmp, members=members, **safe)
        child = [a for i, a in enumerate(argv)  # the arguments without --code REV / --code=REV
                 if not (a == "--code" or a.startswith("--code=") or (i and argv[i - 1] == "--code"))]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")]))}
        subprocess.run([sys.executable, __file__, *child], env=env, check=True)
    args = parse_args(argv)
    if not args.json:
        return None
    result = json.loads(args.json.read_text())
    result["code"] = {"commit": commit, "revision": rev}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.code:
        return run_revision(args.code, list(sys.argv[1:] if argv is None else argv))
    start = snapshot()  # before any work of our own (dfq.loadcheck judges this load average)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = load_model(args.model, checkpoint=args.checkpoint, pretrained=not args.no_pretrained).eval()
    config = preset(args.scheme, args.numerics)
    shape = input_shape(model)
    calib = torch.randn(args.calib_images, *shape)
    qmodel = quantize_(copy.deepcopy(model), config)
    calibrate(
        qmodel, lambda m: [m(calib[i : i + args.batch_size]) for i in range(0, len(calib), args.batch_size)]
    )
    qmodel.eval()
    x = torch.randn(args.batch_size, *shape)

    fns = {"float": model, "fakequant": qmodel}
    with torch.no_grad():
        syncs = {k: count_syncs(fn, x) for k, fn in fns.items()}
        with measure_load(start=start) as load:
            times = time_interleaved(fns, x, args)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": args.model,
        "weights": args.checkpoint or ("random" if args.no_pretrained else "pretrained"),
        "scheme": config.name,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "iters": args.iters,
        "float_ms": round(med["float"] * 1e3, 3),
        "fakequant_ms": round(med["fakequant"] * 1e3, 3),
        "fakequant/float": round(med["fakequant"] / med["float"], 3),
        "per_round_ratio": [round(q / f, 3) for q, f in zip(times["fakequant"], times["float"], strict=True)],
        "host_syncs_per_forward": syncs,
        "torch": torch.__version__,
        "code": checkout_code(),
        "load": load,
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("load", "per_round_ratio")}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
