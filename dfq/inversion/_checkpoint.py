"""Resumable checkpoints of the pixel-space inversion loop (:func:`dfq.inversion._loop.run_batches`).

One file, replaced atomically (temporary name, then rename), holds the finished batches, the batch in
progress (images, Adam state, best-so-far, the method's state such as SMI's kept tokens) and the next
``(batch, iteration)`` to run. A checkpoint is accepted only by a run of the same model weights
(:func:`dfq.checkpoints.weights_sha256`), method, settings (seed included; the checkpoint fields
aside) and target labels.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from dfq.atomic import atomic_write
from dfq.errors import DfqError

if TYPE_CHECKING:
    from dfq.inversion._loop import LoopSpec

__all__ = [
    "CHECKPOINT_FORMAT",
    "live_state",
    "load_checkpoint",
    "restore_live",
    "resume_point",
    "to_cpu",
    "to_device",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = "dfq.inversion.checkpoint"
_CHECKPOINT_VERSION = 2  # 2: records the model weights' sha256


def _config_key(config: Any) -> dict[str, Any]:
    """The config as a dict without the checkpoint fields (which may change across a resume)."""
    d = asdict(config)
    for key in ("checkpoint_path", "checkpoint_every", "log_every"):
        d.pop(key, None)
    return d


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_cpu(v) for v in value)
    return value


def to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def load_checkpoint(spec: LoopSpec, labels: Tensor) -> dict[str, Any] | None:
    if spec.checkpoint_path is None or not Path(spec.checkpoint_path).exists():
        return None
    ckpt = torch.load(spec.checkpoint_path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DfqError(
            f"{spec.checkpoint_path} is not a dfq inversion checkpoint; delete it or pick another path"
        )
    if isinstance(ckpt.get("version"), int) and ckpt["version"] > _CHECKPOINT_VERSION:
        raise DfqError(f"{spec.checkpoint_path} was written by a newer dfq (format {ckpt['version']}); upgrade dfq")
    if ckpt.get("version") != _CHECKPOINT_VERSION:
        raise DfqError(
            f"{spec.checkpoint_path} is a version-{ckpt.get('version')} inversion checkpoint, which does not "
            f"record the model weights it belongs to (this dfq writes version {_CHECKPOINT_VERSION}); delete it"
        )
    if ckpt.get("model_sha256") != spec.model_sha256:
        raise DfqError(
            f"checkpoint {spec.checkpoint_path} was written with other model weights "
            f"(sha256 {str(ckpt.get('model_sha256'))[:12]}…, these are {str(spec.model_sha256)[:12]}…); "
            "resume with the checkpoint file it was made from, or delete it"
        )
    if ckpt.get("method") != spec.method or ckpt.get("config") != _config_key(spec.config):
        raise DfqError(
            f"checkpoint {spec.checkpoint_path} was written by a different {ckpt.get('method')!r} run "
            "(method or settings differ); delete it or pick another checkpoint_path"
        )
    if not torch.equal(ckpt["labels"], labels):
        raise DfqError(
            f"checkpoint {spec.checkpoint_path} targets other labels (different model?); delete it"
        )
    return ckpt


Done = tuple[list[Tensor], list[dict[str, Any]], list[float], list[float]]
"""Finished batches: best images, method states, best losses, final losses (one entry per batch)."""


def resume_point(ckpt: dict[str, Any] | None) -> tuple[Done, tuple[int, int], float]:
    """What a loaded checkpoint (or None: a fresh run) restarts from: the finished batches, the next
    ``(batch, iteration)`` and the optimisation seconds already spent."""
    if ckpt is None:
        return ([], [], [], []), (0, 0), 0.0
    done = (list(ckpt["done_images"]), list(ckpt["done_states"]), list(ckpt["best_losses"]), list(ckpt["final_losses"]))
    # "seconds" is absent from checkpoints written before the time was recorded
    return done, (int(ckpt["batch"]), int(ckpt["iteration"])), float(ckpt.get("seconds", 0.0))


def live_state(
    x: Tensor, optimizer: torch.optim.Optimizer, state: dict[str, Any], best: Tensor, best_loss: Tensor
) -> dict:
    """The in-progress part of a checkpoint (the batch being optimised)."""
    return {
        "images": x.detach().cpu(),
        "adam": to_cpu(optimizer.state_dict()),
        "state": to_cpu(state),
        "best_images": best.cpu(),
        "best_loss": best_loss.cpu(),
    }


def restore_live(
    live: dict[str, Any], x: Tensor, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[dict[str, Any], Tensor, Tensor]:
    """Put a checkpoint's batch in progress back: images into ``x``, the Adam state into ``optimizer``;
    return the method state, best images and best loss on ``device``."""
    with torch.no_grad():
        x.copy_(live["images"].to(device))
    optimizer.load_state_dict(to_device(live["adam"], device))
    return to_device(live["state"], device), live["best_images"].to(device), live["best_loss"].to(device)


def write_checkpoint(
    path: Path,
    spec: LoopSpec,
    labels: Tensor,
    batch: int,
    iteration: int,
    live: dict[str, Any] | None,
    done: Done,
    seconds: float = 0.0,
) -> None:
    """Save the resumable state atomically: ``(batch, iteration)`` is the next step to run;
    ``seconds`` is the optimisation time spent so far, over every run that led to this state."""
    done_images, done_states, best_losses, final_losses = done
    _save_atomic(
        {
            "format": CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "method": spec.method,
            "model_sha256": spec.model_sha256,
            "config": _config_key(spec.config),
            "labels": labels,
            "batch": batch,
            "iteration": iteration,
            "live": live,
            "done_images": done_images,
            "done_states": done_states,
            "best_losses": best_losses,
            "final_losses": final_losses,
            "seconds": seconds,
            "rng": {"seed": spec.seed, "scheme": "fresh CPU generator per (seed, batch, iteration)"},
        },
        path,
    )
