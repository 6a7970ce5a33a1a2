"""``dfq eval`` as one call: top-1/top-5 of a float model, or of a run against its own float weights.

A run is evaluated with the backend that runs it: ``torch`` (the fake-quant model), ``onnxruntime``
(``RUN/model.qdq.onnx``) or ``tensorrt`` (``RUN/model.plan``) — :data:`BACKENDS`. Its FP reference
is the run's own float weights with every quantizer off, so no second model is loaded. The report of
a quantized model against its float reference is built in one place, :func:`pair_report`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfq.devices import check_device
from dfq.errors import DfqError
from dfq.evaluation import Predictor, TorchPredictor, evaluate

__all__ = [
    "BACKENDS", "check_eval_options", "evaluate_folder", "evaluate_pair", "float_reference", "folder_loader", "pair_report",
]  # fmt: skip


def _torch_backend(run: Path, net: nn.Module, device: torch.device) -> Predictor:
    return TorchPredictor(net, device)


def _ort_backend(run: Path, net: nn.Module, device: torch.device) -> Predictor:
    from dfq.export.runtime import ort_predictor
    from dfq.jobs.export import QDQ_ONNX

    path = _exported(run, QDQ_ONNX, "onnx")
    return ort_predictor(path, providers=["CUDAExecutionProvider"] if device.type == "cuda" else None)


def _trt_backend(run: Path, net: nn.Module, device: torch.device) -> Predictor:
    from dfq.export.runtime import TrtPredictor
    from dfq.jobs.export import PLAN

    return TrtPredictor(_exported(run, PLAN, "trt"))


BACKENDS: dict[str, Callable[[Path, nn.Module, torch.device], Predictor]] = {
    "torch": _torch_backend,
    "onnxruntime": _ort_backend,
    "tensorrt": _trt_backend,
}
"""How a run's quantized model is executed for evaluation."""


def _exported(run: Path, name: str, fmt: str) -> Path:
    path = run / name
    if not path.is_file():
        raise DfqError(f"{path} does not exist; run `dfq export {run} --format {fmt}` first")
    return path


class _FloatView:
    """Predictor running a fake-quant model with every quantizer off (its exact float reference)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model
        self.inner = TorchPredictor(model, device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from dfq.quant.calibrate import quantizers_off

        with quantizers_off(self.model):
            return self.inner(images)


def float_reference(recipe: dict[str, Any], net: nn.Module, device: torch.device) -> Predictor:
    """The FP reference of a run: its own weights with the quantizers off, except after data-free QAT or
    block reconstruction (the weights moved), where it is the float model the run was calibrated from
    (recipe ``model``)."""
    from dfq.runs import recipe_float_model

    moved = "distill" in recipe or bool(recipe.get("reconstruct"))
    teacher = recipe_float_model(recipe) if moved else None
    if teacher is None:
        return _FloatView(net, device)
    return TorchPredictor(teacher.to(device), device)


def pair_report(metrics: dict[str, Any]) -> dict[str, Any]:
    """The report entries of :func:`dfq.evaluation.evaluate` run with an FP reference."""
    return {
        "fp": metrics["reference"],
        "quant": {k: metrics[k] for k in ("top1", "top5", "num_nonfinite")},
        "agreement": metrics["agreement"],
        "kl": metrics["kl"],
        "num_eval_images": metrics["num_images"],
    }


def check_eval_options(
    folder: str | None, limit: int | None, *, folder_flag: str = "--eval-folder", limit_flag: str = "--eval-images"
) -> None:
    """Refuse an evaluation folder and image cap that cannot give figures, before any work.

    An empty path would mean the current directory, and a cap below 1 evaluates nothing (no KL).

    Raises:
        DfqError: an empty or missing folder, a cap below 1; the message names the option.
    """
    if limit is not None and limit < 1:
        raise DfqError(f"{limit_flag} must be at least 1, got {limit}")
    if folder is None:
        return
    if not str(folder).strip():
        raise DfqError(f"{folder_flag} is empty; name an ImageNet-style <wnid>/<image> folder")
    if not Path(folder).is_dir():
        raise DfqError(f"{folder_flag} {folder} is not a directory")


def folder_loader(folder: str, cfg: dict[str, Any], batch_size: int, limit: int | None):  # noqa: ANN202
    """Unshuffled ``(images, labels)`` batches of an ImageNet-style folder preprocessed with ``cfg``
    (labels from the WordNet-id folder names), the first ``limit`` images in sorted order."""
    from dfq.data import labelled_imagenet_folder, make_loader
    from dfq.models import eval_transform

    if not Path(folder).is_dir():
        raise DfqError(f"evaluation folder {folder} is not a directory")
    dataset = labelled_imagenet_folder(folder, eval_transform(cfg))
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    return make_loader(dataset, batch_size=batch_size)


def evaluate_pair(
    quant: Predictor | nn.Module,
    fp: Predictor | nn.Module,
    folder: str,
    cfg: dict[str, Any],
    *,
    batch_size: int = 64,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a quantized predictor against its FP reference on an image folder (:func:`pair_report`);
    modules run on their own device (:func:`dfq.evaluation.evaluate`)."""
    return pair_report(evaluate(quant, folder_loader(folder, cfg, batch_size, limit), reference=fp, progress=progress))


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

    With ``run``: ``quant`` and ``fp`` top-1/top-5, ``agreement`` and ``kl``. With ``model``: ``fp``
    top-1/top-5 only. ``backend`` (:data:`BACKENDS`) runs the quantized model; with ``onnxruntime`` the
    report's ``onnxruntime`` entry holds the active providers and ``qdq_fused``
    (:func:`dfq.export.runtime.ort_predictor`).

    Raises:
        DfqError: both or neither of run/model, a missing or empty folder, a limit below 1, a missing
            export, an unknown backend, an unavailable device.
    """
    from dfq.models import data_config, load_model
    from dfq.runs import load, read_recipe

    if (run is None) == (model is None):
        raise DfqError("give either a run directory or --model NAME")
    if backend not in BACKENDS:
        raise DfqError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend != "torch" and run is None:
        raise DfqError(f"--backend {backend} evaluates a run directory's export; give RUN")
    check_eval_options(data, limit, folder_flag="--data", limit_flag="--limit")  # before loading a model or a run
    dev = torch.device(check_device(device))
    if run is None:
        net = load_model(str(model), checkpoint=checkpoint, pretrained=pretrained).to(dev)
        m = evaluate(TorchPredictor(net, dev), folder_loader(data, data_config(net), batch_size, limit), progress=progress)
        fp = {k: m[k] for k in ("top1", "top5", "num_nonfinite")}
        return {"model": model, "fp": fp, "num_eval_images": m["num_images"]}
    recipe = read_recipe(run)
    cfg = dict(recipe["data_config"])
    net = load(run, device=dev)
    quant = BACKENDS[backend](Path(run), net, dev)
    reference = float_reference(recipe, net, dev)
    report = evaluate_pair(quant, reference, data, cfg, batch_size=batch_size,
                           limit=limit, progress=progress)  # fmt: skip
    out = {"run": str(run), "backend": backend, **report}
    if backend == "onnxruntime":  # which kernels ran: on x86 without VNNI the Q/DQ nodes run unfused
        out["onnxruntime"] = {"providers": quant.providers, "qdq_fused": quant.qdq_fused}  # type: ignore[attr-defined]
    return out
