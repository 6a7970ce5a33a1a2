"""The floors of the house (DESIGN.md §2, docs/architecture.md), checked on the source: every import of
every module (lazy ones inside functions included) goes down a floor, or sideways where allowed, and
no two packages import each other."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"dfq": REPO / "dfq", "dfq.calibrators": REPO / "calibrators", "dfq.export": REPO / "export"}

FLOORS = {
    **dict.fromkeys(
        ["_lazy", "errors", "numerics", "fp8", "calibrators", "losses", "checkpointing", "checkpoints", "atomic", "signals", "rounding", "augment", "models", "data",
         "vit", "config", "evaluation", "devices", "loadcheck", "flops", "stats", "sets", "preview", "zoo", "distributed", "_progress", "memory", "outputs"], 0),  # fmt: skip
    **dict.fromkeys(["quant", "inversion", "export", "distill"], 1),
    **dict.fromkeys(["runs", "report", "interop"], 2),
    "jobs": 3,
    "cli": 4,
    "__main__": 5,  # python -m dfq (torchrun -m dfq): runs the CLI
}
"""The floor of each part of ``dfq`` (a module or a package of modules)."""
SIDEWAYS = {("export", "quant"), ("distill", "quant"), ("distill", "inversion")}
"""Imports allowed within floor 1: the obvious one-way arrows."""


def _modules() -> dict[str, Path]:
    mods = {}
    for prefix, root in ROOTS.items():
        for path in root.rglob("*.py"):
            parts = [p for p in path.relative_to(root).with_suffix("").parts if p != "__init__"]
            if prefix == "dfq" and parts and parts[0] in ("calibrators", "export"):
                continue
            mods[".".join([prefix, *parts])] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The dfq modules ``name`` imports anywhere in its file (the bare ``dfq`` facade left out)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target not in (name, "dfq"):
                found.add(target)
    return found


def _part(module: str) -> str:
    return module.split(".")[1]


EDGES = {name: _imports(name, path, _modules()) for name, path in _modules().items() if name != "dfq"}


def test_every_part_has_a_floor() -> None:
    assert {_part(m) for m in EDGES} <= set(FLOORS), sorted({_part(m) for m in EDGES} - set(FLOORS))


@pytest.mark.parametrize("module", sorted(EDGES))
def test_imports_go_down(module: str) -> None:
    mine = _part(module)
    wrong = [
        t for t in sorted(EDGES[module])
        if _part(t) != mine
        and not (FLOORS[_part(t)] < FLOORS[mine]
                 or (FLOORS[mine] == FLOORS[_part(t)] == 0)
                 or (mine, _part(t)) in SIDEWAYS)
    ]  # fmt: skip
    assert not wrong, f"{module} (floor {FLOORS[mine]}) imports {wrong}"


def test_library_packages_never_import_jobs_or_runs() -> None:
    for module, targets in EDGES.items():
        if _part(module) in ("inversion", "export", "quant", "distill"):
            assert not {_part(t) for t in targets} & {"jobs", "runs", "cli"}, module


def test_no_import_circles_between_parts() -> None:
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for module, targets in EDGES.items():
        graph[_part(module)] |= {_part(t) for t in targets if _part(t) != _part(module)}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, f"import circle: {' -> '.join([*path, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_the_walk_sees_lazy_imports() -> None:
    """The walker is no stand-in: it finds the lazy import of dfq.runs inside the job layer."""
    assert "dfq.runs" in EDGES["dfq.jobs.invert"] and "dfq.jobs.export" in EDGES["dfq.jobs.evaluate"]
