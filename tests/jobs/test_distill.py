"""``dfq distill`` end to end on timm's tiny models: a QAT run that dfq.load, dfq eval and dfq export
treat like a calibrated run (its Q/DQ ONNX agrees with ONNX Runtime), student and linear-probe runs with
their curve, resume from OUT.ckpt, and one-line errors for conflicting options."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests._cli import run_cli

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_COMMON = ["--no-pretrained", "--device", "cpu", "--batch-size", "4", "--json"]


@pytest.fixture(scope="module")
def qat_source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distill")
    code, _, err = run_cli(["invert", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--method", "noise",
                            "--num-images", "8", "--out", str(root / "set")])  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(["calibrate", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--scheme", "w4a8",
                            "--calib-set", str(root / "set"), "--batch-size", "4", "--out", str(root / "run"), "--json"])  # fmt: skip
    assert code == 0, err
    return {"root": root, "set": root / "set", "run": root / "run"}


def test_qat_run_is_a_calibrated_run(qat_source: dict[str, Path], image_folder: Path) -> None:
    from dfq.export.parity import parity
    from dfq.runs import load

    out = qat_source["root"] / "qat"
    code, stdout, err = run_cli(["distill", "--qat", str(qat_source["run"]), "--calib-set", str(qat_source["set"]),
                                 "--steps", "6", "--eval-every", "3", "--eval-folder", str(image_folder),
                                 "--out", str(out), *_COMMON])  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    assert report["distill"]["qat"] and report["distill"]["steps"] == 6
    assert [r["step"] for r in json.loads((out / "curve.json").read_text())["records"]] == [0, 3, 6]
    assert (out / "curve.png").stat().st_size > 0 and (out / "best.pt").exists()
    assert not Path(f"{out}.ckpt").exists()  # served and removed
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["quant"] == json.loads((qat_source["run"] / "recipe.json").read_text())["quant"]
    assert recipe["distill"]["config"]["weight_ranges"] == "learn"
    # dfq eval agrees with the report's final figures
    code, stdout, err = run_cli(["eval", str(out), "--data", str(image_folder), "--json"])
    assert code == 0, err
    ev = json.loads(stdout)
    assert ev["agreement"] == pytest.approx(report["agreement"]) and ev["kl"] == pytest.approx(report["kl"], rel=1e-4)
    # trained weights differ from the calibrated ones, and the export passes the parity rule
    before, after = load(qat_source["run"]), load(out)
    assert not torch.equal(before.blocks[0].mlp.fc1.layer.weight, after.blocks[0].mlp.fc1.layer.weight)
    code, stdout, err = run_cli(["export", str(out)])
    assert code == 0, err
    images = torch.randn(4, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    r = parity(after, out / "model.qdq.onnx", images)
    # a top-1 may flip only where the two best logits of the untrained model lie closer than the export's
    # error (with one thread: 1 of the 4 images, margin 0.005 against a difference of 0.009)
    assert r["agreement"] == 1.0 or r["min_top2_margin"] <= 2 * r["max_abs_diff"], r
    assert r["max_abs_diff"] <= max(r["quant_error_max"], 1e-4), r


def test_student_and_probe_runs(qat_source: dict[str, Path], image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "kd"
    code, stdout, err = run_cli(["distill", "--teacher", "test_vit", "--student", "test_vit", "--inversion", "noise",
                                 "--alternate", "--kd", "kd_steps=2", "--kd", "synth_batch=4", "--steps", "4",
                                 "--eval-folder", str(image_folder), "--out", str(out), *_COMMON])  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    assert report["distill"]["loop"] == "alternating" and report["distill"]["training_images"] == 8
    state = torch.load(out / "student.pt", weights_only=True)
    assert "head.weight" in state
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["kind"] == "distill" and recipe["student"]["name"] == "test_vit"
    out2 = tmp_path / "probe"
    code, stdout, err = run_cli(["distill", "--teacher", "test_vit", "--student", "test_vit", "--linear-probe",
                                 "--calib-set", str(qat_source["set"]), "--steps", "2", "--out", str(out2), *_COMMON])  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["distill"]["linear_probe"] is True
    # a distillation run may be replaced with --force (it is a dfq run), a plain folder may not
    code, _, err = run_cli(["distill", "--teacher", "test_vit", "--student", "test_vit", "--linear-probe",
                            "--calib-set", str(qat_source["set"]), "--steps", "1", "--out", str(out2), "--force",
                            *_COMMON])  # fmt: skip
    assert code == 0, err


def test_resume_continues_an_interrupted_run(qat_source: dict[str, Path], tmp_path: Path) -> None:
    from dfq.distill.config import qat_defaults
    from dfq.errors import DfqError
    from dfq.jobs.distill import DistillRequest, run_distill

    out = tmp_path / "r"
    base = dict(out=str(out), qat=str(qat_source["run"]), calib_set=str(qat_source["set"]), pretrained=False,
                device="cpu", progress=False)  # fmt: skip
    # an interrupted run leaves OUT.ckpt: the loop raises after step 4's checkpoint
    from dfq.distill import loop

    real = loop.train_step
    calls = [0]

    def failing(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    loop.train_step = failing
    try:
        with pytest.raises(KeyboardInterrupt):
            run_distill(DistillRequest(config=qat_defaults(steps=6, batch_size=4, eval_every=2), **base))
    finally:
        loop.train_step = real
    assert Path(f"{out}.ckpt").exists() and not out.exists()
    with pytest.raises(DfqError, match="--resume"):
        run_distill(DistillRequest(config=qat_defaults(steps=6, batch_size=4, eval_every=2), **base))
    report = run_distill(DistillRequest(config=qat_defaults(steps=6, batch_size=4, eval_every=2), resume=True, **base))
    assert report["distill"]["steps"] == 6
    assert json.loads((out / "recipe.json").read_text())["distill"]["resumed_from"] == 4
    assert not Path(f"{out}.ckpt").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--teacher", "test_vit", "--calib-set", "S", "--steps", "1"], "exactly one student"),
        (["--teacher", "test_vit", "--student", "test_vit", "--qat", "R", "--calib-set", "S", "--steps", "1"], "exactly one student"),
        (["--teacher", "test_vit", "--student", "test_vit", "--steps", "1"], "exactly one source"),
        (["--teacher", "test_vit", "--student", "test_vit", "--calib-set", "S", "--alternate", "--steps", "1"], "source|--alternate"),
        (["--teacher", "test_vit", "--student", "test_vit", "--inversion", "noise", "--steps", "0"], "steps must be"),
        (["--teacher", "test_vit", "--student", "test_vit", "--inversion", "noise", "--steps", "2", "--kd", "lrr=1"], "lrr"),
        (["--teacher", "test_vit", "--student", "test_vit", "--inversion", "noise", "--steps", "2", "--kd", "ema=2"], "ema"),
        (["--teacher", "test_vit", "--student", "test_vit", "--inversion", "noise", "--steps", "2", "--patience", "1"],
         "--patience .* needs --eval-folder"),
        (["--teacher", "test_vit", "--student", "test_vit", "--inversion", "noise", "--steps", "2", "--patience", "0"],
         "patience"),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], message: str, tmp_path: Path) -> None:
    code, _, err = run_cli(["distill", *args, "--out", str(tmp_path / "o"), "--no-pretrained", "--device", "cpu"])
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    import re

    assert re.search(message, lines[0]), lines[0]


def test_qat_refuses_a_teacher_that_is_not_the_runs_model(qat_source: dict[str, Path], tmp_path: Path) -> None:
    ckpt = tmp_path / "other.pth"
    from dfq.models import load_model

    torch.save({k: v + 0.01 for k, v in load_model("test_vit", pretrained=False).state_dict().items()}, ckpt)
    code, _, err = run_cli(["distill", "--teacher", "test_vit", "--teacher-checkpoint", str(ckpt), "--qat",
                            str(qat_source["run"]), "--calib-set", str(qat_source["set"]), "--steps", "1",
                            "--out", str(tmp_path / "o"), "--no-pretrained", "--device", "cpu"])  # fmt: skip
    assert code == 2 and "not those" in err


def test_qat_refuses_a_teacher_with_other_weights_and_no_file(qat_source: dict[str, Path]) -> None:
    """Neither side has a checkpoint file: the run's own float weights decide (another seed is refused)."""
    from dfq.errors import DfqError
    from dfq.jobs.distill import _check_teacher
    from dfq.jobs.model import load_job_model
    from dfq.runs import load, read_recipe

    recipe, student = read_recipe(qat_source["run"]), load(qat_source["run"])
    same = load_job_model("test_vit", pretrained=False)
    _check_teacher(recipe, same, student, "run")  # the run's own model passes
    other = load_job_model("test_vit", pretrained=False)
    with torch.no_grad():
        other.module.head.weight.mul_(1.1)
    with pytest.raises(DfqError, match="not those"):
        _check_teacher(recipe, other, student, "run")
