"""dfq.jobs.sources: a calibration source is exactly one of a folder, a saved set or an inversion method."""

from __future__ import annotations

import os

import pytest

from dfq.errors import DfqError
from dfq.jobs import CalibrationSource


def test_source_from_options_needs_exactly_one() -> None:
    with pytest.raises(DfqError, match="exactly one"):
        CalibrationSource.from_options(None, None, None)
    with pytest.raises(DfqError, match="exactly one"):
        CalibrationSource.from_options(".", None, "noise")
    with pytest.raises(DfqError, match="needs --inversion"):
        CalibrationSource.from_options(".", None, None, ("lr=1",))
    with pytest.raises(DfqError, match="choose from"):
        CalibrationSource.inversion("no-such-method")
    with pytest.raises(DfqError, match="is not a directory"):
        CalibrationSource.folder("/nonexistent-folder")
    source = CalibrationSource.from_options(None, None, "noise", ("std=0.5",))
    assert source.describe() == {"source": "inversion", "method": "noise", "settings": ["std=0.5"]}


def test_a_torchrun_checkpoint_is_counted_by_its_rank_files_only(tmp_path) -> None:
    """One process beside the per-rank checkpoints of a 2-process run is refused, and the count is of
    ``.rankN`` files only: not a copy the user made beside them, nor an atomic writer's leftover temporary
    file (named as :func:`dfq.atomic.atomic_write` names it)."""
    import tempfile

    from dfq.jobs.sources import _check_launch_matches

    path = tmp_path / "set.ckpt"
    for name in ("set.ckpt.rank0", "set.ckpt.rank1", "set.ckpt.rank0.bak"):
        (tmp_path / name).write_bytes(b"")
    os.close(tempfile.mkstemp(dir=tmp_path, prefix=".set.ckpt.rank2.", suffix=".tmp")[0])
    with pytest.raises(DfqError, match=r"set\.ckpt\.rank0 holds an interrupted run of 2 torchrun processes"):
        _check_launch_matches(path, tmp_path / "mine.ckpt")
