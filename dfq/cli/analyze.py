"""``dfq analyze`` and ``dfq report``: per-layer sensitivity of a run, and its one-page HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dfq.errors import DfqError


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
    if out is not None:
        _check_page_out(out)
    click.echo(f"report written to {write_html_report(run, out)}")


def _check_page_out(out: str) -> None:
    """Refuse a ``--out`` the page cannot be written to, before it is built: empty, a folder, a path the
    file system refuses (too long, under a file, read-only, /proc), a folder that does not exist.

    Raises:
        DfqError: the path cannot take the page; the message says why in one line.
    """
    from dfq.runs import check_writable

    if not out.strip():
        raise DfqError("--out is empty; name the HTML file to write")
    check_writable(out)
    path = Path(out)
    if path.is_dir():
        raise DfqError(f"--out {out} is a folder; name the HTML file to write")
    if not path.parent.is_dir():
        raise DfqError(f"--out {out}: the folder {path.parent} does not exist")
