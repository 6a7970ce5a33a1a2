"""Renderers of BENCHMARKS.md's issue-12/13 tables (block reconstruction, mixed precision, the data-free
estimate, DeiT-Tiny QAT), its export-accuracy tables and its ONNX Runtime speed table.

Each takes ``[(step name, report, provenance)]`` (see :mod:`_tables`) and returns the markdown of one
table, its figures formatted as the hand-written tables they replace.
"""

from __future__ import annotations

import re
from typing import Any

from _plots_data import source_name

from dfq.stats import spearman

Report = Any
Items = list[tuple[str, Report, dict[str, Any]]]

MODEL_NAMES = {"deit_tiny": "DeiT-Tiny", "mobilenet_v1_025": "MobileNet-v1 0.25"}
_SHORT_NAMES = {"deit_tiny": "DeiT-Tiny", "mobilenet_v1_025": "MobileNet"}
_METHODS = {"smi": "SMI", "deepinversion": "DeepInversion", "cmi": "CMI"}
_SYNTHETIC = {"deit_tiny": "SMI images", "mobilenet_v1_025": "DI images"}  # precision.py's SETS


def kl_text(kl: float) -> str:
    """A KL to FP as the tables print it: 2 decimals from 1, 3 from 0.01, 4 below.

    >>> [kl_text(x) for x in (4.4476, 0.21675, 0.0304, 0.0034725)]
    ['4.45', '0.217', '0.030', '0.0035']
    """
    return f"{kl:.2f}" if kl >= 1 else f"{kl:.3f}" if kl >= 0.01 else f"{kl:.4f}"


def num(x: float) -> str:
    """A rate or weight as the tables write it: small ones as ``1e-2``.

    >>> [num(x) for x in (0.1, 0.01, 3e-05, 2.5e-4, 10.0, 0.5)]
    ['0.1', '1e-2', '3e-5', '2.5e-4', '10', '0.5']
    """
    if 0 < abs(x) < 0.05:
        mantissa, exponent = f"{x:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{x:g}"


def _m(m: dict[str, float]) -> str:
    return f"{100 * m['top1']:.1f} / {m['agreement']:.3f} / {kl_text(m['kl'])}"


# --- block reconstruction (benchmarks/reconstruct.py) ---------------------------------------------------


def site_labels(calibrators: Any) -> list[str]:
    """``SITE=NAME`` per-site calibrator options as table text.

    >>> site_labels(["fc2_in=mse", "softmax=minmax"])
    ['`fc2_in` mse', '`softmax` minmax']
    """
    return [f"`{site}` {name}" for site, name in (c.split("=", 1) for c in calibrators)]


def reconstruct_label(r: Report) -> str:
    """The settings of a reconstruction run, from its report."""
    s, c = r["set"], r["config"]
    parts = [MODEL_NAMES.get(r["model"], r["model"])]
    if r.get("scheme", "w4a8") != "w4a8":
        parts.append(r["scheme"].upper())
    if "path" in s:  # a synthetic set (a --real-calib run has none)
        parts.append(f"{s['calibrated_on']} {_METHODS.get(s['method'], s['method'])} images")
    parts += [f"{c['iters']} steps/unit", f"batch {c['batch_size']}", f"lr {num(c['lr'])}, reg {num(c['reg_weight'])}"]
    if c.get("drop"):
        parts.append(f"QDrop {c['drop']:g}")
    if c.get("views"):
        parts.append(f"{c['views']} augmented views per image")
    if c.get("fisher"):
        parts.append(f"Fisher-weighted loss ({c['fisher']:g})")
    if c.get("act_ranges") == "learn":
        parts.append(f"LSQ activation ranges (range lr {num(c['range_lr'])})")
    if s.get("kept_tokens"):
        parts.append(f"kept tokens only ({s['kept_tokens']} per image)")
    parts += site_labels(r.get("site_calibrators") or ())
    if s.get("ranges_from"):
        parts.append(f"activation ranges from the first {s['ranges_from']} images")
    return ", ".join(parts)


def _reconstruct_row(r: Report) -> str:
    secs = f"{r['reconstruct_seconds_total']:.0f} s ({len(r['units'])} units)"
    if r["config"].get("fisher"):  # the gradient pass is outside the units' own seconds
        secs = f"{r['wall']['reconstruct_this_process']:.0f} s wall ({len(r['units'])} units and the Fisher pass)"
    return (f"| {reconstruct_label(r)} | {_m(r['calibration_alone'])} | {_m(r['reconstructed'])} "
            f"| {100 * r['fp']['top1']:.1f} | {secs} |")  # fmt: skip


def reconstruct_table(reports: Items) -> str:
    """W4A8 calibrated on synthetic images, then block-reconstructed on them: one row per run."""
    lines = ["| model | calibration alone: top-1 / agr. / KL | reconstructed: top-1 / agr. / KL | FP top-1 "
             "| reconstruction time |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [_reconstruct_row(r) for _, r, _ in reports]
    scored = sorted({r.get("scored_images", 500) for _, r, _ in reports})
    lines.append(f"\nScored on {' / '.join(map(str, scored))} sample images.")
    return "\n".join(lines)


def reconstruct_real_table(reports: Items) -> str:
    """The reference with real data: calibration and reconstruction on the last N sample images, the
    others scored."""
    r0 = reports[0][1]
    lines = [f"| model, {r0['set']['images']} real images | calibration alone: top-1 / agr. / KL | reconstructed: "
             f"top-1 / agr. / KL | FP top-1 ({r0['scored_images']}) | time |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [_reconstruct_row(r) for _, r, _ in reports]
    return "\n".join(lines)


# --- precision planning (benchmarks/precision.py mixed / estimate) --------------------------------------


def mixed_table(reports: Items) -> str:
    """Uniform W4A8, the mixed-precision plan for each budget, uniform W8A8 (``precision.py mixed``)."""
    ((_, r, _),) = reports
    planned = [row for row in r["rows"] if "layers" in row]
    layers = len(planned[0]["layers"]) if planned else None
    numel = sum(s["numel"] for s in planned[0]["sensitivity"]) if planned and "sensitivity" in planned[0] else None
    lines = ["| weights | mean bits | 8-bit layers | weight bytes | top-1 | agreement | KL (real) "
             "| KL (held-out synthetic) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in r["rows"]:
        bits = row["average_bits"]
        if "eight_bit" in row:
            label, eight, nbytes = row["config"], str(len(row["eight_bit"])), row["weight_bytes"]
        else:  # a uniform width: every layer at `bits`
            label = f"uniform W{bits:g}" if row["config"].startswith("uniform") else row["config"]
            eight = (f"all {layers}" if layers else "all") if bits >= 8 else "0"
            nbytes = numel * bits / 8 if numel else None
        size = f"{nbytes / 1e6:.2f} MB" if nbytes is not None else "—"
        lines.append(f"| {label} | {bits:.2f} | {eight} | {size} | {100 * row['top1']:.1f} | {row['agreement']:.3f} "
                     f"| {kl_text(row['kl'])} | {kl_text(row['held_kl'])} |")  # fmt: skip
    lines.append(f"\nCalibrated on the set's first {r['calib_images']} images; held-out KL on its last {r['holdout']}.")
    for row in planned:  # which layers a small plan keeps at 8 bits, in the network's order
        if "eight_bit" in row and 0 < len(row["eight_bit"]) <= 12:
            order = list(row["layers"])
            names = ", ".join(f"`{n}`" for n in sorted(row["eight_bit"], key=order.index))
            lines.append(f"8-bit layers at budget {row['budget']:g}: {names}.")
    return "\n".join(lines)


def _set_kind(path: str) -> str:
    """The inversion a set directory's name says it holds (``runs/sets/cmi-mb-96`` -> ``CMI images``).

    >>> _set_kind("runs/sets/cmi-mb-96"), _set_kind("runs/sets/di200-mb"), _set_kind("x")
    ('CMI images', 'DI images', 'synthetic images')
    """
    return {"SMI": "SMI images", "CMI": "CMI images", "DeepInversion": "DI images"}.get(source_name(path),
                                                                                      "synthetic images")


def _config_label(c: dict[str, Any], sets: dict[str, str] | None = None) -> str:
    """``w8a8 minmax, synthetic`` -> ``W8A8 minmax, SMI images`` (the source named for the model's set)."""
    label = re.sub(r"\bw(\d)a(\d)\b", r"W\1A\2", c["label"])
    head, _, source = label.rpartition(", ")
    kind = _set_kind(sets[c["model"]]) if sets and c["model"] in sets else _SYNTHETIC.get(c["model"], "synthetic images")
    named = {"synthetic": kind, "real": "real images"}
    return f"{head}, {named.get(source, source)}" if head else label


def estimate_table(reports: Items) -> str:
    """Each configuration's real KL beside its held-out synthetic KL, and their Spearman rank correlation
    per model and pooled (computed here from the rows)."""
    ((_, r, _),) = reports
    rows = r["configs"]
    lines = ["| model | configuration | top-1 | agreement | KL (real) | held-out agreement "
             "| KL (held-out synthetic) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in rows:
        lines.append(f"| {_SHORT_NAMES.get(c['model'], c['model'])} | {_config_label(c, r.get('sets'))} | {100 * c['top1']:.1f} "
                     f"| {c['agreement']:.3f} | {kl_text(c['kl'])} | {c['held_agreement']:.3f} "
                     f"| {kl_text(c['held_kl'])} |")  # fmt: skip
    models = list(dict.fromkeys(c["model"] for c in rows))
    per = {m: [c for c in rows if c["model"] == m] for m in models}
    rho = {m: spearman([c["held_kl"] for c in cs], [c["kl"] for c in cs]) for m, cs in per.items()}
    counts = {len(cs) for cs in per.values()}
    each = ", ".join(f"{_SHORT_NAMES.get(m, m)} {rho[m]:.3f}" for m in models)
    if len(counts) == 1:
        each += f" ({counts.pop()} configurations each)"
    else:
        each = ", ".join(f"{_SHORT_NAMES.get(m, m)} {rho[m]:.3f} ({len(per[m])})" for m in models)
    pooled = spearman([c["held_kl"] for c in rows], [c["kl"] for c in rows])
    lines.append(f"\nSpearman rank correlation of the held-out KL with the real KL: {each}, {pooled:.3f} pooled "
                 f"over all {len(rows)}.")  # fmt: skip
    return "\n".join(lines)


# --- DeiT-Tiny data-free QAT (benchmarks/distill_qat.py) ------------------------------------------------


def _qat_settings(r: Report) -> dict[str, str]:
    c = r["config"]
    out = {"lr": f"lr {num(c['lr'])}", "range_lr": f"range lr {num(c['range_lr'])}",
           "weight_ranges": f"weight ranges {c['weight_ranges']}", "act_ranges": f"activation ranges {c['act_ranges']}",
           "mixup": f"mixup {c['mixup']:g}" if c.get("mixup") else "no mixup",
           "warmup": f"{c['warmup_steps']} warm-up steps" if c.get("warmup_steps") else "no warm-up",
           "steps": f"{c['steps']} steps", "batch": f"batch {c['batch_size']}",
           "train": f"{r['set']['trained_on']} training images"}  # fmt: skip
    if r.get("reconstructed"):
        out["reconstructed"] = "after block reconstruction"
    return out


def _kl_curve(curve: list[dict[str, Any]], upto: int = 400) -> str:
    """KL at the evaluations up to step ``upto`` (their steps named unless they are 0, 100, 200, ...), and
    the last evaluation's when the run went further.

    >>> _kl_curve([{"step": 0, "kl": 0.2168}, {"step": 50, "kl": 0.217}, {"step": 100, "kl": 0.225}])
    '0.217 / 0.217 (50) / 0.225 (100)'
    >>> _kl_curve([{"step": s, "kl": 0.2} for s in range(0, 1001, 100)])
    '0.200 / 0.200 / 0.200 / 0.200 / 0.200 … 0.200 (1000)'
    """
    points = [p for p in curve if p["step"] <= upto]
    plain = all(p["step"] == 100 * i for i, p in enumerate(points))
    text = " / ".join(f"{p['kl']:.3f}" if plain or not p["step"] else f"{p['kl']:.3f} ({p['step']})" for p in points)
    if curve[-1]["step"] > upto:
        text += f" … {curve[-1]['kl']:.3f} ({curve[-1]['step']})"
    return text


def qat_table(reports: Items) -> str:
    """W4A8 QAT on synthetic images: the KL curve and its lowest point, top-1 and training loss (the means over
    each evaluation interval) per run, and its last step ("(patience)": stopped early, ``DistillConfig.patience``); the
    first row's settings in full, the others' where they differ from it."""
    lines = ["| run | KL at step 0 / 100 / 200 / 300 / 400 | lowest KL (step) | top-1 at the last | training loss "
             "| stopped at |", "|---|---|---|---|---|---|"]  # fmt: skip
    base = _qat_settings(reports[0][1])
    for i, (_, r, _) in enumerate(reports):
        s = _qat_settings(r)
        label = ", ".join(s.values()) if i == 0 else ", ".join(v for k, v in s.items() if base.get(k) != v) or "same"
        curve = r["curve"]
        losses = [p["loss"] for p in curve if p.get("loss") is not None]
        lo, hi = (f"{min(losses):.2f}", f"{max(losses):.2f}") if losses else ("—", "—")
        loss = lo if lo == hi else f"{lo}–{hi}"
        stop = f"{curve[-1]['step']}{' (patience)' if r.get('stopped_early') else ''}"
        low = min(curve, key=lambda p: p["kl"])  # picked on the scored images: a bound, not a model to ship
        lines.append(f"| {label} | {_kl_curve(curve)} | {low['kl']:.3f} ({low['step']}) | {100 * curve[-1]['top1']:.1f} "
                     f"| {loss} | {stop} |")  # fmt: skip
    return "\n".join(lines)


# --- export accuracy (benchmarks/export_accuracy.py) and ORT speed (benchmarks/ort_speed.py) ------------


def checker_text(findings: list[str]) -> str:
    """The TensorRT-rule checker's findings of one export, counted by severity.

    >>> checker_text([])
    'clean'
    >>> checker_text(["warning: op Ceil is outside dfq's supported list [Ceil]", "info: per-channel FP8"])
    '1 warning (`Ceil`), 1 info'
    >>> checker_text(["info: per-channel FP8"])
    'clean (1 info)'
    """
    by: dict[str, list[str]] = {}
    for f in findings:
        severity, _, message = f.partition(": ")
        by.setdefault(severity, []).append(message)
    infos = f"{len(by['info'])} info" if by.get("info") else ""
    parts = []
    for severity in ("error", "warning"):
        if by.get(severity):
            ops = sorted({m.group(1) for msg in by[severity] if (m := re.match(r"op (\S+)", msg))})
            named = f" ({', '.join(f'`{o}`' for o in ops)})" if ops else ""
            parts.append(f"{len(by[severity])} {severity}{'s' if len(by[severity]) > 1 else ''}{named}")
    if not parts:
        return f"clean ({infos})" if infos else "clean"
    return ", ".join(parts + ([infos] if infos else []))


def _signed(x: float) -> str:
    return f"{x:+.4f}".replace("-", "−")


def _export_rows(rows: list[dict[str, Any]], floor_name: str) -> str:
    lines = ["| model | scheme | FP top-1 | torch top-1 / agr. / KL | ORT top-1 / agr. / KL | torch–ORT agreement "
             f"| torch f32–f64 agreement | {floor_name} agreement | bound | top-1 McNemar p | KL Δ 95% CI "
             "| max abs Δlogit | checker | verdict |", "|---" * 14 + "|"]  # fmt: skip
    for r in rows:
        t, o, v = r["torch"], r["ort"], r["verdict"]
        failed = [k for k in ("agreement", "top1_within_noise", "kl_within_noise") if not v[k]]
        lo, hi = r["kl_diff_ci95"]
        ort = f"{100 * o['top1']:.1f} / {o['agreement']:.3f} / {o['kl']:.4f}"
        if f := r.get("ort_fused"):  # a CPU without VNNI: the default session ran the int8 Q/DQ unfused
            ort += f" (Q/DQ unfused; fused: {100 * f['top1']:.1f} / {f['agreement']:.3f} / {f['kl']:.4f})"
        lines.append(
            f"| {r['model']} | {r['scheme']} | {100 * r['fp_top1']:.1f} "
            f"| {100 * t['top1']:.1f} / {t['agreement']:.3f} / {t['kl']:.4f} "
            f"| {ort} | {100 * r['torch_ort_agreement']:.1f}% "
            f"| {100 * r['torch_f32_f64_agreement']:.1f}% | {100 * r['ort_fused_unfused_agreement']:.1f}% "
            f"| {100 * v['bound']:.1f}% | {r['top1_mcnemar_p']:.2f} | {_signed(lo)}…{_signed(hi)} "
            f"| {r['max_abs_logit_diff']:.2f} | {checker_text(r['checker_findings'])} "
            f"| {'pass' if not failed else 'FAIL (' + ', '.join(failed) + ')'} |"
        )
    return "\n".join(lines)


def export_table(reports: Items) -> str:
    """Torch fake-quant against the exported Q/DQ graph in ORT, one row per (model, scheme)."""
    return _export_rows([row for _, r, _ in reports for row in r], "ORT fused–unfused")


def export_fp8_table(reports: Items) -> str:
    """The same for FP8 exports, whose Q/DQ ORT never fuses: its second floor is ORT's graph optimizations
    on against off."""
    return _export_rows([row for _, r, _ in reports for row in r], "ORT optimized–unoptimized")


def ort_speed_table(reports: Items) -> str:
    """Median latency of the FP32, dfq, dfq_ort and ORT ``quantize_static`` graphs and their ratios, one
    row per (run, batch); then each run's accuracy and its own load check."""
    lines = ["| run (load average at start) | batch | FP32 | dfq | dfq_ort | ORT `quantize_static` | FP32/dfq "
             "| FP32/dfq_ort (paired per-round quartiles) | FP32/ORT static | ORT static/dfq_ort |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    notes = []
    for i, (_, r, p) in enumerate(reports, 1):
        for batch, t in r["latency"].items():
            q1, _, q3 = t["fp32/dfq_ort_per_round_q1_median_q3"]
            lines.append(f"| {i} ({p['load_at_start']:.2f}) | {batch.removeprefix('batch')} | {t['fp32_ms']:.1f} ms "
                         f"| {t['dfq_ms']:.1f} ms | {t['dfq_ort_ms']:.1f} ms | {t['ort_static_ms']:.1f} ms "
                         f"| {t['fp32/dfq']:.2f}x | {t['fp32/dfq_ort']:.2f}x ({q1:.2f}–{q3:.2f}) "
                         f"| {t['fp32/ort_static']:.2f}x | {t['ort_static/dfq_ort']:.2f}x |")  # fmt: skip
        load = r.get("machine_load", {})
        idle = "idle" if load.get("idle") else f"not idle ({'; '.join(load.get('not_idle_because', []))})"
        note = f"Run {i}: {r['threads']} threads; its load check: {idle}."
        if "accuracy" in r:
            a = {k: v if k == "num_images" else f"{100 * v['top1']:.1f} / {v['agreement']:.3f} / {v['kl']:.4f}"
                 for k, v in r["accuracy"].items()}  # fmt: skip
            note += (f" On {a['num_images']} images (top-1 / agreement with FP32 / KL): FP32 "
                     f"{100 * r['accuracy']['fp32']['top1']:.1f}; dfq {a['dfq']}; dfq_ort {a['dfq_ort']}; ORT "
                     f"`quantize_static` {a['ort_static']}; torch fake-quant dfq {a['dfq_torch_fake_quant']}, "
                     f"dfq_ort {a['dfq_ort_torch_fake_quant']}.")  # fmt: skip
        notes.append(note)
    notes += _fused_ops_notes([r.get("fused_ops") for _, r, _ in reports])
    return "\n".join(lines + [""] + notes)


def _fused_ops_notes(per_run: list[dict[str, dict[str, int]] | None]) -> list[str]:
    """What ORT runs once it has optimized each graph (op type: count), one line for all runs when they agree.

    >>> _fused_ops_notes([{"dfq_ort": {"QLinearMatMul": 12, "Conv": 1}}] * 2)
    ["Ops after ORT's graph optimizations (every run): dfq_ort: 1 Conv, 12 QLinearMatMul."]
    """
    names = {"fp32": "FP32", "dfq": "dfq", "dfq_ort": "dfq_ort", "ort_static": "ORT `quantize_static`"}

    def line(ops: dict[str, dict[str, int]]) -> str:
        return "; ".join(f"{names.get(g, g)}: " + ", ".join(f"{n} {op}" for op, n in sorted(c.items()))
                         for g, c in ops.items())  # fmt: skip

    runs = [(i, ops) for i, ops in enumerate(per_run, 1) if ops]
    if not runs:
        return []
    if all(ops == runs[0][1] for _, ops in runs):
        where = "every run" if len(runs) > 1 else f"run {runs[0][0]}"
        return [f"Ops after ORT's graph optimizations ({where}): {line(runs[0][1])}."]
    return [f"Ops after ORT's graph optimizations, run {i}: {line(ops)}." for i, ops in runs]
