"""Knowledge distillation on synthetic data: students, linear probes, and data-free QAT.

One training step (:mod:`dfq.distill.step`: ``T²·KL`` plus optional cross-entropy) shared by three
loops (:mod:`dfq.distill.loop`): static on a calibration set, alternating with synthesis
(:mod:`dfq.distill.synth`), and data-free QAT of the fake-quant model (:mod:`dfq.distill.qat`).
:func:`distill` is the Python API; ``dfq distill`` the command (:mod:`dfq.jobs.distill`).
"""

from __future__ import annotations

from dfq._lazy import lazy_getattr

_LAZY = {
    "distill": "dfq.distill.api",
    "linear_probe": "dfq.distill.api",
    "sparse_grid": "dfq.distill.api",
    "DistillConfig": "dfq.distill.config",
    "qat_defaults": "dfq.distill.config",
    "probe_defaults": "dfq.distill.config",
    "EvalData": "dfq.distill.inputs",
    "InputSpace": "dfq.distill.inputs",
    "convert": "dfq.distill.inputs",
    "DistillResult": "dfq.distill.loop",
    "evaluate_student": "dfq.distill.loop",
    "CMIRounds": "dfq.distill.synth",
    "InverterRounds": "dfq.distill.synth",
    "make_synthesizer": "dfq.distill.synth",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY, globals())  # the CLI reads dfq.distill.config without the loops
