"""What dfq leaves on disk when writing goes wrong (issue 14, second batch): a failed or interrupted write
keeps the previous file and no temporary; a full disk is one ``error:`` line; a killed job's partial
directory and lock are cleaned by the next job at that ``--out``, a live job's never; two jobs at one
``--out`` cannot both succeed; an interrupted ``calibrate --inversion`` resumes; a folder with fewer
images than asked is recorded as it was used; run directories get the umask's modes; a piped run draws
no progress bar.

Failures are injected in-process (monkeypatched writers, a planted lock or partial directory) and the
CLI runs through click's CliRunner (:func:`tests._cli.run_cli`) on timm's tiny ``test_vit``.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import onnx
import pytest
import safetensors.torch
import torch

import dfq
from dfq.atomic import atomic_write, write_text
from dfq.errors import DfqError
from dfq.inversion._pixels import PixelTask
from dfq.outputs import _HOST, lock_path, run_directory
from tests._cli import _calibrate_args, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _invert_args(out: Path, *extra: str) -> list[str]:
    return ["invert", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--method", "noise",
            "--num-images", "2", "--out", str(out), "--json", *extra]  # fmt: skip


def _one_error(code: int, err: str, message: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], err
    assert "Traceback" not in err


def _hidden(folder: Path) -> list[str]:
    """Names dfq must not leave behind: partial directories, temporaries, locks."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".lock"))


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def _half_then(error: BaseException) -> Callable[[bytes, Any], None]:
    """A writer that writes half of ``data`` to ``path``, then fails like a full disk."""

    def write(data: bytes, path: Any) -> None:
        Path(path).write_bytes(data[: len(data) // 2])
        raise error

    return write


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, image_folder: Path) -> Path:
    """A tiny calibrated test_vit run with its ONNX export."""
    out = tmp_path_factory.mktemp("writes") / "run"
    code, _, err = run_cli(_calibrate_args(out, image_folder))
    assert code == 0, err
    code, _, err = run_cli(["export", str(out)])
    assert code == 0, err
    return out


# -- 1. export: the ONNX file is replaced only once complete ------------------------------------------
@pytest.mark.parametrize(("error", "message"), [(ENOSPC, "error: no space left on device writing"),
                                                (RuntimeError("writer crashed"), None)])  # fmt: skip
def test_a_failed_onnx_save_keeps_the_previous_file_and_no_temporary(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, message: str | None
) -> None:
    onnx_path = run_dir / "model.qdq.onnx"
    before, names = onnx_path.read_bytes(), sorted(p.name for p in run_dir.iterdir())
    real_save = onnx.save

    def save(proto: onnx.ModelProto, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(f, str) and f.endswith(".tmp"):
            _half_then(error)(proto.SerializeToString(), f)
        real_save(proto, f, *args, **kwargs)

    monkeypatch.setattr(onnx, "save", save)
    if message is None:  # not a full disk: the error is a bug's, with its traceback
        with pytest.raises(RuntimeError, match="writer crashed"):
            run_cli(["export", str(run_dir)])
    else:
        code, _, err = run_cli(["export", str(run_dir)])
        _one_error(code, err, message)
        assert "model.qdq.onnx" in err
    assert onnx_path.read_bytes() == before  # the previous export, whole
    onnx.checker.check_model(onnx.load(str(onnx_path)))
    assert sorted(p.name for p in run_dir.iterdir()) == names  # no .model.qdq.onnx.*.tmp


def test_strip_qdq_writes_atomically(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dfq.export.trt_calibrator import strip_qdq

    out = strip_qdq(run_dir / "model.qdq.onnx", tmp_path / "float.onnx")
    before = out.read_bytes()
    monkeypatch.setattr(onnx, "save", lambda proto, f, *a, **k: _half_then(ENOSPC)(proto.SerializeToString(), f))
    with pytest.raises(DfqError, match="no space left on device"):
        strip_qdq(run_dir / "model.qdq.onnx", out)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["float.onnx"]


# -- 2. the atomic writer: no temporary survives a failure ---------------------------------------------
@pytest.mark.parametrize(
    "error", [ENOSPC, OSError(errno.EIO, "I/O error"), RuntimeError("bug"), KeyboardInterrupt()],
    ids=["enospc", "eio", "runtime-error", "interrupt"],
)  # fmt: skip
def test_atomic_write_removes_its_temporary_whatever_fails(tmp_path: Path, error: BaseException) -> None:
    path = write_text(tmp_path / "f.json", "old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise error

    expected = DfqError if error is ENOSPC else type(error)
    with pytest.raises(expected) as info:
        atomic_write(path, fail)
    if error is ENOSPC:
        assert str(info.value).startswith(f"no space left on device writing {path}")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_a_writer_that_hides_enospc_is_judged_by_the_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's zip writer reports a full disk as ``RuntimeError: ... unexpected pos``: with (almost) no
    space left that is a full disk; with space left it stays the error it is."""

    def torch_like(tmp: Path) -> None:
        tmp.write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    with pytest.raises(RuntimeError, match="unexpected pos"):
        atomic_write(tmp_path / "a.pt", torch_like)
    monkeypatch.setattr(os, "statvfs", lambda _: SimpleNamespace(f_bavail=3, f_frsize=4096))
    with pytest.raises(DfqError, match="no space left on device writing"):
        atomic_write(tmp_path / "a.pt", torch_like)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_replace_puts_the_previous_run_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "set"
    dfq.CalibrationSet(torch.zeros(1, 3, 4, 4)).save(out)
    before = sorted(p.name for p in out.iterdir())
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if ".partial-" in str(src):
            raise OSError(errno.EIO, "I/O error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="I/O error"), run_directory(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == before and _hidden(tmp_path) == []


# -- 3. a full disk during calibrate, invert, export: one line, nothing that looks complete ----------
def _fail_safetensors(monkeypatch: pytest.MonkeyPatch) -> None:
    def save_file(tensors: dict[str, torch.Tensor], filename: str, metadata: Any = None) -> None:
        _half_then(ENOSPC)(b"x" * 1000, filename)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


def _fail_torch_save(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save as it fails on a full disk (a RuntimeError), with the free space of a full disk."""
    real_statvfs = os.statvfs

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        _half_then(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"))(b"PK" * 99, f)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_bavail=0, f_frsize=real_statvfs(p).f_frsize))


@pytest.mark.parametrize(
    ("command", "inject"),
    [("calibrate", _fail_safetensors), ("calibrate", _fail_torch_save), ("invert", _fail_safetensors)],
    ids=["calibrate-set", "calibrate-quant-state", "invert-set"],
)  # fmt: skip
def test_a_full_disk_is_one_error_line_and_leaves_nothing(
    command: str, inject: Callable[[pytest.MonkeyPatch], None], tmp_path: Path, image_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    out = tmp_path / "out"
    args = _calibrate_args(out, image_folder) if command == "calibrate" else _invert_args(out)
    inject(monkeypatch)
    code, stdout, err = run_cli(args)
    _one_error(code, err, "no space left on device writing")
    assert not stdout and not out.exists() and _hidden(tmp_path) == []


# -- 4. partial directories of killed jobs -------------------------------------------------------------
def test_a_job_removes_partials_of_dead_processes_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead, other_host = _dead_pid(), "0" * 6 if _HOST != "0" * 6 else "1" * 6
    planted = {
        "stale": tmp_path / f".out.partial-{_HOST}-{dead}-abcdefgh",  # kill -9: removed
        "live": tmp_path / f".out.partial-{_HOST}-{os.getpid()}-ijklmnop",  # a running job's: kept
        "other-host": tmp_path / f".out.partial-{other_host}-{dead}-qrstuvwx",  # its pid means nothing here
        "foreign": tmp_path / ".out.partial-mine",  # not a name dfq makes
        "other-out": tmp_path / f".outer.partial-{_HOST}-{dead}-abcdefgh",  # another --out's
    }
    for folder in planted.values():
        folder.mkdir()
        (folder / "recipe.json").write_text("{}")
    file = tmp_path / f".out.partial-{_HOST}-{dead}-zzzzzzzz"  # a file, not a directory dfq made
    file.write_text("x")
    code, _, err = run_cli(_invert_args(out))
    assert code == 0, err
    assert not planted["stale"].exists()
    assert all(planted[k].is_dir() for k in ("live", "other-host", "foreign", "other-out")) and file.is_file()
    assert (out / "calibration.json").is_file() and not lock_path(out).exists()


# -- 5. two jobs at one --out -----------------------------------------------------------------------
def test_a_second_run_fails_while_the_first_holds_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second of two runs at one --out fails at once with one line; the first completes untouched."""
    import dfq.preview

    out = tmp_path / "out"
    second: list[tuple[int, str, str]] = []
    real_preview = dfq.preview.save_preview

    def preview_then_second_run(*args: Any, **kwargs: Any) -> Any:
        if not second:  # the first run is writing: start the second one now
            second.append(run_cli(_invert_args(out, "--seed", "1")))
        return real_preview(*args, **kwargs)

    monkeypatch.setattr(dfq.preview, "save_preview", preview_then_second_run)
    code, stdout, err = run_cli(_invert_args(out))
    assert code == 0, err
    _one_error(second[0][0], second[0][2], f"{out} is being written by dfq process {os.getpid()}")
    assert json.loads(stdout)["seed"] == 0 and dfq.CalibrationSet.load(out).provenance["seed"] == 0
    assert _hidden(tmp_path) == []


def test_an_output_that_appears_before_the_rename_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that ignored the lock (another host, an older dfq) finished first: it is kept, this one fails."""
    import dfq.preview

    out = tmp_path / "out"
    real_preview = dfq.preview.save_preview

    def preview_and_other_run(*args: Any, **kwargs: Any) -> Any:
        out.mkdir(exist_ok=True)
        (out / "theirs.txt").write_text("first")
        return real_preview(*args, **kwargs)

    monkeypatch.setattr(dfq.preview, "save_preview", preview_and_other_run)
    code, _, err = run_cli(_invert_args(out))
    _one_error(code, err, "appeared while this run was being written")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"] and (out / "theirs.txt").read_text() == "first"
    assert _hidden(tmp_path) == []


def test_a_lock_of_a_dead_process_is_taken_over_and_a_foreign_one_never(tmp_path: Path) -> None:
    out = tmp_path / "out"
    lock = lock_path(out)
    lock.write_text(f"dfq-lock {_dead_pid()} {socket.gethostname()}\n")  # kill -9 left it
    code, _, err = run_cli(_invert_args(out))
    assert code == 0, err
    assert not lock.exists() and (out / "calibration.json").is_file()
    other = tmp_path / "other"
    lock_path(other).write_text("my own notes\n")  # not a lock dfq wrote
    code, _, err = run_cli(_invert_args(other))
    _one_error(code, err, "is being written by another dfq run")
    assert lock_path(other).read_text() == "my own notes\n" and not other.exists()


# -- 6. calibrate --inversion resumes ----------------------------------------------------------------
def test_an_interrupted_calibrate_inversion_resumes_to_the_same_set(
    tmp_path: Path, image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ["--inversion", "deepinversion", "--num-images", "2", "--set", "iterations=3",
                "--set", "batch_size=1", "--holdout", "0"]  # fmt: skip
    reference, out = tmp_path / "reference", tmp_path / "out"
    code, _, err = run_cli(_calibrate_args(reference, image_folder, *settings))
    assert code == 0, err

    calls = {"n": 0}
    real_begin = PixelTask.begin_iteration

    def begin(self: PixelTask, iteration: int) -> None:
        calls["n"] += 1
        if calls["n"] == 5:  # the second image's second iteration: Ctrl-C
            raise KeyboardInterrupt
        real_begin(self, iteration)

    monkeypatch.setattr(PixelTask, "begin_iteration", begin)
    code, _, err = run_cli(_calibrate_args(out, image_folder, *settings))
    assert code == 130 and "interrupted" in err
    ckpt = Path(f"{out}.ckpt")
    assert ckpt.is_file() and not out.exists() and _hidden(tmp_path) == []
    assert torch.load(ckpt, weights_only=True)["batch"] == 1
    monkeypatch.setattr(PixelTask, "begin_iteration", real_begin)

    code, _, err = run_cli(_calibrate_args(out, image_folder, *settings))
    _one_error(code, err, "--resume")  # an existing checkpoint is never silently continued or overwritten
    code, stdout, err = run_cli(_calibrate_args(out, image_folder, *settings, "--resume"))
    assert code == 0, err
    assert not ckpt.exists()
    ours, theirs = (dfq.CalibrationSet.load(d / "calibration") for d in (out, reference))
    assert ours.provenance["resumed_from"] == [1, 1]
    assert torch.equal(ours.images, theirs.images) and torch.equal(ours.labels, theirs.labels)
    assert json.loads(stdout)["calibration"] == json.loads((reference / "report.json").read_text())["calibration"]


# -- 10. fewer images in the folder than asked -------------------------------------------------------
def test_a_folder_with_fewer_images_records_the_number_used(tmp_path: Path, image_folder: Path) -> None:
    out = tmp_path / "out"
    args = ["calibrate", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--calib-folder",
            str(image_folder), "--num-images", "40", "--eval-folder", str(image_folder), "--out", str(out), "--json"]  # fmt: skip
    code, _, err = run_cli(args)
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith("note: ") and "holds only 6 images, fewer than the 40 asked" in notes[0]
    assert json.loads((out / "recipe.json").read_text())["calibration"]["num_images"] == 6
    manifest = json.loads((out / "calibration" / "calibration.json").read_text())
    assert manifest["num_images"] == 6 and manifest["provenance"]["config"]["num_images"] == 6
    assert manifest["provenance"]["num_images_requested"] == 40


# -- 11. modes --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("umask", "dirs", "files"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_run_directories_get_the_umask_modes(tmp_path: Path, umask: int, dirs: int, files: int) -> None:
    out = tmp_path / "out"
    old = os.umask(umask)
    try:
        code, _, err = run_cli(_invert_args(out))
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE(out.stat().st_mode) == dirs
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        "calibration.json": files, "calibration.safetensors": files, "preview.png": files,
    }  # fmt: skip


# -- 12. progress bars -------------------------------------------------------------------------------
def test_a_piped_run_draws_no_progress_bar(tmp_path: Path, image_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal (a log, CliRunner): no ``\\r`` redraws from any bar; ``DFQ_PROGRESS=1`` forces them."""
    monkeypatch.delenv("DFQ_PROGRESS", raising=False)
    args = ["--inversion", "deepinversion", "--num-images", "1", "--set", "iterations=2"]
    code, _, err = run_cli([a for a in _calibrate_args(tmp_path / "a", image_folder, *args) if a != "--json"])
    assert code == 0, err
    assert "\r" not in err and "run written to" not in err
    monkeypatch.setenv("DFQ_PROGRESS", "1")
    code, _, err = run_cli([a for a in _calibrate_args(tmp_path / "b", image_folder, *args) if a != "--json"])
    assert code == 0, err
    assert "\r" in err and "deepinversion" in err
