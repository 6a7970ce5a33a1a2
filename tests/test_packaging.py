"""Packaging: one import root, guarded siblings, a lean ``import dfq``, every package installed, doctests."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_import_dfq_is_lean() -> None:
    code = (
        "import sys, torch\n"
        "torch.cuda.init = lambda: (_ for _ in ()).throw(AssertionError('CUDA initialized'))\n"
        "import dfq, dfq.calibrators, dfq.export, dfq.config, dfq.numerics\n"
        "heavy = [m for m in ('onnx', 'onnxruntime', 'tensorrt', 'pycuda', 'onnxscript') if m in sys.modules]\n"
        "print(','.join(heavy)); print(torch.cuda.is_initialized())\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr
    heavy, cuda = r.stdout.split("\n")[:2]
    assert heavy == "" and cuda == "False"


@pytest.mark.parametrize("name", ["calibrators", "export"])
def test_bare_sibling_import_fails_with_a_clear_message(name: str) -> None:
    r = _run(f"import {name}")
    assert r.returncode != 0
    assert f"must be imported as 'dfq.{name}'" in r.stderr


def test_every_package_directory_is_packaged() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages, mapping = set(cfg["packages"]), cfg["package-dir"]
    found = set()
    for init in REPO.glob("**/__init__.py"):
        rel = init.parent.relative_to(REPO)
        if rel.parts[0] in {".venv", "tests", "build", "benchmarks"} or rel.parts[0].startswith("."):
            continue
        top = rel.parts[0]
        root = next((k for k, v in mapping.items() if v == top), top)
        found.add(".".join([root, *rel.parts[1:]]))
    assert found == packages, f"unpackaged: {found - packages}; stale: {packages - found}"


def test_console_script_is_declared() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["dfq"] == "dfq.cli:main"


def _sibling_modules() -> list[str]:
    """``dfq.calibrators.*`` / ``dfq.export.*`` modules whose source holds a doctest, by import name."""
    names = []
    for directory, package in (("calibrators", "dfq.calibrators"), ("export", "dfq.export")):
        for path in sorted((REPO / directory).glob("*.py")):
            if ">>>" in path.read_text():
                names.append(package if path.stem == "__init__" else f"{package}.{path.stem}")
    return names


def test_doctests_run_over_the_whole_package() -> None:
    """pytest collects the doctests of every dfq/ module (pyproject: --doctest-modules over testpaths)."""
    ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in ini["addopts"].split() and "dfq" in ini["testpaths"]
    assert not {"calibrators", "export"} & set(ini["testpaths"])  # collected by path they hit their guard


@pytest.mark.parametrize("module", _sibling_modules())
def test_sibling_doctests(module: str) -> None:
    """calibrators/ and export/ import only as dfq.calibrators / dfq.export, so pytest cannot collect their
    doctests by path; they run here under those names, with the flags pyproject gives pytest."""
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_every_public_name_resolves() -> None:
    import dfq

    for name in dfq.__all__:
        assert getattr(dfq, name) is not None, name
    assert callable(dfq.evaluate) and callable(dfq.calibrate)  # functions, not same-named modules
