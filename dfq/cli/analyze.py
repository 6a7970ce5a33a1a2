"""``dfq analyze`` and ``dfq report``: per-layer sensitivity of a run, and its one-page HTML report."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("run", type=click.Path())
@click.option(
    "--images",
    type=click.Path(),
    default=None,
    help="A saved set (dfq invert) to measure on; default: the run's held-out images (RUN/holdout).",
)
@click.option(
    "--sites", is_flag=True, help="Also measure every activation quantizer (slower), not only layer weights."
)
@click.option("--limit", type=int, default=None, help="Measure on at most this many images.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--device", default=None, help="cpu | cuda (default: cuda when available).")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def analyze(
    run: str,
    images: str | None,
    sites: bool,
    limit: int | None,
    batch_size: int,
    device: str | None,
    as_json: bool,
) -> None:
    """Per-layer sensitivity of a run on held-out images: KL to FP with each quantizer alone and dropped."""
    from dfq.jobs.analyze import AnalyzeRequest, run_analyze

    record = run_analyze(AnalyzeRequest(run=run, images=images, sites=sites, batch_size=batch_size, device=device,
                                        limit=limit, progress=not as_json))  # fmt: skip
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    base = record["baseline_kl"]
    rows = sorted(record["rows"], key=lambda r: base - r["drop_kl"], reverse=True)
    click.echo(
        f"KL(FP||quant) on {record['images']['count']} held-out images: {base:.4f}; most sensitive first:"
    )
    for r in rows[:10]:
        click.echo(
            f"  {r['name']:<32} {r['kind']:<6} alone {r['alone_kl']:.4g}  saved when dropped {base - r['drop_kl']:.4g}"
        )
    click.echo(f"table written to {record['written']} (and analysis.md)")


@click.command(name="report")
@click.argument("run", type=click.Path())
@click.option("--out", type=click.Path(), default=None, help="HTML file to write (default RUN/report.html).")
def report_cmd(run: str, out: str | None) -> None:
    """Write one self-contained HTML page of a run: figures, preview, sensitivity, ranges, mixed precision."""
    from dfq.jobs.html_report import write_html_report
    from dfq.runs import read_recipe

    read_recipe(run)  # not a run directory: one error line
    click.echo(f"report written to {write_html_report(run, out)}")
