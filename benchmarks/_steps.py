"""The steps of ``make bench`` (:mod:`bench`): each a benchmark script with fixed arguments, and the
synthetic sets they read (made when missing, resumable). A table of BENCHMARKS.md names the steps it
renders from (:data:`_tables.TABLES`)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path("runs/bench")
REPORTS = REPO / "benchmarks" / "reports"
"""Where each step's report.json and provenance.json are kept, in git: the tables render from them on any checkout."""
SETS = "runs/sets"
DEIT_SMI = f"{SETS}/smi500-dt-s1"
DEIT_DI = f"{SETS}/di200-dt"
DEIT_DI_S6, DEIT_DI64 = f"{SETS}/di200-dt-s6", f"{SETS}/di200-dt-64"
DEIT_DI_MORE = {seed: f"{SETS}/di200-dt-s{seed}" for seed in range(7, 13)}  # 32 each, merged to 128 and 256
DEIT_DI128, DEIT_DI256 = f"{SETS}/di200-dt-128", f"{SETS}/di200-dt-256"
MB_DI = f"{SETS}/di200-mb"
MB_CMI = f"{SETS}/cmi-mb"
MB_CMI_S1 = f"{SETS}/cmi-mb-s1"
MB_CMI64 = f"{SETS}/cmi-mb-64"
MB_CMI_S2, MB_CMI96 = f"{SETS}/cmi-mb-s2", f"{SETS}/cmi-mb-96"
DEIT_SMI4K, DEIT_SMI4K_S1, DEIT_DI4K = f"{SETS}/smi4k-dt", f"{SETS}/smi4k-dt-s1", f"{SETS}/di4k-dt"
DEIT_SMI4K64 = f"{SETS}/smi4k-dt-64"
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
    timed: bool = False  # its figures are timings: the driver waits for an idle machine first

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


def deit_rec(name: str, set_dir: str, images: str, *extra: str) -> Step:
    """DeiT-Tiny W4A8 block reconstruction on a set's first ``images`` images, 300 steps per unit, batch 16."""
    return Step(name, "reconstruct.py", ("--model", "deit_tiny", "--set-dir", set_dir, "--calib-images", images,
                                         "--iters", "300", "--batch-size", "16", *extra, "--out", "{out}"))


STEPS: tuple[Step, ...] = (
    # the synthetic sets the other steps read (made when missing, resumable)
    Step("set-deit-smi", "make_set.py", ("--model", "deit_tiny", "--method", "smi", "--num-images", "128", "--seed",
                                          "1", "--set", "iterations=500", "--out", DEIT_SMI)),
    Step("set-deit-di", "make_set.py", ("--model", "deit_tiny", "--method", "deepinversion", "--num-images", "32",
                                         "--seed", "5", "--set", "iterations=200", "--out", DEIT_DI)),
    Step("set-deit-di-s6", "make_set.py", ("--model", "deit_tiny", "--method", "deepinversion", "--num-images", "32",
                                            "--seed", "6", "--set", "iterations=200", "--out", DEIT_DI_S6)),
    Step("set-deit-di64", "merge_sets.py", (DEIT_DI64, DEIT_DI, DEIT_DI_S6)),
    *(Step(f"set-deit-di-s{seed}", "make_set.py", ("--model", "deit_tiny", "--method", "deepinversion", "--num-images",
                                                   "32", "--seed", str(seed), "--set", "iterations=200", "--out", out))
      for seed, out in DEIT_DI_MORE.items()),
    Step("set-deit-di128", "merge_sets.py", (DEIT_DI128, DEIT_DI, DEIT_DI_S6, DEIT_DI_MORE[7], DEIT_DI_MORE[8])),
    Step("set-deit-di256", "merge_sets.py", (DEIT_DI256, DEIT_DI128, *(DEIT_DI_MORE[s] for s in range(9, 13)))),
    Step("set-deit-smi4k", "make_set.py", ("--model", "deit_tiny", "--method", "smi", "--num-images", "32",
                                           "--out", DEIT_SMI4K)),
    Step("set-mb-di", "make_set.py", ("--model", "mobilenet_v1_025", "--method", "deepinversion", "--num-images",
                                       "256", "--set", "iterations=200", "--set", "batch_size=64", "--out", MB_DI)),
    Step("set-mb-cmi", "make_set.py", ("--model", "mobilenet_v1_025", "--method", "cmi", "--num-images", "32",
                                        "--set", "ngf=16", "--out", MB_CMI)),
    Step("set-mb-cmi-s1", "make_set.py", ("--model", "mobilenet_v1_025", "--method", "cmi", "--num-images", "32",
                                           "--seed", "1", "--set", "ngf=16", "--out", MB_CMI_S1)),
    Step("set-mb-cmi64", "merge_sets.py", (MB_CMI64, MB_CMI, MB_CMI_S1)),
    Step("set-mb-cmi-s2", "make_set.py", ("--model", "mobilenet_v1_025", "--method", "cmi", "--num-images", "32",
                                           "--seed", "2", "--set", "ngf=16", "--out", MB_CMI_S2)),
    Step("set-mb-cmi96", "merge_sets.py", (MB_CMI96, MB_CMI, MB_CMI_S1, MB_CMI_S2)),
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
    *(deit_rec(name, DEIT_SMI, "64", *extra)
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
      for name, set_dir, n in (("rec-mb-cmi", MB_CMI, "32"), ("rec-mb-cmi64", MB_CMI64, "64"),
                               ("rec-mb-cmi96", MB_CMI96, "96"))),
    # DeiT-Tiny on other sets: 32 SMI images of 4000 iterations, 32 / 64 DeepInversion images, all 128 SMI
    # images with 3 views; 128 / 256 DeepInversion images with views: min/max ranges, `fc2_in` mse, ranges
    # from the first 32 images
    *(deit_rec(name, set_dir, images, *extra) for name, set_dir, images, extra in (
        ("rec-dt-smi4k", DEIT_SMI4K, "32", ()),
        ("rec-dt-di", DEIT_DI, "32", ()),
        ("rec-dt-di64", DEIT_DI64, "64", ()),
        ("rec-dt-di128-views3", DEIT_DI128, "128", ("--views", "3")),
        ("rec-dt-di128-views3-fc2mse", DEIT_DI128, "128", ("--views", "3", "--site-calibrator", "fc2_in=mse")),
        ("rec-dt-di128-views3-r32", DEIT_DI128, "128", ("--views", "3", "--range-images", "32")),
        ("rec-dt-di256-views3-fc2mse", DEIT_DI256, "256", ("--views", "3", "--site-calibrator", "fc2_in=mse")),
        ("rec-dt-di128-views7-fc2mse", DEIT_DI128, "128", ("--views", "7", "--site-calibrator", "fc2_in=mse")),
        ("rec-dt-di128-views15-fc2mse", DEIT_DI128, "128", ("--views", "15", "--site-calibrator", "fc2_in=mse")),
        # all 256 DeepInversion images with the views that helped 128 (issue 12's last lever, session 14)
        *((f"rec-dt-di256-views{v}-fc2mse", DEIT_DI256, "256", ("--views", v, "--site-calibrator", "fc2_in=mse"))
          for v in ("7", "15")),
        ("rec-dt-128-views3", DEIT_SMI, "128", ("--views", "3")),
        # the same 128 DeepInversion images with each unit's error weighted by its output's Fisher diagonal
        *((f"rec-dt-di128-views{v}-fc2mse-fisher{f.replace('.', '')}", DEIT_DI128, "128",
           ("--views", v, "--site-calibrator", "fc2_in=mse", "--fisher", f)) for v, f in (("7", "0.5"), ("7", "1"))))),
    # ... and fitted with twice the steps, or twice the batch
    *(Step(f"rec-dt-di128-views7-fc2mse-{tag}", "reconstruct.py",
           ("--model", "deit_tiny", "--set-dir", DEIT_DI128, "--calib-images", "128", "--iters", iters, "--batch-size",
            batch, "--views", "7", "--site-calibrator", "fc2_in=mse", "--out", "{out}"))
      for tag, iters, batch in (("iters600", "600", "16"), ("batch32", "300", "32"))),
    # data-free QAT started from the reconstructed model (issue 12)
    Step("qat-mb-cmi", "distill_qat.py", ("--model", "mobilenet_v1_025", "--set-dir", MB_CMI, "--calib-images", "32",
                                          "--reconstruct-iters", "500", "--steps", "400", "--batch-size", "32",
                                          "--eval-every", "50", "--out", "{out}")),
    Step("qat-mb-cmi96", "distill_qat.py", ("--model", "mobilenet_v1_025", "--set-dir", MB_CMI96, "--calib-images",
                                            "96", "--reconstruct-iters", "500", "--steps", "400", "--batch-size", "32",
                                            "--eval-every", "50", "--weight-ranges", "frozen", "--out", "{out}")),
    # ... and its reference with real data: the last 32 sample images, the other 468 scored
    Step("rec-mb-real", "reconstruct.py", ("--model", "mobilenet_v1_025", "--real-calib", "32", "--iters", "500",
                                           "--batch-size", "32", "--out", "{out}")),
    Step("rec-dt-real", "reconstruct.py", ("--model", "deit_tiny", "--real-calib", "32", "--iters", "300",
                                           "--batch-size", "16", "--out", "{out}")),
    # mixed precision from held-out synthetic images, and the data-free estimate against real KL (issue 13)
    Step("mixed-dt", "precision.py", ("mixed", "--model", "deit_tiny", "--set-dir", DEIT_SMI, "--calib-images", "32",
                                      "--holdout", "32", "--budgets", "4.5", "5", "6", "--out", "{out}")),
    Step("estimate", "precision.py", ("estimate", "--out", "{out}")),  # reads DEIT_SMI and MB_DI
    Step("estimate-cmi", "precision.py", ("estimate", "--model-set", f"mobilenet_v1_025={MB_CMI96}", "--out", "{out}")),
    # DeiT-Tiny W4A8 data-free QAT (issue 12); the last two are session 8's 400-step runs. Each stops
    # after 3 evaluations without a lower KL (the runs stall or diverge early; by hand they were stopped)
    *(Step(name, "distill_qat.py", ("--model", "deit_tiny", "--set-dir", DEIT_SMI, "--calib-images", "32",
                                    "--batch-size", "16", "--kd", "dense=true", "--kd", "patience=3", *extra,
                                    "--out", "{out}"))
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
    *(Step(name, "ort_speed.py", ("--model", "deit_tiny", "--checkpoint", DEIT_WEIGHTS, "--images", SAMPLE, "--rounds", "11", "--threads", "2",
                                  "--batches", "1", "8", "--eval-images", "500", "--json", "{out}/report.json"), timed=True)
      for name in ("ort-speed-1", "ort-speed-2")),
    # DeiT-Tiny W8A8 / W4A8 on 32 real or noise images, and the noise study (ablate.py also runs its
    # --study variants: the default, paper real/noise, and one site group left in float at a time)
    Step("ablate-dt", "ablate.py", ("--model", "deit_tiny", "--variants", "w8a8:site=softmax/minmax", "w8a8:act=mse",
                                    "w8a8:site=softmax/mse+fc2_in/mse", "w8a8:act=percentile",
                                    "w8a8:act=entropy,site=softmax/minmax", "w8a8:act=entropy,site=softmax/entropy",
                                    "w8a8:drop=softmax+q+k+v", "w8a8:calib=noise,site=softmax/minmax", "w4a8:weight=minmax",
                                    "w4a8:site=softmax/minmax", "w4a8", "w4a8:calib=noise", "w4a8-paper",
                                    "w4a8-paper:calib=noise", "--study", "noise-placement", "--json", "{out}/report.json")),
    # where the W8A8 error sits (one activation site at a time), and the calibration subset's seed at crop 0.875
    Step("ablate-dt-sites", "ablate.py", ("--model", "deit_tiny", "--study", "sites", "--json", "{out}/report.json")),
    Step("ablate-dt-seeds", "ablate.py", ("--model", "deit_tiny", "--crop-pct", "0.875", "--variants",
                                          *(f"w8a8:site=softmax/minmax,seed={s}" for s in range(3)),
                                          "--json", "{out}/report.json")),
    # MobileNet-v1 0.25 W8A8: the default through the Python API, the variants in one ablate.py process
    Step("mb-api", "mobilenet_api.py", ("--out", "{out}/run", "--json", "{out}/report.json")),
    Step("ablate-mb", "ablate.py", ("--model", "mobilenet_v1_025", "--variants", "w8a8:drop=conv_in+linear_in,bc=0",
                                    "w8a8:drop=conv_in+linear_in,bc=0,weight=mse", "w8a8:bc=0", "w8a8:weight=mse,bc=0",
                                    "w8a8:act=mse", "--json", "{out}/report.json")),
    # DeiT-Tiny W8A8 calibrated on SMI / dense DeepInversion / real / noise images (4000-iteration sets,
    # hours each), the dense images with 46 patches kept, the paired comparison and the subset spread
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
    # 64 SMI images (both 4000-iteration seeds merged), calibrated and paired against dense DeepInversion's 32
    Step("set-deit-smi64", "merge_sets.py", (DEIT_SMI4K64, DEIT_SMI4K, DEIT_SMI4K_S1)),
    dfq_calibrate("dt-w8a8-smi64", "--calib-set", DEIT_SMI4K64, "--kept-tokens"),
    dfq_calibrate("dt-w8a8-smi64-dense", "--calib-set", DEIT_SMI4K64, "--dense-calibration"),
    Step("paired-dt-w8a8-smi64", "paired_runs.py", ("--model", "deit_tiny",
                                                    *(f"{BENCH_DIR}/{n}/{n}" for n in ("dt-w8a8-di", "dt-w8a8-smi64",
                                                                                       "dt-w8a8-smi64-dense")),
                                                    "--json", "{out}/report.json")),
    Step("calib-variance-dt", "calib_variance.py", ("--model", "deit_tiny", "--subset", "16", "--draws", "8",
                                                    f"di={DEIT_DI4K}", f"smi={DEIT_SMI4K}", f"smi-s1={DEIT_SMI4K_S1}",
                                                    f"smi-dense={DEIT_SMI4K}:dense", f"smi-s1-dense={DEIT_SMI4K_S1}:dense",
                                                    "real=real", "--range-threshold", "1.5", "--json",
                                                    "{out}/report.json")),
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
                                           "--threads", "2", *extra, "--json", "{out}/report.json"), timed=True)
      for name, extra in (("fq-overhead-before", ("--code", "cd6b316")), ("fq-overhead-now", ()))),
    Step("inversion-speed-deit-base", "dfq", ("bench", "inversion", "--model", "deit_base", "--no-pretrained",
                                              "--batch-size", "32", "--device", "cpu", "--json"), timed=True),
    Step("inversion-speed-deit-tiny", "dfq", ("bench", "inversion", "--model", "deit_tiny", "--no-pretrained",
                                              "--batch-size", "32", "--device", "cpu", "--json"), timed=True),
)  # fmt: skip
