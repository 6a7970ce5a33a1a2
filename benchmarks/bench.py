"""``make bench``: run the benchmark steps on this CPU (resumably), then regenerate BENCHMARKS.md's tables.

A *step* is one benchmark script with fixed arguments (:data:`STEPS`); it writes ``runs/bench/NAME/
report.json`` (a ``dfq`` CLI step prints it: ``--json``), and this driver adds ``runs/bench/NAME/
provenance.json`` (the command, start and end time, machine, library versions, load average at the
start). A step whose report exists is skipped, so an interrupted ``make bench`` continues where it
stopped (``--redo NAME`` reruns one; the inversions the steps need are cached under ``runs/sets/`` and
resume from their checkpoints).

A *table* of BENCHMARKS.md is the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``;
:mod:`_tables` renders it from its steps' reports, with the command, date, machine and versions under
it. Text outside the markers is written by people and left alone. A table whose steps have not run
keeps its old text and is listed as stale. Every step runs one after the other: timings taken by a step
(ONNX Runtime speed, the fake-quant forward, inversion speed) are only figures when nothing else runs,
so the driver records the load.

    python benchmarks/bench.py                 # run missing steps, then render
    python benchmarks/bench.py --render-only   # only rewrite the tables from the reports on disk
    python benchmarks/bench.py --only fp8-dt --redo fp8-dt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path("runs/bench")
SETS = "runs/sets"
DEIT_SMI = f"{SETS}/smi500-dt-s1"
DEIT_DI = f"{SETS}/di200-dt"
MB_DI = f"{SETS}/di200-mb"
MB_CMI = f"{SETS}/cmi-mb"
MB_CMI_S1 = f"{SETS}/cmi-mb-s1"
MB_CMI64 = f"{SETS}/cmi-mb-64"
DEIT_SMI4K, DEIT_SMI4K_S1, DEIT_DI4K = f"{SETS}/smi4k-dt", f"{SETS}/smi4k-dt-s1", f"{SETS}/di4k-dt"
CIFAR_DI = f"{SETS}/di200-cifar512"
DEIT_WEIGHTS, SAMPLE = "{assets}/weights/deit_tiny_patch16_224.pth", "{assets}/data/imagenet-sample/val"
# the shared assets (``make bench`` sets DFQ_ASSETS), for the scripts that take their paths: ``{assets}``
ASSETS = Path(os.environ.get("DFQ_ASSETS", REPO.parent / "shared" / "assets"))


@dataclass(frozen=True)
class Step:
    """One benchmark run: ``script`` (in benchmarks/, or ``dfq``: the CLI, whose ``--json`` output on
    stdout is the report) with ``args``; ``{out}`` is its output folder and ``{assets}`` the shared assets."""

    name: str
    script: str
    args: tuple[str, ...]

    def command(self, out: Path) -> list[str]:
        args = (a.format(out=out, assets=ASSETS) for a in self.args)
        if self.script == "dfq":
            return [sys.executable, "-m", "dfq.cli", *args]
        return [sys.executable, str(REPO / "benchmarks" / self.script), *args]

    def shown(self, out: Path) -> str:
        """The command as BENCHMARKS.md writes it."""
        cmd = self.command(out)
        return " ".join(["dfq", *cmd[3:]] if self.script == "dfq" else ["python", f"benchmarks/{self.script}", *cmd[2:]])


def dfq_calibrate(name: str, *args: str) -> Step:
    """``dfq calibrate`` of DeiT-Tiny, scored on the 500 sample images; its run directory is ``{out}/NAME``."""
    return Step(name, "dfq", ("calibrate", "--model", "deit_tiny", "--checkpoint", DEIT_WEIGHTS, "--device", "cpu",
                              *args, "--eval-folder", SAMPLE, "--out", f"{{out}}/{name}", "--force", "--json"))


STEPS: tuple[Step, ...] = (
    # the synthetic sets the other steps read (made when missing, resumable)
    Step("set-deit-smi", "make_set.py", ("--model", "deit_tiny", "--method", "smi", "--num-images", "128", "--seed",
                                          "1", "--set", "iterations=500", "--out", DEIT_SMI)),
    Step("set-deit-di", "make_set.py", ("--model", "deit_tiny", "--method", "deepinversion", "--num-images", "32",
                                         "--seed", "5", "--set", "iterations=200", "--out", DEIT_DI)),
    Step("set-mb-di", "make_set.py", ("--model", "mobilenet_v1_025", "--method", "deepinversion", "--num-images",
                                       "256", "--set", "iterations=200", "--set", "batch_size=64", "--out", MB_DI)),
    Step("set-mb-cmi", "make_set.py", ("--model", "mobilenet_v1_025", "--method", "cmi", "--num-images", "32",
                                        "--set", "ngf=16", "--out", MB_CMI)),
    Step("set-mb-cmi-s1", "make_set.py", ("--model", "mobilenet_v1_025", "--method", "cmi", "--num-images", "32",
                                           "--seed", "1", "--set", "ngf=16", "--out", MB_CMI_S1)),
    Step("set-mb-cmi64", "merge_sets.py", (MB_CMI64, MB_CMI, MB_CMI_S1)),
    # FP8 against INT8 (issue 17)
    Step("fp8-dt-smi", "fp8.py", ("--model", "deit_tiny", "--set-dir", DEIT_SMI, "--out", "{out}")),
    Step("fp8-dt-di", "fp8.py", ("--model", "deit_tiny", "--set-dir", DEIT_DI, "--out", "{out}")),
    Step("fp8-dt-real", "fp8.py", ("--model", "deit_tiny", "--real-calib", "32", "--out", "{out}")),
    Step("fp8-mb-di", "fp8.py", ("--model", "mobilenet_v1_025", "--set-dir", MB_DI, "--out", "{out}")),
    Step("fp8-mb-cmi", "fp8.py", ("--model", "mobilenet_v1_025", "--set-dir", MB_CMI, "--out", "{out}")),
    Step("fp8-mb-real", "fp8.py", ("--model", "mobilenet_v1_025", "--real-calib", "32", "--out", "{out}")),
    # other toolkits calibrated on dfq's images (issue 15)
    Step("modelopt-dt", "modelopt_sets.py", ("--set-dir", DEIT_SMI, DEIT_DI, "--out", "{out}")),
    Step("ort-sets-dt", "ort_sets.py", ("--set-dir", DEIT_SMI, DEIT_DI, "--out", "{out}")),
    # block reconstruction on synthetic images (issue 13): W4A8 on the sets' first 64 images
    *(Step(name, "reconstruct.py", ("--model", "deit_tiny", "--set-dir", DEIT_SMI, "--calib-images", "64", "--iters",
                                    "300", "--batch-size", "16", *extra, "--out", "{out}"))
      for name, extra in (("rec-dt-lr1e-2", ("--lr", "0.01", "--reg-weight", "1")), ("rec-dt", ()),
                          ("rec-dt-qdrop", ("--drop", "0.5")), ("rec-dt-views3", ("--views", "3")),
                          ("rec-dt-views3-learn", ("--views", "3", "--act-ranges", "learn")),
                          ("rec-dt-kept", ("--kept-tokens",)))),
    *(Step(name, "reconstruct.py", ("--model", "mobilenet_v1_025", "--set-dir", MB_DI, "--iters", "500",
                                    "--batch-size", "32", *extra, "--out", "{out}"))
      for name, extra in (("rec-mb-lr1e-2", ("--calib-images", "64", "--lr", "0.01", "--reg-weight", "1")),
                          ("rec-mb", ("--calib-images", "64")), ("rec-mb-256", ("--calib-images", "256")),
                          ("rec-mb-views3", ("--calib-images", "64", "--views", "3")))),
    *(Step(name, "reconstruct.py", ("--model", "mobilenet_v1_025", "--set-dir", set_dir, "--calib-images", n,
                                    "--iters", "500", "--batch-size", "32", "--out", "{out}"))
      for name, set_dir, n in (("rec-mb-cmi", MB_CMI, "32"), ("rec-mb-cmi64", MB_CMI64, "64"))),
    # ... and its reference with real data: the last 32 sample images, the other 468 scored
    Step("rec-mb-real", "reconstruct.py", ("--model", "mobilenet_v1_025", "--real-calib", "32", "--iters", "500",
                                           "--batch-size", "32", "--out", "{out}")),
    Step("rec-dt-real", "reconstruct.py", ("--model", "deit_tiny", "--real-calib", "32", "--iters", "300",
                                           "--batch-size", "16", "--out", "{out}")),
    # mixed precision from held-out synthetic images, and the data-free estimate against real KL (issue 13)
    Step("mixed-dt", "precision.py", ("mixed", "--model", "deit_tiny", "--set-dir", DEIT_SMI, "--calib-images", "32",
                                      "--holdout", "32", "--budgets", "4.5", "5", "6", "--out", "{out}")),
    Step("estimate", "precision.py", ("estimate", "--out", "{out}")),  # reads DEIT_SMI and MB_DI
    # DeiT-Tiny W4A8 data-free QAT (issue 12); the last two are session 8's 400-step runs
    *(Step(name, "distill_qat.py", ("--model", "deit_tiny", "--set-dir", DEIT_SMI, "--calib-images", "32",
                                    "--batch-size", "16", "--kd", "dense=true", *extra, "--out", "{out}"))
      for name, extra in (
          ("qat-dt", ("--steps", "1000", "--eval-every", "100")),
          ("qat-dt-lr1e-4-mixup", ("--steps", "1000", "--eval-every", "100", "--lr", "1e-4", "--range-lr", "3e-4",
                                   "--kd", "mixup=0.5", "--kd", "warmup_steps=50")),
          ("qat-dt-frozen", ("--steps", "1000", "--eval-every", "100", "--weight-ranges", "frozen")),
          ("qat-dt-train32", ("--steps", "1000", "--eval-every", "100", "--train-images", "32")),
          ("qat-dt-lr3e-4", ("--steps", "400", "--eval-every", "50", "--lr", "3e-4", "--range-lr", "1e-4")),
          ("qat-dt-lr1e-4-warmup", ("--steps", "400", "--eval-every", "50", "--lr", "1e-4", "--range-lr", "1e-4",
                                    "--kd", "warmup_steps=25")))),
    # torch fake-quant vs the exported Q/DQ graph in ONNX Runtime (issue 10; FP8: issue 17)
    Step("export-acc", "export_accuracy.py", ("--threads", "2", "--json", "{out}/report.json")),
    Step("export-acc-fp8", "export_accuracy.py", ("--models", "deit_tiny", "mobilenet_v1_025", "--schemes", "w8a8-fp8",
                                                  "--threads", "1", "--json", "{out}/report.json")),
    # ONNX Runtime speed, twice (the spread between two runs on the same machine is part of the figure)
    *(Step(name, "ort_speed.py", ("--model", "deit_tiny", "--checkpoint", "{assets}/weights/deit_tiny_patch16_224.pth",
                                  "--images", "{assets}/data/imagenet-sample/val", "--rounds", "11", "--threads", "2",
                                  "--batches", "1", "8", "--eval-images", "500", "--json", "{out}/report.json"))
      for name in ("ort-speed-1", "ort-speed-2")),
    # DeiT-Tiny W8A8 / W4A8 on 32 real or noise images, and the noise study (ablate.py also runs its
    # --study variants: the default, paper real/noise, and one site group left in float at a time)
    Step("ablate-dt", "ablate.py", ("--model", "deit_tiny", "--variants", "w8a8:site=softmax/minmax", "w8a8:act=mse",
                                    "w8a8:site=softmax/mse+fc2_in/mse", "w8a8:act=percentile",
                                    "w8a8:act=entropy,site=softmax/minmax", "w8a8:act=entropy,site=softmax/entropy",
                                    "w8a8:drop=softmax+q+k+v", "w8a8:calib=noise,site=softmax/minmax", "w4a8:weight=minmax",
                                    "w4a8:site=softmax/minmax", "w4a8", "w4a8:calib=noise", "w4a8-paper",
                                    "w4a8-paper:calib=noise", "--study", "noise-placement", "--json", "{out}/report.json")),
    # MobileNet-v1 0.25 W8A8: the default through the Python API, the variants in one ablate.py process
    Step("mb-api", "mobilenet_api.py", ("--out", "{out}/run", "--json", "{out}/report.json")),
    Step("ablate-mb", "ablate.py", ("--model", "mobilenet_v1_025", "--variants", "w8a8:drop=conv_in+linear_in,bc=0",
                                    "w8a8:drop=conv_in+linear_in,bc=0,weight=mse", "w8a8:bc=0", "w8a8:weight=mse,bc=0",
                                    "w8a8:act=mse", "--json", "{out}/report.json")),
    # DeiT-Tiny W8A8 calibrated on SMI / dense DeepInversion / real / noise images (4000-iteration sets,
    # hours each), the dense images with 46 patches kept, the paired comparison and the subset spread
    Step("set-deit-smi4k", "make_set.py", ("--model", "deit_tiny", "--method", "smi", "--num-images", "32",
                                           "--out", DEIT_SMI4K)),
    Step("set-deit-smi4k-s1", "make_set.py", ("--model", "deit_tiny", "--method", "smi", "--num-images", "32", "--seed",
                                              "1", "--out", DEIT_SMI4K_S1)),
    Step("set-deit-di4k", "make_set.py", ("--model", "deit_tiny", "--method", "deepinversion", "--num-images", "32",
                                          "--out", DEIT_DI4K)),
    *(Step(f"set-deit-di4k-{by}46", "keep_subset.py", (DEIT_DI4K, f"{DEIT_DI4K}-{by}46", "--keep", "46", "--by", by,
                                                       "--checkpoint", DEIT_WEIGHTS))
      for by in ("random", "attention")),
    *(dfq_calibrate(name, *args) for name, args in (
        ("dt-w8a8-real", ("--calib-folder", SAMPLE, "--num-images", "32")),
        ("dt-w8a8-smi", ("--calib-set", DEIT_SMI4K, "--kept-tokens")),
        ("dt-w8a8-smi-dense", ("--calib-set", DEIT_SMI4K, "--dense-calibration")),
        ("dt-w8a8-noise", ("--inversion", "noise", "--num-images", "32")),
        ("dt-w8a8-di", ("--calib-set", DEIT_DI4K)),
        ("dt-w8a8-di-random46", ("--calib-set", f"{DEIT_DI4K}-random46", "--kept-tokens")),
        ("dt-w8a8-di-attention46", ("--calib-set", f"{DEIT_DI4K}-attention46", "--kept-tokens")),
        ("dt-w8a8-paper-real", ("--numerics", "paper", "--calib-folder", SAMPLE, "--num-images", "32")),
        ("dt-w8a8-paper-smi", ("--numerics", "paper", "--calib-set", DEIT_SMI4K, "--kept-tokens")),
        ("dt-w8a8-paper-noise", ("--numerics", "paper", "--inversion", "noise", "--num-images", "32")),
        ("dt-w8a8-paper-di", ("--numerics", "paper", "--calib-set", DEIT_DI4K)))),
    Step("paired-dt-w8a8", "paired_runs.py", ("--model", "deit_tiny",
                                              *(f"{BENCH_DIR}/{n}/{n}" for n in ("dt-w8a8-di", "dt-w8a8-smi",
                                                "dt-w8a8-smi-dense", "dt-w8a8-real", "dt-w8a8-noise")),
                                              "--json", "{out}/report.json")),
    Step("calib-variance-dt", "calib_variance.py", ("--model", "deit_tiny", "--subset", "16", "--draws", "8",
                                                    f"di={DEIT_DI4K}", f"smi={DEIT_SMI4K}", f"smi-s1={DEIT_SMI4K_S1}",
                                                    f"smi-dense={DEIT_SMI4K}:dense", f"smi-s1-dense={DEIT_SMI4K_S1}:dense",
                                                    "real=real", "--json", "{out}/report.json")),
    # BN CNNs calibrated on inverted images vs noise vs real (each source made in the step)
    Step("cnn-resnet56", "cnn_inversion.py", ("--model", "resnet56", "--sources", "real", "noise", "cmi",
                                              "deepinversion", "--num-images", "64", "--eval-images", "846", "--set",
                                              "deepinversion:iterations=500", "--set", "deepinversion:batch_size=64",
                                              "--json", "{out}/report.json")),
    Step("cnn-mb", "cnn_inversion.py", ("--model", "mobilenet_v1_025", "--sources", "real", "noise", "deepinversion",
                                        "cmi", "--num-images", "32", "--eval-images", "500", "--set",
                                        "deepinversion:iterations=500", "--set", "cmi:ngf=16", "--json",
                                        "{out}/report.json")),
    # CIFAR-10 ResNet-56 -> ResNet-20 by KD on 512 inverted images or noise, with and without mixup (issue 12)
    *(Step(name, "distill_cifar.py", (*src, "--num-images", "512", "--steps", "1500", *extra, "--out", "{out}"))
      for name, src, extra in (
          ("kd-cifar-di", ("--source", "deepinversion", "--set", "iterations=200", "--set", "batch_size=256",
                           "--set-dir", CIFAR_DI), ()),
          ("kd-cifar-noise", ("--source", "noise"), ()),
          ("kd-cifar-di-mix", ("--source", "deepinversion", "--set", "iterations=200", "--set", "batch_size=256",
                               "--set-dir", CIFAR_DI), ("--kd", "mixup=0.5")),
          ("kd-cifar-noise-mix", ("--source", "noise"), ("--kd", "mixup=0.5")))),
    # DeiT-Tiny linear probe on the SMI set (issue 12)
    Step("probe-dt", "distill_probe.py", ("--set-dir", DEIT_SMI, "--num-images", "32", "128", "--steps", "300",
                                          "--batch-size", "32", "--eval-every", "50", "--out", "{out}")),
    Step("probe-dt-long", "distill_probe.py", ("--set-dir", DEIT_SMI, "--num-images", "128", "--steps", "1200",
                                               "--batch-size", "32", "--eval-every", "100", "--out", "{out}")),
    # W8A8 DeiT-Tiny: per-site calibrators, and reconstruction with learned activation ranges (issue 13)
    Step("w8-calibrators", "precision.py", ("calibrators", "--model", "deit_tiny", "--set-dir", DEIT_SMI,
                                            "--out", "{out}")),
    *(Step(name, "reconstruct.py", ("--model", "deit_tiny", "--scheme", "w8a8", "--set-dir", DEIT_SMI, "--calib-images",
                                    "32", "--iters", "200", "--batch-size", "16", "--act-ranges", "learn", *extra,
                                    "--out", "{out}"))
      for name, extra in (("rec-dt-w8-learn1e-3", ("--range-lr", "1e-3")),
                          ("rec-dt-w8-learn1e-2", ("--range-lr", "1e-2")),
                          ("rec-dt-w8-fc2mse-learn1e-2", ("--range-lr", "1e-2", "--site-calibrator", "fc2_in=mse")))),
    # timings (each step alone, its load recorded): the fake-quant forward before the host-sync removal
    # (cd6b316) and on this checkout; dense DeepInversion vs SMI iteration speed on DeiT-Base
    *(Step(name, "fakequant_overhead.py", ("--model", "deit_tiny", "--checkpoint", DEIT_WEIGHTS, "--batch-size", "8",
                                           "--threads", "2", *extra, "--json", "{out}/report.json"))
      for name, extra in (("fq-overhead-before", ("--code", "cd6b316")), ("fq-overhead-now", ()))),
    Step("inversion-speed-deit-base", "dfq", ("bench", "inversion", "--model", "deit_base", "--no-pretrained",
                                              "--batch-size", "32", "--device", "cpu", "--json")),
)  # fmt: skip


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("torch", "timm", "onnx", "onnxruntime", "onnxruntime-gpu", "nvidia-modelopt"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")  # fmt: skip
    return f"{os.cpu_count()} CPU cores, {model or platform.processor() or platform.machine()}, no GPU used"


def run_step(step: Step, redo: bool) -> bool:
    """Run ``step`` unless its report exists; True when its report is there afterwards."""
    out = BENCH_DIR / step.name
    report = out / "report.json"
    if report.exists() and not redo:
        return True
    out.mkdir(parents=True, exist_ok=True)
    made = None
    if step.script in SET_SCRIPTS:  # a set step's "report" is the set itself
        made = step.args[step.args.index("--out") + 1] if "--out" in step.args else step.args[SET_SCRIPTS[step.script]]
        if (REPO / made / "calibration.json").exists():  # made earlier (by hand or another bench): reuse it
            report.write_text(json.dumps({"set": made, "reused": True}) + "\n")
            return True
    cmd, shown = step.command(out), step.shown(out)
    print(f"\n[bench] {step.name}: {shown}", flush=True)
    start = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t0 = time.perf_counter()
    printed = out / "stdout.json"
    with open(out / "log.txt", "w") as log:
        if step.script == "dfq":  # the CLI prints its report (--json); its progress and warnings go to the log
            with open(printed, "w") as stdout:
                done = subprocess.run(cmd, cwd=REPO, stdout=stdout, stderr=log)
        else:
            done = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        print(f"[bench] {step.name} failed (exit {done.returncode}); see {out / 'log.txt'}", flush=True)
        return False
    if step.script == "dfq":
        try:
            json.loads(printed.read_text())
        except ValueError:
            print(f"[bench] {step.name} printed no JSON report; see {printed}", flush=True)
            return False
        printed.replace(report)
    if made is not None:
        report.write_text(json.dumps({"set": made}) + "\n")
    provenance = {"command": shown, "started": start, "seconds": round(time.perf_counter() - t0, 1),
                  "load_at_start": round(load, 2), "machine": machine(), "versions": versions()}  # fmt: skip
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return report.exists()


SET_SCRIPTS = {"make_set.py": 0, "merge_sets.py": 0, "keep_subset.py": 1}
"""The scripts whose steps make a set: the position of its folder among their arguments, unless ``--out`` names it."""

_BLOCK = re.compile(r"(<!-- bench:([\w-]+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.S)


def render(text: str, tables: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` with every marked table whose name is in ``tables`` replaced; and the marked names left as
    they were.

    >>> render("a\\n<!-- bench:t -->\\nold\\n<!-- /bench:t -->\\nb", {"t": "new\\n"})
    ('a\\n<!-- bench:t -->\\nnew\\n<!-- /bench:t -->\\nb', [])
    >>> render("<!-- bench:u -->\\nold\\n<!-- /bench:u -->", {})[1]
    ['u']
    """
    stale: list[str] = []

    def swap(m: re.Match[str]) -> str:
        if m.group(2) not in tables:
            stale.append(m.group(2))
            return m.group(0)
        return m.group(1) + tables[m.group(2)] + m.group(4)

    return _BLOCK.sub(swap, text), stale


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--render-only", action="store_true", help="rewrite the tables from the reports on disk")
    ap.add_argument("--only", nargs="+", default=None, help="run only these steps")
    ap.add_argument("--redo", nargs="+", default=[], help="rerun these steps even if their report exists")
    ap.add_argument("--file", type=Path, default=REPO / "BENCHMARKS.md")
    args = ap.parse_args()
    names = {s.name for s in STEPS}
    unknown = (set(args.only or []) | set(args.redo)) - names
    if unknown:
        sys.exit(f"error: unknown step(s) {sorted(unknown)}; steps: {', '.join(sorted(names))}")
    failed = []
    if not args.render_only:
        for step in STEPS:
            if args.only is None or step.name in args.only:
                if not run_step(step, step.name in args.redo):
                    failed.append(step.name)
    from _tables import render_tables

    text, stale = render(args.file.read_text(), render_tables(BENCH_DIR))
    tmp = args.file.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(args.file)
    print(f"[bench] {args.file} rewritten; tables not regenerated (steps missing): {stale or 'none'}")
    if failed:
        print(f"[bench] failed steps: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
