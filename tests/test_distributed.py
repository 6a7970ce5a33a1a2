"""dfq.distributed and the jobs on several processes (gloo, 2 CPU processes, timm's tiny models).

``torchrun --nproc-per-node 2 -m dfq invert`` writes one merged set equal to a one-process run; a rank
killed mid-run makes the others fail with one ``error:`` line (no hang) and ``--resume`` completes the
job; calibration statistics merged over 2 ranks equal one process on the union of the data; CMI's
banks stay equal across ranks and hold every batch; a DDP distillation's loss falls (its kill-and-resume
is marked slow: ``-m slow``). Ranks are plain subprocesses with torchrun's environment (``_launch``)
except in the torchrun test; each start costs ~6 s of imports, most of this file's time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dfq.data import CalibrationSet
from dfq.errors import DfqError
from tests._cli import run_cli

REPO = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "seconds_this_run", "wall_seconds", "distributed"}
SMI = ["invert", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--method", "smi", "--num-images", "8",
       "--seed", "3", "--set", "batch_size=2", "--set", "iterations=6", "--set", "schedule=2:0.5,4:0.5"]  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DFQ_PROGRESS": "0", **extra}
    env.pop("DFQ_DEBUG", None)
    return env


def _launch(args: list[str], world: int = 2, **extra: str) -> list[subprocess.CompletedProcess[str]]:
    """``python -m dfq ARGS`` as ``world`` ranks with torchrun's environment; each rank's result."""
    port = str(_free_port())
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


# --------------------------------------------------------------------- calibration and CMI on 2 ranks
CALIBRATORS = ("minmax", "percentile", "mse", "entropy")


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, 64, 64, generator=g) * (1 + i) for i in range(4)]


def _calibrated(name: str, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    import dfq
    from dfq.config import QuantConfig, QuantSpec

    model = dfq.load_model("test_resnet", pretrained=False)
    q = dfq.quantize_(model, QuantConfig(act=QuantSpec(calibrator=name), bias_correction="on"))
    dfq.calibrate(q, lambda m: [m(x) for x in batches])
    return {k: v.clone() for k, v in q.state_dict().items() if k.endswith((".lo", ".hi", "bias_correction"))}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DFQ_DIST_TIMEOUT="30")  # fmt: skip
    torch.set_num_threads(1)
    from dfq import distributed
    from dfq.inversion.cmi import CMIConfig, CMISynthesizer

    with distributed.session("cpu"):
        mine = [b for i, b in enumerate(_batches()) if i % 2 == rank]
        ranges = {name: _calibrated(name, mine) for name in CALIBRATORS}
        import dfq

        teacher = dfq.load_model("test_resnet", pretrained=False)
        config = CMIConfig(num_images=6, batch_size=2, iterations=2, ngf=8, bank_size=64, seed=1)
        synth = CMISynthesizer(teacher, config, input_size=(3, 32, 32))
        result = synth.run(config.loop_spec("cmi"))
        labels = torch.cat([s["labels"] for s in result.states])
        torch.save({"ranges": ranges, "images": result.images, "labels": labels, "bank": synth.bank.state_dict(),
                    "shards": result.shards}, f"{out}/rank{rank}.pt")  # fmt: skip


def test_statistics_merge_across_ranks_and_cmi_shares_its_bank(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for name in CALIBRATORS:
        union = _calibrated(name, _batches())  # one process: every batch
        merged, other = ranks[0]["ranges"][name], ranks[1]["ranges"][name]
        assert merged.keys() == union.keys() and any(k.endswith("bias_correction") for k in union)
        for key, want in union.items():
            assert torch.equal(merged[key], other[key]), (name, key)  # every rank the same ranges
            if key.endswith("bias_correction"):
                torch.testing.assert_close(merged[key], want, rtol=1e-4, atol=1e-6)
            elif name == "minmax" or ".weight_quantizer." in key:
                assert torch.equal(merged[key], want), (name, key)  # all-reduced min/max: exact
            else:  # histograms re-binned once per rank vs batch by batch
                span = (union[key.rsplit(".", 1)[0] + ".hi"] - union[key.rsplit(".", 1)[0] + ".lo"]).abs().max()
                # percentile and mse must agree to span/2048 (measured: identical); entropy's threshold is
                # the argmin of a KL curve, which a re-binned count can move far (measured: 35 x span/2048,
                # 1.7% of the span, at the classifier's input), so it gets 2% of the span
                tol = 0.02 * span if name == "entropy" else span / 2048
                assert (merged[key] - want).abs().max() <= tol + 1e-6, (name, key, merged[key], want)
    a, b = ranks
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"]) and len(a["images"]) == 6
    assert a["bank"]["n_updates"] == b["bank"]["n_updates"] == 6  # every batch's rows, once, in every bank
    assert torch.equal(a["bank"]["data"], b["bank"]["data"])
    assert a["shards"]["world_size"] == 2 and [s["batches"] for s in a["shards"]["ranks"]] == [[0, 2], [1]]


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


# ------------------------------------------------------------------------------ one process, no session
def test_without_a_session_every_helper_is_one_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dfq import distributed as D

    assert (D.world_size(), D.rank(), D.is_main(), D.active()) == (1, 0, True, False)
    assert D.shard(3) == range(3) and D.shard_path(tmp_path / "a.ckpt") == tmp_path / "a.ckpt"
    assert D.rank_seed(5) == 5 and D.all_gather_object("x") == ["x"] and D.broadcast_object(3) == 3
    t = torch.ones(2)
    assert D.all_reduce_max(t) is t and D.all_gather_tensor(t) == [t]
    with D.agree():
        D.barrier()
        D.fault_point("anything")
    monkeypatch.setenv(D.TIMEOUT_ENV, "soon")
    with pytest.raises(DfqError, match="DFQ_DIST_TIMEOUT='soon' must be a positive number"):
        D.timeout_seconds()


def test_a_bad_timeout_is_one_error_line_before_any_rendezvous(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1",
                       "DFQ_DIST_TIMEOUT": "-1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    code, out, err = run_cli([*SMI, "--out", str(tmp_path / "s")])
    assert code == 2 and err.strip() == "error: rank 0: DFQ_DIST_TIMEOUT='-1' must be a positive number of seconds"
    assert out == "" and not any(tmp_path.iterdir())


@pytest.mark.parametrize(("env", "message"), [
    ({"RANK": "one"}, "error: RANK='one' must be a non-negative integer (torchrun sets it)"),
    ({"WORLD_SIZE": "2.5"}, "error: WORLD_SIZE='2.5' must be a non-negative integer (torchrun sets it)"),
    ({"RANK": "3"}, "error: RANK=3 must be below WORLD_SIZE=2 (torchrun sets both)"),
    ({"DFQ_DIST_TIMEOUT": "1e14"}, "error: rank 0: DFQ_DIST_TIMEOUT='1e14' is more than a week (604800 s); give at most that"),
])  # fmt: skip
def test_bad_launch_settings_are_one_error_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict,
                                                message: str) -> None:
    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", **env}.items():
        monkeypatch.setenv(key, value)
    code, out, err = run_cli([*SMI, "--out", str(tmp_path / "s")])
    assert (code, err.strip()) == (2, message) and out == ""
    assert not any(tmp_path.iterdir())


NO_GPU = "--device cuda requested but CUDA is not available; use --device cpu"


@pytest.mark.parametrize(("env", "line"), [
    ({"RANK": "1"}, f"error: rank 1: {NO_GPU}"),
    ({"RANK": "0"}, f"error: rank 0: {NO_GPU}"),
    ({"RANK": "one"}, f"error: {NO_GPU}"),  # the rank cannot be read: the line as one process says it
    ({"WORLD_SIZE": "1"}, f"error: {NO_GPU}"),  # one process: no rank to name
])  # fmt: skip
def test_a_launched_process_names_its_rank_in_its_error_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             env: dict, line: str) -> None:
    """torchrun prints every rank's stderr on one terminal: each error line says whose it is (here an
    error found before any rendezvous, so one process can play rank 1)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", **env}.items():
        monkeypatch.setenv(key, value)
    args = [a if a != "cpu" else "cuda" for a in SMI]
    code, out, err = run_cli([*args, "--out", str(tmp_path / "s")])
    assert (code, err.strip()) == (2, line) and out == ""
    assert not any(tmp_path.iterdir())


def test_a_numbered_gpu_under_torchrun_is_refused_before_any_rendezvous(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rank takes cuda:LOCAL_RANK; an explicit cuda:1 was silently replaced by it: now one error line."""
    import dfq.distributed as D

    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(DfqError, match=r"^device cuda:1 names one GPU, .*\(cuda:LOCAL_RANK\); give the device as cuda$"):
        with D.session("cuda:1"):
            pass
    assert not D.active()


def test_every_rank_of_a_node_refuses_more_processes_than_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0 of two on a node with fewer GPUs refuses too (only the rank without a GPU did; the others
    waited in the rendezvous until the timeout and then said something else)."""
    import dfq.distributed as D

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    with pytest.raises(DfqError, match=r"^2 process\(es\) per node, and this machine has 1 GPU\(s\); start at most"):
        with D.session("cuda"):
            pass
    assert not D.active()


def test_a_relayed_failure_is_passed_on_once() -> None:
    """A rank whose own error was news of another's posts the cause, not 'rank 1 failed: rank 1: the job
    stopped: ...', so a third rank's line names the cause and says --resume once."""
    from dfq.distributed import _session as S

    class Store:
        def __init__(self) -> None:
            self.kv: dict[str, str] = {}

        def compare_set(self, key: str, expected: str, value: str) -> None:
            self.kv.setdefault(key, value)

    store = Store()
    S._SESSION = S._Session(1, 3, 1, "cpu", 5.0, "p/", store)
    try:
        news = DfqError(S._stopped(1, "rank 2 failed with MemoryError"))
        S._report_failure(news)
        assert store.kv["p/failed"] == "rank 2 failed with MemoryError"
        line = S._stopped(0, store.kv["p/failed"])
        assert line.count("--resume") == 1 and line.startswith("rank 0: the distributed job stopped: rank 2 failed")
    finally:
        S._SESSION = None


def test_histograms_merge_to_the_histogram_of_the_union() -> None:
    from dfq.calibrators._histogram import GrowingHistogram

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(500, generator=g) * 2 - 1, torch.rand(300, generator=g) * 2 - 1
    a[:2], b[:2] = torch.tensor([-1.0, 1.0]), torch.tensor([-1.0, 1.0])  # both span the union: exact
    parts = [GrowingHistogram(64) for _ in range(2)]
    parts[0].add(a)
    parts[1].add(b)
    one = GrowingHistogram(64)
    one.add(torch.cat([a, b]))
    merged = GrowingHistogram(64)
    merged.merge([p.state() for p in parts])
    assert (merged.lo, merged.hi, merged.total) == (one.lo, one.hi, one.total) and torch.equal(merged.counts, one.counts)
    point = GrowingHistogram(64)
    point.add(torch.full((10,), 0.25))  # a point mass joins the bin that holds its value
    merged.merge([p.state() for p in [*parts, point]])
    assert merged.total == 810 and float(merged.counts.sum()) == 810 and merged.counts[40] == one.counts[40] + 10
    empty = GrowingHistogram(64)
    empty.merge([GrowingHistogram(64).state()])
    assert empty.empty
