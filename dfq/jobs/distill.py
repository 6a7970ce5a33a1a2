"""``dfq distill`` as one call: a teacher, a student (or a calibrated run for data-free QAT), synthetic
images -> a run directory with the trained model, its learning curve and a report.

Training images come from a saved set (``--calib-set``), from an inversion made once up front
(``--inversion``, static loop) or from one synthesized batch every ``kd_steps`` steps (``--inversion
--alternate``). The resumable state lives in ``OUT.ckpt`` beside the output (``--resume`` continues
it; it is removed once the run is written); an up-front inversion checkpoints to ``OUT.invert.ckpt``.

Run directory::

    recipe.json      QAT: the calibrated run's recipe plus a "distill" record (dfq.load/eval/export
                     treat it like any calibrated run); students: teacher, student and "distill" records
    quant_state.pt   QAT: the trained fake-quant model (final weights)        | student.pt: final weights
    best.pt          the state at the best evaluation, with its step and figures (selection on the eval data)
    curve.json/.png  one record per evaluation: step, lr, loss, images, seconds, top1, agreement, kl
    report.json/.md  final figures against the teacher (QAT: the same layout as dfq calibrate's)

Under ``torchrun --nproc-per-node N -m dfq distill ...`` the student trains in DistributedDataParallel
(:mod:`dfq.distill.parallel`; ``batch_size`` images per rank and step); an up-front inversion is shared
out like ``dfq invert``'s. Rank 0 alone holds ``OUT.lock``, evaluates, checkpoints to ``OUT.ckpt`` (with
every rank's random streams) and writes the run directory; the recipe records ``world_size``.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dfq import distributed
from dfq.data import CalibrationSet
from dfq.devices import check_device
from dfq.distill.config import DistillConfig
from dfq.errors import DfqError
from dfq.jobs.evaluate import check_eval_options
from dfq.jobs.model import JobModel, check_batch_fits, load_job_model
from dfq.jobs.sources import CalibrationSource, plan_source, resolve_source

__all__ = ["DistillRequest", "run_distill", "eval_data_from_folder", "config_from_options"]


@dataclass(frozen=True)
class DistillRequest:
    """Everything ``dfq distill`` needs.

    Attributes:
        out: run directory to create.
        config: the training settings.
        teacher, teacher_checkpoint: the float teacher (timm name or alias; with ``qat`` None takes
            the run's model).
        student, student_checkpoint: the student (timm name); exclusive with ``qat``.
        linear_probe: train only a new classifier of the student (SMI's recipe).
        qat: a calibrated run directory whose fake-quant model is the student.
        calib_set: a set written by ``dfq invert`` (static loop).
        inversion: an inversion method: a set made up front (static), or per round with ``alternate``.
        settings: ``KEY=VALUE`` fields of the inversion's config.
        alternate: synthesize ``config.synth_batch`` images every ``config.kd_steps`` steps.
        num_images: images of an up-front inversion.
        eval_folder, eval_images: ImageNet-style folder (and a cap) for the curve and the report.
        pretrained: timm weights for models without a checkpoint (off: seeded random init).
        device, resume, overwrite, progress: as in the other jobs.
    """

    out: str
    config: DistillConfig
    teacher: str | None = None
    teacher_checkpoint: str | None = None
    student: str | None = None
    student_checkpoint: str | None = None
    linear_probe: bool = False
    qat: str | None = None
    calib_set: str | None = None
    inversion: str | None = None
    settings: tuple[str, ...] = ()
    alternate: bool = False
    num_images: int = 256
    eval_folder: str | None = None
    eval_images: int | None = None
    pretrained: bool = True
    device: str | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    data_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.student is None) == (self.qat is None):
            raise DfqError("give exactly one student: --student NAME, or --qat RUN for data-free QAT of a calibrated run")
        if self.linear_probe and self.qat is not None:
            raise DfqError("--linear-probe trains a student's classifier; it does not combine with --qat")
        if (self.calib_set is None) == (self.inversion is None):
            raise DfqError("give exactly one source of training images: --calib-set DIR or --inversion METHOD")
        if self.alternate and self.inversion is None:
            raise DfqError("--alternate synthesizes as it trains; it needs --inversion METHOD")
        if self.settings and self.inversion is None:
            raise DfqError("--set KEY=VALUE configures an inversion method; it needs --inversion")
        if self.teacher is None and self.qat is None:
            raise DfqError("give --teacher NAME (the float model to distill from)")
        if self.num_images < 1:
            raise DfqError("--num-images must be at least 1")
        check_eval_options(self.eval_folder, self.eval_images)
        if self.config.patience is not None and self.eval_folder is None:
            raise DfqError("--patience stops when the scores on the evaluation images stop improving; it needs --eval-folder")
        if self.qat is not None and not (Path(self.qat) / "recipe.json").is_file():
            raise DfqError(f"--qat {self.qat} is not a dfq run directory (no recipe.json)")

    @property
    def checkpoint(self) -> Path:
        return Path(f"{str(self.out).rstrip('/')}.ckpt")


def _stack(folder: str, cfg: dict[str, Any], limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    from dfq.jobs.evaluate import folder_loader

    xs, ys = [], []
    for x, y in folder_loader(folder, cfg, 64, limit):
        xs.append(x)
        ys.append(torch.as_tensor(y))
    return torch.cat(xs), torch.cat(ys).long()


def eval_data_from_folder(folder: str, teacher: JobModel, student_cfg: dict[str, Any], limit: int | None = None) -> Any:
    """Evaluation data from an ImageNet-style folder: images preprocessed for the student, the
    teacher's logits on the same files preprocessed for the teacher."""
    from dfq.distill.inputs import EvalData

    images, labels = _stack(folder, student_cfg, limit)
    same = all(teacher.data_cfg.get(k) == student_cfg.get(k)
               for k in ("input_size", "mean", "std", "crop_pct", "interpolation", "crop_mode"))  # fmt: skip
    teacher_images = None if same else _stack(folder, teacher.data_cfg, limit)[0]
    return EvalData.from_tensors(images, labels, teacher.module, teacher_images)


def _recipe_teacher(recipe: dict[str, Any], request: DistillRequest) -> tuple[str | None, str | None]:
    model = recipe.get("model") or {}
    if request.teacher is None:
        if model.get("source") != "timm":
            raise DfqError("the run was made from a model built in Python; distill it with the Python API (dfq.distill.distill)")
        return model.get("name"), model.get("checkpoint")
    return request.teacher, request.teacher_checkpoint


def _check_teacher(recipe: dict[str, Any], teacher: JobModel, student: torch.nn.Module, run: str) -> None:
    """Refuse a teacher that is not the float model the run was calibrated from: another checkpoint
    file, or (no file on either side: another name, hub weights vs random ones) other outputs than the
    run's own float weights (quantizers off) on two seeded images."""
    from dfq.quant.calibrate import quantizers_off

    made = recipe.get("model") or {}
    theirs, mine = made.get("checkpoint_sha256"), teacher.identity.get("checkpoint_sha256")
    same = theirs == mine
    if same:
        x = torch.randn(2, *teacher.data_cfg["input_size"], generator=torch.Generator().manual_seed(0))
        x = x.to(next(iter(teacher.module.parameters())).device)
        with torch.no_grad(), quantizers_off(student):
            a, b = teacher.module(x), student.eval()(x)
        same = a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-3, atol=1e-4))
    if not same:
        raise DfqError(f"the teacher's weights are not those {run} was calibrated from ({made.get('checkpoint')}); "
                       "QAT distills the quantized model from its own float model")  # fmt: skip


def run_distill(request: DistillRequest) -> dict[str, Any]:
    """Train and write the run directory; return the report.

    Raises:
        DfqError: bad input (conflicting options, an existing output or checkpoint, a teacher that is
            not the run's model, a NaN loss, ...).
    """
    from dfq.runs import claim_output

    t_start = time.perf_counter()
    device = check_device(request.device)
    with distributed.session(device), ExitStack() as held:
        with distributed.agree():  # rank 0 holds OUT; a refusal stops every rank
            if distributed.is_main():
                held.enter_context(claim_output(request.out, request.overwrite))
        return _distill(request, distributed.device(device), t_start)


def _distill(request: DistillRequest, device: str, t_start: float) -> dict[str, Any]:
    with distributed.agree():
        ckpt = request.checkpoint
        if distributed.is_main() and ckpt.exists() and not request.resume:
            raise DfqError(f"{ckpt} holds an interrupted run: continue it with `dfq distill ... --resume`, or delete it")
        prepared = _prepare(request, device)
    return _train(request, device, t_start, *prepared)


def _prepare(request: DistillRequest, device: str) -> tuple[Any, ...]:
    """The source plan, teacher, student (its data config and identity) and recipe, on every rank."""
    from dfq import distill as D
    from dfq.runs import read_recipe

    recipe = read_recipe(request.qat) if request.qat is not None else None
    source = (CalibrationSource.saved_set(request.calib_set) if request.calib_set is not None
              else CalibrationSource.inversion(str(request.inversion), *request.settings))  # fmt: skip
    plan = plan_source(source, num_images=request.num_images, seed=request.config.seed,
                       checkpoint_path=None if request.alternate else f"{str(request.out).rstrip('/')}.invert.ckpt",
                       resume=request.resume)  # fmt: skip
    t_name, t_ckpt = _recipe_teacher(recipe, request) if recipe is not None else (request.teacher, request.teacher_checkpoint)
    teacher = load_job_model(t_name, t_ckpt, request.pretrained, device, data_overrides=request.data_overrides)
    check_batch_fits(request.config.batch_size, teacher.data_cfg["input_size"])  # before the student, images, loop
    if request.alternate:
        check_batch_fits(request.config.synth_batch, teacher.data_cfg["input_size"], "--kd synth_batch")
    if recipe is not None:
        from dfq.runs import load

        student = load(request.qat, device=device)
        _check_teacher(recipe, teacher, student, str(request.qat))
        student_cfg = dict(recipe.get("data_config") or teacher.data_cfg)
        student_identity = recipe["model"]
    else:
        sjob = load_job_model(request.student, request.student_checkpoint, request.pretrained, device)
        student, student_cfg, student_identity = sjob.module, sjob.data_cfg, dict(sjob.identity)
        if request.linear_probe:
            num_classes = int(getattr(teacher.module, "num_classes", 0) or 0)
            if num_classes < 1:
                raise DfqError("--linear-probe needs a teacher with a num_classes attribute (timm models have one)")
            D.linear_probe(student, num_classes, seed=request.config.seed)
            student_identity["linear_probe"] = {"num_classes": num_classes}
    return source, plan, recipe, teacher, student, student_cfg, student_identity


def _train(request: DistillRequest, device: str, t_start: float, source: CalibrationSource, plan: Any,
           recipe: dict[str, Any] | None, teacher: JobModel, student: torch.nn.Module, student_cfg: dict[str, Any],
           student_identity: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Resolve the training images, train, and (rank 0) write the run directory."""
    from dfq import distill as D

    main = distributed.is_main()
    progress = request.progress and main
    calib: CalibrationSet | None = None
    resolved = None
    synthesizer = None
    if request.alternate:
        synthesizer = D.make_synthesizer(str(request.inversion), teacher.module, student, plan.config, teacher.data_cfg,
                                         request.config.synth_batch, device)  # fmt: skip
    else:
        resolved = resolve_source(plan, teacher, device=device, progress=progress)
        calib = resolved.calib
    eval_data = None
    with distributed.agree():  # rank 0 alone evaluates
        if request.eval_folder is not None and main:
            eval_data = eval_data_from_folder(request.eval_folder, teacher, student_cfg, request.eval_images)
    result = D.distill(
        teacher.module, student, request.config, calib=calib, synthesizer=synthesizer, eval_data=eval_data,
        teacher_space=D.InputSpace.of(teacher.data_cfg), student_space=D.InputSpace.of(student_cfg),
        qat=recipe is not None, checkpoint=request.checkpoint, device=device, progress=progress,
    )  # fmt: skip
    record = {
        "loop": result.extra["loop"],
        "qat": recipe is not None,
        "qat_from": str(request.qat) if request.qat else None,
        "linear_probe": request.linear_probe,
        "sparse_forward": result.extra["sparse"],
        "config": request.config.to_dict(),
        "source": source.describe(),
        "training_images": result.pool_size,
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "resumed_from": result.resumed_from,
        "seconds": result.seconds,
        "teacher": teacher.identity,
    }
    if distributed.world_size() > 1:  # each step trained on world_size × batch_size images
        record["world_size"] = distributed.world_size()
    if calib is not None:
        record["source_provenance"] = {k: calib.provenance.get(k) for k in ("method", "seed", "seconds", "wall_seconds")
                                       if k in calib.provenance}  # fmt: skip
    report: dict[str, Any] = {}
    with distributed.agree():  # the ranks keep their checkpoints unless rank 0 wrote the run
        if main:
            report = _write(request, recipe, result, record, teacher, student_identity, student_cfg, eval_data)
    report = distributed.broadcast_object(report) if distributed.world_size() > 1 else report
    if resolved is not None:
        resolved.done()
    if main:
        request.checkpoint.unlink(missing_ok=True)
    report["wall_seconds"] = round(time.perf_counter() - t_start, 2)
    return report


def _final_report(result: Any, eval_data: Any) -> dict[str, Any]:
    """The written model's figures. Scored here, not read from the curve's last record: QAT's finish
    re-derives ranges after the last step (``rederive``) and turns learned ones into buffers."""
    from dfq.distill.loop import evaluate_student
    from dfq.evaluation import classification_metrics

    if eval_data is None:
        return {}
    m = evaluate_student(result.student, eval_data, ("top1", "top5", "num_nonfinite", "agreement", "kl", "num_images"))
    ref = classification_metrics(eval_data.teacher_logits, eval_data.labels)
    pick = ("top1", "top5", "num_nonfinite")
    return {"fp": {k: ref[k] for k in pick}, "quant": {k: m[k] for k in pick}, "agreement": m["agreement"],
            "kl": m["kl"], "num_eval_images": m["num_images"]}  # fmt: skip


def _write(request: DistillRequest, recipe: dict[str, Any] | None, result: Any, record: dict[str, Any],
           teacher: JobModel, student_identity: dict[str, Any], student_cfg: dict[str, Any],
           eval_data: Any) -> dict[str, Any]:  # fmt: skip
    from dfq import atomic
    from dfq.checkpointing import to_cpu
    from dfq.distill.curve import write_curve
    from dfq.runs import RECIPE, run_directory, save_quant_state, versions, write_json, write_report

    figures = _final_report(result, eval_data)
    best = result.best
    summary = {
        "distill": {k: record[k] for k in ("loop", "qat", "linear_probe", "steps", "stopped_early", "training_images", "seconds")},
        "start": result.curve[0] if result.curve else None,
        "best": {"step": best["step"], **best["metrics"]} if best else None,
    }
    with run_directory(request.out, overwrite=request.overwrite) as run:
        if recipe is not None:
            new_recipe = {**recipe, "distill": record, "versions": versions()}
            write_json(run / RECIPE, new_recipe)
            save_quant_state(run, new_recipe, result.student)
            report: dict[str, Any] = {"model": recipe["model"], "quant_config": recipe["quant"],
                                      "calibration": recipe.get("calibration", {}), **figures, **summary}  # fmt: skip
            write_report(run, report)
        else:
            new_recipe = {"kind": "distill", "teacher": teacher.identity, "student": student_identity,
                          "data_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in student_cfg.items()},
                          "distill": record, "versions": versions()}  # fmt: skip
            write_json(run / RECIPE, new_recipe)
            state = to_cpu(result.student.state_dict())
            atomic.atomic_write(run / "student.pt", lambda tmp: torch.save(state, tmp))
            report = {"model": {"name": student_identity.get("name")}, **figures, **summary}
            write_json(run / "report.json", report)
            atomic.write_text(run / "report.md", _student_md(report))
        if best is not None:
            blob = {"step": best["step"], "metrics": best["metrics"], "state_dict": best["state"]}
            atomic.atomic_write(run / "best.pt", lambda tmp: torch.save(blob, tmp))
        write_curve(run, result.curve)
    return report


def _student_md(report: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("—" if v is None else str(v))

    d = report["distill"]
    lines = [f"# dfq distillation: {report['model'].get('name') or 'student'}", "",
             f"- loop: {d['loop']}{' (linear probe)' if d['linear_probe'] else ''}, {d['steps']} steps on "
             f"{d['training_images']} training images, {d['seconds']:.0f} s"
             f"{' (stopped early: no better evaluation for --patience evaluations)' if d.get('stopped_early') else ''}"]  # fmt: skip
    if "quant" in report:
        lines += ["", "| model | top-1 | top-5 |", "|---|---|---|",
                  f"| teacher | {f(report['fp']['top1'])} | {f(report['fp']['top5'])} |",
                  f"| student | {f(report['quant']['top1'])} | {f(report['quant']['top5'])} |", "",
                  f"- top-1 agreement with the teacher: {f(report['agreement'])}",
                  f"- mean KL(teacher ‖ student): {f(report['kl'])}"]  # fmt: skip
    if report.get("best"):
        b = report["best"]
        lines.append(f"- best evaluation at step {b['step']}: top-1 {f(b.get('top1'))}, agreement {f(b.get('agreement'))}, KL {f(b.get('kl'))}")
    return "\n".join(lines) + "\n"


def config_from_options(qat: bool, linear_probe: bool, settings: tuple[str, ...] = (), **options: Any) -> DistillConfig:
    """The CLI's training options as a config: the mode's defaults (:func:`~dfq.distill.config.qat_defaults`,
    :func:`~dfq.distill.config.probe_defaults` or the student defaults), then the options that were
    given (None: keep), then ``--kd KEY=VALUE`` settings.

    >>> config_from_options(True, False, ("ema=0.99",), steps=20, lr=None).ema
    0.99

    Raises:
        DfqError: an unknown key or a bad value.
    """
    from dfq.distill.config import probe_defaults, qat_defaults
    from dfq.inversion.overrides import parse_overrides

    changes = {k: v for k, v in options.items() if v is not None}
    try:
        changes.update(parse_overrides(DistillConfig, settings))
        if qat:
            return qat_defaults(**changes)
        if linear_probe:
            return probe_defaults(**changes)
        return DistillConfig(**changes)
    except DfqError:
        raise
    except (TypeError, ValueError) as e:
        raise DfqError(f"invalid distillation settings: {e}") from None

