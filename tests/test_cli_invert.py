"""``dfq invert`` end to end, and the inversion checkpoints as the CLI sees them: resume, SIGTERM,
refusals of stale or foreign checkpoints, a saved sparse set reused by ``dfq calibrate``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import timm
import torch

import dfq
from tests._cli import run_cli


def test_invert_then_calibrate_on_the_saved_sparse_set(tmp_path, image_folder, capsys):
    out = tmp_path / "smi-set"
    code, stdout, err = run_cli(
        ["invert", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--method", "smi",
         "--num-images", "2", "--set", "iterations=4", "--set", "schedule=1:0.5,2:0.5", "--out", str(out), "--json"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    manifest = json.loads(stdout)
    assert manifest["method"] == "smi" and manifest["model"]["name"] == "test_vit"
    assert manifest["config"]["schedule"] == [[1, 0.5], [2, 0.5]] and manifest["config"]["iterations"] == 4
    assert {p.name for p in out.iterdir()} == {"calibration.safetensors", "calibration.json", "preview.png"}
    calib = dfq.CalibrationSet.load(out)
    assert calib.keep_index.shape == (2, 1 + 25)  # 100 patches -> int(100 * 0.5) = 50 -> 25, plus CLS
    assert not (tmp_path / "smi-set.ckpt").exists()

    for flag, sparse in (([], False), (["--kept-tokens"], True)):  # dense by default; kept tokens on request
        run = tmp_path / f"run{len(flag)}"
        code, stdout, err = run_cli(
            ["calibrate", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--calib-set", str(out),
             "--eval-folder", str(image_folder), "--out", str(run), "--json", *flag],
            capsys,
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(stdout)["calibration"]["sparse"] is sparse

    # a set made for another resolution is refused with one line
    code, _, err = run_cli(
        ["calibrate", "--model", "deit_tiny", "--no-pretrained", "--device", "cpu", "--calib-set", str(out),
         "--out", str(tmp_path / "other")],
        capsys,
    )  # fmt: skip
    assert code == 2 and "size" in err and len(err.strip().splitlines()) == 1


def test_invert_rejects_unknown_settings(tmp_path, capsys):
    code, _, err = run_cli(
        ["invert", "--model", "test_vit", "--no-pretrained", "--method", "smi", "--set", "lrr=1",
         "--out", str(tmp_path / "x")],
        capsys,
    )  # fmt: skip
    assert code == 2 and "unknown setting 'lrr'" in err and "lr" in err


def test_sigterm_leaves_a_checkpoint_that_resumes(tmp_path):
    """``kill`` (SIGTERM) stops an inversion like Ctrl-C: checkpoint at the current iteration, exit 143,
    no output directory; ``--resume`` then finishes the run from that iteration."""
    out = tmp_path / "di"
    cmd = [sys.executable, "-c", "from dfq.cli import main; main()", "invert", "--model", "test_vit",
           "--no-pretrained", "--device", "cpu", "--method", "deepinversion", "--num-images", "1",
           "--set", "iterations=400", "--set", "checkpoint_every=100000", "--set", "log_every=1", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DFQ_PROGRESS": "1"}  # a bar on the pipe
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env, text=True)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240  # generous: a loaded 2-core machine, not a speed claim
        while "loss=" not in "".join(seen):  # the bar shows a loss once iterations run
            assert proc.poll() is None, f"dfq invert ended early: {''.join(seen)[-500:]}"
            assert time.monotonic() < deadline, "dfq invert showed no iteration within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        reader.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and "terminated" in "".join(seen)
    assert not out.exists()
    ckpt = torch.load(tmp_path / "di.ckpt", weights_only=True)
    stopped = ckpt["iteration"]
    assert 0 < stopped < 400 and ckpt["live"] is not None
    done = subprocess.run([*cmd, "--resume", "--json"], capture_output=True, env=env, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["resumed_from"] == [0, stopped]
    assert not (tmp_path / "di.ckpt").exists() and (out / "calibration.json").is_file()


def test_resume_refuses_a_checkpoint_of_other_weights(tmp_path, capsys):
    """Regression: ``--resume`` with another ``--checkpoint`` finished from the first weights' iterations,
    and a stale file at a user-set ``checkpoint_path`` was reused without ``--resume``."""
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"w{seed}.pth")
        torch.save(timm.create_model("test_vit", pretrained=False).state_dict(), paths[-1])
    ckpt = tmp_path / "my.ckpt"
    settings = {"num_images": 2, "batch_size": 1, "iterations": 2, "progress": False}
    # weights w0, uninterrupted: the reference, and (cut back to its first batch) the interrupted run
    model_a = dfq.load_model("test_vit", checkpoint=str(paths[0]))
    full = dfq.invert(model_a, "deepinversion", checkpoint_path=str(ckpt), **settings)
    state = torch.load(ckpt, weights_only=True)
    state["batch"] = 1
    for key in ("done_images", "done_states", "best_losses", "final_losses"):
        state[key] = state[key][:1]
    torch.save(state, ckpt)

    def invert(weights: Path, *extra: str) -> tuple[int, str, str]:
        return run_cli(["invert", "--model", "test_vit", "--checkpoint", str(weights), "--device", "cpu",
                        "--method", "deepinversion", "--num-images", "2", "--set", "iterations=2",
                        "--set", "batch_size=1", "--set", f"checkpoint_path={ckpt}", "--out", str(tmp_path / "set"),
                        "--json", *extra], capsys)  # fmt: skip

    code, _, err = invert(paths[1], "--resume")
    assert code == 2 and "other model weights" in err and not (tmp_path / "set").exists()
    code, _, err = invert(paths[0])  # no --resume: an existing checkpoint is an error, not a silent resume
    assert code == 2 and "--resume" in err
    code, stdout, err = invert(paths[0], "--resume")  # the right weights resume: the second batch runs
    assert code == 0, err
    assert json.loads(stdout)["resumed_from"] == [1, 0] and not ckpt.exists()
    resumed = dfq.CalibrationSet.load(tmp_path / "set")
    assert torch.equal(resumed.images, full.images)  # bit for bit the uninterrupted run
    # checkpoint_path=none turns checkpointing off (it used to crash); an empty path is refused
    code, _, err = run_cli(["invert", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--method",
                            "deepinversion", "--num-images", "1", "--set", "iterations=1", "--set",
                            "checkpoint_path=none", "--out", str(tmp_path / "no-ckpt")], capsys)  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(["invert", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--method",
                            "deepinversion", "--num-images", "1", "--set", "checkpoint_path=",
                            "--out", str(tmp_path / "empty")], capsys)  # fmt: skip
    assert code == 2 and "must name a file" in err


def test_calibrate_refuses_a_stale_inversion_checkpoint(tmp_path, image_folder, capsys):
    """A checkpoint at calibrate's --set checkpoint_path is an error without --resume; its own is removed."""
    ckpt = tmp_path / "c.ckpt"
    dfq.invert(dfq.load_model("test_vit", pretrained=False), "deepinversion", num_images=1, iterations=2,
               checkpoint_path=str(ckpt), progress=False)  # fmt: skip
    args = ["calibrate", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--inversion", "deepinversion",
            "--num-images", "1", "--set", "iterations=2", "--set", f"checkpoint_path={ckpt}"]  # fmt: skip
    code, _, err = run_cli([*args, "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--resume" in err and ckpt.exists() and not (tmp_path / "r").exists()
    ckpt.unlink()
    code, _, err = run_cli([*args, "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    assert not ckpt.exists()
