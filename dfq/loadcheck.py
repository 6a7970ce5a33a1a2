"""Is the machine idle? Load average and busy processes around a timing measurement.

Timing figures are ratios measured in one run on an idle machine: on two cores, one background job
made FP32 ONNX Runtime 2-3.7x slower and cut a measured 1.67x INT8 speedup to 1.27x. Every timing
benchmark of dfq therefore records, before and after it runs, the 1/5/15-minute load averages and
the other processes that were using a CPU (sampled from ``/proc`` over a short window), and says
plainly when the machine was not idle: :func:`measure_load` wraps the timed block, fills a JSON-able
record and warns on stderr.

The rule (:func:`judge`): idle when the 1-minute load average at the start is below 0.5 and no
other process used more than 10% of a core, before or after the timed block. "The start" is a
snapshot the program takes before doing any work of its own (pass it as ``start``): the load
average is a one-minute moving average, so one taken after the benchmark's own preparation (model
build, export, calibration) counts that work too. Without it the snapshot at the timed block's
entry stands in. Load averages inside and after the run are recorded, not judged (they include the
benchmark itself). Where ``/proc`` is missing (not Linux) the process list is empty and only the
load average counts.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["MAX_LOAD", "BUSY_SHARE", "snapshot", "judge", "measure_load", "wait_below"]

MAX_LOAD = 0.5
"""Highest 1-minute load average that counts as idle before a timing run."""
BUSY_SHARE = 0.10
"""A process using more than this share of one core during the sample is busy."""


def _cpu_ticks() -> dict[int, tuple[str, int]]:
    """``pid -> (command name, user + system clock ticks)`` of every readable process."""
    ticks: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended, or is not ours to read
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ')'
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))  # utime, stime
    return ticks


def snapshot(sample_seconds: float = 1.0, exclude: set[int] | None = None) -> dict[str, Any]:
    """Load averages now and the processes that used a CPU over the next ``sample_seconds``.

    Args:
        sample_seconds: length of the CPU-use sample.
        exclude: pids left out (default: this process).

    Returns:
        ``{"time", "loadavg": [1, 5, 15 min], "cpu_count", "busy": [{"pid", "name", "cpu"}...]}``,
        ``cpu`` being the share of one core, highest first.
    """
    exclude = {os.getpid()} if exclude is None else exclude
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else [float("nan")] * 3
    busy: list[dict[str, Any]] = []
    if Path("/proc/self/stat").exists():
        hz = os.sysconf("SC_CLK_TCK")
        first, t0 = _cpu_ticks(), time.monotonic()
        time.sleep(sample_seconds)
        second, elapsed = _cpu_ticks(), time.monotonic() - t0
        for pid, (name, ticks) in second.items():
            if pid in exclude or pid not in first:
                continue
            share = (ticks - first[pid][1]) / hz / elapsed
            if share > BUSY_SHARE:
                busy.append({"pid": pid, "name": name, "cpu": round(share, 2)})
        busy.sort(key=lambda p: -p["cpu"])
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg": [round(v, 2) for v in load],
        "cpu_count": os.cpu_count(),
        "busy": busy,
    }


def judge(
    before: dict[str, Any],
    after: dict[str, Any] | None = None,
    max_load: float = MAX_LOAD,
    start: dict[str, Any] | None = None,
) -> list[str]:
    """Why the machine was not idle (an empty list: it was): the load average of ``start`` (else of
    ``before``) and the busy processes of every snapshot.

    >>> judge({"loadavg": [0.1, 0.2, 0.3], "busy": []}, {"loadavg": [2.0, 1.0, 0.5], "busy": []})
    []
    >>> judge({"loadavg": [0.9, 0.2, 0.1], "busy": [{"pid": 7, "name": "python", "cpu": 0.98}]})
    ['load average 0.90 >= 0.5 before the run', 'busy before the run: python (pid 7, 98% of a core)']
    """
    reasons = []
    first = start or before
    if not first["loadavg"][0] < max_load:
        reasons.append(f"load average {first['loadavg'][0]:.2f} >= {max_load} before the run")
    for when, snap in (("at the start of", start), ("before", before), ("after", after)):
        if snap and snap["busy"]:
            procs = ", ".join(f"{p['name']} (pid {p['pid']}, {100 * p['cpu']:.0f}% of a core)" for p in snap["busy"][:4])
            reasons.append(f"busy {when} the run: {procs}")
    return reasons


def wait_below(limit: float = MAX_LOAD, timeout_s: float = 240.0, poll_s: float = 5.0) -> bool:
    """Wait until the 1-minute load average is under ``limit``, at most ``timeout_s`` seconds; True when it
    got there (False at once where the load average is not available). For a timing that would start on
    a machine still busy with the work before it."""
    if not hasattr(os, "getloadavg"):
        return False
    deadline = time.monotonic() + timeout_s
    while os.getloadavg()[0] >= limit:
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


@contextmanager
def measure_load(
    sample_seconds: float = 1.0, warn: bool = True, start: dict[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    """Record the machine's load around a timed block.

    Args:
        sample_seconds: length of each CPU-use sample.
        warn: print a warning on stderr when the machine was not idle.
        start: a :func:`snapshot` taken when the program started, before its own work.

    Yields a dict that, once the block is done, holds ``start`` (or None), ``before``, ``after`` (see
    :func:`snapshot`), ``idle`` (bool) and ``not_idle_because`` (list of reasons); put it in the
    benchmark's JSON.
    """
    record: dict[str, Any] = {"start": start, "before": snapshot(sample_seconds)}
    yield record
    record["after"] = snapshot(sample_seconds)
    reasons = judge(record["before"], record["after"], start=start)
    record["idle"] = not reasons
    record["not_idle_because"] = reasons
    if reasons and warn:
        print(f"warning: the machine was not idle, timings are not comparable: {'; '.join(reasons)}", file=sys.stderr)
