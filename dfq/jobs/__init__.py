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

from dfq.jobs.calibrate import CalibrateRequest, quant_config_from_options, run_calibrate
from dfq.jobs.evaluate import evaluate_folder
from dfq.jobs.export import export_run
from dfq.jobs.invert import InvertRequest, run_invert
from dfq.jobs.sources import CalibrationSource, SourceKind

__all__ = [
    "CalibrateRequest",
    "CalibrationSource",
    "InvertRequest",
    "SourceKind",
    "evaluate_folder",
    "export_run",
    "quant_config_from_options",
    "run_calibrate",
    "run_invert",
]
