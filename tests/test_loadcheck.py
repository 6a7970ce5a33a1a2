"""``dfq/loadcheck.py``: a busy process is seen, the idle rule, the record a timing benchmark keeps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dfq import loadcheck
from dfq.loadcheck import judge, measure_load, snapshot

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")


def test_a_spinning_process_is_busy_and_this_one_is_not() -> None:
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
    try:
        snap = snapshot(sample_seconds=1.0)
    finally:
        spinner.kill()
        spinner.wait()
    busy = {p["pid"]: p for p in snap["busy"]}
    # a spinning process gets most of a core even on a loaded 2-core machine; 10% is the threshold
    assert spinner.pid in busy and busy[spinner.pid]["cpu"] > 0.3
    assert os.getpid() not in busy
    assert len(snap["loadavg"]) == 3 and snap["cpu_count"] >= 1
    assert any("busy before the run" in r and f"pid {spinner.pid}" in r for r in judge(snap))


def test_idle_rule() -> None:
    quiet = {"loadavg": [0.49, 3.0, 3.0], "busy": []}
    assert judge(quiet) == [] and judge(quiet, {"loadavg": [5.0, 5.0, 5.0], "busy": []}) == []
    assert judge({"loadavg": [0.5, 0.0, 0.0], "busy": []}) == ["load average 0.50 >= 0.5 before the run"]
    late = {"loadavg": [0.1] * 3, "busy": [{"pid": 9, "name": "dfq", "cpu": 1.0}]}
    assert judge(quiet, late) == ["busy after the run: dfq (pid 9, 100% of a core)"]
    # with a start snapshot, the load average at the timed block (raised by our own preparation) is not judged
    prepared = {"loadavg": [1.2, 0.4, 0.2], "busy": []}
    assert judge(prepared, start=quiet) == []
    assert judge(quiet, start={"loadavg": [0.8, 0.1, 0.1], "busy": []}) == ["load average 0.80 >= 0.5 before the run"]


def test_measure_load_fills_the_record(capsys: pytest.CaptureFixture[str]) -> None:
    with measure_load(sample_seconds=0.2) as load:
        assert set(load) == {"start", "before"}
    assert set(load) == {"start", "before", "after", "idle", "not_idle_because"} and load["start"] is None
    assert load["idle"] == (load["not_idle_because"] == [])
    assert ("not idle" in capsys.readouterr().err) == (not load["idle"])


def test_wait_below_waits_for_the_load_to_fall_and_gives_up_at_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = iter([1.7, 0.9, 0.3])
    monkeypatch.setattr(loadcheck.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    assert loadcheck.wait_below(0.5, timeout_s=60, poll_s=0.0) is True
    monkeypatch.setattr(loadcheck.os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert loadcheck.wait_below(0.5, timeout_s=0.0, poll_s=0.0) is False
    monkeypatch.setattr(loadcheck.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert loadcheck.wait_below(0.35, timeout_s=0.0, poll_s=0.0) is True
