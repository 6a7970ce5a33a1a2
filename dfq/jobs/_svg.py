"""Markup for the HTML run report (:mod:`dfq.jobs.html_report`): inline SVG charts and plain tables.

Charts are generated as SVG strings in Python, so the page needs no script, web font, image file or
chart library: :func:`bars` draws horizontal bars (one or more series per row, signed values on a
linear axis), :func:`intervals` draws ``[lo, hi]`` segments on a symmetric-log axis (activation
ranges span several decades: a softmax input near 0.01, a residual near 100); :func:`table` and
:func:`kv` are HTML tables with numbers right-aligned. Every label and cell is escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape
from typing import Any

__all__ = ["COLORS", "bars", "intervals", "legend", "num", "pct", "table", "kv"]

COLORS = (
    "#4c72b0",
    "#dd8452",
    "#55a868",
    "#c44e52",
    "#8172b3",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
)
_LABEL_W, _PLOT_W, _RIGHT, _TOP, _AXIS = 300, 560, 80, 8, 26
_WIDTH = _LABEL_W + _PLOT_W + _RIGHT
_FONT = 'font-family="sans-serif" font-size="11"'
_TEXT = _FONT + ' fill="#222"'  # inline SVG in HTML needs no xmlns (and the page names no URL at all)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _label(text: str, y: float, limit: int = 46) -> str:
    """A right-aligned row label (shortened from the left, full text in a tooltip)."""
    short = text if len(text) <= limit else "…" + text[-(limit - 1) :]
    return (
        f'<text x="{_LABEL_W - 6}" y="{y:.1f}" text-anchor="end" dominant-baseline="middle" {_TEXT}>'
        f"<title>{escape(text)}</title>{escape(short)}</text>"
    )


def _svg(height: float, body: list[str], title: str) -> str:
    return (
        f'<svg width="{_WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {_WIDTH} {height:.0f}" role="img" aria-label="{escape(title)}">'
        + "".join(body)
        + "</svg>"
    )


def _axis(y: float, ticks: Sequence[tuple[float, str]], x: Callable[[float], float]) -> list[str]:
    out = [f'<line x1="{_LABEL_W}" x2="{_LABEL_W + _PLOT_W}" y1="{y:.1f}" y2="{y:.1f}" stroke="#999"/>']
    for value, text in ticks:
        px = x(value)
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{_TOP}" y2="{y + 4:.1f}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{px:.1f}" y="{y + 15:.1f}" text-anchor="middle" {_TEXT}>{escape(text)}</text>')
    return out


def legend(series: Sequence[tuple[str, str]]) -> str:
    """An HTML legend: ``(label, colour)`` swatches in a row."""
    items = "".join(
        f'<span class="swatch" style="background:{c}"></span>{escape(name)} ' for name, c in series
    )
    return f'<p class="legend">{items}</p>'


def bars(
    labels: Sequence[str], series: Sequence[Sequence[float]], title: str, colors: Sequence[str] = COLORS
) -> str:
    """Horizontal bars: one row per label, one bar per series in that row (non-finite: "n/a").

    Args:
        labels: row labels.
        series: one sequence of values per series, each as long as ``labels``.
        title: accessible name of the chart.
        colors: one colour per series.
    """
    finite = [v for s in series for v in s if math.isfinite(v)]
    lo, hi = min([0.0, *finite]), max([0.0, *finite])
    hi = hi if hi > lo else lo + 1.0

    def x(v: float) -> float:
        return _LABEL_W + (v - lo) / (hi - lo) * _PLOT_W

    bar, gap = 9, 6
    row = bar * len(series) + gap
    body: list[str] = []
    for i, name in enumerate(labels):
        y0 = _TOP + i * row
        body.append(_label(name, y0 + bar * len(series) / 2))
        for j, s in enumerate(series):
            v, y = s[i], y0 + j * bar
            if not math.isfinite(v):
                body.append(
                    f'<text x="{x(0) + 3:.1f}" y="{y + bar / 2:.1f}" dominant-baseline="middle" {_TEXT}>n/a</text>'
                )
                continue
            a, b = sorted((x(0), x(v)))
            body.append(
                f'<rect x="{a:.1f}" y="{y:.1f}" width="{max(b - a, 0.5):.1f}" height="{bar - 1}" '
                f'fill="{colors[j % len(colors)]}"><title>{escape(name)}: {_fmt(v)}</title></rect>'
            )
            body.append(
                f'<text x="{max(b, x(0)) + 3:.1f}" y="{y + bar / 2:.1f}" dominant-baseline="middle" '
                f"{_TEXT}>{_fmt(v)}</text>"
            )
    y_axis = _TOP + len(labels) * row
    ticks = [(lo + k * (hi - lo) / 4, _fmt(lo + k * (hi - lo) / 4)) for k in range(5)]
    body += _axis(y_axis, ticks, x)
    body.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{_TOP}" y2="{y_axis:.1f}" stroke="#444"/>')
    return _svg(y_axis + _AXIS, body, title)


def intervals(rows: Sequence[tuple[str, float, float, str]], title: str) -> str:
    """``[lo, hi]`` segments, one per row ``(label, lo, hi, colour)``, on a symmetric-log axis.

    The axis is linear within ``±t`` and logarithmic beyond, ``t`` the decade of the smallest non-zero
    end, so ranges from 0.01 to 100 are all readable. A row with a non-finite end is "uncalibrated".
    """
    ends = [abs(v) for _, a, b, _ in rows for v in (a, b) if math.isfinite(v)]
    top = max(ends, default=1.0) or 1.0
    small = min((v for v in ends if v > 0), default=top)
    t = max(10.0 ** math.floor(math.log10(small)), top * 1e-6)
    signed = any(math.isfinite(a) and a < 0 for _, a, _, _ in rows)

    def f(v: float) -> float:
        return math.copysign(math.log10(1.0 + abs(v) / t), v)

    m = f(top * 1.05)
    left = -m if signed else 0.0

    def x(v: float) -> float:
        return _LABEL_W + (f(v) - left) / (m - left) * _PLOT_W

    row = 12
    body: list[str] = []
    for i, (name, a, b, color) in enumerate(rows):
        y = _TOP + i * row + row / 2
        body.append(_label(name, y))
        if not (math.isfinite(a) and math.isfinite(b)):
            body.append(
                f'<text x="{x(0) + 3:.1f}" y="{y:.1f}" dominant-baseline="middle" {_FONT} fill="#c44e52">uncalibrated</text>'
            )
            continue
        xa, xb = sorted((x(a), x(b)))
        body.append(
            f'<rect x="{xa:.1f}" y="{y - 4:.1f}" width="{max(xb - xa, 1.0):.1f}" height="8" fill="{color}">'
            f"<title>{escape(name)}: [{_fmt(a)}, {_fmt(b)}]</title></rect>"
        )
    y_axis = _TOP + len(rows) * row
    decades = [t * 10.0**k for k in range(0, 1 + math.ceil(math.log10(top * 1.05 / t)))]
    decades = [d for d in decades if d <= top * 1.05][:: max(1, math.ceil(len(decades) / 5))]
    ticks = (
        [(0.0, "0")] + [(d, _fmt(d)) for d in decades] + ([(-d, _fmt(-d)) for d in decades] if signed else [])
    )
    body += _axis(y_axis, ticks, x)
    body.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{_TOP}" y2="{y_axis:.1f}" stroke="#444"/>')
    body.append(
        f'<text x="{_LABEL_W + _PLOT_W}" y="{y_axis + 15 + 10:.1f}" text-anchor="end" {_TEXT}>'
        f"symmetric log scale (linear within ±{_fmt(t)})</text>"
    )
    return _svg(y_axis + _AXIS + 12, body, title)


# -- tables -------------------------------------------------------------------------------------


def num(v: Any) -> str:
    """A cell's text: floats to 4 significant digits, None (and NaN) as a dash."""
    if isinstance(v, float) and math.isnan(v) or v is None:
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def pct(v: Any) -> str:
    """A fraction in [0, 1] as a percentage (a dash when absent)."""
    return "—" if not isinstance(v, int | float) or isinstance(v, bool) else f"{100 * v:.2f}%"


def table(header: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table (numbers right-aligned); no header row when ``header`` is None."""
    head = "" if header is None else "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"
    cells = (
        "".join(
            f'<td class="n">{escape(num(c))}</td>'
            if isinstance(c, int | float) and not isinstance(c, bool)
            else f"<td>{escape(num(c))}</td>"
            for c in row
        )
        for row in rows
    )
    return f"<table>{head}" + "".join(f"<tr>{c}</tr>" for c in cells) + "</table>"


def kv(pairs: Mapping[str, Any]) -> str:
    """A two-column table of ``pairs`` (lists and dicts as JSON)."""
    return table(
        None, [(k, v if isinstance(v, int | float | str | None) else json.dumps(v)) for k, v in pairs.items()]
    )
