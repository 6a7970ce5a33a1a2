"""What the ``dfq`` commands share: the model-loading options and the printing of a report's figures."""

from __future__ import annotations

import json
from typing import Any

import click


def _model_options(f):  # noqa: ANN001, ANN202
    f = click.option(
        "--device",
        type=click.Choice(["cpu", "cuda"]),
        default=None,
        help="Where to run (default: cuda when available).",
    )(f)
    f = click.option(
        "--no-pretrained",
        "no_pretrained",
        is_flag=True,
        help="Random initialization (tests, speed benchmarks).",
    )(f)
    f = click.option(
        "--checkpoint",
        type=click.Path(dir_okay=False),
        default=None,
        help="Local weights: .pth/.pt/.bin/.safetensors, plain or {'model'|'state_dict': ...}.",
    )(f)
    return f  # fmt: skip


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for key in ("fp", "quant"):
        if key in report:
            r = report[key]
            click.echo(f"{key:>6}: top-1 {_pct(r.get('top1'))}  top-5 {_pct(r.get('top5'))}")
            if r.get("num_nonfinite"):
                click.echo(
                    f"warning: {key} gave NaN/inf logits on {r['num_nonfinite']} of "
                    f"{report.get('num_eval_images')} images (counted wrong)",
                    err=True,
                )
    if "agreement" in report:
        kl = (
            f"{report['kl']:.4f}"
            if report["kl"] is not None
            else ("undefined (non-finite logits)" if report.get("num_eval_images") else "n/a (no images)")
        )
        click.echo(f"agreement with FP: {_pct(report['agreement'])}   KL(FP||quant): {kl}")
    est = report.get("estimate") or {}
    if "kl" in est:
        click.echo(
            f"data-free estimate on {est['images']} held-out images ({est['source']}): agreement "
            f"{_pct(est['agreement'])}   KL(FP||quant): {est['kl']:.4f}  (synthetic images: ranks configurations, not an accuracy)"
        )
    mixed = report.get("mixed_precision")
    if mixed:
        click.echo(
            f"mixed precision: {len(mixed['eight_bit'])} layer(s) at 8 bits, mean weight width "
            f"{mixed['average_bits']:.2f} (budget {mixed['budget']:g})"
        )


def _pct(v: float | None) -> str:
    return "  n/a" if v is None else f"{100 * v:5.2f}%"
