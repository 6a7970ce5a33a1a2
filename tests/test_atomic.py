"""``dfq/atomic.py``: complete files or none, with the usual permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dfq.atomic import atomic_write, write_json, write_text


def test_files_get_the_umask_mode_not_owner_only(tmp_path: Path) -> None:
    """Review: mkstemp's 0600 leaked into every file dfq wrote (a plan copied to a server was unreadable)."""
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_text() == '{\n  "a": 1\n}\n'


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = write_text(tmp_path / "f.txt", "old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
