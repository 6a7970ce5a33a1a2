"""Where a job's output goes: checked before any work, assembled aside, renamed into place, held by a lock.

A run (or set) is assembled in a hidden sibling ``.OUT.partial-HOST-PID-*`` directory and renamed into
place only when complete (:func:`run_directory`), so an interrupted or failed job never leaves an
``OUT/`` that looks finished. A job holds ``OUT.lock`` (its pid and host, created exclusively) from its
start to that rename (:func:`claim_output`): a second job writing the same ``OUT`` fails at once instead
of replacing the first one's result, and an ``OUT`` that appears meanwhile is never replaced without
``--force``. What a killed job (``kill -9``) leaves is cleaned by the next job at that ``OUT`` once the
process that made it is gone: its partial directory removed (:func:`remove_stale_partials`), its lock
taken over. What goes inside a run directory is :mod:`dfq.runs`'s.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dfq import atomic
from dfq.errors import DfqError, shown

__all__ = ["RECIPE", "is_run_dir", "check_output", "check_writable", "run_directory", "claim_output", "lock_path", "remove_stale_partials"]

RECIPE = "recipe.json"
"""The file that marks a dfq run directory (what made it; :mod:`dfq.runs` writes it)."""


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a run directory written by dfq (its ``recipe.json`` has a quant config or a
    distillation record, and the dfq version)."""
    try:
        recipe = json.loads((Path(path) / RECIPE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recipe, dict) and ("quant" in recipe or "distill" in recipe) and "dfq" in (recipe.get("versions") or {})


def check_output(out: str | Path, overwrite: bool = False) -> None:
    """Refuse an output path that exists, unless ``overwrite`` and it is a directory dfq wrote.

    ``--force`` replaces only a dfq run (:func:`is_run_dir`) or calibration set
    (:func:`dfq.data.is_calibration_dir`): never a file, a folder of the user's, the current
    directory or one above it.

    A new path must be one dfq can create: :func:`check_writable`.

    Raises:
        DfqError: the path may not be written; the message says why in one line.
    """
    from dfq.data import is_calibration_dir

    if not str(out).strip():
        raise DfqError("--out is empty; name a new directory")
    out = Path(out)
    check_writable(out)
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise DfqError(f"output {out} already exists; choose another --out or pass --force")
    if not out.is_dir():
        raise DfqError(f"--force replaces only a dfq run or calibration set, and {out} is a file; choose another --out")
    resolved, cwd = out.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise DfqError(f"--out {out} is the current directory or one above it; name a new directory")
    if not (is_run_dir(out) or is_calibration_dir(out)):
        raise DfqError(
            f"--force replaces only a dfq run or calibration set, and {out} is neither "
            f"(no dfq {RECIPE} or calibration.json); choose another --out"
        )


_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
"""This machine in a partial directory's name: a pid is only checked on the host that owns it."""
_PID_DIGITS = 10
_SIBLING_EXTRA = len(".") + len(".partial-") + len(_HOST) + 1 + _PID_DIGITS + 1 + 8
"""Bytes the longest sibling of ``OUT`` adds to its name (``.OUT.partial-HOST-PID-XXXXXXXX``;
``OUT.lock``, ``OUT.ckpt`` and ``OUT.reconstruct.ckpt`` add fewer)."""



def check_writable(out: str | Path) -> None:
    """Refuse an output path dfq could not create, before any work: a name longer than the file system
    allows (with the ``.OUT.partial-*`` sibling dfq assembles it in), a parent that is a file, or a
    folder nothing can be created in (read-only, ``/proc``). Probed by creating and removing an empty
    directory in the nearest existing ancestor, the one place the run's folders will be made.

    Raises:
        DfqError: the path cannot be created; the message says why in one line.
    """
    out = Path(out).absolute()
    names = [os.fsencode(part) for part in out.parts[1:]]
    anchor = next((p for p in out.parents if _exists(p)), Path(out.anchor))
    try:
        name_max, path_max = os.pathconf(anchor, "PC_NAME_MAX"), os.pathconf(anchor, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    longest = max((len(n) for n in names), default=0)
    if longest + _SIBLING_EXTRA > name_max:
        raise DfqError(
            f"--out {shown(out)}: a name of {longest} bytes is too long (at most {name_max - _SIBLING_EXTRA} here)"
        )
    if len(os.fsencode(str(out))) + _SIBLING_EXTRA >= path_max:
        raise DfqError(f"--out {shown(out)}: the path is too long (at most {path_max - _SIBLING_EXTRA - 1} bytes)")
    if not anchor.is_dir():
        raise DfqError(f"--out {shown(out)}: {shown(anchor)} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dfq-probe-", dir=anchor))
    except OSError as e:
        raise DfqError(f"--out {shown(out)}: cannot create anything in {shown(anchor)} ({e.strerror})") from None


def _exists(path: Path) -> bool:
    try:
        return path.exists() or path.is_symlink()
    except OSError:  # a name too long, a loop: not a usable ancestor
        return False


def _make_parent(out: Path) -> list[Path]:
    """Create ``out``'s parent; the folders this made, deepest first (removed again if a job fails)."""
    made = [p for p in [out.parent, *out.parent.parents] if not _exists(p)]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _raise_no_space(e, out.parent)
        raise DfqError(f"cannot create {out.parent}: {e.strerror}") from None
    return made


def _raise_no_space(error: OSError, path: Path) -> None:
    if atomic.is_out_of_space(error):
        raise atomic.out_of_space_error(path) from error


@contextmanager
def run_directory(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` when the block succeeds.

    An existing ``out`` is replaced only when ``overwrite`` and it is a dfq run or set
    (:func:`check_output`); it stays untouched until the new one is complete. That rule is checked
    again at the rename: an ``out`` that appeared while the block ran (another job) is never replaced
    without ``overwrite``. The directory gets the umask's usual mode (``tempfile`` makes it owner-only).
    Jobs hold :func:`claim_output` around this block.

    Raises:
        DfqError: ``out`` may not be written (see :func:`check_output`; also at the rename), its parent
            cannot be created, or the disk is full.
    """
    out = Path(out)
    check_output(out, overwrite)
    _make_parent(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{_HOST}-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        _raise_no_space(e, out.parent)
        raise DfqError(f"cannot create a directory in {shown(out.parent)}: {e.strerror}") from None
    try:
        yield tmp
        os.chmod(tmp, atomic.default_mode(directory=True))
        _move_into_place(tmp, out, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` to ``out``; an existing ``out`` only when ``overwrite`` allows it, and
    put back if the rename fails."""
    appeared = f"{out} appeared while this run was being written (another run?) and was left as it is"
    if _exists(out):
        if not overwrite:
            raise DfqError(f"{appeared}; choose another --out, or pass --force to replace it")
        check_output(out, overwrite)  # still a dfq run or set
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old / out.name, out)
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.replace(tmp, out)  # fails on a non-empty directory that appeared since the check
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise DfqError(f"{appeared}; choose another --out") from None
        raise


_LOCK_SUFFIX = ".lock"


def lock_path(out: str | Path) -> Path:
    """The lock a job holds while it writes ``out``: ``OUT.lock`` beside it."""
    out = Path(out)
    return out.with_name(out.name + _LOCK_SUFFIX)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie counts as gone; unsure means alive)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, as another user's
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _lock_holder(path: Path) -> tuple[int, str] | None:
    """``(pid, host)`` of a lock file dfq wrote, or None (unreadable, or not a dfq lock)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    match = re.fullmatch(r"dfq-lock (\d+) (\S+)\n", text)
    return (int(match[1]), match[2]) if match else None


def _take_lock(out: Path) -> tuple[Path, str]:
    """Create ``OUT.lock`` exclusively (taking over one whose process is gone); its path and content."""
    path = lock_path(out)
    token = f"dfq-lock {os.getpid()} {socket.gethostname()}\n"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, atomic.default_mode())
        except FileExistsError:
            holder = _lock_holder(path)
            if holder is not None and holder[1] == socket.gethostname() and not _pid_alive(holder[0]):
                if _lock_holder(path) == holder:  # a killed job's lock: take it over
                    path.unlink(missing_ok=True)
                continue
            who = "another dfq run" if holder is None else f"dfq process {holder[0]} on {holder[1]}"
            raise DfqError(
                f"{out} is being written by {who} (lock {path}); wait for it or choose another --out "
                f"(delete {path.name} only if no run is writing {out.name})"
            ) from None
        except OSError as e:
            _raise_no_space(e, path)
            raise DfqError(f"cannot create {shown(path)}: {e.strerror}") from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(token)
        except BaseException as e:
            path.unlink(missing_ok=True)
            if isinstance(e, OSError):
                _raise_no_space(e, path)
            raise
        return path, token
    raise DfqError(f"cannot take the lock {path}: other runs keep taking it; try again")


def remove_stale_partials(out: str | Path) -> list[Path]:
    """Remove the partial directories (``.OUT.partial-HOST-PID-*``) that killed jobs left beside ``out``.

    Only directories with that exact name, of this host, whose process is gone, are removed; never one
    of a live process, of another machine (a shared file system), or anything else.

    Returns:
        The removed directories.
    """
    out = Path(out)
    prefix = f".{out.name}.partial-"
    pattern = re.compile(rf"{_HOST}-(\d{{1,{_PID_DIGITS}}})-[a-z0-9_]{{8}}")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(out.parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        match = pattern.fullmatch(entry.name[len(prefix):])
        if match is None or _pid_alive(int(match[1])) or not entry.is_dir(follow_symlinks=False):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


@contextmanager
def claim_output(out: str | Path, overwrite: bool = False) -> Iterator[None]:
    """Hold ``out`` for one job, from its first check to its final rename (:func:`run_directory`).

    Checks ``out`` (:func:`check_output`), creates its parent, removes what killed jobs left there
    (:func:`remove_stale_partials`), and holds ``OUT.lock`` (pid and host, created exclusively; a lock
    whose process is gone is taken over). The lock is removed when the block ends, and so are the
    parent folders made here if the job wrote nothing into them.

    Raises:
        DfqError: ``out`` may not be written, or another job is writing it.
    """
    out = Path(out)
    check_output(out, overwrite)
    made = _make_parent(out)
    try:
        remove_stale_partials(out)
        path, token = _take_lock(out)
        try:
            check_output(out, overwrite)  # a job that held the lock may have finished just before
            yield
        finally:
            try:
                if path.read_text() == token:
                    path.unlink()
            except OSError:
                pass
    finally:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: the job wrote there
