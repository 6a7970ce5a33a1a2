"""``dfq distill``: a student, or the quantized model itself (data-free QAT), trained on synthetic images."""

from __future__ import annotations

import json

import click

from dfq.cli._common import _pct
from dfq.distill.config import RANGE_MODES
from dfq.distributed import reports
from dfq.inversion.registry import inverter_names


@click.command()
@click.option(
    "--teacher", default=None, help="timm name or alias of the float teacher (with --qat: the run's model)."
)
@click.option(
    "--teacher-checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="Local weights of the teacher.",
)
@click.option("--student", default=None, help="timm name or alias of the student.")
@click.option(
    "--student-checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="Local weights of the student.",
)
@click.option(
    "--linear-probe", is_flag=True, help="Train only a new classifier of the student (SMI's recipe)."
)
@click.option(
    "--qat",
    "qat_run",
    type=click.Path(),
    default=None,
    help="Data-free QAT: the calibrated run's fake-quant model is the student.",
)
@click.option(
    "--calib-set", type=click.Path(), default=None, help="Training images: a set written by `dfq invert`."
)
@click.option(
    "--inversion",
    type=click.Choice(inverter_names()),
    default=None,
    help="Training images made from the teacher (once up front, or per round with --alternate).",
)
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Inversion setting, repeatable.")
@click.option("--alternate", is_flag=True, help="Synthesize a batch every kd_steps steps (the pool grows).")
@click.option(
    "--num-images", type=int, default=256, show_default=True, help="Images of an up-front inversion."
)
@click.option("--steps", type=int, required=True, help="Optimizer steps.")
@click.option("--batch-size", type=int, default=None, help="Images per step (default 64).")
@click.option("--lr", type=float, default=None, help="Learning rate (QAT 3e-5, probe 0.1, student 0.1).")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=None)
@click.option("--temperature", type=float, default=None, help="KD temperature (QAT 1, probe 20, student 1).")
@click.option("--ema", type=float, default=None, help="Decay of the student's moving average (0: off).")
@click.option(
    "--weight-ranges",
    type=click.Choice(list(RANGE_MODES["weight"])),
    default=None,
    help="QAT: weight ranges frozen, re-derived every step, or learned (LSQ; default).",
)
@click.option(
    "--act-ranges",
    type=click.Choice(list(RANGE_MODES["act"])),
    default=None,
    help="QAT: activation ranges frozen (default) or learned (LSQ).",
)
@click.option(
    "--eval-every", type=int, default=None, help="Steps between evaluations and checkpoints (default 100)."
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=None,
    help="Stop early after N evaluations in a row without a better score (needs --eval-folder).",
)
@click.option(
    "--kd",
    "kd_settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other training setting (e.g. ce=1, mixup=0.5, kd_steps=20), repeatable.",
)
@click.option("--eval-folder", type=click.Path(), default=None, help="ImageNet-style <wnid>/<image> folder.")
@click.option("--eval-images", type=click.IntRange(min=1), default=None, help="Evaluate on at most this many images.")
@click.option(
    "--no-pretrained", is_flag=True, help="Random initialization of timm models without a checkpoint (tests)."
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Where to run (default: cuda when available).",
)
@click.option(
    "--seed", type=int, default=None, help="Seed of sampling, augmentation and synthesis (default 0)."
)
@click.option("--out", required=True, type=click.Path(), help="Run directory to create.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUT.ckpt.")
@click.option("--force", is_flag=True, help="Replace an existing run directory (only one dfq wrote).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def distill(
    teacher: str | None,
    teacher_checkpoint: str | None,
    student: str | None,
    student_checkpoint: str | None,
    linear_probe: bool,
    qat_run: str | None,
    calib_set: str | None,
    inversion: str | None,
    settings: tuple[str, ...],
    alternate: bool,
    num_images: int,
    steps: int,
    batch_size: int | None,
    lr: float | None,
    optimizer: str | None,
    temperature: float | None,
    ema: float | None,
    weight_ranges: str | None,
    act_ranges: str | None,
    eval_every: int | None,
    patience: int | None,
    kd_settings: tuple[str, ...],
    eval_folder: str | None,
    eval_images: int | None,
    no_pretrained: bool,
    device: str | None,
    seed: int | None,
    out: str,
    resume: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Distill a student, or the quantized model itself (data-free QAT), on synthetic images."""
    from dfq.jobs.distill import DistillRequest, config_from_options, run_distill

    config = config_from_options(
        qat_run is not None, linear_probe, kd_settings, steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer,
        temperature=temperature, ema=ema, weight_ranges=weight_ranges, act_ranges=act_ranges, eval_every=eval_every,
        patience=patience, seed=seed,
    )  # fmt: skip
    report = run_distill(DistillRequest(
        out=out, config=config, teacher=teacher, teacher_checkpoint=teacher_checkpoint, student=student,
        student_checkpoint=student_checkpoint, linear_probe=linear_probe, qat=qat_run, calib_set=calib_set,
        inversion=inversion, settings=settings, alternate=alternate, num_images=num_images, eval_folder=eval_folder,
        eval_images=eval_images, pretrained=not no_pretrained, device=device, resume=resume, overwrite=force,
        progress=not as_json,
    ))  # fmt: skip
    if not reports():  # under torchrun rank 0 speaks for the job
        return
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    d = report["distill"]
    click.echo(
        f"{d['loop']} {'QAT' if d['qat'] else 'distillation'}: {d['steps']} steps on {d['training_images']} "
        f"images in {d['seconds']:.0f} s, written to {out}"
    )
    start = report.get("start") or {}
    if "agreement" in report:
        kl0 = f" (from {start['kl']:.4f})" if start.get("kl") is not None else ""
        click.echo(
            f"teacher: top-1 {_pct(report['fp']['top1'])}   student: top-1 {_pct(report['quant']['top1'])}"
        )
        kl = f"{report['kl']:.4f}" if report["kl"] is not None else "undefined"
        click.echo(
            f"agreement with the teacher: {_pct(report['agreement'])}   KL(teacher||student): {kl}{kl0}"
        )
