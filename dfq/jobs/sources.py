"""Where calibration images come from: one type, one resolver, one provenance record.

A :class:`CalibrationSource` names a folder of real images, a set written earlier by ``dfq invert``,
or an inversion method with its settings. :func:`resolve_source` turns it into a
:class:`dfq.data.CalibrationSet` for a :class:`~dfq.jobs.model.JobModel`, the same way for the CLI,
the Python API and every job: the model's data config (overrides included) reaches the inverter, the
set's provenance carries the source, the method's full config, the seed, the model identity,
library versions and timings, and a reused set is checked against the model. Inversion checkpoints
follow one rule: an existing checkpoint file is continued only when the caller asked to resume.
"""

from __future__ import annotations

import dataclasses
import glob
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

import torch

from dfq import distributed
from dfq.checkpointing import VOLATILE_FIELDS
from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.inversion.overrides import parse_overrides
from dfq.inversion.registry import check_family, get_inverter
from dfq.jobs.model import JobModel, check_set_matches
from dfq.memory import check_images_fit
from dfq.models import model_family

__all__ = ["SourceKind", "CalibrationSource", "SourcePlan", "Resolved", "plan_source", "resolve_source"]


class SourceKind(str, Enum):
    """The three kinds of calibration source."""

    FOLDER = "folder"  # real images, drawn and preprocessed for the model
    SET = "set"  # a set written by ``dfq invert`` (checked against the model)
    INVERSION = "inversion"  # made from the model by a registered method


@dataclass(frozen=True)
class CalibrationSource:
    """A calibration source (see :func:`resolve_source`).

    Attributes:
        kind: folder, set or inversion.
        path: the image folder or the set directory.
        method: the inversion method (registry name); ``folder`` for a folder source.
        settings: ``KEY=VALUE`` strings for the method's config (the CLI's ``--set``).
        options: typed values for the method's config (Python API).

    >>> CalibrationSource.inversion("noise").describe()
    {'source': 'inversion', 'method': 'noise'}
    """

    kind: SourceKind
    path: str | None = None
    method: str | None = None
    settings: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = SourceKind(self.kind)
        object.__setattr__(self, "kind", kind)
        if kind is SourceKind.INVERSION:
            get_inverter(self.method or "")  # an unknown name fails with the list of valid ones
        elif not self.path:
            raise DfqError(f"a {kind.value} source needs a path")
        elif not Path(self.path).is_dir():
            raise DfqError(f"{'--calib-folder' if kind is SourceKind.FOLDER else '--calib-set'} {self.path} is not a directory")
        if kind is SourceKind.FOLDER:
            object.__setattr__(self, "method", "folder")

    @classmethod
    def folder(cls, path: str, **options: Any) -> CalibrationSource:
        """Real images from ``path`` (options: ``mean``, ``std``, ``crop_pct``, ... overrides)."""
        return cls(SourceKind.FOLDER, path=str(path), options=options)

    @classmethod
    def saved_set(cls, path: str) -> CalibrationSource:
        """A set written by ``dfq invert`` (or :func:`dfq.jobs.invert.run_invert`)."""
        return cls(SourceKind.SET, path=str(path))

    @classmethod
    def inversion(cls, method: str, *settings: str, **options: Any) -> CalibrationSource:
        """Images made from the model by ``method`` with ``KEY=VALUE`` settings and typed options."""
        return cls(SourceKind.INVERSION, method=method, settings=tuple(settings), options=options)

    @classmethod
    def from_options(
        cls, calib_folder: str | None, calib_set: str | None, inversion: str | None, settings: tuple[str, ...] = ()
    ) -> CalibrationSource:
        """The CLI's three mutually exclusive options as one source.

        Raises:
            DfqError: not exactly one of them, or ``--set`` without ``--inversion``.
        """
        if sum(x is not None for x in (calib_folder, calib_set, inversion)) != 1:
            raise DfqError("give exactly one calibration source: --calib-folder DIR, --inversion METHOD or --calib-set DIR")
        if settings and inversion is None:
            raise DfqError("--set KEY=VALUE configures an inversion method; it needs --inversion")
        if calib_folder is not None:
            return cls.folder(calib_folder)
        if calib_set is not None:
            return cls.saved_set(calib_set)
        return cls.inversion(str(inversion), *settings)

    def describe(self) -> dict[str, Any]:
        """The source as a JSON-able record (recipes, reports)."""
        record: dict[str, Any] = {"source": self.kind.value}
        if self.path is not None:
            record["path"] = self.path
        if self.kind is SourceKind.INVERSION:
            record["method"] = self.method
        if self.settings:
            record["settings"] = list(self.settings)
        if self.options:
            record["options"] = _jsonable(dict(self.options))
        return record


class Resolved(NamedTuple):
    """A resolved source: the set, and the checkpoint file the inversion left (None: none).

    Delete the checkpoint only once the set is safely written (:meth:`done`)."""

    calib: CalibrationSet
    checkpoint: Path | None

    def done(self) -> None:
        """The set is written: remove this run's checkpoint (each rank its own, under torchrun)."""
        if self.checkpoint is not None:
            self.checkpoint.unlink(missing_ok=True)


@dataclass(frozen=True)
class SourcePlan:
    """A source checked before any model is loaded: a saved set read from disk, or an inversion with
    its config built (settings parsed, checkpoint rule applied). See :func:`plan_source`."""

    source: CalibrationSource
    saved: CalibrationSet | None = None
    config: Any = None
    checkpoint: Path | None = None


def plan_source(
    source: CalibrationSource,
    *,
    num_images: int,
    seed: int,
    checkpoint_path: str | None = None,
    resume: bool = False,
) -> SourcePlan:
    """Check a source before the model is loaded: bad settings, a checkpoint conflict or a corrupt set
    fail at once, not after a model download.

    Args:
        source: what to draw or make.
        num_images, seed: size and seed of the set (a saved set keeps its own).
        checkpoint_path: default checkpoint file of a checkpointing inversion (``--set
            checkpoint_path=...`` wins); None: no checkpoint unless set.
        resume: continue an existing checkpoint; without it an existing one is an error.

    Raises:
        DfqError: an unknown or invalid setting, a checkpoint conflict, an unreadable set.
    """
    if source.kind is SourceKind.SET:
        return SourcePlan(source, saved=CalibrationSet.load(source.path or ""))
    if num_images < 1:
        raise DfqError("--num-images must be at least 1")
    method = str(source.method)
    entry = get_inverter(method)
    values = parse_overrides(entry.config_cls, source.settings)
    values.update(source.options)
    for key, option in _JOB_OPTIONS.items():  # the job's own options, not the method's settings
        if key in values:
            raise DfqError(f"--set {key}=...: {key} is the job's own option; use {option} instead")
    if source.kind is SourceKind.FOLDER:
        values["path"] = source.path
    ckpt = _checkpoint_file(entry.config_cls, values, checkpoint_path, resume, method)
    try:
        config = entry.make_config(num_images=num_images, seed=seed, **values)
    except (TypeError, ValueError) as e:
        raise DfqError(f"invalid {method} settings: {e}") from None
    return SourcePlan(source, config=config, checkpoint=ckpt)


def resolve_source(plan: SourcePlan, job_model: JobModel, *, device: str, progress: bool = True) -> Resolved:
    """The calibration set of a planned source for ``job_model`` (and the inversion's checkpoint file).

    A saved set is checked against the model. An inversion's provenance holds the inverter's own facts
    plus ``source``, ``method``, ``config`` (the one the inverter resolved for the model family,
    without the checkpoint and logging fields), ``seed``, ``model`` (the identity), ``versions``,
    ``device`` and ``wall_seconds`` (this call); ``seconds`` stays the inverter's, which counts every
    resumed run that led to the set. The checkpoint file is returned, not removed: the caller removes
    it once the set is written (:meth:`Resolved.done`).

    Raises:
        DfqError: a set made for another model, a method for another model family, a set larger than
            the host memory (:func:`dfq.memory.check_images_fit`, before the method starts), a
            non-finite loss.
    """
    from dfq.runs import versions

    source = plan.source
    if plan.saved is not None:
        check_set_matches(plan.saved, job_model.identity, str(source.path))
        return Resolved(plan.saved, None)
    entry = get_inverter(str(source.method))
    check_family(entry, job_model.module, model_family(job_model.module))
    check_images_fit(plan.config.num_images, job_model.data_cfg["input_size"],
                     batch_size=int(getattr(plan.config, "batch_size", 0) or 0))  # fmt: skip
    t0 = time.perf_counter()
    calib = entry.fn(job_model.module, plan.config, data_cfg=job_model.data_cfg, device=device, progress=progress)
    resolved = dict(calib.provenance.get("config") or dataclasses.asdict(plan.config))
    asked = plan.config.num_images
    if len(calib) != asked:  # a folder with fewer images than asked: the manifest says what was used
        resolved["num_images"] = len(calib)
    provenance = {
        **calib.provenance,
        **source.describe(),
        "method": source.method,
        "config": _jsonable({k: v for k, v in resolved.items() if k not in VOLATILE_FIELDS}),
        "seed": plan.config.seed,
        "model": job_model.identity,
        "versions": versions(),
        "device": device,
        "wall_seconds": round(time.perf_counter() - t0, 2),
    }
    if len(calib) != asked:
        provenance["num_images_requested"] = asked
    provenance.setdefault("seconds", provenance["wall_seconds"])
    return Resolved(dataclasses.replace(calib, provenance=provenance), plan.checkpoint)


_JOB_OPTIONS = {"num_images": "--num-images", "seed": "--seed"}
"""Config fields every inversion takes from the job itself (``plan_source``'s arguments)."""


def _checkpoint_file(
    config_cls: type, values: dict[str, Any], default: str | None, resume: bool, method: str
) -> Path | None:
    """The checkpoint file this inversion uses (set in ``values``), after the resume rule."""
    if "checkpoint_path" not in {f.name for f in dataclasses.fields(config_cls)}:
        if resume:
            raise DfqError(f"inversion {method!r} does not checkpoint; --resume is not available for it")
        return None
    path = values.setdefault("checkpoint_path", default)
    if path is None:
        return None
    if not str(path).strip() or Path(path).is_dir():
        raise DfqError(f"checkpoint_path {path!r} must name a file (or be none)")
    mine = distributed.shard_path(path)  # under torchrun: this rank's PATH.rankR
    if mine.exists() and not resume:
        raise DfqError(f"{mine} holds an interrupted run: continue it by running the same command with --resume, or delete it")
    _check_launch_matches(Path(path), mine)
    return mine


def _check_launch_matches(path: Path, mine: Path) -> None:
    """Refuse to start beside the checkpoint of a run launched otherwise (one process vs torchrun)."""
    if distributed.world_size() > 1:
        if path.exists():
            raise DfqError(f"{path} holds an interrupted one-process run: resume it without torchrun, or delete it")
        return
    ranks = sorted(p for p in path.parent.glob(f"{glob.escape(path.name)}.rank*")
                   if p.name[len(path.name) + len(".rank"):].isdigit())  # .rankN only, not a copy beside them
    if ranks and not mine.exists():
        raise DfqError(
            f"{ranks[0]} holds an interrupted run of {len(ranks)} torchrun processes: resume it with torchrun "
            f"--nproc-per-node {len(ranks)} and --resume, or delete the {path.name}.rank* files"
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Enum):
        return value.value
    return value
