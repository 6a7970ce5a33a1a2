"""Atomic file writes: a file appears complete or not at all.

Every file dfq writes goes through :func:`atomic_write`: the content is written to a unique
temporary file in the target's folder (same filesystem), flushed, and moved over the target with
``os.replace``, which is atomic on POSIX and Windows. An interrupted or failed write leaves the old
file (or none) and no temporary behind. A write that fails because the disk is full is one
:class:`~dfq.errors.DfqError` ("no space left on device writing PATH"), whatever library did the
writing (torch, safetensors and onnx each report it their own way). Folders that must appear
complete (run directories, calibration sets) are assembled the same way one level up
(:func:`dfq.outputs.run_directory`).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dfq.errors import DfqError

__all__ = ["atomic_write", "write_text", "write_json", "default_mode", "is_out_of_space", "out_of_space_error"]

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""The errors of a full disk or an exhausted quota."""
_NEARLY_FULL = 1 << 20
"""Free bytes below which a failed write counts as a full disk (a writer that hides the OSError)."""


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move it into place.

    Args:
        path: the final file; its folder must exist.
        write: writes the whole content to the path it is given (e.g. ``lambda p: torch.save(obj, p)``).

    Returns:
        ``path``.

    Raises:
        DfqError: the disk is full (or the quota spent); the temporary is removed and ``path`` untouched.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> write_text(d / "a.txt", "hello").read_text(), sorted(p.name for p in d.iterdir())
    ('hello', ['a.txt'])
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        if is_out_of_space(e):
            raise out_of_space_error(path) from e
        raise
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, default_mode())  # mkstemp makes it owner-only; a file gets the usual mode
        os.replace(tmp, path)
    except BaseException as e:
        full = is_out_of_space(e, path.parent)  # asked before the temporary gives its space back
        tmp.unlink(missing_ok=True)
        if full:
            raise out_of_space_error(path) from e
        raise
    return path


def is_out_of_space(error: BaseException, folder: str | Path | None = None) -> bool:
    """Whether ``error`` means the disk (or the quota) is full.

    An ``OSError`` says so by its errno (here or in its cause); writers that wrap it in another
    exception (torch's ``RuntimeError`` of its zip writer) are judged by the free space of ``folder``
    (less than 1 MiB left), when given. An interrupt is never a full disk.
    """
    seen: BaseException | None = error
    for _ in range(8):  # the cause chain, bounded
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in NO_SPACE_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    if folder is None or not isinstance(error, Exception) or isinstance(error, OSError | DfqError):
        return False
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return stats.f_bavail * stats.f_frsize < _NEARLY_FULL


def out_of_space_error(path: str | Path) -> DfqError:
    """The one-line error of a write that found the disk full."""
    return DfqError(f"no space left on device writing {path}; free some space or write elsewhere")


def _umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode the umask gives a new file (``0o666 & ~umask``) or folder (``0o777 & ~umask``):
    ``tempfile`` makes both owner-only, which is wrong for what dfq leaves behind."""
    return (0o777 if directory else 0o666) & ~_umask()


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data: Mapping[str, Any] | list[Any]) -> Path:
    """Write ``data`` as indented JSON (with a final newline) atomically."""
    return write_text(path, json.dumps(data, indent=2) + "\n")
