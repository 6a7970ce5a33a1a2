"""The distillation loop: steps over a pool of images, evaluation, best tracking, resumable state.

All three loops are this one with different inputs: **static** (the pool holds a calibration set),
**alternating** (a :class:`~dfq.distill.synth.Synthesizer` adds a batch every ``kd_steps`` steps) and
**data-free QAT** (the student is the fake-quant model; :mod:`dfq.distill.qat` adds a hook before each
step). Each step is :func:`dfq.distill.step.train_step` on an augmented batch drawn by one seeded
generator.

Every ``eval_every`` steps (and at step 0 and the last step) the student (its moving average when
``ema`` is on) is scored on :class:`~dfq.distill.inputs.EvalData`: top-1, agreement and KL to the
teacher; the best by ``config.select`` is kept, and with ``config.patience`` the run stops once that
many evaluations in a row have not beaten it (a resumed run that had stopped stays stopped). Every
``checkpoint_every`` steps the whole state (student, optimizer, EMA, pool, synthesizer, random streams,
curve, best) goes to a
:class:`~dfq.checkpointing.StateFile`, so a killed run resumes losing at most one interval, and
resumes on the CPU to bit-identical weights. The loss is read back to the host only every
``log_every`` steps, where a NaN or infinite loss stops the run with one clear error.

Under ``torchrun`` (a :func:`dfq.distributed.session`) the student trains in DistributedDataParallel
(:mod:`dfq.distill.parallel`): each rank draws its own batches with its own seed, the logged loss is the
mean over ranks, and rank 0 alone evaluates and writes the checkpoint, which holds every rank's random
streams; on resume rank 0 reads it and sends it to the others (no shared file system needed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfq import distributed
from dfq._progress import progress_bar
from dfq.checkpointing import StateFile, config_key, to_cpu
from dfq.checkpoints import nonfinite_names, weights_sha256
from dfq.distill.augment import flip_sparse, mix, resized_crop_flip
from dfq.distill.config import DistillConfig
from dfq.distill.inputs import EvalData
from dfq.distill.parallel import data_parallel
from dfq.distill.pool import Batch, Pool
from dfq.distill.step import EMA, Models, build_optimizer, set_lr, train_step
from dfq.distill.synth import Synthesizer
from dfq.errors import DfqError
from dfq.evaluation import batched_logits, classification_metrics

__all__ = ["DistillResult", "run_loop", "evaluate_student", "CURVE_METRICS", "CHECKPOINT_VERSION", "better",
           "out_of_patience"]

CHECKPOINT_VERSION = 1
_VOLATILE = ("checkpoint_every", "log_every", "patience")


def out_of_patience(curve: list[dict[str, Any]], best: dict[str, Any] | None, patience: int | None) -> bool:
    """Whether ``patience`` evaluations of ``curve`` came after the ``best`` one without beating it.

    >>> curve = [{"step": s} for s in (0, 100, 200, 300)]
    >>> out_of_patience(curve, {"step": 100}, 2), out_of_patience(curve, {"step": 100}, 3)
    (True, False)
    >>> out_of_patience(curve, {"step": 100}, None), out_of_patience(curve, None, 1)
    (False, False)
    """
    if patience is None or best is None:
        return False
    return sum(1 for rec in curve if rec["step"] > best["step"]) >= patience


@dataclass
class DistillResult:
    """What a run produced.

    Attributes:
        student: the trained student (its moving average when ``ema`` is on), eval mode.
        curve: one record per evaluation: ``step``, ``lr``, ``loss`` (mean since the last record),
            ``images`` (training images seen), ``seconds`` (wall time so far, resumes summed),
            ``top1``, ``agreement``, ``kl``, ``num_nonfinite``.
        best: ``{"step", "metrics", "state"}`` of the best evaluation (None without evaluation data).
        steps: steps the run made (fewer than ``config.steps`` when ``stopped_early``);
            ``resumed_from``: the step a checkpoint resumed at (None: fresh).
        pool_size: training images at the end; ``seconds``: wall time, resumes summed.
        stopped_early: ``config.patience`` evaluations in a row did not beat the best one.
    """

    student: nn.Module
    curve: list[dict[str, Any]]
    best: dict[str, Any] | None
    steps: int
    resumed_from: int | None
    pool_size: int
    seconds: float
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


CURVE_METRICS = ("top1", "agreement", "kl", "num_nonfinite")
"""What every evaluation of the curve records."""


def evaluate_student(student: nn.Module, data: EvalData, keys: tuple[str, ...] = CURVE_METRICS) -> dict[str, Any]:
    """The ``keys`` of :func:`dfq.evaluation.classification_metrics` (default: top-1, agreement and KL to
    the teacher) of ``student`` on ``data``, in eval mode for the call."""
    logits = batched_logits(student, data.images, data.batch_size)
    m = classification_metrics(logits, data.labels, reference_logits=data.teacher_logits)
    return {k: m[k] for k in keys}


def better(metrics: dict[str, Any], best: dict[str, Any] | None, select: str) -> bool:
    """Whether ``metrics`` beat the best so far by ``select`` (``kl`` lower; ``top1``/``agreement`` higher;
    ``top1`` falls back to agreement without labels).

    >>> better({"kl": 0.1}, {"kl": 0.2}, "kl"), better({"top1": None, "agreement": 0.5}, None, "top1")
    (True, True)
    """
    key = select if select != "top1" or metrics.get("top1") is not None else "agreement"
    value = metrics.get(key)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return False
    if best is None or best.get(key) is None:
        return True
    return value < best[key] if key == "kl" else value > best[key]


def _draw(pool: Pool, models: Models, config: DistillConfig, g: torch.Generator, device: torch.device) -> tuple[Batch, bool]:
    batch = pool.sample(config.batch_size, g)
    images = batch.images.to(device)
    if models.grid is not None and batch.keep is not None:
        images, keep = flip_sparse(images, batch.keep.to(device), g, config.flip, models.grid)
        return Batch(images, batch.labels, keep), False
    images = resized_crop_flip(images, g, config.crop_scale, flip=config.flip)
    images, mixed = mix(images, g, config.mixup)
    return Batch(images, batch.labels, None), mixed


def _mean_over_ranks(loss: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of every rank's ``loss`` (each rank's own in one process), so all ranks stop together on NaN."""
    if world == 1:
        return loss
    return distributed.all_reduce_sum(loss.detach().float().cpu().clone()) / world


def _cpu_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def run_loop(
    models: Models,
    config: DistillConfig,
    pool: Pool,
    *,
    synthesizer: Synthesizer | None = None,
    eval_data: EvalData | None = None,
    checkpoint: str | Path | None = None,
    identity: dict[str, Any] | None = None,
    before_step: Callable[[], None] | None = None,
    train_mode: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "distill",
) -> DistillResult:
    """Train ``models.student`` for ``config.steps`` steps; resume from ``checkpoint`` when it exists.

    Args:
        models: teacher (frozen by the caller), student, input conversion, sparse grid.
        config: the run's settings.
        pool: training images (filled by the caller for a static run; may start empty with a synthesizer).
        synthesizer: adds a batch at steps ``0, kd_steps, 2·kd_steps, ...`` (alternating loop).
        eval_data: evaluation images, labels and teacher logits (None: no curve, no best).
        checkpoint: the resumable state file (None: not resumable).
        identity: extra entries a resumed checkpoint must match (data digests, loop kind, ...).
        before_step: called before every step (QAT's range re-derivation).
        train_mode: the student's mode during steps (BatchNorm batch statistics, dropout).
        device: where the batches go (the models are there already).
        progress: show a progress bar.
        desc: the bar's label.

    Raises:
        DfqError: the loss or the weights became NaN/infinite, an empty pool, or a checkpoint of another run.
    """
    device = torch.device(device)
    if config.patience is not None and eval_data is None and distributed.is_main():
        raise DfqError("patience (early stopping) needs evaluation data to score the student on")
    student = models.student
    optimizer = build_optimizer(student, config)
    ema = EMA(student, config.ema) if config.ema > 0 else None
    world, main = distributed.world_size(), distributed.is_main()
    g = torch.Generator().manual_seed(distributed.rank_seed(config.seed))  # one process: config.seed
    file = None
    if checkpoint is not None:
        ident = {
            "model_sha256": weights_sha256(models.teacher),
            "method": "distill",
            "config": config_key(config, _VOLATILE),
            "seed": config.seed,
            "student_sha256": weights_sha256(student),
            **(identity or {}),
        }
        if world > 1:
            ident["world_size"] = world
        file = StateFile(Path(checkpoint), "distill", CHECKPOINT_VERSION, ident)
    step, curve, best = 0, [], None
    loss_sum, loss_count, seconds_before = 0.0, 0, 0.0
    with distributed.agree():
        state = file.load() if file is not None and main else None
    state = distributed.broadcast_object(state) if world > 1 else state
    resumed_from = None
    if state is not None:
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        streams = state["ranks"][distributed.rank()] if world > 1 else state
        g.set_state(streams["generator"])
        torch.set_rng_state(streams["torch_rng"])
        pool.load_state_dict(state["pool"])
        if synthesizer is not None:
            synthesizer.load_state_dict(state["synth"])
        step, curve, best = int(state["step"]), list(state["curve"]), state["best"]
        loss_sum, loss_count = float(state["loss_sum"]), int(state["loss_count"])
        seconds_before = float(state["seconds"])
        resumed_from = step
    evaluated = ema.module if ema is not None else student
    t0 = time.perf_counter()

    def stop_now() -> bool:  # rank 0 holds the curve; the others follow its decision
        if config.patience is None:
            return False
        stop = out_of_patience(curve, best, config.patience) if main else False
        return bool(distributed.broadcast_object(stop)) if world > 1 else stop

    def seconds() -> float:
        return round(seconds_before + time.perf_counter() - t0, 3)

    def record(loss: float | None) -> None:
        nonlocal best
        rec: dict[str, Any] = {"step": step, "lr": config.lr * config.lr_at(max(step - 1, 0)), "loss": loss,
                               "images": step * config.batch_size, "seconds": seconds()}  # fmt: skip
        if eval_data is not None:
            metrics = evaluate_student(evaluated, eval_data)
            rec.update(metrics)
            if better(metrics, best["metrics"] if best else None, config.select):
                best = {"step": step, "metrics": metrics, "state": _cpu_copy(evaluated)}
        curve.append(rec)
        bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in rec.items()
                         if k in ("loss", "top1", "kl") and v is not None}, refresh=False)  # fmt: skip

    def save() -> None:
        streams = {"generator": g.get_state(), "torch_rng": torch.get_rng_state()}
        ranks = distributed.all_gather_object(streams) if world > 1 else None
        if not main:
            return
        bad = nonfinite_names(student.state_dict().items())
        if bad:
            raise DfqError(f"the student's weights became NaN or infinite at step {step} ({bad[0]}); lower the learning rate")
        payload = {
            "step": step, "student": student.state_dict(), "optimizer": optimizer.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None, "generator": g.get_state(),
            "torch_rng": torch.get_rng_state(), "pool": pool.state_dict(),
            "synth": synthesizer.state_dict() if synthesizer is not None else None, "curve": curve,
            "best": best, "loss_sum": loss_sum, "loss_count": loss_count, "seconds": seconds(),
        }  # fmt: skip
        if ranks is not None:
            payload["ranks"] = ranks
        file.save(to_cpu(payload))

    bar = progress_bar(total=config.steps, initial=step, progress=progress and main, desc=desc, dynamic_ncols=True)
    pending: list[torch.Tensor] = []
    train_models = data_parallel(models, str(device))
    try:
        if state is None and eval_data is not None:
            record(None)
        distributed.fault_point("distill-start")
        if world > 1:
            distributed.barrier()  # rank 0 may have evaluated step 0: the others wait here, not in DDP's all-reduce
        stopped = stop_now()  # a resumed run that had run out of patience
        while step < config.steps and not stopped:
            if synthesizer is not None and pool.rounds <= step // config.kd_steps:
                pool.add(synthesizer(pool.rounds, student))
            set_lr(optimizer, config.lr_at(step))
            if before_step is not None:
                before_step()
            student.train(train_mode)
            batch, mixed = _draw(pool, models, config, g, device)
            pending.append(train_step(train_models, batch, optimizer, config, mixed))
            if ema is not None:
                ema.update(student)
            step += 1
            bar.update(1)
            at_eval = step % config.eval_every == 0 or step == config.steps
            at_save = file is not None and (step % config.save_every == 0 or step == config.steps)
            if step % config.log_every == 0 or at_eval or at_save:
                mean = float(_mean_over_ranks(torch.stack(pending).float().mean(), world))
                if not math.isfinite(mean):
                    kept = " (the last checkpoint is kept)" if file is not None else ""
                    raise DfqError(f"the distillation loss became {mean} near step {step}; lower the learning rate{kept}")
                loss_sum, loss_count = loss_sum + mean * len(pending), loss_count + len(pending)
                pending.clear()
                bar.set_postfix_str(f"loss={mean:.4g}", refresh=False)
            if at_eval:
                record(loss_sum / loss_count if loss_count else None)
                loss_sum, loss_count = 0.0, 0
                stopped = stop_now()
                at_save = at_save or (stopped and file is not None)  # the state that stopped, so a resume stays stopped
            if at_save:
                save()
            if world > 1 and (at_eval or at_save):
                distributed.barrier()  # the others wait here, not inside DDP's next all-reduce, while rank 0 works
            distributed.fault_point(f"distill-step-{step}")
    finally:
        bar.close()
        student.eval()
    if stopped and main and progress:
        print(f"{desc}: stopped early at step {step}: {config.patience} evaluations without a better "
              f"{config.select} than step {best['step'] if best else 0}'s", flush=True)
    return DistillResult(evaluated.eval(), curve, best, step, resumed_from, len(pool), seconds(), stopped_early=stopped)
