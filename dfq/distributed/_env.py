"""The launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*``) and dfq's own
settings of a distributed job (``DFQ_DIST_TIMEOUT``, the test hooks), read and checked."""

from __future__ import annotations

import os

from dfq.errors import DfqError

TIMEOUT_ENV = "DFQ_DIST_TIMEOUT"
"""Seconds a rank may stay silent (no heartbeat) before the others give up; also the process group's timeout."""
KILL_ENV = "DFQ_DIST_KILL"
"""Test hook ``RANK:EVENT[:raise]``: that rank exits at once (or raises) at :func:`fault_point` ``(EVENT)``."""
STALL_ENV = "DFQ_DIST_STALL"
"""Test hook ``RANK:EVENT:SECONDS``: that rank sleeps at :func:`fault_point` ``(EVENT)``, alive (its
heartbeat goes on) but late, as a rank busy evaluating or writing is."""
_DEFAULT_TIMEOUT = 60.0
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

_MAX_TIMEOUT = 7 * 24 * 3600.0
"""The longest ``DFQ_DIST_TIMEOUT`` taken (a week): far past any silence worth waiting for, and inside
what the process group's ``timedelta`` holds."""


def _env_int(key: str, default: int | None = None) -> int:
    """The launcher's integer ``key`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_PORT``).

    Raises:
        DfqError: set but not a non-negative integer.
    """
    raw = os.environ.get(key)
    if raw is None and default is not None:
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = -1
    if value < 0:
        raise DfqError(f"{key}={raw!r} must be a non-negative integer (torchrun sets it)")
    return value


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or an equivalent launcher) as one of several.

    Raises:
        DfqError: the launcher's ``WORLD_SIZE`` is not an integer.
    """
    return all(k in os.environ for k in _ENV) and _env_int("WORLD_SIZE") > 1


def reports() -> bool:
    """Whether this process prints a job's result: a process on its own, or rank 0 of a launch (read
    from the environment, so it holds after the session closed)."""
    return not launched() or _env_int("RANK") == 0


def ranked(message: str) -> str:
    """``message`` as one process of a launch says it: ``rank R: message``, so that the error lines of
    several ranks, which torchrun prints on one terminal, say whose they are. Unchanged for a process on
    its own, when the launcher's variables cannot be read (their own error says so), and when the
    message already starts with this rank (``rank 0: rank 1 has not answered ...``).
    """
    try:
        if not launched():
            return message
        r, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    except DfqError:
        return message
    if r >= world or message.startswith(f"rank {r}:"):
        return message
    return f"rank {r}: {message}"


def timeout_seconds() -> float:
    """``DFQ_DIST_TIMEOUT`` in seconds (default 60).

    Raises:
        DfqError: not a positive number.
    """
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return _DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise DfqError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    if value > _MAX_TIMEOUT:
        raise DfqError(f"{TIMEOUT_ENV}={raw!r} is more than a week ({_MAX_TIMEOUT:g} s); give at most that")
    return value
