"""The ``dfq`` command line: parse options into a request of the job layer (:mod:`dfq.jobs`), make one
call, print the result. Option choices come from the registries (presets, calibrators, inversion
methods, targets, backends, export formats).

Exit codes: 0 success, 2 bad input (one-line ``error: ...`` on stderr, no traceback; set
``DFQ_DEBUG=1`` to see it), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Both stop an
inversion at the current iteration with a resumable checkpoint (``dfq invert ... --resume``).
Commands that produce figures print them as JSON with ``--json`` (for pipelines).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any

import click

from dfq.calibrators import calibrator_names
from dfq.config import TARGETS, VIT_SITES, BiasCorrection, presets
from dfq.distill.config import RANGE_MODES
from dfq.errors import DfqError
from dfq.inversion.registry import inverter_names
from dfq.jobs.evaluate import BACKENDS
from dfq.jobs.export import EXPORT_FORMATS

_BIAS_CORRECTION = [mode.value for mode in BiasCorrection]

__all__ = ["cli", "main"]


def _model_options(f):  # noqa: ANN001, ANN202
    f = click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
                     help="Where to run (default: cuda when available).")(f)
    f = click.option("--no-pretrained", "no_pretrained", is_flag=True,
                     help="Random initialization (tests, speed benchmarks).")(f)
    f = click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
                     help="Local weights: .pth/.pt/.bin/.safetensors, plain or {'model'|'state_dict': ...}.")(f)
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
                click.echo(f"warning: {key} gave NaN/inf logits on {r['num_nonfinite']} of "
                           f"{report.get('num_eval_images')} images (counted wrong)", err=True)
    if "agreement" in report:
        kl = f"{report['kl']:.4f}" if report["kl"] is not None else (
            "undefined (non-finite logits)" if report.get("num_eval_images") else "n/a (no images)")
        click.echo(f"agreement with FP: {_pct(report['agreement'])}   KL(FP||quant): {kl}")
    est = report.get("estimate") or {}
    if "kl" in est:
        click.echo(f"data-free estimate on {est['images']} held-out images ({est['source']}): agreement "
                   f"{_pct(est['agreement'])}   KL(FP||quant): {est['kl']:.4f}  (synthetic images: ranks configurations, not an accuracy)")
    mixed = report.get("mixed_precision")
    if mixed:
        click.echo(f"mixed precision: {len(mixed['eight_bit'])} layer(s) at 8 bits, mean weight width "
                   f"{mixed['average_bits']:.2f} (budget {mixed['budget']:g})")


def _pct(v: float | None) -> str:
    return "  n/a" if v is None else f"{100 * v:5.2f}%"


class _Terminated(KeyboardInterrupt):
    """SIGTERM raised as an interrupt, so long loops checkpoint exactly as on Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated


class _DfqGroup(click.Group):
    """The group that turns bad input into one ``error:`` line and exit 2, and interrupts into 130/143.

    Only :class:`DfqError` is bad input; any other exception is a bug and keeps its traceback.
    ``DFQ_DEBUG=1`` shows the traceback of a DfqError too. Living in the group (not around it), this
    behaves the same under ``click.testing.CliRunner`` as in the console script.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DfqError as e:
            if os.environ.get("DFQ_DEBUG"):
                raise
            click.echo(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt as e:
            terminated = isinstance(e, _Terminated)
            click.echo("terminated" if terminated else "interrupted", err=True)
            ctx.exit(143 if terminated else 130)


@click.group(cls=_DfqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dfq")
def cli() -> None:
    """dfq: data-free quantization and deployment for timm models."""


def _schemes() -> list[str]:
    return sorted({name.split("-")[0] for name in presets})


def _numerics() -> list[str]:
    return sorted({config.numerics for config in presets.values()})


@cli.command()
@click.option("--model", "model_name", required=True, help="timm name or alias (deit_tiny, deit_base, ...).")
@_model_options
@click.option("--scheme", type=click.Choice(_schemes()), default="w8a8", show_default=True)
@click.option("--numerics", type=click.Choice(_numerics()), default="trt", show_default=True,
              help="trt: symmetric INT8 as TensorRT runs it; paper: PSAQ-ViT/SMI asymmetric activations; "
                   "fp8: E4M3 weights and activations (w8a8 only; calibrators minmax/percentile).")
@click.option("--calibrator", type=click.Choice(calibrator_names()), default="minmax", show_default=True,
              help="Activation range calibrator.")
@click.option("--site-calibrator", "site_calibrators", multiple=True, metavar="SITE=NAME",
              help="Calibrator of one activation site (trt presets: softmax=mse), repeatable.")
@click.option("--weight-calibrator", type=click.Choice(calibrator_names()), default=None,
              help="Per-channel weight range search (default: the preset's, minmax).")
@click.option("--calib-folder", type=click.Path(), default=None, help="Real images for calibration.")
@click.option("--inversion", type=click.Choice(inverter_names()), default=None,
              help="Make the calibration set from the model alone.")
@click.option("--calib-set", type=click.Path(), default=None, help="A calibration set written by `dfq invert`.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Inversion setting (any field of the method's config), repeatable.")
@click.option("--dense-calibration", is_flag=True,
              help="Forward every token of a sparse (SMI) set instead of only the kept tokens.")
@click.option("--num-images", type=int, default=32, show_default=True, help="Calibration images.")
@click.option("--eval-folder", type=click.Path(), default=None, help="ImageNet-style <wnid>/<image> folder.")
@click.option("--eval-images", type=int, default=None, help="Evaluate at most this many images.")
@click.option("--sites", default=None,
              help=f"Comma-separated activation sites replacing the preset's (ViT: {','.join(VIT_SITES)}).")
@click.option("--no-head", is_flag=True, help="Leave the classifier in float.")
@click.option("--target", type=click.Choice(sorted(TARGETS)), default="trt", show_default=True,
              help="Q/DQ placement for TensorRT, or for ONNX Runtime CPU (patch-embedding conv and "
                   "classifier in float: ORT cannot fuse input-only Q/DQ into Conv/Gemm).")
@click.option("--bias-correction", type=click.Choice(_BIAS_CORRECTION), default="auto", show_default=True,
              help="Correct weight-rounding bias with calibration input means (auto: CNNs only).")
@click.option("--reconstruct", "do_reconstruct", is_flag=True,
              help="Learn each block's weight rounding on the calibration images (AdaRound per block, BRECQ).")
@click.option("--reconstruct-iters", type=int, default=None, help="Reconstruction steps per block (default 1000).")
@click.option("--reconstruct-option", "reconstruct_options", multiple=True, metavar="KEY=VALUE",
              help="Any ReconstructConfig field (lr, reg_weight, batch_size, drop, act_ranges, ...), repeatable.")
@click.option("--holdout", type=int, default=None,
              help="Images held out of calibration for the data-free estimate and mixed precision "
                   "(default 8 without --eval-folder, 0 with it).")
@click.option("--holdout-set", type=click.Path(), default=None,
              help="A saved set (dfq invert) to hold out instead, e.g. of a better source than the calibration one.")
@click.option("--weight-bits-budget", type=float, default=None,
              help="Mixed precision: per-layer weight bits (the scheme's or 8) within this mean, e.g. 5.0 for w4a8.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(), help="Run directory to create.")
@click.option("--force", is_flag=True, help="Replace an existing run directory (only one dfq wrote).")
@click.option("--export", "export_fmt", type=click.Choice(sorted(EXPORT_FORMATS)), default=None,
              help="Also export the calibrated model (RUN/model.qdq.onnx, RUN/model.plan).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def calibrate(model_name: str, checkpoint: str | None, no_pretrained: bool, device: str | None, scheme: str,
              numerics: str, calibrator: str, site_calibrators: tuple[str, ...], weight_calibrator: str | None,
              calib_folder: str | None, inversion: str | None, calib_set: str | None, settings: tuple[str, ...],
              dense_calibration: bool, num_images: int, eval_folder: str | None, eval_images: int | None,
              sites: str | None, no_head: bool, target: str, bias_correction: str, do_reconstruct: bool,
              reconstruct_iters: int | None, reconstruct_options: tuple[str, ...], holdout: int | None,
              holdout_set: str | None, weight_bits_budget: float | None, batch_size: int, seed: int,
              out: str, force: bool, export_fmt: str | None, as_json: bool) -> None:
    """Quantize a model and calibrate it on real or synthetic images; write a run directory."""
    from dfq.jobs.calibrate import CalibrateRequest, quant_config_from_options, run_calibrate
    from dfq.jobs.export import check_format, export_run
    from dfq.jobs.sources import CalibrationSource

    config = quant_config_from_options(scheme, numerics, calibrator, site_calibrators, weight_calibrator, sites,
                                       no_head, target, bias_correction)
    if export_fmt is not None:
        check_format(config, export_fmt)  # before the calibration, not after it
    request = CalibrateRequest(
        out=out, config=config, source=CalibrationSource.from_options(calib_folder, calib_set, inversion, settings),
        model=model_name, checkpoint=checkpoint, pretrained=not no_pretrained, dense_calibration=dense_calibration,
        num_images=num_images, seed=seed, eval_folder=eval_folder, eval_images=eval_images, batch_size=batch_size,
        device=device, overwrite=force, progress=not as_json,
        reconstruct=_reconstruct_config(do_reconstruct, reconstruct_iters, reconstruct_options, seed),
        holdout=holdout, holdout_set=holdout_set, weight_bits_budget=weight_bits_budget,
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


@cli.command(name="eval")
@click.argument("run", required=False, type=click.Path())
@click.option("--model", "model_name", default=None, help="Evaluate a float model instead of a run.")
@_model_options
@click.option("--data", required=True, type=click.Path(), help="ImageNet-style <wnid>/<image> folder.")
@click.option("--limit", type=int, default=None, help="Evaluate at most this many images.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="torch", show_default=True,
              help="Run the quantized model as torch fake-quant, RUN/model.qdq.onnx in ONNX Runtime, or RUN/model.plan.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def eval_cmd(run: str | None, model_name: str | None, checkpoint: str | None, no_pretrained: bool,
             device: str | None, data: str, limit: int | None, batch_size: int, backend: str, as_json: bool) -> None:
    """Top-1/top-5 of a run (with agreement and KL to its float weights) or of a float model."""
    from dfq.jobs.evaluate import evaluate_folder

    if run is not None and (model_name or checkpoint):
        raise DfqError("give a run directory or --model/--checkpoint, not both")
    report = evaluate_folder(
        data, run=run, model=model_name, checkpoint=checkpoint, pretrained=not no_pretrained,
        device=device, batch_size=batch_size, limit=limit, progress=not as_json, backend=backend,
    )  # fmt: skip
    _print(report, as_json)


@cli.command()
@click.option("--model", "model_name", required=True, help="timm name or alias.")
@_model_options
@click.option("--method", type=click.Choice(inverter_names()), required=True, help="Inversion method.")
@click.option("--num-images", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Any field of the method's config (e.g. iterations=4000, lr=0.25), repeatable.")
@click.option("--out", required=True, type=click.Path(), help="Directory for the calibration set.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUT.ckpt.")
@click.option("--force", is_flag=True, help="Replace an existing set or run directory (only one dfq wrote).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def invert(model_name: str, checkpoint: str | None, no_pretrained: bool, device: str | None, method: str,
           num_images: int, seed: int, settings: tuple[str, ...], out: str, resume: bool, force: bool,
           as_json: bool) -> None:
    """Make a calibration set from the model alone (no data); write it with a manifest and preview."""
    from dfq.jobs.invert import InvertRequest, run_invert

    calib = run_invert(InvertRequest(
        out=out, method=method, model=model_name, checkpoint=checkpoint, pretrained=not no_pretrained,
        num_images=num_images, seed=seed, settings=settings, device=device, resume=resume, overwrite=force,
        progress=not as_json,
    ))  # fmt: skip
    if as_json:
        click.echo(json.dumps(calib.provenance, indent=2))
    else:
        click.echo(f"{len(calib)} images by {method} in {calib.provenance['seconds']:.1f} s, written to {out}")


@cli.command()
@click.option("--teacher", default=None, help="timm name or alias of the float teacher (with --qat: the run's model).")
@click.option("--teacher-checkpoint", type=click.Path(dir_okay=False), default=None, help="Local weights of the teacher.")
@click.option("--student", default=None, help="timm name or alias of the student.")
@click.option("--student-checkpoint", type=click.Path(dir_okay=False), default=None, help="Local weights of the student.")
@click.option("--linear-probe", is_flag=True, help="Train only a new classifier of the student (SMI's recipe).")
@click.option("--qat", "qat_run", type=click.Path(), default=None,
              help="Data-free QAT: the calibrated run's fake-quant model is the student.")
@click.option("--calib-set", type=click.Path(), default=None, help="Training images: a set written by `dfq invert`.")
@click.option("--inversion", type=click.Choice(inverter_names()), default=None,
              help="Training images made from the teacher (once up front, or per round with --alternate).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Inversion setting, repeatable.")
@click.option("--alternate", is_flag=True, help="Synthesize a batch every kd_steps steps (the pool grows).")
@click.option("--num-images", type=int, default=256, show_default=True, help="Images of an up-front inversion.")
@click.option("--steps", type=int, required=True, help="Optimizer steps.")
@click.option("--batch-size", type=int, default=None, help="Images per step (default 64).")
@click.option("--lr", type=float, default=None, help="Learning rate (QAT 3e-5, probe 0.1, student 0.1).")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=None)
@click.option("--temperature", type=float, default=None, help="KD temperature (QAT 1, probe 20, student 1).")
@click.option("--ema", type=float, default=None, help="Decay of the student's moving average (0: off).")
@click.option("--weight-ranges", type=click.Choice(list(RANGE_MODES["weight"])), default=None,
              help="QAT: weight ranges frozen, re-derived every step, or learned (LSQ; default).")
@click.option("--act-ranges", type=click.Choice(list(RANGE_MODES["act"])), default=None,
              help="QAT: activation ranges frozen (default) or learned (LSQ).")
@click.option("--eval-every", type=int, default=None, help="Steps between evaluations and checkpoints (default 100).")
@click.option("--kd", "kd_settings", multiple=True, metavar="KEY=VALUE",
              help="Any other training setting (e.g. ce=1, mixup=0.5, kd_steps=20), repeatable.")
@click.option("--eval-folder", type=click.Path(), default=None, help="ImageNet-style <wnid>/<image> folder.")
@click.option("--eval-images", type=int, default=None, help="Evaluate on at most this many images.")
@click.option("--no-pretrained", is_flag=True, help="Random initialization of timm models without a checkpoint (tests).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Where to run (default: cuda when available).")
@click.option("--seed", type=int, default=None, help="Seed of sampling, augmentation and synthesis (default 0).")
@click.option("--out", required=True, type=click.Path(), help="Run directory to create.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUT.ckpt.")
@click.option("--force", is_flag=True, help="Replace an existing run directory (only one dfq wrote).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def distill(teacher: str | None, teacher_checkpoint: str | None, student: str | None, student_checkpoint: str | None,
            linear_probe: bool, qat_run: str | None, calib_set: str | None, inversion: str | None,
            settings: tuple[str, ...], alternate: bool, num_images: int, steps: int, batch_size: int | None,
            lr: float | None, optimizer: str | None, temperature: float | None, ema: float | None,
            weight_ranges: str | None, act_ranges: str | None, eval_every: int | None, kd_settings: tuple[str, ...],
            eval_folder: str | None, eval_images: int | None, no_pretrained: bool, device: str | None,
            seed: int | None, out: str, resume: bool, force: bool, as_json: bool) -> None:
    """Distill a student, or the quantized model itself (data-free QAT), on synthetic images."""
    from dfq.jobs.distill import DistillRequest, config_from_options, run_distill

    config = config_from_options(
        qat_run is not None, linear_probe, kd_settings, steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer,
        temperature=temperature, ema=ema, weight_ranges=weight_ranges, act_ranges=act_ranges, eval_every=eval_every,
        seed=seed,
    )  # fmt: skip
    report = run_distill(DistillRequest(
        out=out, config=config, teacher=teacher, teacher_checkpoint=teacher_checkpoint, student=student,
        student_checkpoint=student_checkpoint, linear_probe=linear_probe, qat=qat_run, calib_set=calib_set,
        inversion=inversion, settings=settings, alternate=alternate, num_images=num_images, eval_folder=eval_folder,
        eval_images=eval_images, pretrained=not no_pretrained, device=device, resume=resume, overwrite=force,
        progress=not as_json,
    ))  # fmt: skip
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    d = report["distill"]
    click.echo(f"{d['loop']} {'QAT' if d['qat'] else 'distillation'}: {d['steps']} steps on {d['training_images']} "
               f"images in {d['seconds']:.0f} s, written to {out}")
    start = report.get("start") or {}
    if "agreement" in report:
        kl0 = f" (from {start['kl']:.4f})" if start.get("kl") is not None else ""
        click.echo(f"teacher: top-1 {_pct(report['fp']['top1'])}   student: top-1 {_pct(report['quant']['top1'])}")
        kl = f"{report['kl']:.4f}" if report["kl"] is not None else "undefined"
        click.echo(f"agreement with the teacher: {_pct(report['agreement'])}   KL(teacher||student): {kl}{kl0}")


@cli.command()
@click.argument("run", type=click.Path())
@click.option("--images", type=click.Path(), default=None,
              help="A saved set (dfq invert) to measure on; default: the run's held-out images (RUN/holdout).")
@click.option("--sites", is_flag=True, help="Also measure every activation quantizer (slower), not only layer weights.")
@click.option("--limit", type=int, default=None, help="Measure on at most this many images.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--device", default=None, help="cpu | cuda (default: cuda when available).")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def analyze(run: str, images: str | None, sites: bool, limit: int | None, batch_size: int, device: str | None,
            as_json: bool) -> None:
    """Per-layer sensitivity of a run on held-out images: KL to FP with each quantizer alone and dropped."""
    from dfq.jobs.analyze import AnalyzeRequest, run_analyze

    record = run_analyze(AnalyzeRequest(run=run, images=images, sites=sites, batch_size=batch_size, device=device,
                                        limit=limit, progress=not as_json))  # fmt: skip
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    base = record["baseline_kl"]
    rows = sorted(record["rows"], key=lambda r: base - r["drop_kl"], reverse=True)
    click.echo(f"KL(FP||quant) on {record['images']['count']} held-out images: {base:.4f}; most sensitive first:")
    for r in rows[:10]:
        click.echo(f"  {r['name']:<32} {r['kind']:<6} alone {r['alone_kl']:.4g}  saved when dropped {base - r['drop_kl']:.4g}")
    click.echo(f"table written to {record['written']} (and analysis.md)")


@cli.command(name="report")
@click.argument("run", type=click.Path())
@click.option("--out", type=click.Path(), default=None, help="HTML file to write (default RUN/report.html).")
def report_cmd(run: str, out: str | None) -> None:
    """Write one self-contained HTML page of a run: figures, preview, sensitivity, ranges, mixed precision."""
    from dfq.jobs.html_report import write_html_report
    from dfq.runs import read_recipe

    read_recipe(run)  # not a run directory: one error line
    click.echo(f"report written to {write_html_report(run, out)}")


@cli.command(name="export")
@click.argument("run", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(sorted(EXPORT_FORMATS)), default="onnx", show_default=True)
@click.option("--fp16-remainder/--no-fp16-remainder", default=None,
              help="Cast the unquantized remainder to FP16 (default: on for trt, off for onnx).")
@click.option("--int4-weights", is_flag=True, help="INT4 weight-only DQ blocks for Linear layers (opset 21).")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: 17; 19 with FP16, 21 with INT4).")
def export_cmd(run: str, fmt: str, fp16_remainder: bool | None, int4_weights: bool, opset: int | None) -> None:
    """Export a calibrated run: TensorRT-ready Q/DQ ONNX (checked) and optionally a TensorRT engine."""
    from dfq.jobs.export import export_run

    opts: dict[str, Any] = {"int4_weights": int4_weights}
    if fp16_remainder is not None:
        opts["fp16_remainder"] = fp16_remainder
    if opset is not None:
        opts["opset"] = opset
    click.echo(f"wrote {export_run(run, fmt, **opts)}")


@cli.group()
def bench() -> None:
    """Speed measurements, as ratios in one process."""


@bench.command(name="inversion")
@click.option("--model", "model_name", required=True, help="timm ViT name or alias (deit_base, ...).")
@_model_options
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--iterations", type=int, default=4000, show_default=True, help="Run length the stages are weighted by.")
@click.option("--steps-per-stage", type=int, default=3, show_default=True, help="Timed iterations per stage.")
@click.option("--warmup", type=int, default=2, show_default=True)
@click.option("--amp", is_flag=True, help="bf16 autocast (CUDA).")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def bench_inversion(model_name: str, checkpoint: str | None, no_pretrained: bool, device: str | None, batch_size: int,
                    iterations: int, steps_per_stage: int, warmup: int, amp: bool, as_json: bool) -> None:
    """Dense DeepInversion vs SMI iteration speed per sparsity stage, FLOPs and peak memory."""
    from dfq.devices import check_device
    from dfq.inversion.bench import benchmark_inversion
    from dfq.loadcheck import snapshot
    from dfq.models import load_model

    start = snapshot()  # before the model build raises the load average
    device = check_device(device)
    model = load_model(model_name, checkpoint=checkpoint, pretrained=not no_pretrained).to(device)
    r = benchmark_inversion(model, batch_size=batch_size, iterations=iterations, device=device,
                            warmup=warmup, steps_per_stage=steps_per_stage, amp=amp, load_start=start)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"{model_name} batch {batch_size} on {device}: {'stage':>7} {'kept':>5} {'it/s':>8} {'GFLOP/it':>9}")
    rows = [("dense", r["dense"])] + [(f"{s['first_iteration']}+", s) for s in r["stages"]]
    for label, st in rows:
        click.echo(f"{'':>{len(model_name) + 20}}{label:>7} {st['kept_patches']:>5} {st['it_per_s']:8.3f} "
                   f"{st['flops_per_it'] / 1e9:9.1f}")
    click.echo(f"whole schedule ({iterations} iterations): SMI/dense speedup {r['speedup']:.2f}x, "
               f"FLOPs ratio {r['flops_ratio']:.2f}x")
    load = r["machine_load"]
    click.echo(f"load average at start: {(load['start'] or load['before'])['loadavg'][0]:.2f}; "
               + ("machine idle" if load["idle"] else "NOT idle: " + "; ".join(load["not_idle_because"])))


def _set_formats() -> list[str]:
    from dfq.interop import FORMATS

    return list(FORMATS)


@cli.command(name="export-set")
@click.argument("source", metavar="SET", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(_set_formats()), default="npz", show_default=True,
              help="npz: {input name: images}; npy: the bare array (single-input models).")
@click.option("--out", required=True, type=click.Path(), help="File to write (ending in .npz or .npy).")
@click.option("--input-name", default=None, help="npz key: the ONNX model's input name (default: input).")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def export_set_cmd(source: str, fmt: str, out: str, input_name: str | None, force: bool, as_json: bool) -> None:
    """Write a calibration set (or a run's) as ModelOpt ONNX PTQ's --calibration_data_path file."""
    from dfq.interop import export_set

    record = export_set(source, out, fmt=fmt, input_name=input_name, overwrite=force)  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    key = f" under key {record['key']!r}" if record["key"] else ""
    sparse = " (sparse set written dense: stopped patches as they are)" if record["sparse"] else ""
    click.echo(f"wrote {record['path']}: {record['num_images']} images {tuple(record['shape'][1:])}{key}{sparse}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``dfq``): SIGTERM stops like Ctrl-C, then the click group runs."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    cli.main(args=argv, prog_name="dfq")


if __name__ == "__main__":
    main()
