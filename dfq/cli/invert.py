"""``dfq invert``: make a calibration set from the model alone and write it with a manifest."""

from __future__ import annotations

import json

import click

from dfq.cli._common import _model_options
from dfq.distributed import reports
from dfq.inversion.registry import inverter_names


@click.command()
@click.option("--model", "model_name", required=True, help="timm name or alias.")
@_model_options
@click.option("--method", type=click.Choice(inverter_names()), required=True, help="Inversion method.")
@click.option("--num-images", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any field of the method's config (e.g. iterations=4000, lr=0.25), repeatable.",
)
@click.option("--out", required=True, type=click.Path(), help="Directory for the calibration set.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUT.ckpt.")
@click.option("--force", is_flag=True, help="Replace an existing set or run directory (only one dfq wrote).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def invert(
    model_name: str,
    checkpoint: str | None,
    no_pretrained: bool,
    device: str | None,
    method: str,
    num_images: int,
    seed: int,
    settings: tuple[str, ...],
    out: str,
    resume: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Make a calibration set from the model alone (no data); write it with a manifest and preview."""
    from dfq.jobs.invert import InvertRequest, run_invert

    calib = run_invert(InvertRequest(
        out=out, method=method, model=model_name, checkpoint=checkpoint, pretrained=not no_pretrained,
        num_images=num_images, seed=seed, settings=settings, device=device, resume=resume, overwrite=force,
        progress=not as_json,
    ))  # fmt: skip
    if not reports():  # under torchrun rank 0 speaks for the job
        return
    if as_json:
        click.echo(json.dumps(calib.provenance, indent=2))
    else:
        click.echo(
            f"{len(calib)} images by {method} in {calib.provenance['seconds']:.1f} s, written to {out}"
        )
