"""The calibrate job as one API call: model -> calibration set -> fake-quant -> report -> run directory.

``dfq calibrate`` is a thin layer over :func:`run_calibration`; pipelines call it directly with a
:class:`CalibrationJob` (and, for models that are not timm names, the float ``nn.Module``).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from dfq.checkpoints import checkpoint_sha256
from dfq.config import QuantConfig
from dfq.data import CalibrationSet, labelled_imagenet_folder, make_loader
from dfq.errors import DfqError
from dfq.evaluation import TorchPredictor, evaluate
from dfq.models import data_config, eval_transform, load_model, model_family
from dfq.preview import model_patch_size, save_preview
from dfq.quant.calibrate import calibrate
from dfq.quant.transform import quantize_
from dfq.runs import (
    CALIBRATION_DIR,
    RECIPE,
    run_directory,
    save_quant_state,
    versions,
    write_json,
    write_report,
)

__all__ = ["CalibrationJob", "run_calibration", "evaluate_folder", "calibration_forward_loop", "default_device"]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class CalibrationJob:
    """Everything ``dfq calibrate`` needs.

    Attributes:
        out: run directory to create.
        config: quantization recipe (``dfq.config.preset(...)`` or a variant).
        model: timm name or alias; None when the float module is passed to :func:`run_calibration`.
        checkpoint: local weights file.
        pretrained: download timm's weights when no checkpoint is given (off = random init).
        calib_folder: real images for calibration.
        inversion: registered inversion method (``noise``, ``smi``, ...).
        calib_set: a calibration set written by ``dfq invert`` (checked against the model).
            Exactly one of ``calib_folder``, ``inversion``, ``calib_set`` is given.
        inversion_args: extra fields for the inversion config (typed values, or ``KEY=VALUE``
            strings under the key ``"settings"``).
        dense_calibration: forward every token of a sparse (SMI) set instead of only the kept ones.
        num_images: calibration images.
        eval_folder: ImageNet-style ``<wnid>/<image>`` folder for accuracy, agreement and KL.
        eval_images: evaluate on at most this many images (None = all).
        batch_size: batch size of calibration and evaluation forwards.
        seed: seed of image selection and inversion.
        device: ``cpu`` | ``cuda``.
        data_overrides: preprocessing overrides (``mean``, ``std``, ``crop_pct``, ...).
        overwrite: replace an existing run directory.
        progress: show progress bars.
    """

    out: str
    config: QuantConfig
    model: str | None = None
    checkpoint: str | None = None
    pretrained: bool = True
    calib_folder: str | None = None
    inversion: str | None = None
    inversion_args: dict[str, Any] = field(default_factory=dict)
    calib_set: str | None = None
    dense_calibration: bool = False
    num_images: int = 32
    eval_folder: str | None = None
    eval_images: int | None = None
    batch_size: int = 32
    seed: int = 0
    device: str = field(default_factory=default_device)
    data_overrides: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.calib_folder, self.inversion, self.calib_set)) != 1:
            raise DfqError(
                "give exactly one calibration source: --calib-folder DIR, --inversion METHOD or --calib-set DIR"
            )
        if self.num_images < 1:
            raise DfqError("--num-images must be at least 1")
        if self.batch_size < 1:
            raise DfqError("--batch-size must be at least 1")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise DfqError("--device cuda requested but CUDA is not available; use --device cpu")
        for name in ("calib_folder", "eval_folder"):
            folder = getattr(self, name)
            if folder is not None and not Path(folder).is_dir():
                raise DfqError(f"{name.replace('_', '-')} {folder} is not a directory")


def calibration_forward_loop(  # noqa: ANN201
    calib: CalibrationSet, batch_size: int, device: str, progress: bool = True, dense: bool = False
):
    """A ``forward_loop`` over a calibration set.

    Sets that carry kept-token ids (SMI) forward only the kept tokens, the SMI paper's recipe
    (section 4.3); ``dense=True`` forwards all tokens instead, for comparison.
    """

    def loop(model: nn.Module) -> None:
        from dfq.vit import forward_tokens

        batches = list(calib.batches(batch_size))
        for batch in tqdm(batches, desc="calibrate", disable=not progress, leave=False):
            images, keep = batch
            images = images.to(device)
            if keep is None or dense:
                model(images)
            else:
                forward_tokens(model, images, keep.to(device))

    return loop


@contextmanager
def _timer(timings: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    timings[key] = round(time.perf_counter() - t0, 3)


def _calibration_set(job: CalibrationJob, model: nn.Module, cfg: dict[str, Any]) -> CalibrationSet:
    from dfq.inversion.job import check_set_matches, model_manifest

    manifest = model_manifest(job.model, job.checkpoint, model, cfg)
    if job.calib_set is not None:
        calib = CalibrationSet.load(job.calib_set)
        check_set_matches(calib, manifest, job.calib_set)
        return calib
    if job.calib_folder is not None:
        from dfq.inversion.folder import PREPROCESSING_KEYS, FolderConfig, folder_images

        folder = FolderConfig(job.calib_folder, job.num_images, job.seed, **{k: cfg[k] for k in PREPROCESSING_KEYS})
        return folder_images(model, folder, input_size=tuple(cfg["input_size"]))
    from dfq.inversion import invert
    from dfq.inversion.overrides import parse_overrides
    from dfq.inversion.registry import get_inverter

    args = dict(job.inversion_args)
    args.update(parse_overrides(get_inverter(job.inversion).config_cls, args.pop("settings", ())))
    ckpt = Path(args["checkpoint_path"]) if args.get("checkpoint_path") else None
    if ckpt is not None and ckpt.exists():  # calibrate has no --resume: never continue a stale run silently
        raise DfqError(f"{ckpt} holds an interrupted inversion: finish it with `dfq invert ... --resume`, or delete it")
    calib = invert(
        model, job.inversion, device=job.device, progress=job.progress, num_images=job.num_images, seed=job.seed, **args
    )
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)  # this run's own checkpoint: the set is complete
    return dataclasses.replace(calib, provenance={**calib.provenance, "model": manifest})


def run_calibration(job: CalibrationJob, model: nn.Module | None = None) -> dict[str, Any]:
    """Build, calibrate, evaluate and save a fake-quant model; return the report.

    Args:
        job: the job description.
        model: the float model, when it is not a timm name (``job.model`` then only labels reports).

    Returns:
        The report dict also written to ``RUN/report.json``.

    Raises:
        DfqError: bad input (missing folders, unknown model, existing run directory, ...).
    """
    timings: dict[str, float] = {}
    source = "timm" if model is None else "python"
    with run_directory(job.out, overwrite=job.overwrite) as run:
        with _timer(timings, "load_model"):
            if model is None:
                if job.model is None:
                    raise DfqError("give --model NAME (or pass the float model to run_calibration)")
                model = load_model(job.model, checkpoint=job.checkpoint, pretrained=job.pretrained)
            model = model.to(job.device).eval()
        cfg = data_config(model, **job.data_overrides)
        with _timer(timings, "calibration_data"):
            calib = _calibration_set(job, model, cfg)
        with _timer(timings, "quantize_and_calibrate"):
            qmodel = quantize_(copy.deepcopy(model), job.config)
            loop = calibration_forward_loop(calib, job.batch_size, job.device, job.progress, job.dense_calibration)
            calibrate(qmodel, loop)

        recipe = {
            "model": {
                "name": job.model,
                "source": source,
                "family": model_family(model),
                "class": type(model).__name__,
                "checkpoint": str(job.checkpoint) if job.checkpoint else None,
                "checkpoint_sha256": checkpoint_sha256(job.checkpoint) if job.checkpoint else None,
                "pretrained": job.pretrained if job.checkpoint is None else None,
            },
            "quant": job.config.to_dict(),
            "calibration": {
                "source": job.inversion or ("folder" if job.calib_folder else "set"),
                "folder": job.calib_folder or job.calib_set,
                "sparse": calib.keep_index is not None and not job.dense_calibration,
                "num_images": len(calib),
                "seed": job.seed,
                "inversion_args": dict(job.inversion_args),
            },
            "data_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
            "versions": versions(),
        }
        write_json(run / RECIPE, recipe)
        calib.save(run / CALIBRATION_DIR)
        save_preview(calib, run / CALIBRATION_DIR / "preview.png", cfg["mean"], cfg["std"], patch=model_patch_size(model))
        save_quant_state(run, recipe, qmodel)

        report: dict[str, Any] = {
            "model": recipe["model"],
            "quant_config": recipe["quant"],
            "calibration": recipe["calibration"],
        }
        if job.eval_folder is not None:
            with _timer(timings, "evaluate"):
                report.update(_evaluate_pair(job, model, qmodel, cfg))
        report["timings"] = timings
        write_report(run, report)
    return report


def _evaluate_pair(job: CalibrationJob, fp: nn.Module, quant: nn.Module, cfg: dict[str, Any]) -> dict[str, Any]:
    dataset = labelled_imagenet_folder(job.eval_folder, eval_transform(cfg))
    if job.eval_images is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(job.eval_images, len(dataset))))
    loader = make_loader(dataset, batch_size=job.batch_size)
    device = torch.device(job.device)
    m = evaluate(TorchPredictor(quant, device), loader, reference=TorchPredictor(fp, device), progress=job.progress)
    return {
        "fp": m["reference"],
        "quant": {"top1": m["top1"], "top5": m["top5"], "num_nonfinite": m["num_nonfinite"]},
        "agreement": m["agreement"],
        "kl": m["kl"],
        "num_eval_images": m["num_images"],
    }


def _backend_predictor(run: str, backend: str, net: nn.Module, dev: torch.device):  # noqa: ANN202
    if backend == "torch":
        return TorchPredictor(net, dev)
    from dfq.export.onnx import PLAN, QDQ_ONNX  # the file names export_run writes

    name = {"onnxruntime": QDQ_ONNX, "tensorrt": PLAN}.get(backend)
    if name is None:
        raise DfqError(f"unknown backend {backend!r}; choose torch, onnxruntime or tensorrt")
    path = Path(run) / name
    if not path.is_file():
        fmt = "onnx" if backend == "onnxruntime" else "trt"
        raise DfqError(f"{path} does not exist; run `dfq export {run} --format {fmt}` first")
    if backend == "onnxruntime":
        from dfq.export.runtime import ort_predictor

        return ort_predictor(path, providers=["CUDAExecutionProvider"] if dev.type == "cuda" else None)
    from dfq.export.runtime import TrtPredictor

    return TrtPredictor(path)


class _FloatView:
    """Predictor running a fake-quant model with every quantizer off (its exact float reference)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model
        self.inner = TorchPredictor(model, device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from dfq.quant.calibrate import quantizers_off

        with quantizers_off(self.model):
            return self.inner(images)


def evaluate_folder(
    data: str,
    *,
    run: str | None = None,
    model: str | None = None,
    checkpoint: str | None = None,
    pretrained: bool = True,
    device: str | None = None,
    batch_size: int = 64,
    limit: int | None = None,
    progress: bool = True,
    backend: str = "torch",
) -> dict[str, Any]:
    """Accuracy on an ImageNet-style folder, for a run (quantized vs its float weights) or a model.

    With ``run``: ``quant`` and ``fp`` top-1/top-5, ``agreement`` and ``kl`` (the FP reference is the
    run's own float weights with quantizers off). With ``model``: ``fp`` top-1/top-5 only.
    ``backend`` runs the quantized model as torch fake-quant (``torch``), as ``RUN/model.qdq.onnx``
    in ONNX Runtime (``onnxruntime``) or as ``RUN/model.plan`` (``tensorrt``).
    """
    from dfq.runs import load, read_recipe

    if (run is None) == (model is None):
        raise DfqError("give either a run directory or --model NAME")
    if not Path(data).is_dir():
        raise DfqError(f"--data {data} is not a directory")
    device = device or default_device()
    dev = torch.device(device)
    if run is not None:
        recipe = read_recipe(run)
        net = load(run, device=device)
        cfg = dict(recipe["data_config"])
    else:
        net = load_model(model, checkpoint=checkpoint, pretrained=pretrained).to(dev)
        cfg = data_config(net)
    dataset = labelled_imagenet_folder(data, eval_transform(cfg))
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    loader = make_loader(dataset, batch_size=batch_size)
    if run is None:
        m = evaluate(TorchPredictor(net, dev), loader, progress=progress)
        fp = {"top1": m["top1"], "top5": m["top5"], "num_nonfinite": m["num_nonfinite"]}
        return {"model": model, "fp": fp, "num_eval_images": m["num_images"]}
    m = evaluate(_backend_predictor(run, backend, net, dev), loader, reference=_FloatView(net, dev), progress=progress)
    return {
        "run": str(run),
        "backend": backend,
        "fp": m["reference"],
        "quant": {"top1": m["top1"], "top5": m["top5"], "num_nonfinite": m["num_nonfinite"]},
        "agreement": m["agreement"],
        "kl": m["kl"],
        "num_eval_images": m["num_images"],
    }
