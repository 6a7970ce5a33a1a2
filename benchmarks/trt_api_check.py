"""Static check of dfq's TensorRT code against the names the real TensorRT Python bindings define.

This file owns that check: which code and which wheels are compared, the verdict per wheel and the
command line. TensorRT cannot run here (its ``-libs`` wheels are not on the package index, so
``import tensorrt`` fails at load time), but the ``tensorrt-cuXX-bindings`` wheels are: their
``tensorrt.so`` holds every pybind11 name (class, enum member, method, property, argument) as a C
string literal. The check reads those literals from the file, without loading it, and compares them
with the names that ``export/tensorrt.py``, ``export/trt_calibrator.py`` and ``export/runtime.py`` use.

The two sides sit beside this script and are imported as siblings (the script's directory is on
``sys.path`` when it runs; the tests put it there):

* ``_trt_bindings.py``: the names a bindings wheel defines (its ``.so`` literals, the string tails
  its code addresses, its ``__init__.py``) and the cached wheel download;
* ``_trt_uses.py``: the names the code uses, read from the AST, each with the TensorRT majors whose
  execution reaches it (major-version ``if`` tests and ``hasattr`` guards).

A use is checked on every version that runs it. A ``hasattr`` name absent from a version only skips
its guarded path (listed); a guard no reaching version defines is dead code and a mismatch. The
per-function majors are printed.

Limits: a name is checked against the whole binding vocabulary, not against the class it is used on
(the ``.so`` does not say which class a literal belongs to), and signatures, return types and
behaviour are not checked at all; nothing here executes TensorRT.

    python benchmarks/trt_api_check.py                      # oldest 10.x and newest 11.x bindings
    python benchmarks/trt_api_check.py --wheel tensorrt-cu12-bindings==10.8.0.43 --cache /tmp/w
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from _trt_bindings import Bindings, fetch_wheel, wheel_bindings
from _trt_uses import Use, collect_uses

REPO = Path(__file__).resolve().parents[1]
CHECKED_FILES = ("export/tensorrt.py", "export/trt_calibrator.py", "export/runtime.py")
# Oldest 10.x and newest 11.x on the package index when this was written (`pip index versions`).
# The newest 10.x is checked too: the legacy calibrator path runs on every 10.x.
DEFAULT_WHEELS = (
    "tensorrt-cu12-bindings==10.0.1",
    "tensorrt-cu12-bindings==10.16.1.11",
    "tensorrt-cu13-bindings==11.4.0.106",
)


@dataclass
class Verdict:
    """Result for one bindings wheel: the names checked and the uses whose name is missing."""

    bindings: Bindings
    checked: dict[str, list[Use]]
    missing: dict[str, list[Use]]
    guards_absent: dict[str, list[Use]]


def check(uses: Sequence[Use], bindings: Bindings) -> Verdict:
    """Check the uses that run on ``bindings``' major. A ``hasattr`` name that is absent only skips its
    guarded path (listed, not an error); every other absent name is a mismatch."""
    checked: dict[str, list[Use]] = {}
    missing: dict[str, list[Use]] = {}
    absent: dict[str, list[Use]] = {}
    for use in uses:
        if not use.applies_to(bindings.major, bindings.names):
            continue
        checked.setdefault(use.name, []).append(use)
        if use.name not in bindings.names:
            (absent if use.kind == "hasattr" else missing).setdefault(use.name, []).append(use)
    return Verdict(bindings, checked, missing, absent)


def dead_guards(uses: Sequence[Use], verdicts: Sequence[Verdict]) -> list[Use]:
    """``hasattr`` guards whose name no checked version that reaches them defines (dead code)."""
    out = []
    for use in uses:
        if use.kind != "hasattr":
            continue
        reaching = [v for v in verdicts if use.applies_to(v.bindings.major, v.bindings.names)]
        if reaching and all(use.name not in v.bindings.names for v in reaching):
            out.append(use)
    return out


def _columns(names: Sequence[str], width: int = 108) -> Iterator[str]:
    col = max((len(n) for n in names), default=0) + 2
    per = max(1, width // col)
    for i in range(0, len(names), per):
        yield "    " + "".join(n.ljust(col) for n in names[i : i + per]).rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Exit status 1 on any mismatch."
    )
    parser.add_argument(
        "--wheel",
        action="append",
        metavar="PACKAGE==VERSION",
        help=f"bindings wheel to check against (repeatable; default: {' and '.join(DEFAULT_WHEELS)})",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "dfq" / "trt-wheels",
        help="where the wheels are downloaded (default: %(default)s)",
    )
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="repository root holding export/ (default: this one)"
    )
    args = parser.parse_args(argv)

    uses: list[Use] = []
    reach: dict[str, set[int]] = {}
    for rel in CHECKED_FILES:
        file_uses, file_reach = collect_uses((args.repo / rel).read_text(), rel)
        uses += file_uses
        reach.update({f"{rel}::{k}": v for k, v in file_reach.items()})
    print(f"{len(uses)} TensorRT name uses in {', '.join(CHECKED_FILES)}")
    print("TensorRT majors reaching each function's uses (from major-version and hasattr branches):")
    for func, majors in sorted(reach.items()):
        print(f"    {func}: {', '.join(f'{m}.x' for m in sorted(majors)) or 'none'}")

    verdicts = [
        check(uses, wheel_bindings(fetch_wheel(spec, args.cache))) for spec in args.wheel or DEFAULT_WHEELS
    ]
    failed = False
    for v in verdicts:
        names = sorted(v.checked)
        print(
            f"\nTensorRT {v.bindings.version} ({v.bindings.wheel}, {len(v.bindings.names)} literals): "
            f"{len(names)} names checked, {len(v.missing)} missing"
        )
        print("\n".join(_columns([n + ("*" if n in v.bindings.tails else "") for n in names])))
        for name, where in sorted(v.missing.items()):
            failed = True
            print(f"  MISSING {name}: " + "; ".join(u.where for u in where))
        for name, where in sorted(v.guards_absent.items()):
            print(
                f"  absent (hasattr guard is false, its path is skipped) {name}: "
                + "; ".join(u.where for u in where)
            )
    for use in dead_guards(uses, verdicts):
        failed = True
        print(f"  DEAD GUARD hasattr(..., {use.name!r}) is false on every checked version: {use.where}")
    unchecked = [
        u for u in uses if not any(u.applies_to(v.bindings.major, v.bindings.names) for v in verdicts)
    ]
    for use in unchecked:
        print(f"  not checked (no checked version runs it): {use.name} at {use.where}")
    print(
        "\n* found only as a string tail that the code addresses (merged by the linker into a longer literal)"
    )
    print(
        "verdict:",
        "MISMATCH"
        if failed
        else "OK: every name the code uses exists in the bindings of the versions that run it",
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
