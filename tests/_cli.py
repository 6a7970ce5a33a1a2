"""Running the ``dfq`` CLI in tests (click's CliRunner) and the tiny labelled image folder they use."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dfq.cli import cli

WNIDS = ["n01440764", "n01443537", "n01484850"]  # ImageNet classes 0, 1, 2


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str] | None = None) -> tuple[int, str, str]:
    """``dfq ARGS`` through click's CliRunner: exit code, stdout, stderr."""
    result = CliRunner().invoke(cli, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a bug, not bad input: let the test show its traceback
    return result.exit_code, result.stdout, result.stderr


def _calibrate_args(out: Path, folder: Path, *extra: str) -> list[str]:
    return [
        "calibrate", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--inversion", "noise",
        "--num-images", "4", "--batch-size", "4", "--eval-folder", str(folder), "--out", str(out), "--json",
        *extra,
    ]  # fmt: skip
