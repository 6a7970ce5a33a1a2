"""Models: timm names and aliases, local checkpoints, preprocessing, ImageNet classes, model family.

This module owns the edge where a user's model reference becomes an ``nn.Module``:

* name resolution (short aliases such as ``deit_tiny`` → ``deit_tiny_patch16_224``, any timm name,
  close-match suggestions for typos);
* local checkpoints, read by :mod:`dfq.checkpoints`;
* pretrained weights from the hub that fail *fast* when the hub cannot be reached (no 45 s of retries);
* the model's own evaluation preprocessing (timm ``resolve_data_config`` / ``create_transform``);
* the ImageNet-1k class index (timm's sorted WordNet synset list, :func:`wnid_to_index`);
* model family detection: a CLS-token ViT (for sparse inversion) or a BatchNorm CNN (for BN priors).
"""

from __future__ import annotations

import difflib
import math
import os
import socket
import threading
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from dfq.checkpoints import load_checkpoint_state, load_state_into
from dfq.errors import DfqError

ALIASES: dict[str, str] = {
    **{f"deit_{s}": f"deit_{s}_patch16_224" for s in ("tiny", "small", "base")},
    **{f"vit_{s}": f"vit_{s}_patch16_224" for s in ("tiny", "small", "base", "large")},
}
"""Short names accepted everywhere a model name is: alias → timm model name."""

ModelFamily = Literal["vit", "cnn", "other"]

_NO_HUB_HINT = "pass --checkpoint FILE (a local state_dict) or --no-pretrained (random weights)"
_PROBE_TIMEOUT_S = 1.0
_DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
"""Resize interpolations timm's evaluation transform accepts (``interpolation``)."""
CROP_MODES = ("center", "squash", "border")
"""Crop modes of timm's evaluation transform (``crop_mode``)."""


# --------------------------------------------------------------------------------------------- names
def resolve_model_name(name: str) -> str:
    """Resolve an alias or a timm model name to the timm name.

    Args:
        name: An alias from :data:`ALIASES` (case-insensitive) or any timm model name, optionally with a
            pretrained tag (``vit_base_patch16_224.augreg_in21k``).

    Returns:
        The timm model name to pass to ``timm.create_model``.

    Raises:
        DfqError: The name is neither an alias nor a timm model; the message lists close matches.
    """
    key = name.strip()
    if key.lower() in ALIASES:
        return ALIASES[key.lower()]
    if key and timm.is_model(key):
        return key
    candidates = [*ALIASES, *timm.list_models()]
    close = difflib.get_close_matches(key.lower(), candidates, n=5, cutoff=0.6)
    hint = f"did you mean: {', '.join(close)}?" if close else "see timm.list_models()"
    raise DfqError(
        f"unknown model {name!r}: {hint} (aliases: {', '.join(ALIASES)}; any timm model name works)"
    )


# ------------------------------------------------------------------------------------------ the hub
def _hub_offline() -> bool:
    """Whether the environment asks for offline hub access (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_host() -> str:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return urlparse(endpoint).hostname or "huggingface.co"


def hub_reachable(host: str | None = None, port: int = 443, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Probe the model hub with one TCP connect, DNS included, bounded by ``timeout`` seconds.

    The connect runs in a daemon thread, so a resolver that hangs cannot hold the caller.

    Args:
        host: Host to probe; default the ``HF_ENDPOINT`` host or ``huggingface.co``.
        port: TCP port.
        timeout: Upper bound on the wait, in seconds.

    Returns:
        True when a connection was established within ``timeout``.
    """
    host = host or _hub_host()
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="dfq-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _create_pretrained(resolved: str, **timm_kwargs: Any) -> nn.Module:
    """``timm.create_model(pretrained=True)`` that fails within about a second when it cannot download."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(resolved)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise DfqError(f"timm has no pretrained weights for {resolved}: {_NO_HUB_HINT}")
    if _hub_offline():
        if not cfg.hf_hub_id and not cfg.file:  # a URL download ignores HF_HUB_OFFLINE: check its cache
            cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
            if not cached.is_file():
                raise DfqError(f"pretrained weights for {resolved} are not cached and the hub is offline: {_NO_HUB_HINT}")
        try:
            return timm.create_model(resolved, pretrained=True, **timm_kwargs)
        except (OSError, RuntimeError, ValueError) as e:
            raise DfqError(
                f"pretrained weights for {resolved} are not in the local cache and the hub is offline "
                f"(HF_HUB_OFFLINE): {_NO_HUB_HINT}"
            ) from e
    if not cfg.file and not hub_reachable():
        raise DfqError(f"the model hub ({_hub_host()}) is unreachable, so {resolved} has no pretrained weights: {_NO_HUB_HINT}")
    try:
        return timm.create_model(resolved, pretrained=True, **timm_kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        raise DfqError(f"could not fetch pretrained weights for {resolved} ({type(e).__name__}): {_NO_HUB_HINT}") from e


def load_model(
    name: str,
    checkpoint: str | Path | None = None,
    pretrained: bool = True,
    *,
    strict: bool = True,
    **timm_kwargs: Any,
) -> nn.Module:
    """Build a timm model by name (or alias) and fill it with weights; returned in eval mode.

    Weights come from, in order: ``checkpoint`` (a local file; ``pretrained`` is then ignored), the hub
    when ``pretrained`` (fails within about a second when the hub cannot be reached or
    ``HF_HUB_OFFLINE`` is set and the weights are not cached), or random initialization (seeded with
    0, so the same in every process; the global RNG state is restored).

    Args:
        name: Alias (``deit_tiny``) or timm model name.
        checkpoint: Local state_dict file, see :func:`load_checkpoint_state`.
        pretrained: Download timm's pretrained weights when no checkpoint is given.
        strict: Checkpoint keys and shapes must match the model exactly.
        **timm_kwargs: Passed to ``timm.create_model`` (e.g. ``num_classes=10``).

    Returns:
        The model, in eval mode.

    Raises:
        DfqError: Unknown name, unreadable or mismatching checkpoint, or unreachable hub.

    Example:
        >>> model = load_model("test_vit", pretrained=False)
        >>> model.training
        False
    """
    resolved = resolve_model_name(name)
    if checkpoint is not None:
        state = load_checkpoint_state(checkpoint)
        model = timm.create_model(resolved, pretrained=False, **timm_kwargs)
        load_state_into(model, state, strict=strict, source=str(checkpoint))
    elif pretrained:
        model = _create_pretrained(resolved, **timm_kwargs)
    else:
        # seeded, so that a random model is the same in every process (a resumed inversion checks
        # the weights); the caller's global RNG state is left as it was
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(0)  # CPU only: torch.manual_seed would reseed CUDA too
            model = timm.create_model(resolved, pretrained=False, **timm_kwargs)
    return model.eval()


# ------------------------------------------------------------------------------------ preprocessing
def data_config(model: nn.Module, **overrides: Any) -> dict[str, Any]:
    """The model's evaluation preprocessing, from its timm ``pretrained_cfg``, with overrides.

    Args:
        model: A timm model (others get timm's ImageNet defaults).
        **overrides: Replacements for ``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``,
            ``crop_mode``; e.g. ``mean=(0.5,) * 3, std=(0.5,) * 3`` for ``x/127.5 - 1`` inputs.

    Returns:
        Dict with exactly those six keys (``input_size`` as ``(C, H, W)``, mean/std as float tuples).

    Raises:
        DfqError: An override key is not one of the six, or a value :func:`check_preprocessing` refuses.
    """
    unknown = sorted(set(overrides) - set(_DATA_CONFIG_KEYS))
    if unknown:
        raise DfqError(f"unknown preprocessing option(s) {', '.join(unknown)}; use {', '.join(_DATA_CONFIG_KEYS)}")
    check_preprocessing(overrides)
    from timm.data import resolve_data_config

    config = dict(resolve_data_config({}, model=model))
    config.update({k: v for k, v in overrides.items() if v is not None})
    size = config["input_size"]
    if isinstance(size, int):
        size = (3, size, size)
    elif len(size) == 2:
        size = (3, *size)
    config["input_size"] = tuple(int(s) for s in size)
    for key in ("mean", "std"):
        config[key] = tuple(float(v) for v in config[key])
    return {k: config.get(k) for k in _DATA_CONFIG_KEYS}


def check_preprocessing(overrides: Mapping[str, Any]) -> None:
    """Refuse preprocessing values timm would fail on late (a KeyError in the transform) or turn into
    non-finite images: ``None`` entries mean "the model's own" and pass.

    >>> check_preprocessing({"std": (0.5, 0.5, 0.5), "interpolation": "bilinear", "crop_pct": None})
    >>> check_preprocessing({"interpolation": "bogus"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dfq.errors.DfqError: interpolation 'bogus' is not one of nearest, bilinear, ...

    Raises:
        DfqError: an unknown interpolation or crop mode, a non-finite mean, a std that is not a finite
            positive number, a ``crop_pct`` outside [0.1, 1].
    """
    choices = {"interpolation": INTERPOLATIONS, "crop_mode": CROP_MODES}
    for key, valid in choices.items():
        value = overrides.get(key)
        if value is not None and value not in valid:
            raise DfqError(f"{key} {value!r} is not one of {', '.join(valid)}")
    for key in ("mean", "std"):
        value = overrides.get(key)
        if value is None:
            continue
        values = [value] if isinstance(value, int | float) else list(value)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise DfqError(f"{key} {value} must be finite numbers")
        if key == "std" and not all(v > 0 for v in values):
            raise DfqError(f"std {value} must be positive (images are divided by it)")
    crop = overrides.get("crop_pct")
    if crop is not None and not (isinstance(crop, int | float) and 0.1 <= crop <= 1):  # 0.1: resize to 10x the crop
        raise DfqError(f"crop_pct {crop} must lie in [0.1, 1]")


def eval_transform(config: Mapping[str, Any]) -> Any:
    """The evaluation transform (resize, center crop, to tensor, normalize) for a :func:`data_config`.

    Args:
        config: Output of :func:`data_config`.

    Returns:
        A callable PIL image → float tensor ``(C, H, W)`` in model-input (normalized) space.
    """
    from timm.data import create_transform

    return create_transform(**{k: config[k] for k in _DATA_CONFIG_KEYS if k in config}, is_training=False)


# --------------------------------------------------------------------------------- ImageNet classes
@lru_cache(maxsize=1)
def _synsets() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_names())


@lru_cache(maxsize=1)
def _wnid_index() -> tuple[tuple[str, int], ...]:
    return tuple((wnid, i) for i, wnid in enumerate(_synsets()))


def wnid_to_index() -> dict[str, int]:
    """WordNet id → ImageNet-1k class index (``n01440764`` → 0 … ``n15075141`` → 999)."""
    return dict(_wnid_index())


# ----------------------------------------------------------------------------------------- families
def is_cls_vit(model: nn.Module) -> bool:
    """Whether ``model`` is a timm ``VisionTransformer`` classifying from a lone CLS token.

    The rule is :func:`dfq.vit.cls_vit_problem` (one CLS prefix token, no register or distillation
    tokens, ``global_pool == "token"``), so token 0 is the CLS token and tokens 1… are patches.
    """
    from dfq.vit import cls_vit_problem

    return cls_vit_problem(model) is None


def model_family(model: nn.Module) -> ModelFamily:
    """Classify a model for the inversion methods.

    Returns:
        ``"vit"`` for a CLS-token timm ViT (see :func:`is_cls_vit`), ``"cnn"`` for any model with
        ``BatchNorm2d`` layers (BN-statistics prior applies), else ``"other"``.
    """
    if is_cls_vit(model):
        return "vit"
    if any(isinstance(m, nn.BatchNorm2d | nn.SyncBatchNorm) for m in model.modules()):
        return "cnn"
    return "other"
