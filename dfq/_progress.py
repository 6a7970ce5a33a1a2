"""Progress bars: one rule for every tqdm bar dfq draws.

A bar is drawn when the caller asks for one (``progress=True``) and stderr is a terminal (or a notebook,
where tqdm draws a widget). Piped into a log, tqdm's ``\\r`` redraws would fill it with half-lines, so
the bar stays off there. ``DFQ_PROGRESS=1`` forces bars on (e.g. to watch a piped run), ``DFQ_PROGRESS=0``
forces them off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["ENV", "show_progress", "progress_bar"]

ENV = "DFQ_PROGRESS"
"""The environment variable that forces bars on (``1``) or off (``0``)."""


def _in_notebook() -> bool:
    """Whether tqdm.auto draws notebook widgets (stderr is no terminal there, yet a bar is wanted)."""
    import tqdm.auto  # noqa: F401  (imports autonotebook with its notebook warning silenced)
    import tqdm.autonotebook

    return "notebook" in tqdm.autonotebook.tqdm.__module__


def show_progress(progress: bool = True) -> bool:
    """Whether a bar the caller asked for (``progress``) is drawn: see the module docstring.

    >>> show_progress(False)
    False
    """
    if not progress:
        return False
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        if isatty is not None and isatty():
            return True
    except ValueError:  # a closed stream
        return False
    return _in_notebook()


def progress_bar(iterable: Iterable[Any] | None = None, *, progress: bool = True, **kwargs: Any) -> Any:
    """A ``tqdm.auto`` bar over ``iterable`` (or with ``total=``) on stderr, drawn per :func:`show_progress`."""
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, disable=not show_progress(progress), **kwargs)
