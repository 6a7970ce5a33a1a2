"""Draw BENCHMARKS.md's figures (PNG, matplotlib Agg) from the benchmark reports on disk.

    python benchmarks/plots.py [--bench-dir benchmarks/reports] [--runs runs] [--out docs/img]

- ``calibration_sources.png``: KL to FP and top-1 agreement of DeiT-Tiny quantized on each calibration
  source (``runs/bench/fp8-dt-*``, ``modelopt-dt``, ``ort-sets-dt``);
- ``smi_preview.png``: the preview grid ``dfq invert`` wrote for an SMI set (``runs/sets/NAME/preview.png``);
- ``kd_curves.png``: top-1 against the step of the distillation runs (``kd-cifar-*`` and ``qat-dt*``: the kept
  reports in ``--bench-dir``, else the runs of those names in ``--runs``);
- ``ort_latency.png``: ONNX Runtime latency per batch, FP32 vs dfq INT8 vs ORT ``quantize_static``, and the
  speedups with their per-round quartiles (``runs/bench/ort-speed-*``, else ``runs/ort_speed_idle2.json``).

A figure whose reports are missing is skipped with a note. matplotlib is the ``bench`` extra
(``pip install -e ".[bench]"``); nothing else needs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from _plots_data import SOURCES, curve_panels, ort_speed_report, read_json, source_metrics

DPI = 100
MAX_BYTES = 150_000
MAKER = "made by python benchmarks/plots.py"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _skip(name: str, why: str) -> None:
    print(f"plots: skipped {name}: {why}")


def _save(fig: Any, path: Path, caption: str) -> Path:
    """Caption at the bottom, PNG at :data:`DPI`; re-saved with a 256-colour palette when over :data:`MAX_BYTES`."""
    fig.text(0.01, 0.01, caption, fontsize=7, color="0.3", ha="left", va="bottom")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    if path.stat().st_size > MAX_BYTES:
        from PIL import Image

        with Image.open(path) as im:
            small = im.convert("RGB").quantize(colors=256)
        small.save(path, format="PNG", optimize=True)
    return path


def _brace(paths: list[str], leaf: str = "/report.json") -> str:
    """Run folders as ``parent/{a,b}/report.json``, one group per parent.

    >>> _brace(["runs/kd-a", "runs/kd-b", "runs/bench/qat"])
    'runs/{kd-a,kd-b}/report.json, runs/bench/qat/report.json'
    """
    by: dict[str, list[str]] = {}
    for p in paths:
        by.setdefault(Path(p).parent.as_posix(), []).append(Path(p).name)
    return ", ".join(f"{d}/{n[0] if len(n) == 1 else '{' + ','.join(sorted(n)) + '}'}{leaf}" for d, n in sorted(by.items()))


def plot_sources(bench_dir: Path, out: Path) -> Path | None:
    """KL to FP (log scale) and top-1 agreement per calibration source, one bar per quantizer."""
    data = source_metrics(bench_dir)
    if data is None:
        return _skip("calibration_sources.png", f"no fp8-dt-*, modelopt-dt or ort-sets-dt report under {bench_dir}")
    plt, series = _pyplot(), data["series"]
    sources = [s for s in SOURCES if any(s in v for v in series.values())]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    width = 0.8 / len(series)
    shown = [a for _, by in series.items() for s, (_, a) in by.items() if a >= 0.5]
    floor = max(0.0, round(min(shown, default=0.0) - 0.03, 2))
    for i, (label, by) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(sources))]
        for ax, k in zip(axes, (0, 1), strict=True):
            vals = [by[s][k] if s in by else float("nan") for s in sources]
            ax.bar(xs, vals, width, label=label if k == 0 else None, color=f"C{i}")
            for x, s, v in zip(xs, sources, vals, strict=True):
                note = "not run" if s not in by else (f"{v:.3f}" if k == 1 and v < floor else None)
                if note:
                    ax.text(x, 0.02, note, transform=ax.get_xaxis_transform(), rotation=90, fontsize=6,
                            ha="center", va="bottom", color="0.3")  # fmt: skip
    axes[0].set_yscale("log")
    axes[0].set_ylabel("mean KL(FP || quantized), log scale")
    axes[0].set_title("KL to FP (lower is better)", fontsize=10)
    axes[1].set_ylim(floor, 1.0)
    axes[1].set_ylabel("top-1 agreement with FP")
    axes[1].set_title("top-1 agreement with FP (higher is better)", fontsize=10)
    for ax in axes:
        ax.set_xticks(range(len(sources)), sources)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="upper center", ncol=len(series), fontsize=8, bbox_to_anchor=(0.5, 0.94))
    fig.suptitle(f"DeiT-Tiny: calibration source vs accuracy ({'/'.join(map(str, data['calib']))} images per source)",
                 fontsize=11)  # fmt: skip
    fig.tight_layout(rect=(0, 0.05, 1, 0.9))
    caption = (f"Scored on {'/'.join(map(str, data['scored']))} sample images. Source: "
               f"{_brace([str(bench_dir / s) for s in data['steps']])}, measured {', '.join(data['dates'])}; {MAKER}.")  # fmt: skip
    return _save(fig, out / "calibration_sources.png", caption)


def plot_preview(runs_dir: Path, out: Path, set_name: str = "smi500-dt-s1", width: int = 800) -> Path | None:
    """The set's ``preview.png`` (written by ``dfq invert``) resized to ``width`` pixels, with a title."""
    set_dir = runs_dir / "sets" / set_name
    if not (set_dir / "preview.png").is_file():
        return _skip("smi_preview.png", f"no {set_dir}/preview.png (dfq invert writes it)")
    import numpy as np
    from PIL import Image

    with Image.open(set_dir / "preview.png") as im:
        grid = im.convert("RGB")
    grid = grid.resize((width, round(grid.height * width / grid.width)), Image.Resampling.LANCZOS)
    prov = (read_json(set_dir / "calibration.json") or {}).get("provenance", {})
    kept = prov.get("kept_patches") or []
    shown = "" if not kept else f"; black: stopped patches ({kept[0]} -> {kept[-1]} kept)"
    top, bottom, margin = 44, 26, 10
    plt = _pyplot()
    fig = plt.figure(figsize=((width + 2 * margin) / DPI, (grid.height + top + bottom) / DPI), dpi=DPI)
    fig.figimage(np.asarray(grid), xo=margin, yo=bottom, origin="upper")
    model = prov.get("model", {}).get("name", "model")
    fig.suptitle(f"{prov.get('method', 'inverted').upper()} images of {model} ({set_name}, "
                 f"{prov.get('iterations', '?')} iterations, seed {prov.get('seed', '?')}){shown}",
                 fontsize=10, y=1 - 12 / (grid.height + top + bottom), va="top")  # fmt: skip
    from datetime import datetime, timezone

    day = datetime.fromtimestamp((set_dir / "preview.png").stat().st_mtime, timezone.utc).strftime("%Y-%m-%d")
    return _save(fig, out / "smi_preview.png", f"Source: {set_dir}/preview.png, written {day}; {MAKER}.")


def plot_kd(bench_dir: Path, runs_dir: Path, out: Path) -> Path | None:
    """Top-1 against the step, one line per run, one panel per kind of run (CIFAR KD, DeiT-Tiny QAT)."""
    panels, notes = curve_panels(bench_dir, runs_dir)
    for note in notes:
        print(f"plots: kd_curves.png: {note}")
    if not panels:
        return _skip("kd_curves.png", "no distillation report with a curve")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 3, 4.2), squeeze=False)
    for ax, p in zip(axes[0], panels, strict=True):
        for label, steps, top1 in p["lines"]:
            ax.plot(steps, top1, marker="o", markersize=3, label=label)
        if p["ref"]:
            ax.axhline(p["ref"][1], color="0.4", linestyle="--", label=f"{p['ref'][0]} {p['ref'][1]:.1f}%")
        ax.set(title=p["title"], xlabel="step", ylabel="top-1 (%)")
        ax.title.set_fontsize(10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Distillation curves: the student's top-1 on real test images", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    dates = sorted({d for p in panels for d in p["dates"]})
    srcs = _brace([s for p in panels for s in p["sources"]])
    caption = f"Source: {srcs} (curves), runs started {', '.join(dates)}; {MAKER}."
    return _save(fig, out / "kd_curves.png", caption)


_GRAPHS = (("fp32", "FP32"), ("dfq", "dfq INT8 (TensorRT placement)"), ("dfq_ort", "dfq INT8 (--target ort)"),
           ("ort_static", "ORT quantize_static INT8"))  # fmt: skip


def plot_latency(bench_dir: Path, runs_dir: Path, out: Path) -> Path | None:
    """Median latency per call at each batch, and FP32/graph speedups with the per-round quartiles."""
    found = ort_speed_report(bench_dir, runs_dir)
    if found is None:
        return _skip("ort_latency.png", f"no {bench_dir}/ort-speed-*/report.json nor {runs_dir}/ort_speed_idle2.json")
    path, r, day = found
    lat = r["latency"]
    batches = list(lat)
    graphs = [(k, label) for k, label in _GRAPHS if all(f"{k}_ms" in lat[b] for b in batches)]
    plt = _pyplot()
    fig, (ax_ms, ax_x) = plt.subplots(1, 2, figsize=(10, 4.2))
    width = 0.8 / len(graphs)
    for i, (k, label) in enumerate(graphs):
        xs = [j + (i - (len(graphs) - 1) / 2) * width for j in range(len(batches))]
        bars = ax_ms.bar(xs, [lat[b][f"{k}_ms"] for b in batches], width, label=label, color=f"C{i}")
        ax_ms.bar_label(bars, fmt="%.0f", fontsize=7)
        if k == "fp32":
            continue
        ratios = [lat[b][f"fp32/{k}"] for b in batches]
        quart = [lat[b].get(f"fp32/{k}_per_round_q1_median_q3") for b in batches]
        err = [[max(0.0, v - q[0]) if q else 0.0 for v, q in zip(ratios, quart, strict=True)],
               [max(0.0, q[2] - v) if q else 0.0 for v, q in zip(ratios, quart, strict=True)]]  # fmt: skip
        ax_x.bar(xs, ratios, width, color=f"C{i}", yerr=err if any(quart) else None, capsize=3)
    ticks = [f"batch {b.removeprefix('batch')}" for b in batches]
    ax_ms.set_xticks(range(len(batches)), ticks)
    ax_ms.set(ylabel="median latency per call (ms)", title="latency (lower is better)")
    ax_x.set_xticks(range(len(batches)), ticks)
    ax_x.axhline(1.0, color="0.4", linestyle="--", linewidth=1)
    ax_x.set(ylabel="FP32 time / graph time (x)", title="speedup over FP32; whiskers: per-round quartiles")
    for ax in (ax_ms, ax_x):
        ax.title.set_fontsize(10)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="upper center", ncol=len(graphs), fontsize=8, bbox_to_anchor=(0.5, 0.94))
    load = r.get("machine_load", {})
    fig.suptitle(f"ONNX Runtime CPU latency, {r.get('model', 'model')} {r.get('scheme', '')}, "
                 f"{r.get('threads', '?')} threads", fontsize=11)  # fmt: skip
    fig.tight_layout(rect=(0, 0.05, 1, 0.9))
    idle = {True: "idle machine", False: "machine NOT idle"}.get(load.get("idle"), "load not recorded")
    return _save(fig, out / "ort_latency.png", f"Source: {path}, measured {day} ({idle}); {MAKER}.")


def render_plots(bench_dir: Path, out_dir: Path, runs_dir: Path | None = None,
                 preview_set: str = "smi500-dt-s1") -> list[Path]:  # fmt: skip
    """Every figure whose reports are on disk, written into ``out_dir``; the paths written.

    ``runs_dir`` (default: ``bench_dir``'s parent) holds the KD runs, the sets and the fallback ORT report.
    A figure that fails on a malformed report is skipped with a note; the others are still drawn.
    """
    bench_dir, out_dir = Path(bench_dir), Path(out_dir)
    runs_dir = bench_dir.parent if runs_dir is None else Path(runs_dir)
    jobs = (("calibration_sources.png", lambda: plot_sources(bench_dir, out_dir)),
            ("smi_preview.png", lambda: plot_preview(runs_dir, out_dir, preview_set)),
            ("kd_curves.png", lambda: plot_kd(bench_dir, runs_dir, out_dir)),
            ("ort_latency.png", lambda: plot_latency(bench_dir, runs_dir, out_dir)))  # fmt: skip
    made = []
    for name, job in jobs:
        try:
            path = job()
        except (KeyError, TypeError, ValueError, IndexError, OSError) as e:
            _skip(name, f"malformed input ({type(e).__name__}: {e})")
            continue
        if path is not None:
            made.append(path)
            print(f"plots: wrote {path} ({path.stat().st_size / 1000:.0f} kB)")
    return made


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench-dir", type=Path, default=Path("benchmarks/reports"), help="bench.py's kept step reports")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="the KD runs, sets/ and ort_speed_idle2.json")
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    p.add_argument("--preview-set", default="smi500-dt-s1", help="the set under RUNS/sets whose preview is shown")
    args = p.parse_args(argv)
    try:
        _pyplot()
    except ImportError:
        print("plots: needs matplotlib, the bench extra: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    render_plots(args.bench_dir, args.out, args.runs, args.preview_set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
