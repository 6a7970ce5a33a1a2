"""dfq.distributed and the jobs on several processes (gloo, 2 CPU processes, timm's tiny models).

``torchrun --nproc-per-node 2 -m dfq invert`` writes one merged set equal to a one-process run; a rank
killed mid-run makes the others fail with one ``error:`` line (no hang) and ``--resume`` completes the
job; a sharded CMI rank behind by one bank exchange resumes to the uninterrupted set; a DDP
distillation's loss falls (its kill-and-resume is marked slow: ``-m slow``). Merged statistics:
test_distributed_merge.py; the launcher's settings and error lines: test_distributed_env.py. Ranks are plain subprocesses with torchrun's environment (``_launch``)
except in the torchrun test; each start costs ~6 s of imports, most of this file's time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dfq.data import CalibrationSet
from tests._cli import run_cli
from tests._dist import SMI, free_port

REPO = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "seconds_this_run", "wall_seconds", "distributed"}

pytestmark = pytest.mark.usefixtures("one_thread")


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DFQ_PROGRESS": "0", **extra}
    env.pop("DFQ_DEBUG", None)
    return env


def _launch(args: list[str], world: int = 2, **extra: str) -> list[subprocess.CompletedProcess[str]]:
    """``python -m dfq ARGS`` as ``world`` ranks with torchrun's environment; each rank's result."""
    port = str(free_port())
    procs = [
        subprocess.Popen([sys.executable, "-m", "dfq", *args], cwd=REPO, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world),
                                                          MASTER_ADDR="127.0.0.1", MASTER_PORT=port, **extra))
        for r in range(world)
    ]  # fmt: skip
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> CalibrationSet:
    """The SMI set of one plain process (the reference of the sharded runs)."""
    out = tmp_path_factory.mktemp("one") / "set"
    code, _, err = run_cli([*SMI, "--out", str(out)])
    assert code == 0, err
    return CalibrationSet.load(out)


def _same_set(calib: CalibrationSet, ref: CalibrationSet) -> None:
    assert len(calib) == len(ref) == 8
    assert torch.equal(calib.images, ref.images)  # bit for bit: batches are seeded by position
    assert torch.equal(calib.labels, ref.labels) and torch.equal(calib.keep_index, ref.keep_index)
    assert len({tuple(x.flatten()[:64].tolist()) for x in calib.images}) == 8  # every image once
    strip = {k: v for k, v in ref.provenance.items() if k not in TIMING}
    assert {k: v for k, v in calib.provenance.items() if k not in TIMING | {"resumed_from"}} == {
        k: v for k, v in strip.items() if k != "resumed_from"}  # fmt: skip


def test_torchrun_invert_writes_one_set_equal_to_one_process(one_process: CalibrationSet, tmp_path: Path) -> None:
    out = tmp_path / "set"
    torchrun = Path(sys.executable).with_name("torchrun")
    r = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "dfq", *SMI, "--out", str(out)],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("written to") == 1  # rank 0 speaks for the job
    calib = CalibrationSet.load(out)
    _same_set(calib, one_process)
    shards = calib.provenance["distributed"]
    assert shards["world_size"] == 2 and [s["batches"] for s in shards["ranks"]] == [[0, 2], [1, 3]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no lock, checkpoint or partial left


def test_killed_rank_fails_cleanly_and_resume_completes(one_process: CalibrationSet, tmp_path: Path) -> None:
    out = tmp_path / "set"
    first = _launch([*SMI, "--out", str(out)], DFQ_DIST_KILL="1:inversion-batch-1", DFQ_DIST_TIMEOUT="3")
    assert first[1].returncode == 1  # killed after its first batch (os._exit)
    assert first[0].returncode == 2, first[0].stderr[-3000:]
    lines = first[0].stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: rank 0: rank 1 has not answered for 3 s"), lines
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.ckpt.rank0", "set.ckpt.rank1"]
    second = _launch([*SMI, "--out", str(out), "--resume"])
    assert [p.returncode for p in second] == [0, 0], second[0].stderr[-3000:] + second[1].stderr[-3000:]
    assert second[1].stdout == ""  # rank 1 prints and writes nothing
    calib = CalibrationSet.load(out)
    _same_set(calib, one_process)
    assert calib.provenance["distributed"]["ranks"][1]["resumed_from"] == [3, 0]  # global batch 3, its next
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_a_rank_stops_at_its_next_batch_when_a_peer_failed(tmp_path: Path) -> None:
    """Rank 1 fails after its first batch; rank 0, still on its first (stalled until rank 1's failure is
    posted, at most 120 s), stops at its batch boundary with rank 1's reason instead of inverting its
    second batch first."""
    out = tmp_path / "set"
    first = _launch([*SMI, "--out", str(out)], DFQ_DIST_KILL="1:inversion-batch-1:raise",
                    DFQ_DIST_STALL="0:inversion-batch-0:120", DFQ_DIST_TIMEOUT="30")  # fmt: skip
    assert [p.returncode for p in first] == [2, 2], first[0].stderr[-3000:]
    assert first[1].stderr.strip() == "error: rank 1: test hook: rank 1 fails at inversion-batch-1"
    assert first[0].stderr.strip() == ("error: rank 0: the distributed job stopped: rank 1 failed: test hook: rank 1 "
                                       "fails at inversion-batch-1; run the same command with --resume to continue it")
    state = torch.load(tmp_path / "set.ckpt.rank0", weights_only=False)
    assert state["batch"] == 1 and state["iteration"] == 0  # its second batch (global batch 2) never started


CMI = ["invert", "--model", "test_resnet", "--no-pretrained", "--device", "cpu", "--method", "cmi", "--num-images", "8",
       "--seed", "3", "--set", "batch_size=2", "--set", "iterations=3", "--set", "ngf=8"]  # fmt: skip


def test_a_cmi_rank_one_exchange_behind_takes_the_bank_of_a_rank_ahead(tmp_path: Path) -> None:
    """Rank 1 dies right after the bank exchange of its first batch, before its checkpoint moves past it;
    rank 0 goes on to its second batch and stops at the next exchange. On resume rank 1 is one exchange
    behind: it takes rank 0's bank instead of adding that round's rows again, and the set is an
    uninterrupted 2-rank run's bit for bit."""
    whole = tmp_path / "whole"
    assert [p.returncode for p in _launch([*CMI, "--out", str(whole)])] == [0, 0]
    out = tmp_path / "set"
    first = _launch([*CMI, "--out", str(out)], DFQ_DIST_KILL="1:inversion-shared-1", DFQ_DIST_TIMEOUT="5")
    assert [p.returncode for p in first] == [2, 1], first[0].stderr[-3000:]
    behind = torch.load(tmp_path / "set.ckpt.rank1", weights_only=False)
    ahead = torch.load(tmp_path / "set.ckpt.rank0", weights_only=False)
    assert (behind["batch"], behind["iteration"]) == (0, 3)  # its first batch done, the exchange not recorded
    assert (ahead["batch"], ahead["iteration"]) == (1, 3)  # its second batch done, the next exchange failed
    second = _launch([*CMI, "--out", str(out), "--resume"])
    assert [p.returncode for p in second] == [0, 0], second[0].stderr[-3000:] + second[1].stderr[-3000:]
    a, b = CalibrationSet.load(whole), CalibrationSet.load(out)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and len(b) == 8


# ------------------------------------------------------------------------------- DDP distillation
def _distill_args(one_process: CalibrationSet, root: Path) -> tuple[list[str], Path]:
    sets = root / "set"
    one_process.save(sets)
    out = root / "kd"
    return ["distill", "--teacher", "test_vit", "--student", "test_vit", "--linear-probe", "--calib-set", str(sets),
            "--steps", "6", "--eval-every", "2", "--batch-size", "4", "--lr", "1", "--no-pretrained", "--device",
            "cpu", "--json", "--out", str(out)], out  # fmt: skip


def _check_run(ranks: list[subprocess.CompletedProcess[str]], out: Path) -> dict:
    assert [p.returncode for p in ranks] == [0, 0], ranks[0].stderr[-3000:] + ranks[1].stderr[-3000:]
    report = json.loads(ranks[0].stdout)
    assert ranks[1].stdout == "" and report["distill"]["steps"] == 6
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["distill"]["world_size"] == 2
    losses = [r["loss"] for r in json.loads((out / "curve.json").read_text())["records"]]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert not Path(f"{out}.ckpt").exists() and not Path(f"{out}.lock").exists()
    return recipe


def test_ddp_distill_runs_and_its_loss_falls(one_process: CalibrationSet, tmp_path: Path) -> None:
    args, out = _distill_args(one_process, tmp_path)
    recipe = _check_run(_launch(args), out)
    assert recipe["distill"]["resumed_from"] is None


def test_ddp_ranks_stop_early_together(one_process: CalibrationSet, tmp_path: Path, image_folder: Path) -> None:
    """With --patience rank 0 alone scores the student and decides; rank 1 stops at the same step instead
    of waiting in the next all-reduce. A step of 1e-30 leaves the probe's weights as they are, so the KL
    never beats step 0's and patience 1 stops the run at the first evaluation after it."""
    args, out = _distill_args(one_process, tmp_path)
    args[args.index("--lr") + 1] = "1e-30"
    ranks = _launch([*args, "--patience", "1", "--eval-folder", str(image_folder)], DFQ_DIST_TIMEOUT="20")
    assert [p.returncode for p in ranks] == [0, 0], ranks[0].stderr[-3000:] + ranks[1].stderr[-3000:]
    report = json.loads(ranks[0].stdout)
    assert report["distill"]["steps"] == 2 and report["distill"]["stopped_early"] and report["best"]["step"] == 0
    assert [r["step"] for r in json.loads((out / "curve.json").read_text())["records"]] == [0, 2]
    assert not Path(f"{out}.ckpt").exists()


@pytest.mark.slow  # two more launches of two ranks (~25 s on 2 busy cores); the inversion's resume runs above
def test_ddp_distill_resumes_after_a_killed_rank(one_process: CalibrationSet, tmp_path: Path) -> None:
    args, out = _distill_args(one_process, tmp_path)
    first = _launch(args, DFQ_DIST_KILL="1:distill-step-3", DFQ_DIST_TIMEOUT="20")
    assert first[1].returncode == 1 and first[0].returncode == 2, first[0].stderr[-3000:]
    lines = first[0].stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: rank 0: ") and lines[0].count("--resume") == 1, lines
    assert not out.exists() and Path(f"{out}.ckpt").exists()
    recipe = _check_run(_launch([*args, "--resume"]), out)
    assert recipe["distill"]["resumed_from"] == 2


def test_ddp_ranks_wait_for_a_late_rank_zero_in_the_barrier_not_in_ddp(one_process: CalibrationSet,
                                                                       tmp_path: Path) -> None:
    """Rank 0 stands still at the start for three times the timeout (as while it evaluates step 0 on a
    large eval folder): rank 1 waits on its heartbeat instead of timing out in DDP's first all-reduce."""
    args, out = _distill_args(one_process, tmp_path)
    _check_run(_launch(args, DFQ_DIST_STALL="0:distill-start:15", DFQ_DIST_TIMEOUT="5"), out)


