"""``dfq calibrate`` as one call: model -> calibration set -> fake-quant -> report -> run directory.

:func:`run_calibrate` takes a :class:`CalibrateRequest` (and, for models that are not timm names,
the float ``nn.Module``); :func:`quant_config_from_options` turns the CLI's scheme and calibrator
options into a :class:`dfq.config.QuantConfig`. The run directory (:mod:`dfq.runs`) appears only when
complete; an inversion checkpoint of this run (``OUT.ckpt``, continued with ``resume``, as ``dfq invert``
does) is removed only after that.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from dfq._progress import progress_bar, show_progress
from dfq.calibrators import calibrator_names
from dfq.config import TARGETS, BiasCorrection, QuantConfig, preset
from dfq.data import CalibrationSet
from dfq.devices import check_device
from dfq.errors import DfqError
from dfq.jobs.evaluate import check_eval_options, evaluate_pair
from dfq.jobs.model import check_set_matches, check_sites, load_job_model
from dfq.jobs.plan import (
    DEFAULT_HOLDOUT,
    HOLDOUT_DIR,
    analysis_record,
    estimate,
    image_digests,
    mixed_precision_record,
    plan_mixed_precision,
    split_holdout,
    widths_config,
    write_analysis,
)
from dfq.jobs.sources import CalibrationSource, SourceKind, plan_source, resolve_source
from dfq.preview import model_patch_size, save_preview
from dfq.quant.reconstruct import ReconstructConfig, reconstruct
from dfq.quant.variants import calibrated_copy

__all__ = ["CalibrateRequest", "run_calibrate", "inversion_checkpoint", "reconstruct_checkpoint", "quant_config_from_options", "calibration_forward_loop", "TARGETS"]



@dataclass(frozen=True)
class CalibrateRequest:
    """Everything ``dfq calibrate`` needs.

    Attributes:
        out: run directory to create.
        config: quantization recipe (``dfq.config.preset(...)`` or a variant).
        source: where the calibration images come from.
        model, checkpoint, pretrained: the float model (timm name or alias; a label only when the
            module is passed to :func:`run_calibrate`).
        dense_calibration: forward every token of a sparse (SMI) set (default; measured closer to FP
            than the kept tokens alone: BENCHMARKS.md) instead of only the kept ones (the SMI paper's
            recipe).
        num_images, seed: size and seed of the calibration set.
        eval_folder: ImageNet-style ``<wnid>/<image>`` folder for accuracy, agreement and KL.
        eval_images: evaluate on at most this many images (None = all; at least 1).
        batch_size: batch size of calibration and evaluation forwards.
        device: ``cpu`` | ``cuda`` (None: cuda when available).
        data_overrides: preprocessing overrides (``mean``, ``std``, ``crop_pct``, ...).
        overwrite: replace an existing run directory (only one dfq wrote).
        resume: continue an interrupted inversion from its checkpoint, ``OUT.ckpt`` beside the run
            (``--set checkpoint_path=...`` elsewhere), as ``dfq invert --resume`` does; without it an
            existing checkpoint is an error. Removed once the run directory is complete.
        progress: progress bars.
        reconstruct: block reconstruction after calibration (:func:`dfq.quant.reconstruct.reconstruct`)
            on the calibration images (all tokens), resumable from ``OUT.reconstruct.ckpt`` (removed
            once the run directory is complete); None: calibration alone.
        holdout: images held out of calibration for the data-free estimate (report ``estimate``) and
            mixed precision: made or drawn beside the ``num_images`` of an inversion or folder, the
            last ones of a saved set; saved in ``RUN/holdout``. None: :data:`DEFAULT_HOLDOUT` without
            an evaluation folder (skipped when a saved set is too small), 0 with one.
        holdout_set: a saved set to use as the held-out images instead (e.g. images of a better
            source than the calibration one; never the calibration set itself).
        weight_bits_budget: mixed precision: per-layer weight widths (the scheme's width or 8) chosen
            greedily on the held-out weight sensitivity so the mean weight width stays within this budget.
    """

    out: str
    config: QuantConfig
    source: CalibrationSource
    model: str | None = None
    checkpoint: str | None = None
    pretrained: bool = True
    dense_calibration: bool = True
    num_images: int = 32
    seed: int = 0
    eval_folder: str | None = None
    eval_images: int | None = None
    batch_size: int = 32
    device: str | None = None
    data_overrides: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    resume: bool = False
    progress: bool = True
    reconstruct: ReconstructConfig | None = None
    holdout: int | None = None
    holdout_set: str | None = None
    weight_bits_budget: float | None = None

    @property
    def holdout_images(self) -> int:
        """Held-out images to split off the calibration source (0 with ``holdout_set``)."""
        if self.holdout_set is not None:
            return 0
        if self.holdout is not None:
            return self.holdout
        return 0 if self.eval_folder is not None else DEFAULT_HOLDOUT

    def __post_init__(self) -> None:
        if self.holdout is not None and self.holdout < 0:
            raise DfqError("--holdout must not be negative")
        if self.holdout_set is not None and not Path(self.holdout_set).is_dir():
            raise DfqError(f"--holdout-set {self.holdout_set} is not a directory")
        if self.weight_bits_budget is not None:
            low = self.config.weight.num_bits
            if low >= 8:
                raise DfqError(
                    f"--weight-bits-budget mixes {low}-bit and 8-bit weights; choose a scheme with weights below 8 bits (e.g. w4a8)"
                )
            if not low <= self.weight_bits_budget <= 8:
                raise DfqError(
                    f"--weight-bits-budget must lie in [{low}, 8] for {low}-bit weights, got {self.weight_bits_budget:g}"
                )
            if self.holdout_set is None and self.holdout_images == 0:
                raise DfqError(
                    "--weight-bits-budget measures sensitivity on held-out images: pass --holdout N (N >= 1) or --holdout-set DIR"
                )
        if self.num_images < 1:
            raise DfqError("--num-images must be at least 1")
        if self.resume and self.source.kind is not SourceKind.INVERSION:
            raise DfqError("--resume continues an interrupted inversion; it needs --inversion METHOD")
        if self.batch_size < 1:
            raise DfqError("--batch-size must be at least 1")
        check_eval_options(self.eval_folder, self.eval_images)


def quant_config_from_options(
    scheme: str = "w8a8",
    numerics: str = "trt",
    calibrator: str = "minmax",
    site_calibrators: tuple[str, ...] = (),
    weight_calibrator: str | None = None,
    sites: str | None = None,
    no_head: bool = False,
    target: str = "trt",
    bias_correction: BiasCorrection | str = BiasCorrection.AUTO,
) -> QuantConfig:
    """The CLI's quantization options as a config: the preset, then each option applied to it.

    >>> quant_config_from_options("w4a8", target="ort").name
    'w4a8-ort'

    Raises:
        DfqError: an unknown scheme, calibrator, site or target.
    """
    try:
        config = preset(scheme, numerics)
        changes: dict[str, Any] = {
            "act": dataclasses.replace(config.act, calibrator=calibrator),
            "bias_correction": bias_correction,
        }
        if site_calibrators:
            pairs = dict(config.site_calibrators)
            for item in site_calibrators:
                site, sep, name = item.partition("=")
                if not sep or name not in calibrator_names():
                    raise DfqError(f"--site-calibrator expects SITE=NAME with NAME in {', '.join(calibrator_names())}")
                pairs[site.strip()] = name
            changes["site_calibrators"] = tuple(pairs.items())
        if weight_calibrator:
            changes["weight"] = dataclasses.replace(config.weight, calibrator=weight_calibrator)
        if sites is not None:
            changes["act_sites"] = frozenset(s.strip() for s in sites.split(",") if s.strip())
        if no_head:
            changes["quantize_head"] = False
        config = dataclasses.replace(config, **changes)
    except DfqError:
        raise
    except (ValueError, TypeError) as e:  # the config validates by raising: a bad option, said in one line
        raise DfqError(str(e)) from None
    if target not in TARGETS:
        raise DfqError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    return TARGETS[target](config)


def calibration_forward_loop(
    calib: CalibrationSet, batch_size: int, device: str, progress: bool = True, dense: bool = False
) -> Callable[[nn.Module], None]:
    """A ``forward_loop`` over a calibration set.

    Sets that carry kept-token ids (SMI) forward only the kept tokens, the SMI paper's recipe
    (section 4.3), unless ``dense=True`` (what :class:`CalibrateRequest` asks for by default), which
    forwards every token.
    """

    def loop(model: nn.Module) -> None:
        from dfq.vit import forward_kept

        batches = list(calib.batches(batch_size))
        for images, keep in progress_bar(batches, progress=progress, desc="calibrate", leave=False):
            images = images.to(device)
            forward_kept(model, images, None if keep is None or dense else keep.to(device))

    return loop


@contextmanager
def _timer(timings: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    timings[key] = round(time.perf_counter() - t0, 3)


def run_calibrate(request: CalibrateRequest, model: nn.Module | None = None) -> dict[str, Any]:
    """Build, calibrate, evaluate and save a fake-quant model; return the report.

    Args:
        request: the job.
        model: the float model, when it is not a timm name (``request.model`` then only labels reports).

    Returns:
        The report also written to ``RUN/report.json``.

    Raises:
        DfqError: bad input (missing folders, unknown model, existing run directory, ...).
    """
    from dfq.runs import claim_output

    device = check_device(request.device)
    with claim_output(request.out, request.overwrite):  # before a set is read or made, not after
        return _calibrate(request, model, device)


def _calibrate(request: CalibrateRequest, model: nn.Module | None, device: str) -> dict[str, Any]:
    from dfq.evaluation import batched_logits
    from dfq.runs import (
        CALIBRATION_DIR,
        RECIPE,
        run_directory,
        save_quant_state,
        versions,
        write_json,
        write_report,
    )

    timings: dict[str, float] = {}
    made = request.source.kind is not SourceKind.SET  # an inversion or a folder draws the held-out images too
    extra = request.holdout_images if made else 0
    plan = plan_source(request.source, num_images=request.num_images + extra, seed=request.seed,
                       checkpoint_path=inversion_checkpoint(request.out), resume=request.resume)  # fmt: skip
    held_saved = CalibrationSet.load(request.holdout_set) if request.holdout_set is not None else None
    with run_directory(request.out, overwrite=request.overwrite) as run:
        with _timer(timings, "load_model"):
            job_model = load_job_model(
                request.model, request.checkpoint, request.pretrained, device, model, request.data_overrides
            )
        cfg = job_model.data_cfg
        check_sites(request.config, job_model.module)  # before a long inversion, not after it
        if held_saved is not None:  # before a long inversion, not after it
            check_set_matches(held_saved, job_model.identity, str(request.holdout_set))
        with _timer(timings, "calibration_data"):
            resolved = resolve_source(plan, job_model, device=device, progress=request.progress)
        explicit = request.holdout is not None or request.weight_bits_budget is not None
        calib, held = split_holdout(resolved.calib, request.holdout_images, required=made or explicit)
        held_source = _describe(request.source)
        if held_saved is not None:
            if image_digests(held_saved.images) & image_digests(calib.images):
                raise DfqError(
                    f"--holdout-set {request.holdout_set} holds calibration images; hold out other images"
                )
            held, held_source = held_saved, f"set {request.holdout_set}"
        fp_held = (
            None
            if held is None
            else batched_logits(job_model.module, held.images.to(device), request.batch_size)
        )
        config = request.config
        with _timer(timings, "quantize_and_calibrate"):
            loop = calibration_forward_loop(calib, request.batch_size, device, request.progress,
                                            request.dense_calibration)  # fmt: skip
            qmodel = calibrated_copy(job_model.module, config, loop)
        mixed = None
        if request.weight_bits_budget is not None and held is not None and fp_held is not None:
            with _timer(timings, "mixed_precision"):
                uniform = config

                def build(widths: dict[str, int]) -> nn.Module:
                    return calibrated_copy(job_model.module, widths_config(uniform, widths), loop)

                widths, qmodel, baseline, rows, tried = plan_mixed_precision(
                    qmodel, fp_held, held, request.weight_bits_budget, build, request.batch_size, request.progress
                )
                config = widths_config(uniform, widths)
            mixed = mixed_precision_record(widths, rows, request.weight_bits_budget, uniform.weight.num_bits)
            mixed["uniform_kl"] = baseline
            mixed["plans"] = tried
        units = None
        if request.reconstruct is not None:
            with _timer(timings, "reconstruct"):
                units = reconstruct(qmodel, calib.images.to(device), request.reconstruct,
                                    checkpoint=reconstruct_checkpoint(request.out), progress=show_progress(request.progress))  # fmt: skip
        recipe = {
            "model": job_model.identity,
            "quant": config.to_dict(),
            "calibration": {
                **request.source.describe(),
                "sparse": calib.keep_index is not None and not request.dense_calibration,
                "num_images": len(calib),
                "seed": request.seed,
            },
            "reconstruct": None if request.reconstruct is None else dataclasses.asdict(request.reconstruct),
            "data_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
            "versions": versions(),
        }
        write_json(run / RECIPE, recipe)
        calib.save(run / CALIBRATION_DIR)
        if held is not None:
            held.save(run / HOLDOUT_DIR)
        preview = run / CALIBRATION_DIR / "preview.png"
        save_preview(calib, preview, cfg["mean"], cfg["std"], patch=model_patch_size(job_model.module))
        save_quant_state(run, recipe, qmodel)
        report: dict[str, Any] = {"model": recipe["model"], "quant_config": recipe["quant"], "calibration": recipe["calibration"]}
        if units is not None:
            report["reconstruct"] = {"config": recipe["reconstruct"], "units": [dataclasses.asdict(u) for u in units]}
        if mixed is not None:
            report["mixed_precision"] = mixed
            write_analysis(run, analysis_record(mixed["uniform_kl"], rows, {"source": held_source, "count": len(held),
                                                                             "model": "uniform " + request.config.name}))  # fmt: skip
        if held is not None and fp_held is not None:
            report["estimate"] = estimate(qmodel, fp_held, held, held_source, request.batch_size)
        elif request.eval_folder is None:
            why = ("--holdout 0" if request.holdout == 0 else
                   f"the set has {len(calib)} images, too few to hold {request.holdout_images} out")  # fmt: skip
            report["estimate"] = {"skipped": f"{why}; pass --holdout N, --holdout-set DIR or --eval-folder DIR"}
        if request.eval_folder is not None:
            with _timer(timings, "evaluate"):
                report.update(evaluate_pair(qmodel, job_model.module, request.eval_folder, cfg,
                                            batch_size=request.batch_size, limit=request.eval_images,
                                            progress=request.progress))  # fmt: skip
        report["timings"] = timings
        write_report(run, report)
    resolved.done()
    if request.reconstruct is not None:
        reconstruct_checkpoint(request.out).unlink(missing_ok=True)
    return report


def _describe(source: CalibrationSource) -> str:
    """A short name of a calibration source for the estimate (``smi``, ``folder DIR``, ``set DIR``)."""
    if source.kind is SourceKind.INVERSION:
        return str(source.method)
    return f"{source.kind.value} {source.path}"


def inversion_checkpoint(out: str | Path) -> str:
    """Where the inversion of run ``out`` keeps its resumable state: ``OUT.ckpt`` beside it, as ``dfq invert``."""
    return f"{str(out).rstrip('/')}.ckpt"


def reconstruct_checkpoint(out: str | Path) -> Path:
    """Where the reconstruction of run ``out`` keeps its resumable state: ``OUT.reconstruct.ckpt`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".reconstruct.ckpt")
