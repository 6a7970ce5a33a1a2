"""Run directories: every artifact next to the recipe that made it, written atomically.

Layout of ``RUN/``::

    recipe.json        model name/checkpoint (+ sha256), quant config, calibration source, seed, versions
    quant_state.pt     {"recipe": ..., "state_dict": ...}: rebuilds the calibrated model (``dfq.load``)
    calibration/       the calibration set (calibration.safetensors + calibration.json)
    report.json        figures for pipelines (fp/quant top-1/top-5, agreement, kl, timings)
    report.md          the same for people

A job assembles the directory aside and renames it into place when complete, holding ``RUN.lock``
meanwhile (:mod:`dfq.outputs`; its names are re-exported here).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfq import atomic
from dfq.checkpoints import check_finite
from dfq.config import QuantConfig
from dfq.errors import DfqError
from dfq.outputs import (
    RECIPE,
    check_output,
    check_writable,
    claim_output,
    is_run_dir,
    lock_path,
    remove_stale_partials,
    run_directory,
)

__all__ = [
    "RECIPE",
    "QUANT_STATE",
    "REPORT_JSON",
    "REPORT_MD",
    "CALIBRATION_DIR",
    "run_directory",
    "claim_output",
    "lock_path",
    "remove_stale_partials",
    "check_output",
    "check_writable",
    "is_run_dir",
    "write_json",
    "save_quant_state",
    "read_recipe",
    "recipe_float_model",
    "load",
    "versions",
    "write_report",
]

QUANT_STATE = "quant_state.pt"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CALIBRATION_DIR = "calibration"


def versions() -> dict[str, str]:
    """Versions that determine the numbers in a report."""
    import timm

    from dfq import __version__

    return {
        "dfq": __version__,
        "torch": str(torch.__version__),
        "timm": str(timm.__version__),
        "python": platform.python_version(),
    }



def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (:func:`dfq.atomic.write_json`)."""
    atomic.write_json(path, data)


def save_quant_state(run: Path, recipe: Mapping[str, Any], model: nn.Module) -> None:
    """Save the recipe and the full (float weights + quantizer ranges) state dict."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic.atomic_write(run / QUANT_STATE, lambda tmp: torch.save({"recipe": dict(recipe), "state_dict": state}, tmp))


def read_recipe(run: str | Path) -> dict[str, Any]:
    path = Path(run) / RECIPE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DfqError(f"{run} is not a dfq run directory (no {RECIPE})") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DfqError(f"cannot read {path}: {e}") from None


def recipe_float_model(recipe: Mapping[str, Any]) -> nn.Module | None:
    """The float model a run was calibrated from, as its recipe names it (the timm model with its
    checkpoint or hub weights); None when the run was made from a model built in Python."""
    from dfq.models import load_model

    spec = recipe.get("model") or {}
    if spec.get("source") != "timm" or not spec.get("name"):
        return None
    return load_model(spec["name"], checkpoint=spec.get("checkpoint"), pretrained=bool(spec.get("pretrained")),
                      **spec.get("kwargs", {}))  # fmt: skip


def load(run: str | Path, model: nn.Module | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the calibrated fake-quant model of a run directory.

    Args:
        run: the run directory.
        model: the float architecture, for models built by the caller (not timm names); its weights
            are replaced by the run's. None rebuilds the timm model named in the recipe.
        device: where to put the model.

    Returns:
        The quantized model in eval mode, with every range loaded.
    """
    from dfq.models import load_model
    from dfq.quant.transform import quantize_

    path = Path(run) / QUANT_STATE
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DfqError(f"{run} has no {QUANT_STATE}; was the run completed?") from None
    except Exception as e:  # corrupt file: pickle/zip errors of many kinds
        raise DfqError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    recipe = blob["recipe"]
    check_finite(blob["state_dict"].items(), f"{path}", "the run is corrupt; calibrate it again")
    if model is None:
        name = recipe["model"].get("name")
        if recipe["model"].get("source") != "timm" or not name:
            raise DfqError(f"{run} was made from a model built in Python; pass model=<the float architecture>")
        model = load_model(name, pretrained=False, **recipe["model"].get("kwargs", {}))
    quantize_(model, QuantConfig.from_dict(recipe["quant"]))
    missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    if missing or unexpected:
        raise DfqError(
            f"{run} does not match this architecture: {len(missing)} missing key(s) (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    return model.to(device).eval()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "—" if v is None else str(v)


def _overrides(quant: Mapping[str, Any]) -> str:
    sites = quant.get("site_calibrators") or {}
    return f" ({', '.join(f'{k}: {v}' for k, v in sites.items())})" if sites else ""


def write_report(run: Path, report: Mapping[str, Any]) -> None:
    """Write ``report.json`` and a human-readable ``report.md``."""
    write_json(run / REPORT_JSON, report)
    lines = [f"# dfq report: {report.get('model', {}).get('name') or 'model'}", ""]
    if "fp" in report:
        lines += ["| model | top-1 | top-5 |", "|---|---|---|"]
        for key in ("fp", "quant"):
            r = report[key]
            lines.append(f"| {key} | {_fmt(r.get('top1'))} | {_fmt(r.get('top5'))} |")
        lines += [
            "",
            f"- top-1 agreement with FP: {_fmt(report.get('agreement'))}",
            f"- mean KL(FP ‖ quant): {_fmt(report.get('kl'))}",
            f"- eval images: {report.get('num_eval_images')}",
        ]
        lines += [
            f"- **{key} gave NaN/inf logits on {report[key]['num_nonfinite']} images** (counted wrong; KL undefined)"
            for key in ("fp", "quant")
            if report[key].get("num_nonfinite")
        ]
    q = report.get("quant_config", {})
    cal = report.get("calibration", {})
    lines += [
        "",
        f"- scheme: {q.get('name')} ({q.get('numerics')} numerics); activation calibrator "
        f"{q.get('act', {}).get('calibrator')}{_overrides(q)}, weight calibrator "
        f"{q.get('weight', {}).get('calibrator')}",
        f"- calibration data: {cal.get('method') or cal.get('source')} ({cal.get('num_images')} images"
        + (f" from {cal['path']})" if cal.get("path") else ")"),
    ]
    if report.get("timings"):
        lines += ["", "| step | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in report["timings"].items()]
    atomic.write_text(run / REPORT_MD, "\n".join(lines) + "\n")
