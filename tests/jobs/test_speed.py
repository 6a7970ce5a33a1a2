"""``dfq bench ort`` / :func:`dfq.jobs.speed.ort_speedup` on a tiny run: both graphs timed, ratios consistent."""

from __future__ import annotations

import json

import pytest

from dfq.errors import DfqError
from dfq.export.runtime import int8_dot_may_saturate
from dfq.jobs.export import export_run
from dfq.jobs.speed import ort_speedup
from dfq.loadcheck import judge
from tests._cli import run_cli
from tests._helpers import _one_line, _timm_run


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    _, run = _timm_run(tmp_path_factory.mktemp("speed"), "w8a8")
    export_run(run, "onnx")
    return run


def test_ort_speedup_reports_both_graphs_per_batch(exported) -> None:
    r = ort_speedup(exported, (1, 2), threads=1, rounds=3, iters=2, warmup=1)
    assert list(r["batches"]) == ["1", "2"]
    for v in r["batches"].values():
        assert v["fp32_ms"] > 0 and v["int8_ms"] > 0
        assert v["speedup"] == pytest.approx(v["fp32_ms"] / v["int8_ms"], rel=0.05)
        q1, med, q3 = v["speedup_q1_median_q3"]
        assert q1 <= med <= q3
    load = r["machine_load"]
    assert r["load_before"] is load["start"]
    assert r["idle"] == (not judge(load["before"], load["after"], start=load["start"])) == (not load["not_idle_because"])
    assert r["threads"] == 1


def test_ort_speedup_bad_input_is_one_line(tmp_path, exported) -> None:
    _, bare = _timm_run(tmp_path, "w8a8")
    with pytest.raises(DfqError) as err:
        ort_speedup(bare)
    assert "dfq export" in _one_line(err)
    with pytest.raises(DfqError, match="at least 1"):
        ort_speedup(exported, (0,))


def test_cli_bench_ort(tmp_path, exported) -> None:
    code, out, _ = run_cli(["bench", "ort", str(exported), "--batch-size", "1", "--rounds", "2", "--threads", "1",
                            "--json"])  # fmt: skip
    assert code == 0
    r = json.loads(out)
    assert r["batches"]["1"]["speedup"] > 0 and r["int8_may_saturate"] is int8_dot_may_saturate()
    code, out, _ = run_cli(["bench", "ort", str(exported), "--batch-size", "1", "--rounds", "2", "--threads", "1"])
    assert code == 0 and "FP32" in out and "x" in out
    assert ("no VNNI" in out) is int8_dot_may_saturate()  # the timed fused kernels may saturate: said
    _, bare = _timm_run(tmp_path, "w8a8")
    code, _, err = run_cli(["bench", "ort", str(bare)])
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
