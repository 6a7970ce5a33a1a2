"""The generated tables of BENCHMARKS.md, each rendered from the reports of :mod:`bench`'s steps.

:func:`render_tables` returns ``{table name: markdown}`` for every table whose steps have all run; a
table is its rows followed by one provenance line per step (command, date, seconds, load at the start,
machine, library versions), so every figure in it names where it came from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _tables_extra import (
    cnn_cifar_table,
    cnn_mobilenet_table,
    dt_calib_table,
    dt_seeds_table,
    dt_sites_table,
    mobilenet_table,
    noise_placement_table,
    paired_table,
    smi_calib_table,
    variance_table,
)
from _tables_more import (
    MODEL_NAMES,
    estimate_table,
    export_fp8_table,
    export_table,
    mixed_table,
    ort_speed_table,
    qat_table,
    reconstruct_real_table,
    reconstruct_table,
)
from _tables_train import (
    fakequant_table,
    inversion_speed_table,
    kd_cifar_table,
    probe_long_table,
    probe_table,
    qat_rec_table,
    rec_w8a8_table,
)

Report = dict[str, Any]


def _load(bench_dir: Path, name: str) -> tuple[Report, Report] | None:
    report, prov = bench_dir / name / "report.json", bench_dir / name / "provenance.json"
    if not report.exists() or not prov.exists():
        return None
    return json.loads(report.read_text()), json.loads(prov.read_text())


def provenance_lines(items: list[tuple[str, Report]]) -> list[str]:
    """One line per step: its command, when it ran and on what.

    >>> provenance_lines([("s", {"command": "python x.py", "started": "2026-12-02 03:00:00 UTC", "seconds": 12.0,
    ...                           "load_at_start": 0.3, "machine": "2 CPU cores", "versions": {"torch": "2.9"}})])
    ['- `s`: `python x.py` — 2026-12-02 03:00:00 UTC, 12 s, load 0.30 at the start; 2 CPU cores; torch 2.9']

    A timing step that found no idle machine says so (``waited_for_idle`` false in its provenance), and a
    step that continued from a checkpoint gives the seconds of its last process only (``resumed``):

    >>> provenance_lines([("s", {"command": "python x.py", "started": "2026-12-04 01:11:36 UTC", "seconds": 581.6,
    ...                           "load_at_start": 0.0, "machine": "2 CPU cores", "versions": {"torch": "2.9"}, "resumed": True})])
    ['- `s`: `python x.py` — 2026-12-04 01:11:36 UTC, 582 s (resumed from a checkpoint: this process only), load ...']
    """
    out = []
    for name, p in items:
        vers = ", ".join(f"{k} {v}" for k, v in p["versions"].items() if k != "python")
        busy = " (**not idle**: its timings are not figures)" if p.get("waited_for_idle") is False else ""
        if p.get("adopted_from"):
            busy += f" (run by hand into `{p['adopted_from']}`, adopted)"
        resumed = " (resumed from a checkpoint: this process only)" if p.get("resumed") else ""
        out.append(f"- `{name}`: `{p['command']}` — {p['started']}, {p['seconds']:.0f} s{resumed}, load "
                   f"{p['load_at_start']:.2f} at the start{busy}; {p['machine']}; {vers}")  # fmt: skip
    return out


def _m(row: Report) -> str:
    return f"{100 * row['top1']:.1f} / {row['agreement']:.3f} / {row['kl']:.4f}"


_MODELS = MODEL_NAMES


def fp8_table(reports: list[tuple[str, Report, Report]]) -> str:
    """FP8 W8A8 beside INT8 W8A8, one row per (model, calibration source)."""
    lines = ["| model | calibration images | scored | FP top-1 | INT8 W8A8: top-1 / agr. / KL | "
             "FP8 W8A8: top-1 / agr. / KL |", "|---|---|---|---|---|---|"]  # fmt: skip
    for _, r, _ in reports:
        rows = {row["config"]: row for row in r["rows"]}
        source = r["set_dir"] if r["set_dir"].startswith("real") else f"{r['calib_images']} of `{r['set_dir']}`"
        lines.append(f"| {_MODELS.get(r['model'], r['model'])} | {source} | {r.get('scored_images', 500)} "
                     f"| {100 * rows['float']['top1']:.1f} | {_m(rows['int8 w8a8'])} | {_m(rows['fp8 w8a8'])} |")  # fmt: skip
    return "\n".join(lines)


def toolkit_table(reports: list[tuple[str, Report, Report]]) -> str:
    """Another toolkit's INT8 PTQ calibrated on each source: top-1, agreement, KL."""
    (_, r, _), = reports
    lines = [f"| calibration images ({r['calib_images']} each) | top-1 | agreement | KL |", "|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['source']} | {100 * row['top1']:.1f} | {row['agreement']:.3f} | {row['kl']:.4f} |")
    lines.append(f"\nScored on {r.get('scored_images', 500)} sample images; FP top-1 {100 * r['fp_top1']:.1f}.")
    return "\n".join(lines)


TABLES: dict[str, tuple[tuple[str, ...], Callable[[list[tuple[str, Report, Report]]], str]]] = {
    "fp8": (("fp8-dt-smi", "fp8-dt-di", "fp8-dt-real", "fp8-mb-di", "fp8-mb-cmi", "fp8-mb-real"), fp8_table),
    "modelopt": (("modelopt-dt",), toolkit_table),
    "ort-static": (("ort-sets-dt",), toolkit_table),
    # issue 13: block reconstruction, its real-image reference, mixed precision, the data-free estimate
    "reconstruct": (("rec-dt-lr1e-2", "rec-dt", "rec-dt-qdrop", "rec-mb-lr1e-2", "rec-mb", "rec-mb-256",
                     "rec-mb-views3", "rec-mb-cmi", "rec-mb-cmi64", "rec-mb-cmi96", "rec-dt-views3", "rec-dt-views3-learn",
                     "rec-dt-kept", "rec-dt-smi4k", "rec-dt-di", "rec-dt-di64", "rec-dt-128-views3", "rec-dt-di128-views3", "rec-dt-di128-views3-r32",
                     "rec-dt-di128-views3-fc2mse", "rec-dt-di128-views7-fc2mse", "rec-dt-di128-views15-fc2mse",
                     "rec-dt-di256-views3-fc2mse"),
                    reconstruct_table),
    "reconstruct-fit": (("rec-dt-di128-views7-fc2mse-fisher05", "rec-dt-di128-views7-fc2mse-fisher1",
                         "rec-dt-di128-views7-fc2mse-iters600", "rec-dt-di128-views7-fc2mse-batch32"),
                        reconstruct_table),
    "reconstruct-256": (("rec-dt-di256-views7-fc2mse", "rec-dt-di256-views15-fc2mse"), reconstruct_table),
    "reconstruct-real": (("rec-mb-real", "rec-dt-real"), reconstruct_real_table),
    "mixed": (("mixed-dt",), mixed_table),
    "estimate": (("estimate",), estimate_table),
    "estimate-cmi": (("estimate-cmi",), estimate_table),
    # issue 12: DeiT-Tiny W4A8 data-free QAT
    "qat-dt": (("qat-dt", "qat-dt-lr1e-4-mixup", "qat-dt-frozen", "qat-dt-train32", "qat-dt-lr3e-4",
                "qat-dt-lr1e-4-warmup"), qat_table),
    "qat-rec": (("qat-mb-cmi", "qat-mb-cmi96"), qat_rec_table),
    # export accuracy (issue 10; FP8: issue 17) and ONNX Runtime speed
    "export-accuracy": (("export-acc",), export_table),
    "export-accuracy-fp8": (("export-acc-fp8",), export_fp8_table),
    "ort-speed": (("ort-speed-1", "ort-speed-2"), ort_speed_table),
    # DeiT-Tiny and MobileNet-v1 calibration variants on 32 real or noise images
    "dt-calib": (("ablate-dt",), dt_calib_table),
    "noise-placement": (("ablate-dt",), noise_placement_table),
    "dt-sites": (("ablate-dt-sites",), dt_sites_table),
    "dt-seeds": (("ablate-dt-seeds",), dt_seeds_table),
    "mobilenet-api": (("mb-api", "ablate-mb"), mobilenet_table),
    # DeiT-Tiny on SMI / dense DeepInversion / real / noise images: the runs, paired, and over subsets
    "smi-calib": (tuple(f"dt-w8a8{n}" for n in ("-real", "-smi", "-smi-dense", "-noise", "-di", "-di-random46",
                  "-di-attention46", "-paper-real", "-paper-smi", "-paper-noise", "-paper-di")), smi_calib_table),
    "smi-paired": (("paired-dt-w8a8",), paired_table),
    "smi64-calib": (("dt-w8a8-smi64", "dt-w8a8-smi64-dense"), smi_calib_table),
    "smi64-paired": (("paired-dt-w8a8-smi64",), paired_table),
    "calib-variance": (("calib-variance-dt",), variance_table),
    # BN CNNs on inverted images; CIFAR-10 KD and the DeiT-Tiny linear probe (issue 12)
    "cnn-cifar": (("cnn-resnet56",), cnn_cifar_table),
    "cnn-mobilenet": (("cnn-mb",), cnn_mobilenet_table),
    "kd-cifar": (("kd-cifar-di", "kd-cifar-noise", "kd-cifar-di-mix", "kd-cifar-noise-mix"), kd_cifar_table),
    "probe": (("probe-dt",), probe_table),
    "probe-long": (("probe-dt-long",), probe_long_table),
    # W8A8 DeiT-Tiny: per-site calibrators and reconstruction with learned activation ranges (issue 13)
    "rec-w8a8": (("w8-calibrators", "rec-dt-w8-learn1e-3", "rec-dt-w8-learn1e-2", "rec-dt-w8-fc2mse-learn1e-2"),
                 rec_w8a8_table),
    # timings, each step alone: fake-quant forward before/after the host-sync removal, inversion speed
    "fakequant-overhead": (("fq-overhead-before", "fq-overhead-now"), fakequant_table),
    "inversion-speed": (("inversion-speed-deit-base",), inversion_speed_table),
    "inversion-speed-tiny": (("inversion-speed-deit-tiny",), inversion_speed_table),
}  # fmt: skip
"""table name -> (the steps it reads, its renderer)."""


def render_tables(bench_dir: Path) -> dict[str, str]:
    """Markdown of every table of :data:`TABLES` whose steps all have a report and a provenance."""
    out = {}
    for table, (steps, fn) in TABLES.items():
        loaded = [_load(bench_dir, s) for s in steps]
        if any(x is None for x in loaded):
            continue
        items = [(s, r, p) for s, (r, p) in zip(steps, loaded, strict=True)]  # type: ignore[misc]
        body = fn(items)
        out[table] = body + "\n\n" + "\n".join(provenance_lines([(s, p) for s, _, p in items])) + "\n"
    return out
