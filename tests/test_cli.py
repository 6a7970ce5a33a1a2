"""CLI and run directories end to end on timm's tiny ``test_vit``: exit codes, reports, ``dfq.load``
(``dfq invert`` and its checkpoints: ``test_cli_invert.py``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm
import torch
from click.testing import CliRunner
from PIL import Image

import dfq
from dfq.cli import cli
from dfq.export.runtime import int8_dot_may_saturate
from dfq.models import wnid_to_index
from tests._cli import WNIDS, _calibrate_args, run_cli


def test_help_lists_every_command(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for command in ("calibrate", "eval"):
        assert command in out


def test_calibrate_writes_a_complete_run_that_reloads(tmp_path, image_folder, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(_calibrate_args(out, image_folder), capsys)
    assert code == 0, err
    report = json.loads(stdout)
    for key in ("fp", "quant"):
        for k in ("top1", "top5"):
            assert 0.0 <= report[key][k] <= 1.0
    assert 0.0 <= report["agreement"] <= 1.0 and report["kl"] >= 0.0
    assert report["num_eval_images"] == 6
    assert json.loads((out / "report.json").read_text()) == report
    assert {p.name for p in out.iterdir()} >= {"recipe.json", "quant_state.pt", "report.json", "report.md", "calibration"}
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["model"]["name"] == "test_vit" and recipe["quant"]["name"] == "w8a8"
    assert recipe["calibration"] == {
        "source": "inversion", "method": "noise", "sparse": False, "num_images": 4, "seed": 0,
    }  # fmt: skip
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial directories left

    # dfq.load rebuilds the same model: dfq eval on the run reproduces the report's figures
    code, stdout, err = run_cli(["eval", str(out), "--data", str(image_folder), "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    again = json.loads(stdout)
    assert again["quant"] == report["quant"] and again["fp"] == report["fp"]
    assert again["agreement"] == report["agreement"]
    assert again["kl"] == pytest.approx(report["kl"], rel=1e-4, abs=1e-7)

    model = dfq.load(out)
    calib = dfq.CalibrationSet.load(out / "calibration")
    with torch.no_grad():
        y = model(calib.images)
    assert y.shape == (4, 1000) and torch.isfinite(y).all()


def test_eval_of_a_float_model(image_folder, capsys):
    code, stdout, err = run_cli(
        ["eval", "--model", "test_vit", "--no-pretrained", "--data", str(image_folder), "--json"], capsys
    )
    assert code == 0, err
    assert set(json.loads(stdout)) == {"model", "fp", "num_eval_images"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no_such_model_xyz"], "unknown model"),
        (["--checkpoint", "/nonexistent/w.pth"], "/nonexistent/w.pth"),
        (["--calib-folder", "EMPTY"], "give exactly one calibration source"),
        (["--eval-folder", "/nonexistent/dir"], "not a directory"),
        (["--num-images", "0"], "--num-images"),
        (["--sites", "q,bogus"], "unknown activation site"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_no_run(tmp_path, image_folder, capsys, args, message):
    out = tmp_path / "run"
    base = _calibrate_args(out, image_folder)
    for i in range(0, len(args), 2):  # replace or append the option
        opt, val = args[i], args[i + 1].replace("EMPTY", str(tmp_path))
        if opt in base:
            base[base.index(opt) + 1] = val
        else:
            base += [opt, val]
    if "--checkpoint" in args:
        base.remove("--no-pretrained")
    code, _, err = run_cli(base, capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_corrupt_checkpoint_and_existing_run(tmp_path, image_folder, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    args = _calibrate_args(tmp_path / "run", image_folder)
    args.remove("--no-pretrained")
    code, _, err = run_cli([*args, "--checkpoint", str(bad)], capsys)
    assert code == 2 and "bad.pth" in err and len(err.strip().splitlines()) == 1

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    code, _, err = run_cli(_calibrate_args(existing, image_folder), capsys)
    assert code == 2 and "already exists" in err
    assert (existing / "keep.txt").read_text() == "mine"  # nothing already written is lost


def test_failure_after_writing_leaves_no_partial_run(tmp_path, capsys):
    # an eval folder whose subfolders are not WordNet ids fails at evaluation, after the run files exist
    folder = tmp_path / "flat"
    (folder / "cats").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(folder / "cats" / "a.png")
    out = tmp_path / "run"
    code, _, err = run_cli(_calibrate_args(out, folder), capsys)
    assert code == 2 and "cats" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["flat"]


def test_console_script_exit_code(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "dfq.cli", "eval", "--model", "nope_model", "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_wnid_labels_used_by_eval(image_folder):
    idx = wnid_to_index()
    assert [idx[w] for w in WNIDS] == [0, 1, 2]
    assert timm.create_model("test_vit", pretrained=False).num_classes == 1000


def test_bench_inversion_json(capsys):
    code, stdout, err = run_cli(
        ["bench", "inversion", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--batch-size", "1",
         "--steps-per-stage", "1", "--warmup", "0", "--iterations", "400", "--json"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    r = json.loads(stdout)
    assert [s["kept_patches"] for s in r["stages"]] == [100, 70, 49, 34, 23]
    assert sum(s["iterations_in_run"] for s in r["stages"]) == 400
    assert r["speedup"] == pytest.approx(r["dense_seconds_total"] / r["smi_seconds_total"])
    flops = [s["flops_per_it"] for s in r["stages"]]
    assert flops == sorted(flops, reverse=True) and flops[-1] < 0.5 * flops[0]  # FLOPs fall with the kept tokens
    weighted = sum(s["flops_per_it"] * s["iterations_in_run"] for s in r["stages"])
    assert r["flops_ratio"] == pytest.approx(r["dense"]["flops_per_it"] * 400 / weighted)


def test_calibrate_export_and_eval_in_onnxruntime(tmp_path, image_folder, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli([*_calibrate_args(out, image_folder), "--export", "onnx"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["export"] == str(out / "model.qdq.onnx") and (out / "model.qdq.onnx").is_file()
    code, stdout, err = run_cli(
        ["eval", str(out), "--data", str(image_folder), "--backend", "onnxruntime", "--json"], capsys
    )
    assert code == 0, err
    ort = json.loads(stdout)
    assert ort["backend"] == "onnxruntime" and ort["num_eval_images"] == 6
    assert ort["onnxruntime"] == {"providers": ["CPUExecutionProvider"], "qdq_fused": not int8_dot_may_saturate()}
    assert ort["fp"] == report["fp"]  # same float reference
    assert 0.0 <= ort["agreement"] <= 1.0

    # the TensorRT engine needs trt numerics: paper numerics are refused with one line
    code, _, err = run_cli([*_calibrate_args(tmp_path / "p", image_folder), "--numerics", "paper", "--export", "trt"], capsys)
    assert code == 2 and "trt numerics" in err and not (tmp_path / "p").exists()
    code, _, err = run_cli(["eval", str(out), "--data", str(image_folder), "--backend", "tensorrt"], capsys)
    assert code == 2 and "dfq export" in err


def test_target_ort_leaves_patch_embed_and_head_float(tmp_path, image_folder, capsys):
    out = tmp_path / "run-ort"
    code, stdout, err = run_cli(_calibrate_args(out, image_folder, "--target", "ort"), capsys)
    assert code == 0, err
    quant = json.loads(stdout)["quant_config"]
    assert quant["name"] == "w8a8-ort" and not quant["quantize_head"] and not quant["quantize_patch_embed"]
    model = dfq.load(out)
    assert not hasattr(model.patch_embed.proj, "weight_quantizer") and not hasattr(model.head, "weight_quantizer")
    assert hasattr(model.blocks[0].attn.qkv, "weight_quantizer")


def test_force_does_not_delete_a_folder_dfq_did_not_make(tmp_path, image_folder, capsys):
    """Regression: ``dfq calibrate ... --out precious --force`` deleted the user's folder."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("x")
    code, _, err = run_cli([*_calibrate_args(precious, image_folder), "--force"], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert (precious / "thesis.txt").read_text() == "x" and sorted(p.name for p in precious.iterdir()) == ["thesis.txt"]
    code, _, err = run_cli(["invert", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--method", "noise",
                            "--num-images", "1", "--out", str(precious), "--force"], capsys)  # fmt: skip
    assert code == 2 and "neither" in err and (precious / "thesis.txt").is_file()
    # a dfq run is replaced
    out = tmp_path / "run"
    assert run_cli(_calibrate_args(out, image_folder), capsys)[0] == 0
    code, _, err = run_cli([*_calibrate_args(out, image_folder), "--force"], capsys)
    assert code == 0, err


def test_nonfinite_weights_are_refused_where_they_enter(tmp_path, image_folder, capsys):
    """Regression: an all-NaN checkpoint evaluated to top-1 = 100%; one inf weight calibrated to a run
    with an infinite range that looked complete."""
    model = timm.create_model("test_vit", pretrained=False)
    state = model.state_dict()
    nan_ckpt, inf_ckpt = tmp_path / "nan.pth", tmp_path / "inf.pth"
    torch.save({k: torch.full_like(v, float("nan")) for k, v in state.items()}, nan_ckpt)
    state["blocks.0.mlp.fc1.weight"][0, 0] = float("inf")
    torch.save(state, inf_ckpt)
    code, _, err = run_cli(["eval", "--model", "test_vit", "--checkpoint", str(nan_ckpt), "--data", str(image_folder),
                            "--device", "cpu", "--json"], capsys)  # fmt: skip
    assert code == 2 and "NaN or infinite" in err and len(err.strip().splitlines()) == 1
    out = tmp_path / "inf-run"
    args = [a for a in _calibrate_args(out, image_folder) if a != "--no-pretrained"]
    code, _, err = run_cli([*args, "--checkpoint", str(inf_ckpt)], capsys)
    assert code == 2 and "blocks.0.mlp.fc1.weight" in err and not out.exists()


def test_print_warns_of_nonfinite_logits(capsys):
    from dfq.cli import _print

    _print({"fp": {"top1": 0.5, "top5": 1.0, "num_nonfinite": 0}, "quant": {"top1": 0.0, "top5": 0.0,
            "num_nonfinite": 3}, "agreement": 0.0, "kl": None, "num_eval_images": 4}, as_json=False)  # fmt: skip
    out, err = capsys.readouterr()
    assert "KL(FP||quant): undefined (non-finite logits)" in out
    assert err.strip() == "warning: quant gave NaN/inf logits on 3 of 4 images (counted wrong)"
    _print({"quant": {"top1": None, "top5": None}, "agreement": None, "kl": None, "num_eval_images": 0}, False)
    assert "n/a (no images)" in capsys.readouterr().out


def test_only_dfq_errors_are_bad_input(monkeypatch):
    """A DfqError is one line and exit 2; any other exception is a bug and keeps its traceback."""
    import dfq.jobs.evaluate as evaluate_job

    def boom(*_a, **_k):
        raise ValueError("an internal bug")

    monkeypatch.setattr(evaluate_job, "evaluate_folder", boom)
    result = CliRunner().invoke(cli, ["eval", "--model", "test_vit", "--data", "."])
    assert isinstance(result.exception, ValueError) and result.exit_code == 1
    result = CliRunner().invoke(cli, ["eval", "--model", "test_vit", "--data", "/nonexistent-dir"])
    assert result.exit_code == 1  # still the monkeypatched bug, not a bad-input line
    monkeypatch.undo()
    result = CliRunner().invoke(cli, ["eval", "--model", "test_vit", "--no-pretrained", "--data", "/nonexistent-dir"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


def test_choices_come_from_the_registries():
    from dfq.calibrators import calibrator_names
    from dfq.config import BiasCorrection, presets
    from dfq.inversion import inverter_names
    from dfq.jobs.evaluate import BACKENDS
    from dfq.jobs.export import EXPORT_FORMATS

    params = {c: {p.name: p for p in cli.commands[c].params} for c in ("calibrate", "eval", "invert", "export")}
    choices = lambda cmd, name: set(params[cmd][name].type.choices)  # noqa: E731
    assert choices("calibrate", "calibrator") == set(calibrator_names())
    assert choices("calibrate", "inversion") == choices("invert", "method") == set(inverter_names())
    assert choices("calibrate", "scheme") == {k.split("-")[0] for k in presets}
    assert choices("calibrate", "numerics") == {c.numerics for c in presets.values()}
    assert choices("eval", "backend") == set(BACKENDS)
    assert choices("calibrate", "bias_correction") == {m.value for m in BiasCorrection}
    assert choices("export", "fmt") == choices("calibrate", "export_fmt") == set(EXPORT_FORMATS)


def test_bench_bad_options_are_one_line():
    """Review: benchmark_inversion raised ValueError, which the CLI no longer treats as bad input."""
    for extra in (["--batch-size", "0"], ["--iterations", "10"]):
        code, _, err = run_cli(["bench", "inversion", "--model", "test_vit", "--no-pretrained", "--device", "cpu", *extra])
        assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err


def test_calibrate_with_reconstruction_reloads_exports_and_agrees_in_onnxruntime(tmp_path, image_folder, capsys):
    out = tmp_path / "run"
    args = [*_calibrate_args(out, image_folder), "--scheme", "w4a8", "--reconstruct", "--reconstruct-iters", "5",
            "--reconstruct-option", "batch_size=2", "--export", "onnx"]  # fmt: skip
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    report = json.loads(stdout)
    units = report["reconstruct"]["units"]
    assert [u["name"] for u in units] == ["patch_embed.proj", *(f"blocks.{i}" for i in range(6)), "head"]
    assert report["reconstruct"]["config"]["iters"] == 5 and report["reconstruct"]["config"]["batch_size"] == 2
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["reconstruct"] == report["reconstruct"]["config"]
    assert not (tmp_path / "run.reconstruct.ckpt").exists()  # removed once the run is complete
    code, stdout, err = run_cli(["eval", str(out), "--data", str(image_folder), "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["agreement"] == report["agreement"]  # dfq.load rebuilds the reconstructed weights
    code, stdout, err = run_cli(["eval", str(out), "--data", str(image_folder), "--backend", "onnxruntime", "--json"],
                                capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["num_eval_images"] == 6


def test_reconstruct_options_without_the_flag_or_with_bad_values_are_one_line_errors(tmp_path, image_folder, capsys):
    for extra in (["--reconstruct-iters", "3"], ["--reconstruct", "--reconstruct-option", "drop=1.5"],
                  ["--reconstruct", "--reconstruct-option", "nope=1"]):  # fmt: skip
        code, _, err = run_cli([*_calibrate_args(tmp_path / "r", image_folder), *extra], capsys)
        assert code != 0 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "r").exists()
