"""Activation/weight range calibrators, installed as ``dfq.calibrators``.

Each calibrator implements the three-method protocol of :mod:`dfq.calibrators.base`
(``collect(x)``, ``compute_range()``, ``reset()``): tensors in, range out, no model walking.
Algorithms are registered by name; ``get_calibrator(name, **kwargs)`` builds one.
"""

if __name__ != "dfq.calibrators":
    raise ImportError(
        f"this package must be imported as 'dfq.calibrators', not {__name__!r} "
        "(use `from dfq.calibrators import ...`)"
    )

# Importing the algorithm modules registers them.
from dfq.calibrators import entropy, minmax, mse, percentile  # noqa: E402,F401
from dfq.calibrators.base import (  # noqa: E402
    CALIBRATORS,
    Calibrator,
    calibrator_names,
    get_calibrator,
    register_calibrator,
)

__all__ = ["CALIBRATORS", "Calibrator", "calibrator_names", "get_calibrator", "register_calibrator"]
