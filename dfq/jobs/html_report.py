"""``RUN/report.html``: one self-contained page per run directory, for people.

:func:`write_html_report` reads what a run directory holds (:mod:`dfq.runs`: ``report.json``,
``recipe.json``, ``quant_state.pt``, ``calibration/preview.png``, and ``analysis.json`` when a
sensitivity analysis was run) and writes a single HTML file that loads nothing: the preview is a
base64 ``data:`` URI, the charts are inline SVG drawn by :mod:`dfq.jobs._svg`, the style is inline,
there is no script, and a Content-Security-Policy forbids any other load. Sections: summary (scheme,
calibration source, real-image figures, timings), calibration preview, data-free accuracy estimate,
per-layer sensitivity, activation ranges per site, mixed-precision assignment, reconstruction. A
section without its data says what is missing and which command writes it (:data:`HOW_TO`).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from dfq import atomic
from dfq.errors import DfqError
from dfq.jobs import _svg
from dfq.jobs.plan import ANALYSIS_JSON

__all__ = [
    "write_html_report",
    "render_html_report",
    "activation_ranges",
    "REPORT_HTML",
    "ANALYSIS_JSON",
    "HOW_TO",
]

REPORT_HTML = "report.html"
TOP_SENSITIVITY = 40  # rows drawn in the sensitivity chart; the table below it lists all of them

HOW_TO = {  # what writes each optional piece of a run directory
    "eval": "dfq calibrate ... --eval-folder DIR",
    "preview": "dfq calibrate ...",
    "estimate": "dfq calibrate ... --holdout N",
    "analysis": "dfq analyze RUN (or dfq calibrate ... --weight-bits-budget BITS)",
    "ranges": "dfq calibrate ...",
    "mixed_precision": "dfq calibrate ... --weight-bits-budget BITS",
    "reconstruct": "dfq calibrate ... --reconstruct",
}

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;color:#222;margin:0 auto;max-width:1000px;padding:16px 24px}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
nav a{margin-right:12px;color:#4c72b0}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}
td.n{text-align:right;font-variant-numeric:tabular-nums}code{background:#f4f4f4;padding:1px 4px}
.missing{color:#777;font-style:italic}.caveat{background:#fff8e1;border-left:4px solid #dd8452;padding:6px 10px}
.warn{color:#c44e52}.legend{font-size:12px}.swatch{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
.scroll{max-height:420px;overflow:auto}img.preview{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_SENS = (
    "alone_kl: KL to FP with only this quantizer on",
    "saving: baseline_kl − drop_kl (KL removed by leaving it in float)",
)
_RECON = ("error before", "error after")


def write_html_report(run: str | Path, out: str | Path | None = None) -> Path:
    """Write the self-contained HTML report of a run directory.

    Args:
        run: a run directory written by ``dfq calibrate`` (it must hold ``report.json``).
        out: the HTML file to write (default ``RUN/report.html``); written atomically.

    Returns:
        The path written.

    Raises:
        DfqError: ``run`` has no readable ``report.json``.
    """
    run = Path(run)
    out = run / REPORT_HTML if out is None else Path(out)
    return atomic.write_text(out, render_html_report(run))


def render_html_report(run: str | Path) -> str:
    """The HTML text of :func:`write_html_report` (nothing is written)."""
    run = Path(run)
    report = _read_json(run / "report.json")
    if not isinstance(report, dict):
        raise DfqError(
            f"{run} has no readable report.json: not a dfq run directory (write one with `dfq calibrate`)"
        )
    recipe = _read_json(run / "recipe.json") or {}
    name = str((report.get("model") or {}).get("name") or "model")
    sections = [
        ("summary", "Summary", _summary(report)),
        ("preview", "Calibration set preview", _preview(run / "calibration" / "preview.png")),
        ("estimate", "Data-free accuracy estimate", _estimate(report.get("estimate"))),
        ("sensitivity", "Per-layer sensitivity", _sensitivity(run / ANALYSIS_JSON)),
        ("ranges", "Activation ranges per site", _ranges(run / "quant_state.pt")),
        ("mixed-precision", "Mixed-precision assignment", _mixed(report.get("mixed_precision"))),
        ("reconstruction", "Reconstruction", _reconstruct(report.get("reconstruct"))),
    ]
    nav = "".join(f'<a href="#{sid}">{escape(title)}</a>' for sid, title, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{escape(title)}</h2>{html}</section>' for sid, title, html in sections
    )
    versions = ", ".join(f"{k} {v}" for k, v in (recipe.get("versions") or {}).items())
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>dfq report: {escape(name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>dfq report: {escape(name)}</h1><p>Run directory <code>{escape(str(run))}</code></p>"
        f'<nav>{nav}</nav>{body}<footer><p class="missing">{escape(versions)}</p></footer></body></html>\n'
    )


# -- small pieces -------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _missing(what: str, how: str) -> str:
    return f'<p class="missing">{escape(what)}; written by <code>{escape(how)}</code>.</p>'


# -- sections -----------------------------------------------------------------------------------


def _summary(report: Mapping[str, Any]) -> str:
    model, q, cal = (
        report.get("model") or {},
        report.get("quant_config") or {},
        report.get("calibration") or {},
    )
    w, a = q.get("weight") or {}, q.get("act") or {}

    def spec(s: Mapping[str, Any]) -> str:
        kind = ("symmetric" if s.get("symmetric") else "asymmetric") + (
            " per-channel" if s.get("per_channel") else " per-tensor"
        )
        return f"{s.get('num_bits')}-bit {kind}, calibrator {s.get('calibrator')}"

    overrides = ", ".join(f"{k}: {v}" for k, v in (q.get("site_calibrators") or {}).items())
    parts = [
        "<h3>Model and quantization</h3>",
        _svg.kv(
            {
                "model": model.get("name"),
                "class": model.get("class"),
                "checkpoint": model.get("checkpoint"),
                "scheme": q.get("name"),
                "numerics": q.get("numerics"),
                "weights": spec(w),
                "activations": spec(a) + (f" (per site: {overrides})" if overrides else ""),
                "activation sites": ", ".join(q.get("act_sites") or []),
                "quantize head": q.get("quantize_head"),
                "bias correction": q.get("bias_correction"),
            }
        ),
    ]
    parts += ["<h3>Calibration data</h3>", _svg.kv({k: v for k, v in cal.items() if v is not None})]
    parts.append("<h3>Real-image evaluation</h3>")
    if "fp" in report and "quant" in report:
        rows = [
            (k, _svg.pct(report[k].get("top1")), _svg.pct(report[k].get("top5"))) for k in ("fp", "quant")
        ]
        parts.append(_svg.table(("model", "top-1", "top-5"), rows))
        parts.append(
            _svg.kv(
                {
                    "top-1 agreement with FP": _svg.pct(report.get("agreement")),
                    "mean KL(FP ‖ quant)": report.get("kl"),
                    "eval images": report.get("num_eval_images"),
                }
            )
        )
        parts += [
            f'<p class="warn">{k} gave NaN/inf logits on {int(report[k]["num_nonfinite"])} images (counted wrong).</p>'
            for k in ("fp", "quant")
            if report[k].get("num_nonfinite")
        ]
    else:
        parts.append(_missing("No real-image evaluation in this run", HOW_TO["eval"]))
    timings = report.get("timings") or {}
    parts += [
        "<h3>Timings</h3>",
        _svg.table(("step", "seconds"), timings.items())
        if timings
        else '<p class="missing">none recorded</p>',
    ]
    return "".join(parts)


def _preview(path: Path) -> str:
    if not path.is_file():
        return _missing("No calibration/preview.png in this run", HOW_TO["preview"])
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="preview" alt="calibration images" src="data:image/png;base64,{data}">'


def _estimate(est: Mapping[str, Any] | None) -> str:
    if not est or "kl" not in est:
        why = f" ({est['skipped']})" if est and est.get("skipped") else ""
        return _missing(f"No data-free accuracy estimate in report.json{why}", HOW_TO["estimate"])
    caveat = (
        '<p class="caveat"><b>Not an accuracy.</b> These figures compare the quantized model with the float '
        "model on held-out <i>synthetic</i> images, not on real data. Use them to rank configurations of "
        "the same model; they do not predict top-1 on a real dataset.</p>"
    )
    figures = {
        "top-1 agreement with FP (synthetic)": _svg.pct(est.get("agreement")),
        "mean KL(FP ‖ quant) (synthetic)": est.get("kl"),
        "held-out images": est.get("images"),
        "image source": est.get("source"),
    }
    return caveat + _svg.kv(figures)


def _sensitivity(path: Path) -> str:
    if not path.is_file():
        return _missing("No analysis.json in this run", HOW_TO["analysis"])
    data = _read_json(path)
    try:
        base = float(data["baseline_kl"])
        rows = sorted(
            data["rows"],
            key=lambda r: -float(r["alone_kl"]) if math.isfinite(float(r["alone_kl"])) else math.inf,
        )
        images = data.get("images") or {}
    except (TypeError, KeyError, ValueError):
        return _missing("analysis.json could not be read (expected baseline_kl and rows)", HOW_TO["analysis"])
    shown = rows[:TOP_SENSITIVITY]
    chart = _svg.bars(
        [f"{r['name']} ({r['kind']}, {r['bits']}b)" for r in shown],
        [[float(r["alone_kl"]) for r in shown], [base - float(r["drop_kl"]) for r in shown]],
        "per-quantizer sensitivity",
    )
    more = len(rows) - len(shown)
    note = f"<p>{more} more rows not shown in the chart (all are in the table below).</p>" if more > 0 else ""
    table = _svg.table(
        ("name", "kind", "bits", "numel", "alone_kl", "drop_kl", "saving"),
        [
            (
                r["name"],
                r["kind"],
                r["bits"],
                r["numel"],
                float(r["alone_kl"]),
                float(r["drop_kl"]),
                base - float(r["drop_kl"]),
            )
            for r in rows
        ],
    )
    head = (
        f"<p>KL(FP ‖ quant) with every quantizer on: <b>{escape(_svg.num(base))}</b>, measured on "
        f"{escape(_svg.num(images.get('count')))} images ({escape(str(images.get('source')))}). Sorted by alone_kl.</p>"
    )
    return (
        head
        + _svg.legend(list(zip(_SENS, _svg.COLORS, strict=False)))
        + chart
        + note
        + f'<details><summary>all {len(rows)} rows</summary><div class="scroll">{table}</div></details>'
    )


_MATMUL = {
    "matmul_qk.a": "matmul_qk.q",
    "matmul_qk.b": "matmul_qk.k",
    "matmul_av.a": "matmul_av.softmax",
    "matmul_av.b": "matmul_av.v",
}


def activation_ranges(state_dict: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    """``(site, lo, hi)`` of every activation quantizer in a quantized model's ``state_dict``, in order.

    An activation quantizer is a module with scalar ``lo``/``hi`` that is not (or not inside) a
    ``weight_quantizer``; its site is the module path without ``_quantizer`` (``blocks.0.attn.qkv.input``),
    matmul inputs named after the tensor (``blocks.0.attn.matmul_qk.q``). Uncalibrated ends are NaN.

    >>> import torch
    >>> sd = {"fc.input_quantizer.lo": torch.tensor(-1.0), "fc.input_quantizer.hi": torch.tensor(2.0),
    ...       "fc.weight_quantizer.lo": torch.tensor(-0.5), "fc.weight_quantizer.hi": torch.tensor(0.5),
    ...       "attn.matmul_qk.b_quantizer.lo": torch.tensor(float("nan")),
    ...       "attn.matmul_qk.b_quantizer.hi": torch.tensor(float("nan"))}
    >>> activation_ranges(sd)
    [('fc.input', -1.0, 2.0), ('attn.matmul_qk.k', nan, nan)]
    """
    out = []
    for key, lo in state_dict.items():
        prefix = key[: -len(".lo")]
        if (
            not key.endswith(".lo")
            or (hi := state_dict.get(prefix + ".hi")) is None
            or "weight_quantizer" in prefix.split(".")
        ):
            continue
        if lo.ndim != 0 or hi.ndim != 0:
            continue
        site = re.sub(r"_quantizer$", "", prefix)
        site = next((site[: -len(k)] + v for k, v in _MATMUL.items() if site.endswith(k)), site)
        out.append((site, float(lo), float(hi)))
    return out


def _ranges(path: Path) -> str:
    if not path.is_file():
        return _missing("No quant_state.pt in this run", HOW_TO["ranges"])
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    ranges = activation_ranges(state.get("state_dict") or {})
    if not ranges:
        return '<p class="missing">This run quantizes no activations (weight-only scheme).</p>'
    groups: dict[str, list[tuple[str, float, float]]] = {}
    for r in ranges:
        groups.setdefault(re.sub(r"\.\d+(?=\.|$)", ".*", r[0]), []).append(r)
    color = {g: _svg.COLORS[i % len(_svg.COLORS)] for i, g in enumerate(groups)}
    rows = [(s, lo, hi, color[re.sub(r"\.\d+(?=\.|$)", ".*", s)]) for s, lo, hi in ranges]
    ok = [r for r in ranges if math.isfinite(r[1]) and math.isfinite(r[2])]
    summary = _svg.table(
        ("site group", "sites", "uncalibrated", "min lo", "max hi"),
        [
            (
                g,
                len(rs),
                sum(not (math.isfinite(lo) and math.isfinite(hi)) for _, lo, hi in rs),
                min((lo for _, lo, hi in rs if math.isfinite(lo)), default=math.nan),
                max((hi for _, lo, hi in rs if math.isfinite(hi)), default=math.nan),
            )
            for g, rs in groups.items()
        ],
    )
    table = _svg.table(
        ("site", "lo", "hi"),
        [
            (s, lo, hi) if math.isfinite(lo) and math.isfinite(hi) else (s, "uncalibrated", "")
            for s, lo, hi in ranges
        ],
    )
    return (
        f"<p>{len(ranges)} activation quantizers, {len(ranges) - len(ok)} uncalibrated; one colour per site group.</p>"
        + summary
        + _svg.legend(list(zip(groups, color.values(), strict=True)))
        + _svg.intervals(rows, "activation ranges")
        + f"<details><summary>all {len(ranges)} ranges</summary>{table}</details>"
    )


def _mixed(mp: Mapping[str, Any] | None) -> str:
    if not mp:
        return _missing("No mixed-precision assignment in report.json", HOW_TO["mixed_precision"])
    eight = list(mp.get("eight_bit") or [])
    layers = mp.get("layers") or {}
    items = "".join(f"<li><code>{escape(str(n))}</code></li>" for n in eight) or "<li>none</li>"
    figures = {k.replace("_", " "): v for k, v in mp.items() if k not in ("eight_bit", "layers")}
    table = _svg.table(("layer", "bits"), layers.items())
    return (
        _svg.kv({**figures, "layers at 8 bits": f"{len(eight)} of {len(layers)}"})
        + f"<h3>8-bit layers</h3><ul>{items}</ul>"
        + f"<details><summary>bits of all {len(layers)} layers</summary>{table}</details>"
    )


def _reconstruct(rec: Mapping[str, Any] | None) -> str:
    if not rec:
        return _missing("No block reconstruction in this run", HOW_TO["reconstruct"])
    units = rec.get("units") or []
    chart = _svg.bars(
        [str(u.get("name")) for u in units],
        [
            [float(u.get("error_before", math.nan)) for u in units],
            [float(u.get("error_after", math.nan)) for u in units],
        ],
        "reconstruction error per unit",
    )
    table = _svg.table(
        ("unit", "layers", "error before", "error after", "flipped", "undecided", "seconds"),
        [
            tuple(
                u.get(k)
                for k in ("name", "layers", "error_before", "error_after", "flipped", "undecided", "seconds")
            )
            for u in units
        ],
    )
    return (
        _svg.kv(rec.get("config") or {})
        + "<p>Relative output error of each unit against the float model.</p>"
        + _svg.legend(list(zip(_RECON, _svg.COLORS, strict=False)))
        + chart
        + table
    )
