"""What the bench-table test files share: benchmarks/ on the import path, a hand-made provenance, and
``render``: a table of BENCHMARKS.md rendered from hand-made reports."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench_on_path() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    yield
    sys.path.remove(str(BENCHMARKS))


PROV = {"command": "python benchmarks/x.py", "started": "2026-12-02 03:00:00 UTC", "seconds": 60.0,
        "load_at_start": 0.2, "machine": "2 CPU cores", "versions": {"torch": "2.9"}}  # fmt: skip


def render(tmp_path: Path, table: str, reports: list, loads: tuple[float, ...] = ()) -> str:
    """``table`` rendered from hand-made reports: the i-th of its steps gets ``reports[i]`` (the last one
    when there are fewer) and a provenance with ``loads[i]`` as its load at the start."""
    tables = importlib.import_module("_tables")
    for i, step in enumerate(tables.TABLES[table][0]):
        (tmp_path / step).mkdir(parents=True)
        (tmp_path / step / "report.json").write_text(json.dumps(reports[min(i, len(reports) - 1)]))
        prov = {**PROV, "load_at_start": loads[i]} if i < len(loads) else PROV
        (tmp_path / step / "provenance.json").write_text(json.dumps(prov))
    out = tables.render_tables(tmp_path)
    assert table in out  # and only the tables whose steps are all among this one's
    assert all(set(tables.TABLES[t][0]) <= set(tables.TABLES[table][0]) for t in out), set(out)
    assert out[table].count("`python benchmarks/x.py` — 2026-12-02 03:00:00 UTC") == len(tables.TABLES[table][0])
    return out[table]


def rec_report(model: str, set_info: dict, config: dict, calib: tuple, rec: tuple, fp: float, secs: float, units: int,
         scored: int = 500) -> dict:  # fmt: skip
    metrics = [dict(zip(("top1", "agreement", "kl"), m, strict=True)) for m in (calib, rec)]
    return {"model": model, "scheme": "w4a8", "set": set_info, "scored_images": scored,
            "config": {"act_ranges": "frozen", "range_lr": 4e-5, "drop": 0.0, "views": 0, **config},
            "fp": {"top1": fp, "agreement": 1.0, "kl": 0.0}, "calibration_alone": metrics[0],
            "reconstructed": metrics[1], "reconstruct_seconds_total": secs, "units": [{}] * units}  # fmt: skip
