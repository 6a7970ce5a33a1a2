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
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from dfq import atomic
from dfq.errors import DfqError
from dfq.jobs import _svg
from dfq.jobs._html_sections import (
    HOW_TO,
    TOP_SENSITIVITY,
    _missing,
    _mixed,
    _ranges,
    _read_json,
    _reconstruct,
    _sensitivity,
    activation_ranges,
)
from dfq.jobs.plan import ANALYSIS_JSON

__all__ = [
    "write_html_report",
    "render_html_report",
    "activation_ranges",
    "REPORT_HTML",
    "ANALYSIS_JSON",
    "HOW_TO",
    "TOP_SENSITIVITY",
]

REPORT_HTML = "report.html"


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
