"""``dfq eval``, ``dfq export`` and ``dfq export-set``: figures of a run or a float model, a run as Q/DQ ONNX
(or a TensorRT engine), and a calibration set as the calibration file of ModelOpt ONNX PTQ."""

from __future__ import annotations

import json
from typing import Any

import click

from dfq.cli._common import _model_options, _print
from dfq.errors import DfqError
from dfq.jobs.evaluate import BACKENDS
from dfq.jobs.export import EXPORT_FORMATS


@click.command(name="eval")
@click.argument("run", required=False, type=click.Path())
@click.option("--model", "model_name", default=None, help="Evaluate a float model instead of a run.")
@_model_options
@click.option("--data", required=True, type=click.Path(), help="ImageNet-style <wnid>/<image> folder.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate at most this many images.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    default="torch",
    show_default=True,
    help="Run the quantized model as torch fake-quant, RUN/model.qdq.onnx in ONNX Runtime, or RUN/model.plan.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def eval_cmd(
    run: str | None,
    model_name: str | None,
    checkpoint: str | None,
    no_pretrained: bool,
    device: str | None,
    data: str,
    limit: int | None,
    batch_size: int,
    backend: str,
    as_json: bool,
) -> None:
    """Top-1/top-5 of a run (with agreement and KL to its float weights) or of a float model."""
    from dfq.jobs.evaluate import evaluate_folder

    if run is not None and (model_name or checkpoint):
        raise DfqError("give a run directory or --model/--checkpoint, not both")
    report = evaluate_folder(
        data, run=run, model=model_name, checkpoint=checkpoint, pretrained=not no_pretrained,
        device=device, batch_size=batch_size, limit=limit, progress=not as_json, backend=backend,
    )  # fmt: skip
    _print(report, as_json)


@click.command(name="export")
@click.argument("run", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(sorted(EXPORT_FORMATS)), default="onnx", show_default=True)
@click.option(
    "--fp16-remainder/--no-fp16-remainder",
    default=None,
    help="Cast the unquantized remainder to FP16 (default: on for trt, off for onnx).",
)
@click.option("--int4-weights", is_flag=True, help="INT4 weight-only DQ blocks for Linear layers (opset 21).")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: 17; 19 with FP16, 21 with INT4).")
def export_cmd(
    run: str, fmt: str, fp16_remainder: bool | None, int4_weights: bool, opset: int | None
) -> None:
    """Export a calibrated run: TensorRT-ready Q/DQ ONNX (checked) and optionally a TensorRT engine."""
    from dfq.jobs.export import export_run

    opts: dict[str, Any] = {"int4_weights": int4_weights}
    if fp16_remainder is not None:
        opts["fp16_remainder"] = fp16_remainder
    if opset is not None:
        opts["opset"] = opset
    click.echo(f"wrote {export_run(run, fmt, **opts)}")


def _set_formats() -> list[str]:
    from dfq.interop import FORMATS

    return list(FORMATS)


@click.command(name="export-set")
@click.argument("source", metavar="SET", type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(_set_formats()),
    default="npz",
    show_default=True,
    help="npz: {input name: images}; npy: the bare array (single-input models).",
)
@click.option("--out", required=True, type=click.Path(), help="File to write (ending in .npz or .npy).")
@click.option("--input-name", default=None, help="npz key: the ONNX model's input name (default: input).")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def export_set_cmd(
    source: str, fmt: str, out: str, input_name: str | None, force: bool, as_json: bool
) -> None:
    """Write a calibration set (or a run's) as ModelOpt ONNX PTQ's --calibration_data_path file."""
    from dfq.interop import export_set

    record = export_set(source, out, fmt=fmt, input_name=input_name, overwrite=force)  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    key = f" under key {record['key']!r}" if record["key"] else ""
    sparse = " (sparse set written dense: stopped patches as they are)" if record["sparse"] else ""
    click.echo(
        f"wrote {record['path']}: {record['num_images']} images {tuple(record['shape'][1:])}{key}{sparse}"
    )
