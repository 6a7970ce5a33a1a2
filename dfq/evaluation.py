"""Classification accuracy and agreement for any predictor (torch module today; ORT/TensorRT later).

This module owns evaluation: a *predictor* is any callable from a CPU float image batch
``(B, 3, H, W)`` to CPU logits ``(B, C)``, so a PyTorch module (:class:`TorchPredictor`), an ONNX
Runtime session or a TensorRT engine are evaluated by the same code. It reports ImageNet-style
top-1/top-5 accuracy and, against a reference predictor (usually the FP model), the data-free
proxies used throughout ``dfq``: top-1 *agreement* (argmax equal to the reference argmax) and the mean
KL divergence ``KL(softmax(ref) || softmax(pred))`` in nats. No paper is implemented here; top-k
follows the usual definition (Russakovsky et al., ImageNet LSVRC) with deterministic tie-breaking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dfq._progress import progress_bar

__all__ = [
    "Predictor",
    "TorchPredictor",
    "predict_logits",
    "classification_metrics",
    "per_image_kl",
    "evaluate",
    "batched_logits",
]

Predictor = Callable[[Tensor], Tensor]
"""CPU float images ``(B, 3, H, W)`` -> CPU logits ``(B, C)``."""


def _module_device(module: nn.Module) -> torch.device:
    """Device of the module's first parameter or buffer (CPU for a stateless module)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def _module_dtype(module: nn.Module) -> torch.dtype:
    """dtype of the module's first floating-point parameter (float32 when there is none)."""
    for tensor in module.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


class TorchPredictor:
    """Run an ``nn.Module`` as a :data:`Predictor`.

    Each call puts the module in eval mode (restoring its previous mode afterwards), moves the
    batch to ``device`` and the module's floating dtype, runs under ``torch.inference_mode()`` and
    returns float32 logits on the CPU.

    Args:
        module: the classifier.
        device: where to run; defaults to the module's own device.
    """

    def __init__(self, module: nn.Module, device: torch.device | str | None = None) -> None:
        self.module = module
        self.device = torch.device(device) if device is not None else _module_device(module)
        self.dtype = _module_dtype(module)

    def __call__(self, images: Tensor) -> Tensor:
        """Logits ``(B, C)`` float32 on the CPU for images ``(B, 3, H, W)``."""
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.inference_mode():
                x = images.to(self.device, dtype=self.dtype, non_blocking=True)
                return self.module(x).float().cpu()
        finally:
            self.module.train(was_training)

    def __repr__(self) -> str:
        return f"TorchPredictor({type(self.module).__name__}, device={self.device})"


def _as_predictor(predictor: Predictor | nn.Module) -> Predictor:
    """Wrap a module in :class:`TorchPredictor`; pass any other callable through."""
    return TorchPredictor(predictor) if isinstance(predictor, nn.Module) else predictor


def _split_batch(batch: Any) -> tuple[Tensor, Tensor]:
    """``(images, labels)`` from a loader batch (a 2-sequence)."""
    if not isinstance(batch, Sequence) or len(batch) != 2:
        raise ValueError("the loader must yield (images, labels) pairs")
    images, labels = batch
    return images, torch.as_tensor(labels).reshape(-1).long().cpu()


def _predict_many(
    predictors: Sequence[Predictor], loader: Iterable[Any], desc: str, progress: bool
) -> tuple[list[Tensor], Tensor]:
    """Run every predictor on each batch in one pass over ``loader``."""
    outputs: list[list[Tensor]] = [[] for _ in predictors]
    labels: list[Tensor] = []
    bar = progress_bar(loader, progress=progress, desc=desc, unit="batch")  # off when stderr is no terminal
    for batch in bar:
        images, batch_labels = _split_batch(batch)
        for out, predictor in zip(outputs, predictors, strict=True):
            logits = torch.as_tensor(predictor(images)).float().cpu()
            if logits.dim() != 2 or logits.shape[0] != batch_labels.shape[0]:
                raise ValueError(
                    f"predictor returned logits of shape {tuple(logits.shape)} for "
                    f"{batch_labels.shape[0]} images; expected (B, C)"
                )
            out.append(logits)
        labels.append(batch_labels)
    cat = [torch.cat(out) if out else torch.empty(0, 0) for out in outputs]
    return cat, torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)


def predict_logits(
    predictor: Predictor, loader: Iterable[Any], desc: str = "eval", progress: bool = True
) -> tuple[Tensor, Tensor]:
    """Logits and labels of ``predictor`` over a loader.

    Args:
        predictor: images ``(B, 3, H, W)`` -> logits ``(B, C)``.
        loader: any iterable of ``(images, labels)`` batches, e.g. a ``DataLoader``.
        desc: progress-bar label.
        progress: show a tqdm bar (it also stays off when stderr is not a terminal).

    Returns:
        ``(logits, labels)``: float32 ``(N, C)`` and int64 ``(N,)``, both on the CPU.
    """
    (logits,), labels = _predict_many([predictor], loader, desc, progress)
    return logits, labels


def _topk_correct(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """Whether each label is among the top ``k`` logits, ties broken towards the lower class index.

    The label's rank is the number of classes with a strictly larger logit plus the number of
    lower-indexed classes with an equal one (a stable descending sort); top-1 thus agrees with
    ``argmax``, which returns the first maximum.
    """
    target = logits.gather(1, labels[:, None])
    lower = torch.arange(logits.shape[1])[None, :] < labels[:, None]
    rank = (logits > target).sum(1) + ((logits == target) & lower).sum(1)
    return rank < k


def per_image_kl(reference_logits: Tensor, logits: Tensor) -> Tensor:
    """``KL(softmax(ref) || softmax(pred))`` of every row in nats, computed in float64.

    >>> per_image_kl(torch.tensor([[0.0, 0.0], [1.0, 2.0]]), torch.tensor([[0.0, 0.0], [1.0, 2.0]])).tolist()
    [0.0, 0.0]
    """
    log_p = torch.log_softmax(reference_logits.double(), dim=1)
    log_q = torch.log_softmax(logits.double(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1)


def classification_metrics(
    logits: Tensor, labels: Tensor, reference_logits: Tensor | None = None
) -> dict[str, Any]:
    """Top-1/top-5 accuracy and, given reference logits, agreement and KL divergence.

    Args:
        logits: ``(N, C)`` predictions.
        labels: ``(N,)`` class ids; samples with a negative label are unlabelled and count only
            towards ``agreement``/``kl``.
        reference_logits: ``(N, C)`` logits of the reference (e.g. the FP model) on the same images.

    Returns:
        ``top1``, ``top5`` (fractions in [0, 1], None without labelled samples), ``num_images``,
        ``num_labelled`` and ``num_nonfinite`` (images whose logits hold a NaN or an infinity: they
        count as wrong); with a reference also ``agreement`` (fraction of images whose argmax
        equals the reference argmax, both rows finite) and ``kl``, the mean over images of
        ``KL(softmax(ref) || softmax(pred))`` in nats, computed in float64 (None for no images, or
        when any row of either side is not finite). Ties in top-k are broken towards the lower class
        index.

    >>> nan = float("nan")
    >>> m = classification_metrics(torch.tensor([[nan, nan], [0.0, 1.0]]), torch.tensor([0, 1]))
    >>> m["top1"], m["num_nonfinite"]
    (0.5, 1)

    Raises:
        ValueError: mismatched shapes or labels out of range.
    """
    logits = logits.detach().cpu()
    labels = labels.detach().cpu().reshape(-1).long()
    num = labels.shape[0]
    if logits.dim() != 2 or logits.shape[0] != num:
        raise ValueError(f"logits must be (N, C) with N = {num} labels, got {tuple(logits.shape)}")
    if num and int(labels.max()) >= logits.shape[1]:
        raise ValueError(f"label {int(labels.max())} out of range for {logits.shape[1]} classes")
    labelled = labels >= 0
    num_labelled = int(labelled.sum())
    finite = torch.isfinite(logits).all(1)
    metrics: dict[str, Any] = {
        "top1": None,
        "top5": None,
        "num_images": num,
        "num_labelled": num_labelled,
        "num_nonfinite": int((~finite).sum()),
    }
    if num_labelled:
        lg, lb, ok = logits[labelled].double(), labels[labelled], finite[labelled]
        metrics["top1"] = (_topk_correct(lg, lb, 1) & ok).double().mean().item()
        metrics["top5"] = (_topk_correct(lg, lb, 5) & ok).double().mean().item()
    if reference_logits is not None:
        ref = reference_logits.detach().cpu()
        if ref.shape != logits.shape:
            raise ValueError(f"reference logits {tuple(ref.shape)} do not match logits {tuple(logits.shape)}")
        both = finite & torch.isfinite(ref).all(1)
        if num == 0:
            metrics["agreement"], metrics["kl"] = None, None
        else:
            metrics["agreement"] = ((logits.argmax(1) == ref.argmax(1)) & both).double().mean().item()
            # KL is undefined when either side of any image is not finite: None, never a number that looks fine
            metrics["kl"] = per_image_kl(ref, logits).mean().item() if bool(both.all()) else None
    return metrics


def evaluate(
    predictor: Predictor | nn.Module,
    loader: Iterable[Any],
    reference: Predictor | nn.Module | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a predictor on labelled images, optionally against a reference predictor.

    Both predictors see the same batches in a single pass over ``loader`` (so a one-shot iterator
    works and the images are decoded once).

    Args:
        predictor: a :data:`Predictor`, or an ``nn.Module`` (wrapped in :class:`TorchPredictor` on
            its own device).
        loader: iterable of ``(images, labels)`` batches; negative labels mark unlabelled images.
        reference: optional reference predictor or module (typically the FP model).
        progress: show a tqdm progress bar.

    Returns:
        ``{"top1", "top5", "num_images", "num_labelled", "num_nonfinite"}``, plus with a reference
        ``"agreement"``, ``"kl"`` and ``"reference": {"top1", "top5", "num_nonfinite"}``. See
        :func:`classification_metrics`.
    """
    predictors = [_as_predictor(predictor)]
    if reference is not None:
        predictors.append(_as_predictor(reference))
    outputs, labels = _predict_many(predictors, loader, "eval", progress)
    if reference is None:
        return classification_metrics(outputs[0], labels)
    metrics = classification_metrics(outputs[0], labels, reference_logits=outputs[1])
    ref_metrics = classification_metrics(outputs[1], labels)
    metrics["reference"] = {k: ref_metrics[k] for k in ("top1", "top5", "num_nonfinite")}
    return metrics


def batched_logits(predictor: Predictor | nn.Module, images: Tensor, batch_size: int = 50) -> Tensor:
    """Logits of a predictor or module over an image tensor already in memory, in batches.

    A module runs through :class:`TorchPredictor` (eval mode for the call, the module's device and
    floating dtype, ``torch.inference_mode()``, float32 logits on the CPU); any other predictor is
    called as it is, also under ``torch.inference_mode()``. The evaluation loops that compare many
    variants on the same images compute their inputs once and call this for every variant.

    Args:
        predictor: a :data:`Predictor` or an ``nn.Module``.
        images: ``(N, 3, H, W)`` model-input images.
        batch_size: images per call; the last batch may be smaller.

    Returns:
        float32 ``(N, C)`` logits on the CPU.

    Raises:
        ValueError: no images, ``batch_size < 1``, or a predictor returning logits of the wrong shape.

    >>> batched_logits(nn.Flatten(), torch.arange(10.0).reshape(5, 2, 1, 1), batch_size=2).tolist()
    [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(images) == 0:
        raise ValueError("no images to run")
    run = _as_predictor(predictor)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            logits = torch.as_tensor(run(batch)).float().cpu()
            if logits.dim() != 2 or logits.shape[0] != len(batch):
                raise ValueError(
                    f"predictor returned logits of shape {tuple(logits.shape)} for {len(batch)} images; expected (B, C)"
                )
            outputs.append(logits)
    return torch.cat(outputs)
