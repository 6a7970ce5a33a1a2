"""dfq.distributed without a launched job: one process with no session, and the launcher's settings
checked before any rendezvous (bad RANK/WORLD_SIZE/timeouts, GPUs per node, a numbered GPU) as one
``error:`` line that names the rank; a failure relayed from a peer is passed on once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dfq.errors import DfqError
from tests._cli import run_cli
from tests._dist import SMI

pytestmark = pytest.mark.usefixtures("one_thread")


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
