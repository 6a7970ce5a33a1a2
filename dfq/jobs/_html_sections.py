"""Sections of ``RUN/report.html`` drawn from optional run files (:mod:`dfq.jobs.html_report` assembles them):
per-layer sensitivity (``analysis.json``), activation ranges per site (``quant_state.pt``), the mixed-precision
assignment and the reconstruction (``report.json``), and the small pieces they share."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from dfq.jobs import _svg

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

_SENS = (
    "alone_kl: KL to FP with only this quantizer on",
    "saving: baseline_kl − drop_kl (KL removed by leaving it in float)",
)
_RECON = ("error before", "error after")


# -- small pieces -------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _missing(what: str, how: str) -> str:
    return f'<p class="missing">{escape(what)}; written by <code>{escape(how)}</code>.</p>'


# -- sections from optional files ------------------------------------------------------------


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
