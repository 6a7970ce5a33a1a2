"""Renderers of BENCHMARKS.md's training and timing tables: CIFAR-10 KD (``distill_cifar.py``), the DeiT-Tiny
linear probe (``distill_probe.py``), W8A8 reconstruction with learned activation ranges (``precision.py
calibrators`` and ``reconstruct.py``), the fake-quant forward overhead (``fakequant_overhead.py``) and the
inversion speed (``dfq bench inversion``).

Each takes ``[(step name, report, provenance)]`` (see :mod:`_tables`) and returns the markdown of one
table, its figures formatted as the hand-written tables they replace.
"""

from __future__ import annotations

import statistics
from typing import Any

from _tables_more import MODEL_NAMES, num, site_labels

Report = Any
Items = list[tuple[str, Report, dict[str, Any]]]

_METHODS = {"deepinversion": "DeepInversion", "noise": "Gaussian noise", "smi": "SMI", "cmi": "CMI"}


# --- CIFAR-10 ResNet-56 -> ResNet-20 by KD (distill_cifar.py) -------------------------------------------


def _highest(curve: list[dict[str, Any]], final: float) -> str:
    """The highest top-1 on the curve, with its step when it lies a point or more above the final one."""
    best = max(curve, key=lambda p: p["top1"])
    return f"{100 * best['top1']:.1f}" + (f" (step {best['step']})" if best["top1"] - final >= 0.01 else "")


def kd_cifar_table(reports: Items) -> str:
    """One row per KD run: its training set (and what making it cost), mixup, KD time, the final student
    against the teacher and the highest top-1 on its curve."""
    steps = reports[0][1]["config"]["steps"]
    lines = [f"| training images | mixup | make set (s) | KD {steps} steps (s) | final top-1 | agreement | KL "
             "| highest top-1 on the curve |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    seen = set()
    for _, r, _ in reports:
        s, c, f = r["set"], r["config"], r["final"]
        label = _METHODS.get(s["method"], s["method"]) + (
            f" ({s['iterations']} it.)" if s.get("iterations") else ""
        )
        made = "(same set)" if s["path"] in seen and s["seconds"] >= 0.5 else f"{s['seconds']:.0f}"
        seen.add(s["path"])
        kd = r.get("seconds_total", r.get("kd_seconds_total"))  # older reports: kd_seconds_total
        mixup = f"{c['mixup']:g}" if c.get("mixup") else "—"
        lines.append(f"| {label} | {mixup} | {made} | {kd:.0f} "
                     f"| {100 * f['top1']:.1f} | {f['agreement']:.3f} | {f['kl']:.2f} | {_highest(r['curve'], f['top1'])} |")  # fmt: skip
    lines.append(f"\nTeacher {100 * reports[0][1]['teacher_metrics']['top1']:.2f}% on the same images.")
    return "\n".join(lines)


# --- DeiT-Tiny linear probe (distill_probe.py) -----------------------------------------------------------


def _cell(p: dict[str, Any]) -> str:
    return f"{100 * p['top1']:.1f} / {p['agreement']:.3f} / {p['kl']:.2f}"


def probe_table(reports: Items) -> str:
    """One row per number of training images: top-1 / agreement / KL at every evaluation, and wall time."""
    ((_, r, _),) = reports
    steps = [p["step"] for p in r["runs"][0]["curve"] if p["step"]]
    lines = ["| images | " + " | ".join([f"step {steps[0]}", *map(str, steps[1:])]) + " | wall (s) |",
             "|---" * (len(steps) + 2) + "|"]  # fmt: skip
    for run in r["runs"]:
        cells = [_cell(p) for p in run["curve"] if p["step"]]
        lines.append(f"| {run['num_images']} | {' | '.join(cells)} | {run['seconds_total']:.0f} |")
    return "\n".join(lines)


def thinned(points: list[Any], keep: int = 8) -> list[Any]:
    """At most about ``keep`` points: the first half of them, then every other one ending on the last.

    >>> thinned(list(range(100, 1201, 100)))
    [100, 200, 300, 400, 600, 800, 1000, 1200]
    >>> thinned([50, 100, 150])
    [50, 100, 150]
    """
    if len(points) <= keep:
        return points
    head, rest = points[: keep // 2], points[keep // 2 :]
    return head + rest[::-1][::2][::-1]


def probe_long_table(reports: Items) -> str:
    """The longer probe run, transposed: top-1, agreement and KL against the step."""
    ((_, r, _),) = reports
    lines = []
    for run in r["runs"]:
        pts = thinned([p for p in run["curve"] if p["step"]])
        lines += ["| step | " + " | ".join(str(p["step"]) for p in pts) + " |", "|---" * (len(pts) + 1) + "|",
                  "| top-1 | " + " | ".join(f"{100 * p['top1']:.1f}" for p in pts) + " |",
                  "| agreement | " + " | ".join(f"{p['agreement']:.3f}" for p in pts) + " |",
                  "| KL | " + " | ".join(f"{p['kl']:.2f}" for p in pts) + " |",
                  f"\n{run['num_images']} images, {run['seconds_total']:.0f} s.\n"]  # fmt: skip
    return "\n".join(lines).rstrip()


# --- W8A8 DeiT-Tiny: per-site calibrators and reconstruction with learned ranges -------------------------

CALIBRATOR_LABELS = {
    "preset (minmax; softmax mse)": "calibration alone (minmax; softmax mse, the preset)",
    "fc2_in mse": "calibration, `fc2_in` mse",
    "fc2_in percentile": "calibration, `fc2_in` percentile",
    "softmax minmax": "calibration, softmax min/max instead of the preset's MSE",
}
"""``precision.py calibrators`` rows -> their label (the ``every site`` rows share one, joined by /)."""


def rec_w8a8_table(reports: Items) -> str:
    """W8A8 calibration with per-site calibrators (the first step, ``precision.py calibrators``), then
    reconstruction runs with learned activation ranges; each KL against the preset calibration's."""
    (_, cal, _), *recs = reports
    rows = cal["rows"]
    base = rows[0]["kl"]
    method = recs[0][1]["set"].get("method", "synthetic") if recs else "synthetic"
    lines = [f"| W8A8 on {cal['calib_images']} {_METHODS.get(method, method)} images | top-1 | agreement | KL "
             "| vs default calibration |", "|---|---|---|---|---|"]  # fmt: skip
    every = [row for row in rows if row["config"].startswith("every site ")]
    for row in rows:
        if row in every[1:]:
            continue
        group = every if row is (every[0] if every else None) else [row]
        if len(group) > 1:
            label = "calibration, every site " + " / ".join(
                g["config"].removeprefix("every site ") for g in group
            )
        else:
            label = CALIBRATOR_LABELS.get(row["config"], f"calibration, {row['config']}")
        cells = [
            " / ".join(fmt(g) for g in group)
            for fmt in (
                lambda g: f"{100 * g['top1']:.1f}",
                lambda g: f"{g['agreement']:.3f}",
                lambda g: f"{g['kl']:.4f}",
                lambda g: f"{base / g['kl']:.2f}x",
            )
        ]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    for _, r, _ in recs:
        c, m = r["config"], r["reconstructed"]
        sites = ", ".join(site_labels(r.get("site_calibrators") or ()))
        label = (f"{sites} + " if sites else "") + f"reconstruction, ranges learned at {num(c['range_lr'])}"
        lines.append(f"| {label} ({r['reconstruct_seconds_total']:.0f} s) | {100 * m['top1']:.1f} | {m['agreement']:.3f} "
                     f"| {m['kl']:.4f} | {base / m['kl']:.2f}x |")  # fmt: skip
    return "\n".join(lines)


# --- timings: fake-quant forward (fakequant_overhead.py) and inversion speed (dfq bench inversion) -------


def _load_check(load: dict[str, Any]) -> str:
    return "idle" if load.get("idle") else f"not idle ({'; '.join(load.get('not_idle_because', []))})"


def fakequant_table(reports: Items) -> str:
    """The float and fake-quant forward medians and their ratio, the per-round ratio's median and quartiles
    (the ratio of medians can sit outside them), and the host syncs of one fake-quant forward: the first
    step the code before a change, the second after it."""
    lines = ["| code | float forward | fake-quant forward | fake-quant / float (ratio of medians) "
             "| per-round ratio: median (quartiles) | host syncs per fake-quant forward |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    notes = []
    for (_, r, p), when in zip(reports, ("before", "after", *(f"run {i}" for i in range(3, len(reports) + 1))),
                               strict=False):  # fmt: skip
        code = r.get("code") or {}
        label = when + (f" (`{code['commit'][:7]}`{', with local changes' if code.get('dirty') else ''})"
                        if code.get("commit") else "")  # fmt: skip
        q1, _, q3 = statistics.quantiles(r["per_round_ratio"], n=4)
        med = statistics.median(r["per_round_ratio"])
        lines.append(f"| {label} | {r['float_ms']:.1f} ms | {r['fakequant_ms']:.1f} ms | {r['fakequant/float']:.2f}x "
                     f"| {med:.2f}x ({q1:.2f}–{q3:.2f}) | {r['host_syncs_per_forward']['fakequant']} |")  # fmt: skip
        notes.append(f"{when}: {r['model']} batch {r['batch_size']}, {r['threads']} threads, {r['rounds']} rounds of "
                     f"{r['iters']} forwards; load {p['load_at_start']:.2f} at the start; its load check: "
                     f"{_load_check(r.get('load', {}))}.")  # fmt: skip
    return "\n".join([*lines, "", *notes])


def inversion_speed_table(reports: Items) -> str:
    """Dense DeepInversion and each SMI sparsity stage: kept patches, seconds and GFLOP per iteration; then
    the whole-schedule speedup and FLOPs ratio."""
    ((_, r, _),) = reports

    def row(label: str, st: dict[str, Any]) -> str:
        return (f"| {label} | {st['kept_patches']} | {st['seconds_per_it']:.2f} | {st['it_per_s']:.3f} "
                f"| {st['flops_per_it'] / 1e9:.0f} |")  # fmt: skip

    lines = ["| stage (iterations) | kept patches | s/it | it/s | GFLOP/it |", "|---|---|---|---|---|",
             row(f"dense (all {r['iterations']})", r["dense"])]  # fmt: skip
    for st in r["stages"]:
        lines.append(
            row(f"{st['first_iteration']}–{st['first_iteration'] + st['iterations_in_run'] - 1}", st)
        )
    lines.append(f"\nWhole schedule: SMI/dense speedup {r['speedup']:.2f}x ({r['dense_seconds_per_it']:.1f} s vs "
                 f"{r['smi_seconds_per_it']:.1f} s per iteration on average), FLOPs ratio {r['flops_ratio']:.2f}x; "
                 f"batch {r['batch_size']} on {r['device']}, {r['steps_per_stage']} timed iterations per stage; "
                 f"load check: {_load_check(r.get('machine_load', {}))}.")  # fmt: skip
    return "\n".join(lines)


# --- data-free QAT started from block reconstruction (distill_qat.py --reconstruct-iters) ----------------


def _trio(m: dict[str, Any] | None) -> str:
    return "—" if m is None else f"{100 * m['top1']:.1f} / {m['agreement']:.3f} / {m['kl']:.3f}"


def qat_rec_table(reports: Items) -> str:
    """W4A8 QAT on synthetic images after block reconstruction on them: calibration alone, reconstructed,
    the final QAT model (never a checkpoint chosen on the scored images), and the range of top-1 and KL
    over the evaluations of the QAT curve."""
    lines = ["| model, training images | calibration alone: top-1 / agr. / KL | reconstructed | after QAT (last step) "
             "| top-1 / KL over the curve | FP top-1 | QAT steps, batch, ranges (weights / activations) | QAT time |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for _, r, _ in reports:
        s, c, curve = r["set"], r["config"], r["curve"]
        top1 = [100 * p["top1"] for p in curve[1:]]
        kl = [p["kl"] for p in curve[1:]]
        span = f"{min(top1):.1f}–{max(top1):.1f} / {min(kl):.3f}–{max(kl):.3f}" if top1 else "—"
        model = MODEL_NAMES.get(r["model"], r["model"])
        lines.append(f"| {model}, {s['trained_on']} {_METHODS.get(s['method'], s['method'])} images | "
                     f"{_trio(r['calibration_alone'])} | {_trio(r['reconstructed'])} | {_trio(r['qat'])} | {span} | "
                     f"{100 * r['fp']['top1']:.1f} | {c['steps']}, {c['batch_size']}, {c['weight_ranges']} / "
                     f"{c['act_ranges']} | {r['wall']['qat_this_process']:.0f} s |")  # fmt: skip
    lines.append("\nScored on the 500 sample images (FP top-1 per row).")
    return "\n".join(lines)
