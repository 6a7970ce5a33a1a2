"""The job layer: one module per job, each a typed request -> a run (or set) directory.

* :mod:`dfq.jobs.invert`: :class:`InvertRequest` -> a calibration set directory (``dfq invert``);
* :mod:`dfq.jobs.calibrate`: :class:`CalibrateRequest` -> a run directory (``dfq calibrate``);
* :mod:`dfq.jobs.evaluate`: :func:`evaluate_folder` (``dfq eval``);
* :mod:`dfq.jobs.export`: :func:`export_run` (``dfq export``);
* :mod:`dfq.jobs.sources`: :class:`CalibrationSource`, resolved once for every job;
* :mod:`dfq.jobs.model`: the model of a job, loaded once with its identity.

The jobs are the only users of :mod:`dfq.runs`; the library packages below them (inversion, quant,
export) never import a job or the run directory code. The CLI (:mod:`dfq.cli`) parses options into
a request and makes one call.
"""

from __future__ import annotations

from dfq._lazy import lazy_getattr

_LAZY = {
    "CalibrateRequest": "dfq.jobs.calibrate",
    "quant_config_from_options": "dfq.jobs.calibrate",
    "run_calibrate": "dfq.jobs.calibrate",
    "evaluate_folder": "dfq.jobs.evaluate",
    "export_run": "dfq.jobs.export",
    "InvertRequest": "dfq.jobs.invert",
    "run_invert": "dfq.jobs.invert",
    "CalibrationSource": "dfq.jobs.sources",
    "SourceKind": "dfq.jobs.sources",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())  # so dfq.jobs.export (the CLI's choices) stays cheap
