"""``make bench``: run the benchmark steps on this CPU (resumably), then regenerate BENCHMARKS.md's tables.

A *step* is one benchmark script with fixed arguments (:data:`STEPS`); it writes ``runs/bench/NAME/
report.json`` (a ``dfq`` CLI step prints it: ``--json``), and this driver adds ``runs/bench/NAME/
provenance.json`` (the command, start and end time, machine, library versions, load average at the
start). Both are kept in ``benchmarks/reports/NAME/`` (:data:`REPORTS`, committed with BENCHMARKS.md),
so a fresh checkout renders every table without rerunning hours of steps. A step whose kept report
exists is skipped, so an interrupted ``make bench`` continues where it stopped (``--redo NAME`` reruns
one); a set step runs only when its set is missing and a step that still has to run reads it
(:func:`pending`; the inversions are cached under ``runs/sets/`` and resume from their checkpoints).

A *table* of BENCHMARKS.md is the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``;
:mod:`_tables` renders it from its steps' reports, with the command, date, machine and versions under
it. Text outside the markers is written by people and left alone. A table whose steps have not run
keeps its old text and is listed as stale. Every step runs one after the other: timings taken by a step
(ONNX Runtime speed, the fake-quant forward, inversion speed) are only figures when nothing else runs,
so the driver records the load.

    python benchmarks/bench.py                 # run missing steps, then render
    python benchmarks/bench.py --render-only   # only rewrite the tables from the reports on disk
    python benchmarks/bench.py --only fp8-dt --redo fp8-dt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from _steps import ASSETS, BENCH_DIR, REPO, REPORTS, STEPS, Step  # noqa: F401  (Step, ASSETS: used by callers and tests)

from dfq.loadcheck import MAX_LOAD, wait_below


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("torch", "timm", "onnx", "onnxruntime", "onnxruntime-gpu", "nvidia-modelopt"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")  # fmt: skip
    from dfq.export.runtime import int8_dot_may_saturate

    # ONNX Runtime's fused int8 kernels differ on x86 CPUs without VNNI (16-bit pair sums may saturate)
    isa = ", AVX2 without VNNI" if int8_dot_may_saturate() else ""
    return f"{os.cpu_count()} CPU cores, {model or platform.processor() or platform.machine()}{isa}, no GPU used"


def write_provenance(out: Path, command: str, started: str, seconds: float, load: float, **extra: Any) -> None:
    """``out/provenance.json``: the step's command, start, seconds, load at the start, machine and versions."""
    provenance = {"command": command, "started": started, "seconds": round(seconds, 1), "load_at_start": round(load, 2),
                  "machine": machine(), "versions": versions(), **extra}  # fmt: skip
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")


def keep(name: str) -> None:
    """Copy step ``name``'s report and provenance from ``runs/bench`` into :data:`REPORTS`."""
    dest = REPORTS / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("report.json", "provenance.json"):
        shutil.copyfile(BENCH_DIR / name / f, dest / f)


def set_made(step: Step) -> str | None:
    """The set folder a set step makes (None for other steps)."""
    if step.script not in SET_SCRIPTS:
        return None
    return step.args[step.args.index("--out") + 1] if "--out" in step.args else step.args[SET_SCRIPTS[step.script]]


def _reads(step: Step, path: str) -> bool:
    return any(a == path or a.endswith("=" + path) for a in step.args)


def pending(steps: tuple[Step, ...], redo: set[str]) -> set[str]:
    """The steps to run: every other step without a kept report (or in ``redo``), and the set steps whose
    set is missing and that one of those reads (directly or through a merged set).

    >>> a = Step("set-a", "make_set.py", ("--out", "runs/sets/never-made-a"))
    >>> b = Step("use-a", "reconstruct.py", ("--set-dir", "runs/sets/never-made-a"))
    >>> sorted(pending((a, b), set())), sorted(pending((a,), set()))
    (['set-a', 'use-a'], [])
    """
    todo = {s.name for s in steps if s.script not in SET_SCRIPTS
            and (s.name in redo or not (REPORTS / s.name / "report.json").exists())}  # fmt: skip
    for s in reversed(steps):  # a set is read only by the steps after it
        made = set_made(s)
        if made is None or (REPO / made / "calibration.json").exists():
            continue
        if any(_reads(t, made) for t in steps if t.name in todo):
            todo.add(s.name)
    return todo


def run_step(step: Step, redo: bool) -> bool:
    """Run ``step`` unless its kept report exists; True when its report is there afterwards."""
    out = BENCH_DIR / step.name
    report = out / "report.json"
    if step.script not in SET_SCRIPTS and (REPORTS / step.name / "report.json").exists() and not redo:
        return True
    out.mkdir(parents=True, exist_ok=True)
    made = set_made(step)
    if made is not None:  # a set step's "report" is the set itself
        if (REPO / made / "calibration.json").exists():  # made earlier (by hand or another bench): reuse it
            report.write_text(json.dumps({"set": made, "reused": True}) + "\n")
            return True
    cmd, shown = step.command(out), step.shown(out)
    print(f"\n[bench] {step.name}: {shown}", flush=True)
    idle = wait_idle() if step.timed else None
    resumed = any(out.glob("*.ckpt"))  # a stopped run continues: its seconds are this process's only
    start = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t0 = time.perf_counter()
    printed = out / "stdout.json"
    with open(out / "log.txt", "w") as log:
        if step.script == "dfq":  # the CLI prints its report (--json); its progress and warnings go to the log
            with open(printed, "w") as stdout:
                done = subprocess.run(cmd, cwd=REPO, stdout=stdout, stderr=log)
        else:
            done = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        print(f"[bench] {step.name} failed (exit {done.returncode}); see {out / 'log.txt'}", flush=True)
        return False
    if step.script == "dfq":
        try:
            json.loads(printed.read_text())
        except ValueError:
            print(f"[bench] {step.name} printed no JSON report; see {printed}", flush=True)
            return False
        printed.replace(report)
    if made is not None:
        report.write_text(json.dumps({"set": made}) + "\n")
    extra: dict[str, Any] = {} if idle is None else {"waited_for_idle": idle}
    if resumed:
        extra["resumed"] = True
    write_provenance(out, shown, start, time.perf_counter() - t0, load, **extra)
    if made is None and report.exists():
        keep(step.name)
    return report.exists()


IDLE_WAIT_S = 1800


def wait_idle(limit: float = MAX_LOAD, wait_s: float = IDLE_WAIT_S, poll_s: float = 15.0) -> bool:
    """Wait (at most ``wait_s``) until the 1-minute load average is under ``limit``; True when it was.
    A timing step runs either way; its provenance says whether the machine was idle at the start."""
    if wait_below(limit, wait_s, poll_s):
        return True
    print(f"[bench] load {os.getloadavg()[0]:.2f} still >= {limit} after {wait_s:.0f} s: timing anyway "
          "(recorded; rerun with --redo on an idle machine)", flush=True)  # fmt: skip
    return False


SET_SCRIPTS = {"make_set.py": 0, "merge_sets.py": 0, "keep_subset.py": 1}
"""The scripts whose steps make a set: the position of its folder among their arguments, unless ``--out`` names it."""

_BLOCK = re.compile(r"(<!-- bench:([\w-]+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.S)


def render(text: str, tables: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` with every marked table whose name is in ``tables`` replaced; and the marked names left as
    they were.

    >>> render("a\\n<!-- bench:t -->\\nold\\n<!-- /bench:t -->\\nb", {"t": "new\\n"})
    ('a\\n<!-- bench:t -->\\nnew\\n<!-- /bench:t -->\\nb', [])
    >>> render("<!-- bench:u -->\\nold\\n<!-- /bench:u -->", {})[1]
    ['u']
    """
    stale: list[str] = []

    def swap(m: re.Match[str]) -> str:
        if m.group(2) not in tables:
            stale.append(m.group(2))
            return m.group(0)
        return m.group(1) + tables[m.group(2)] + m.group(4)

    return _BLOCK.sub(swap, text), stale


def adopt(step: Step, src: Path) -> None:
    """Take the report of a run made by hand with ``step``'s command (another ``--out``) as the step's:
    its provenance is built from what the report recorded (start time and load, wall seconds) and says
    where it came from. Only for reports that record their start (``machine_load_start``)."""
    report = json.loads((src / "report.json").read_text())
    start = report.get("machine_load_start")
    if not start:
        sys.exit(f"error: {src}/report.json records no start (machine_load_start); run the step instead")
    wall = report.get("wall", {})
    seconds = (report.get("wall_seconds") or report.get("seconds_total") or sum(v for v in wall.values() if v)
               or sum(r.get("seconds_total") or 0 for r in report.get("runs", [])))  # distill_probe.py: one per size
    out = BENCH_DIR / step.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_provenance(out, step.shown(Path(src)), start["time"], float(seconds), start["loadavg"][0], adopted_from=str(src))
    keep(step.name)
    print(f"[bench] {step.name}: adopted {src}/report.json", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--render-only", action="store_true", help="rewrite the tables from the reports on disk")
    ap.add_argument("--only", nargs="+", default=None, help="run only these steps")
    ap.add_argument("--redo", nargs="+", default=[], help="rerun these steps even if their report exists")
    ap.add_argument("--adopt", nargs="+", default=[], metavar="STEP=DIR",
                    help="take DIR/report.json, made by hand with STEP's command, as STEP's report")
    ap.add_argument("--file", type=Path, default=REPO / "BENCHMARKS.md")
    args = ap.parse_args()
    names = {s.name for s in STEPS}
    adopted = dict(a.partition("=")[::2] for a in args.adopt)
    bad = [f"{k}={v}" for k, v in adopted.items() if not v or not (Path(v) / "report.json").is_file()]
    if bad:
        sys.exit(f"error: --adopt takes STEP=DIR with DIR/report.json present; got {', '.join(bad)}")
    unknown = (set(args.only or []) | set(args.redo) | set(adopted)) - names
    if unknown:
        sys.exit(f"error: unknown step(s) {sorted(unknown)}; steps: {', '.join(sorted(names))}")
    for name, src in adopted.items():
        adopt(next(s for s in STEPS if s.name == name), Path(src))
    failed = []
    if not args.render_only:
        todo = pending(STEPS, set(args.redo))
        for step in STEPS:
            if step.name in todo if args.only is None else step.name in args.only:
                if not run_step(step, step.name in args.redo):
                    failed.append(step.name)
    from _tables import render_tables

    text, stale = render(args.file.read_text(), render_tables(REPORTS))
    tmp = args.file.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(args.file)
    print(f"[bench] {args.file} rewritten; tables not regenerated (steps missing): {stale or 'none'}")
    if failed:
        print(f"[bench] failed steps: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
