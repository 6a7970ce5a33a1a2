"""What the ``dfq`` commands share: the model-loading options, the printing of a report's figures, and the
64-bit bound of every integer option (:func:`bound_integers`)."""

from __future__ import annotations

import json
from typing import Any

import click

INT64 = (-(2**63), 2**63 - 1)
"""The integers an integer option takes: what torch, numpy and ``itertools.islice`` hold (a seed, a batch
size or a count beyond it overflowed deep in a job, with a traceback, instead of one error line)."""


class _Fits64:
    """The 64-bit check, after the type's own conversion (and range check, for ranges)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)  # type: ignore[misc]
        if not INT64[0] <= number <= INT64[1]:
            text = str(number)
            shown = text if len(text) <= 24 else f"{text[:12]}… ({len(text)} characters)"
            self.fail(f"{shown} does not fit in a 64-bit integer", param, ctx)  # type: ignore[attr-defined]
        return number


class Int64(_Fits64, click.types.IntParamType):
    """click's ``int`` within :data:`INT64`."""


class IntRange64(_Fits64, click.IntRange):
    """click's ``IntRange`` within :data:`INT64` (the range's own bounds and message come first)."""


def bound_integers(command: click.Command) -> None:
    """Give every integer option and argument of ``command`` (and of its subcommands) the 64-bit bound:
    ``type=int`` becomes :class:`Int64`, ``click.IntRange`` :class:`IntRange64`. Called by the group on
    each command it adds, so a new option is bounded without a line of its own."""
    for param in command.params:
        kind = param.type
        if type(kind) is click.types.IntParamType:
            param.type = Int64()
        elif type(kind) is click.IntRange:
            param.type = IntRange64(kind.min, kind.max, kind.min_open, kind.max_open, kind.clamp)
    for sub in getattr(command, "commands", {}).values():
        bound_integers(sub)


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
