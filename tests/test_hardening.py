"""Hostile input to the ``dfq`` CLI: every case is one ``error:`` line on stderr and exit 2, no traceback,
no click Usage/Try lines, and nothing written at ``--out`` (or into the run being exported/evaluated).

One table, :data:`CASES`: the command's arguments (``{out}``, ``{folder}``, ``{run}``, ``{tmp}`` are filled
in per test), a substring of the expected error line, and an optional ``setup`` that plants a file
first (a corrupt or malicious ``OUT.ckpt`` for ``--resume``, the lock of a live run). Runs on timm's tiny models; a case that
needs a run directory gets one calibrated once per module.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests._cli import _calibrate_args, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

Setup = Callable[[Path], None]


def _invert(method: str = "noise", *extra: str) -> list[str]:
    return ["invert", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--method", method,
            "--num-images", "1", "--out", "{out}", *extra]  # fmt: skip


def _calibrate(*extra: str) -> list[str]:
    return _calibrate_args(Path("{out}"), Path("{folder}"), *extra)  # a repeated option: the last one wins


def _resume() -> list[str]:  # deepinversion checkpoints to OUT.ckpt
    return [*_invert("deepinversion", "--set", "iterations=1"), "--resume"]


def _text_ckpt(out: Path) -> None:
    Path(f"{out}.ckpt").write_text("these are not the tensors you are looking for\n")


def _truncated_ckpt(out: Path) -> None:
    path = Path(f"{out}.ckpt")
    torch.save({"format": "dfq.checkpoint", "images": torch.zeros(4096)}, path)
    path.write_bytes(path.read_bytes()[:2000])


class _Payload:
    """Unpickling this would create ``marker``: it must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return os.mkdir, (str(self.marker),)


def _malicious_ckpt(out: Path) -> None:
    torch.save({"format": "dfq.checkpoint", "payload": _Payload(out.parent / "pwned")}, Path(f"{out}.ckpt"))


def _live_lock(out: Path) -> None:  # a run of this (live) process is writing OUT
    Path(f"{out}.lock").write_text(f"dfq-lock {os.getpid()} {socket.gethostname()}\n")


def _malicious_raw_pickle(out: Path) -> None:  # protocol 4: torch also warned of the protocol on stderr
    Path(f"{out}.ckpt").write_bytes(pickle.dumps({"payload": _Payload(out.parent / "pwned")}, protocol=4))


_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
_CUDA = torch.cuda.is_available()
_TRT = importlib.util.find_spec("tensorrt") is not None
_NO_TRT = pytest.mark.skipif(_TRT, reason="TensorRT is installed")
_FOLDER = ["calibrate", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--calib-folder", "{folder}",
           "--out", "{out}"]  # fmt: skip

CASES = [
    # 1. click's own usage errors
    pytest.param(["calibrate", "--bogus"], "no such option '--bogus'", None, id="unknown-option"),
    pytest.param(["--bogus"], "no such option '--bogus'", None, id="unknown-group-option"),
    pytest.param(["no-such-command"], "no such command 'no-such-command'", None, id="unknown-command"),
    pytest.param(["calibrate", "--out", "{out}"], "missing option '--model'", None, id="missing-option"),
    pytest.param(_calibrate("--scheme", "w9a9"), "'w9a9' is not one of", None, id="bad-choice"),
    pytest.param(_invert("noise", "--seed", "abc"), "'abc' is not a valid integer", None, id="bad-int"),
    # 2. export opsets outside what onnx can write
    pytest.param(["export", "{run}", "--opset", "99"], "choose 17 to", None, id="opset-99"),
    pytest.param(["export", "{run}", "--opset", "0"], "choose 17 to", None, id="opset-0"),
    # 3. inversion settings
    pytest.param(_invert("folder", "--set", "path={folder}", "--set", "interpolation=bogus"),
                 "interpolation 'bogus' is not one of", None, id="invert-interpolation"),  # fmt: skip
    pytest.param(_calibrate("--inversion", "folder", "--set", "path={folder}", "--set", "interpolation=bogus"),
                 "interpolation 'bogus' is not one of", None, id="calibrate-interpolation"),  # fmt: skip
    pytest.param(_invert("noise", "--set", "num_images=5"), "use --num-images", None, id="invert-num-images"),
    pytest.param(_calibrate("--set", "num_images=5"), "use --num-images", None, id="calibrate-num-images"),
    pytest.param(_invert("noise", "--set", "std=nan"), "expected a finite number", None, id="invert-std-nan"),
    pytest.param(_invert("noise", "--set", "std=inf"), "expected a finite number", None, id="invert-std-inf"),
    pytest.param(_calibrate("--set", "std=nan"), "expected a finite number", None, id="calibrate-std-nan"),
    pytest.param(_invert("folder", "--set", "path={folder}", "--set", "std=nan,1,1"), "expected a finite number", None,
                 id="folder-std-nan"),  # fmt: skip
    # 4. image caps below 1
    pytest.param(_calibrate("--eval-images", "0"), "--eval-images", None, id="eval-images-0"),
    pytest.param(_calibrate("--eval-images", "-1"), "--eval-images", None, id="eval-images-neg"),
    pytest.param(["eval", "{run}", "--data", "{folder}", "--limit", "0"], "--limit", None, id="limit-0"),
    pytest.param(["eval", "{run}", "--data", "{folder}", "--limit", "-3"], "--limit", None, id="limit-neg"),
    # 5. an empty folder path (it would mean the current directory)
    pytest.param(_calibrate("--eval-folder", ""), "--eval-folder is empty", None, id="eval-folder-empty"),
    pytest.param(["eval", "{run}", "--data", ""], "--data is empty", None, id="data-empty"),
    # 6. attention sites on a CNN
    pytest.param(_calibrate("--model", "test_resnet", "--sites", "q,k"), "its sites are conv_in,linear_in", None,
                 id="vit-sites-on-cnn"),  # fmt: skip
    # 7. CUDA where there is none
    *[
        pytest.param(args, "CUDA is not available", None, id=name,
                     marks=pytest.mark.skipif(_CUDA, reason="a GPU is present"))  # fmt: skip
        for name, args in [
            ("eval-run-cuda", ["eval", "{run}", "--data", "{folder}", "--device", "cuda"]),
            ("eval-model-cuda", ["eval", "--model", "test_vit", "--no-pretrained", "--data", "{folder}", "--device", "cuda"]),
            ("invert-cuda", [*_invert(), "--device", "cuda"]),
        ]
    ],
    # 8. --resume from a checkpoint that cannot be read (a malicious pickle is refused, never run)
    pytest.param(_resume(), "not a readable dfq checkpoint", _text_ckpt, id="resume-text-file"),
    pytest.param(_resume(), "not a readable dfq checkpoint", _truncated_ckpt, id="resume-truncated"),
    pytest.param(_resume(), "not a readable dfq checkpoint", _malicious_ckpt, id="resume-malicious-pickle"),
    pytest.param(_resume(), "not a readable dfq checkpoint", _malicious_raw_pickle, id="resume-malicious-raw-pickle"),
    # 9. an --out nothing can be written to
    pytest.param(_calibrate("--out", "/proc/x"), "cannot create anything in /proc", None, id="out-proc",
                 marks=pytest.mark.skipif(not Path("/proc").is_dir(), reason="no /proc")),  # fmt: skip
    pytest.param(_calibrate("--out", "{tmp}/readonly/run"), "cannot create anything in", None, id="out-read-only",
                 marks=pytest.mark.skipif(_ROOT, reason="root writes into a 0500 directory")),  # fmt: skip
    pytest.param(_invert("noise", "--out", "{tmp}/readonly/run"), "cannot create anything in", None,
                 id="invert-out-read-only", marks=pytest.mark.skipif(_ROOT, reason="root writes into a 0500 directory")),  # fmt: skip
    pytest.param(_calibrate("--out", "{tmp}/" + "a" * 5000), "too long", None, id="out-5000-chars"),
    # 10. refused before the work, not after it (second batch)
    pytest.param(_calibrate("--num-images", "100000000"), "lower --num-images", None, id="calibrate-num-images-huge"),
    pytest.param(_invert("noise", "--num-images", "100000000"), "lower --num-images", None, id="invert-num-images-huge"),
    pytest.param(_calibrate("--export", "trt"), "TensorRT is not installed", None, id="calibrate-export-trt-missing",
                 marks=_NO_TRT),  # fmt: skip
    pytest.param(["export", "{run}", "--format", "trt"], "TensorRT is not installed", None, id="export-trt-missing",
                 marks=_NO_TRT),  # fmt: skip
    pytest.param([*_FOLDER, "--set", "lr=0.1"], "it needs --inversion", None, id="calib-folder-with-set"),
    pytest.param([*_FOLDER, "--resume"], "--resume continues an interrupted inversion", None, id="calib-folder-resume"),
    pytest.param(_calibrate("--resume"), "'noise' does not checkpoint", None, id="calibrate-resume-noise"),
    pytest.param(_invert(), "is being written by dfq process", _live_lock, id="invert-out-locked"),
    pytest.param(_calibrate(), "is being written by dfq process", _live_lock, id="calibrate-out-locked"),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, image_folder: Path) -> Path:
    """A tiny calibrated test_vit run, for the export and eval cases."""
    out = tmp_path_factory.mktemp("hardening") / "run"
    code, _, err = run_cli(_calibrate_args(out, image_folder))
    assert code == 0, err
    return out


@pytest.mark.parametrize(("template", "message", "setup"), CASES)
def test_hostile_input_is_one_error_line_and_writes_nothing(
    template: list[str],
    message: str,
    setup: Setup | None,
    tmp_path: Path,
    image_folder: Path,
    request: pytest.FixtureRequest,
    recwarn: pytest.WarningsRecorder,
) -> None:
    out = tmp_path / "out"
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o500)
    run = request.getfixturevalue("run_dir") if any("{run}" in a for a in template) else None
    before = sorted(p.name for p in run.iterdir()) if run is not None else None
    args = [a.format(out=out, folder=image_folder, run=run, tmp=tmp_path) for a in template]
    if setup is not None:
        setup(out)
    planted = sorted(p.name for p in tmp_path.iterdir())

    recwarn.clear()
    code, _, err = run_cli(args)

    assert not [str(w.message) for w in recwarn]  # a console would print each warning on stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]
    for leak in ("Traceback", "Usage:", "Try '", "weights_only"):
        assert leak not in err
    out_arg = Path(args[args.index("--out") + 1]) if "--out" in args else out
    assert not out_arg.exists() and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == planted  # no partial directory, no probe left
    assert not (tmp_path / "pwned").exists()  # the malicious checkpoint's code never ran
    if run is not None:
        assert sorted(p.name for p in run.iterdir()) == before  # e.g. no model.qdq.onnx from a refused export


def test_help_still_prints_usage() -> None:
    for args in (["--help"], ["calibrate", "--help"], ["export", "-h"]):
        code, stdout, err = run_cli(args)
        assert code == 0 and stdout.startswith("Usage:") and not err
