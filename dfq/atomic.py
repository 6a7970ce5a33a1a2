"""Atomic file writes: a file appears complete or not at all.

Every file dfq writes goes through :func:`atomic_write`: the content is written to a unique
temporary file in the target's folder (same filesystem), flushed, and moved over the target with
``os.replace``, which is atomic on POSIX and Windows. An interrupted write leaves the old file (or
none) and no temporary behind. Folders that must appear complete (run directories, calibration sets)
are assembled the same way one level up (:func:`dfq.runs.run_directory`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_text", "write_json"]


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move it into place.

    Args:
        path: the final file; its folder must exist.
        write: writes the whole content to the path it is given (e.g. ``lambda p: torch.save(obj, p)``).

    Returns:
        ``path``.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> write_text(d / "a.txt", "hello").read_text(), sorted(p.name for p in d.iterdir())
    ('hello', ['a.txt'])
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only; a file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data: Mapping[str, Any] | list[Any]) -> Path:
    """Write ``data`` as indented JSON (with a final newline) atomically."""
    return write_text(path, json.dumps(data, indent=2) + "\n")
