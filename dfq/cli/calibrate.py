"""``dfq calibrate``: quantize a model, calibrate it on real or synthetic images, write a run directory
(optionally with block reconstruction, a held-out estimate, mixed precision and an export)."""

from __future__ import annotations

from typing import Any

import click

from dfq.calibrators import calibrator_names
from dfq.cli._common import _model_options, _print
from dfq.config import TARGETS, VIT_SITES, BiasCorrection, presets
from dfq.errors import DfqError
from dfq.inversion.registry import inverter_names
from dfq.jobs.export import EXPORT_FORMATS

_BIAS_CORRECTION = [mode.value for mode in BiasCorrection]


def _schemes() -> list[str]:
    return sorted({name.split("-")[0] for name in presets})


def _numerics() -> list[str]:
    return sorted({config.numerics for config in presets.values()})


@click.command()
@click.option("--model", "model_name", required=True, help="timm name or alias (deit_tiny, deit_base, ...).")
@_model_options
@click.option("--scheme", type=click.Choice(_schemes()), default="w8a8", show_default=True)
@click.option(
    "--numerics",
    type=click.Choice(_numerics()),
    default="trt",
    show_default=True,
    help="trt: symmetric INT8 as TensorRT runs it; paper: PSAQ-ViT/SMI asymmetric activations; "
    "fp8: E4M3 weights and activations (w8a8 only; calibrators minmax/percentile).",
)
@click.option(
    "--calibrator",
    type=click.Choice(calibrator_names()),
    default="minmax",
    show_default=True,
    help="Activation range calibrator.",
)
@click.option(
    "--site-calibrator",
    "site_calibrators",
    multiple=True,
    metavar="SITE=NAME",
    help="Calibrator of one activation site (trt presets: softmax=mse), repeatable.",
)
@click.option(
    "--weight-calibrator",
    type=click.Choice(calibrator_names()),
    default=None,
    help="Per-channel weight range search (default: the preset's, minmax).",
)
@click.option("--calib-folder", type=click.Path(), default=None, help="Real images for calibration.")
@click.option(
    "--inversion",
    type=click.Choice(inverter_names()),
    default=None,
    help="Make the calibration set from the model alone.",
)
@click.option(
    "--calib-set", type=click.Path(), default=None, help="A calibration set written by `dfq invert`."
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Inversion setting (any field of the method's config), repeatable.",
)
@click.option(
    "--dense-calibration/--kept-tokens",
    default=True,
    show_default=True,
    help="Sparse (SMI) sets: forward every token (measured closer to FP: W8A8 DeiT-Tiny KL 0.030 vs 0.038) "
    "or only the kept tokens (the SMI paper's recipe).",
)
@click.option("--num-images", type=int, default=32, show_default=True, help="Calibration images.")
@click.option("--eval-folder", type=click.Path(), default=None, help="ImageNet-style <wnid>/<image> folder.")
@click.option("--eval-images", type=click.IntRange(min=1), default=None, help="Evaluate at most this many images.")
@click.option(
    "--sites",
    default=None,
    help=f"Comma-separated activation sites replacing the preset's (ViT: {','.join(VIT_SITES)}).",
)
@click.option("--no-head", is_flag=True, help="Leave the classifier in float.")
@click.option(
    "--target",
    type=click.Choice(sorted(TARGETS)),
    default="trt",
    show_default=True,
    help="Q/DQ placement for TensorRT, or for ONNX Runtime CPU (patch-embedding conv and "
    "classifier in float: ORT cannot fuse input-only Q/DQ into Conv/Gemm).",
)
@click.option(
    "--bias-correction",
    type=click.Choice(_BIAS_CORRECTION),
    default="auto",
    show_default=True,
    help="Correct weight-rounding bias with calibration input means (auto: CNNs only).",
)
@click.option(
    "--reconstruct",
    "do_reconstruct",
    is_flag=True,
    help="Learn each block's weight rounding on the calibration images (AdaRound per block, BRECQ).",
)
@click.option(
    "--reconstruct-iters", type=int, default=None, help="Reconstruction steps per block (default 1000)."
)
@click.option(
    "--reconstruct-option",
    "reconstruct_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any ReconstructConfig field (lr, reg_weight, batch_size, drop, act_ranges, ...), repeatable.",
)
@click.option(
    "--holdout",
    type=int,
    default=None,
    help="Images held out of calibration for the data-free estimate and mixed precision "
    "(default 8 without --eval-folder, 0 with it).",
)
@click.option(
    "--holdout-set",
    type=click.Path(),
    default=None,
    help="A saved set (dfq invert) to hold out instead, e.g. of a better source than the calibration one.",
)
@click.option(
    "--weight-bits-budget",
    type=float,
    default=None,
    help="Mixed precision: per-layer weight bits (the scheme's or 8) within this mean, e.g. 5.0 for w4a8.",
)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(), help="Run directory to create.")
@click.option("--force", is_flag=True, help="Replace an existing run directory (only one dfq wrote).")
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted inversion from OUT.ckpt (as dfq invert --resume)."
)
@click.option(
    "--export",
    "export_fmt",
    type=click.Choice(sorted(EXPORT_FORMATS)),
    default=None,
    help="Also export the calibrated model (RUN/model.qdq.onnx, RUN/model.plan).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def calibrate(
    model_name: str,
    checkpoint: str | None,
    no_pretrained: bool,
    device: str | None,
    scheme: str,
    numerics: str,
    calibrator: str,
    site_calibrators: tuple[str, ...],
    weight_calibrator: str | None,
    calib_folder: str | None,
    inversion: str | None,
    calib_set: str | None,
    settings: tuple[str, ...],
    dense_calibration: bool,
    num_images: int,
    eval_folder: str | None,
    eval_images: int | None,
    sites: str | None,
    no_head: bool,
    target: str,
    bias_correction: str,
    do_reconstruct: bool,
    reconstruct_iters: int | None,
    reconstruct_options: tuple[str, ...],
    holdout: int | None,
    holdout_set: str | None,
    weight_bits_budget: float | None,
    batch_size: int,
    seed: int,
    out: str,
    force: bool,
    resume: bool,
    export_fmt: str | None,
    as_json: bool,
) -> None:
    """Quantize a model and calibrate it on real or synthetic images; write a run directory."""
    from dfq.jobs.calibrate import CalibrateRequest, quant_config_from_options, run_calibrate
    from dfq.jobs.export import check_export_available, check_format, export_run
    from dfq.jobs.sources import CalibrationSource

    config = quant_config_from_options(
        scheme,
        numerics,
        calibrator,
        site_calibrators,
        weight_calibrator,
        sites,
        no_head,
        target,
        bias_correction,
    )
    if export_fmt is not None:  # before the calibration, not after it
        check_format(config, export_fmt)
        check_export_available(export_fmt)
    request = CalibrateRequest(
        out=out,
        config=config,
        source=CalibrationSource.from_options(calib_folder, calib_set, inversion, settings),
        model=model_name,
        checkpoint=checkpoint,
        pretrained=not no_pretrained,
        dense_calibration=dense_calibration,
        num_images=num_images,
        seed=seed,
        eval_folder=eval_folder,
        eval_images=eval_images,
        batch_size=batch_size,
        device=device,
        overwrite=force,
        resume=resume,
        progress=not as_json,
        reconstruct=_reconstruct_config(do_reconstruct, reconstruct_iters, reconstruct_options, seed),
        holdout=holdout,
        holdout_set=holdout_set,
        weight_bits_budget=weight_bits_budget,
    )
    report = run_calibrate(request)
    if export_fmt is not None:
        report["export"] = str(export_run(out, export_fmt))
    _print(report, as_json)
    if not as_json:
        click.echo(f"run written to {out}" + (f"; exported {report['export']}" if export_fmt else ""))


def _reconstruct_config(enabled: bool, iters: int | None, options: tuple[str, ...], seed: int) -> Any:
    from dfq.inversion.overrides import parse_overrides
    from dfq.quant.reconstruct import ReconstructConfig

    if not enabled:
        if iters is not None or options:
            raise DfqError("--reconstruct-iters and --reconstruct-option need --reconstruct")
        return None
    values = {"seed": seed, **parse_overrides(ReconstructConfig, options)}
    if iters is not None:
        values["iters"] = iters
    try:
        return ReconstructConfig(**values)
    except ValueError as e:
        raise DfqError(f"--reconstruct: {e}") from None
