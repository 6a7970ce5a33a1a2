"""Static check of dfq's TensorRT code against the names the real TensorRT Python bindings define.

This file owns that check. TensorRT cannot run here (its ``-libs`` wheels are not on the package
index, so ``import tensorrt`` fails at load time), but the ``tensorrt-cuXX-bindings`` wheels are: their
``tensorrt.so`` holds every pybind11 name (class, enum member, method, property, argument) as a C
string literal. The check reads those literals from the file, without loading it, and compares them
with the names that ``export/tensorrt.py``, ``export/trt_calibrator.py`` and ``export/runtime.py`` use.

What counts as a binding name (:func:`binding_names`):

* every NUL-terminated printable run in the ``.so`` (what ``strings`` prints), plus
* every C string that *starts at an address the machine code loads* (RIP-relative ``lea`` in
  ``.text``). The linker merges string tails, so ``"serialize"`` may exist only as the end of
  ``"get_fields_to_serialize"``; it is a literal of its own only when code points at its first byte
  (``R_X86_64_RELATIVE`` relocations were tried too and add no literal in these wheels);
* the names the wheel's Python ``__init__.py`` binds (``__version__``, ``volume``, ...).

What counts as a use (:func:`collect_uses`), read from the AST:

* attribute chains on the module object (``trt.Logger.WARNING``): the module is ``trt`` (parameter,
  ``import tensorrt as trt`` or ``trt = import_tensorrt()``);
* attributes read or written on TensorRT objects, i.e. values produced by calling or reading
  something on the module or on another TensorRT object (``builder.create_network``,
  ``self.context.execute_async_v3``, ``config.profiling_verbosity = ...``);
* ``hasattr(<TensorRT object>, "name")`` guards;
* methods a class defines when its base is a TensorRT class (calibrator callbacks TensorRT calls by
  name, e.g. ``get_batch``).

Per-version paths: every use carries the TensorRT majors whose execution reaches it, found from
``if`` tests on the major version (``trt_major(trt) >= 11``, ``major == 10`` with
``major = trt_major(trt)``) and the names a ``hasattr`` test requires; after an ``if`` whose body
ends in ``return``/``raise`` the rest of the block gets the negated condition. Tests the checker
cannot read narrow nothing, so a name is checked on at least every version that runs it (an
unknown test can cause a false mismatch, never a false pass). The per-function majors are printed.

Limits: a name is checked against the whole binding vocabulary, not against the class it is used on
(the ``.so`` does not say which class a literal belongs to), and signatures, return types and
behaviour are not checked at all; nothing here executes TensorRT.

    python benchmarks/trt_api_check.py                      # oldest 10.x and newest 11.x bindings
    python benchmarks/trt_api_check.py --wheel tensorrt-cu12-bindings==10.8.0.43 --cache /tmp/w
"""

from __future__ import annotations

import argparse
import ast
import operator
import re
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKED_FILES = ("export/tensorrt.py", "export/trt_calibrator.py", "export/runtime.py")
# Oldest 10.x and newest 11.x on the package index when this was written (`pip index versions`).
# The newest 10.x is checked too: the legacy calibrator path runs on every 10.x.
DEFAULT_WHEELS = (
    "tensorrt-cu12-bindings==10.0.1",
    "tensorrt-cu12-bindings==10.16.1.11",
    "tensorrt-cu13-bindings==11.4.0.106",
)
# The names do not depend on the Python or glibc tag: pin one so the download works from any interpreter.
PIP_TAGS = (
    "--implementation",
    "cp",
    "--python-version",
    "3.11",
    "--platform",
    "manylinux_2_28_x86_64",
    "--platform",
    "manylinux_2_17_x86_64",
    "--platform",
    "manylinux2014_x86_64",
)
ALL_MAJORS = frozenset({10, 11})
MODULE_NAME = "tensorrt"
MODULE_LOADERS = {"import_tensorrt"}  # functions returning the tensorrt module
MAJOR_FUNCS = {"trt_major"}  # functions returning the module's major version

# ---------------------------------------------------------------------------------------------------
# binding side: strings of the .so
# ---------------------------------------------------------------------------------------------------

_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]{2,}(?=\x00)")
_RIP_LEA = re.compile(rb"[\x48-\x4f]\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]", re.DOTALL)


def c_strings(blob: bytes, min_len: int = 2) -> set[str]:
    """Printable ASCII runs of at least ``min_len`` characters that end in a NUL byte (C literals)."""
    return {m.group().decode("ascii") for m in _PRINTABLE_RUN.finditer(blob) if len(m.group()) >= min_len}


@dataclass(frozen=True)
class Section:
    """An ELF section: virtual address, file offset and size."""

    addr: int
    offset: int
    size: int


def elf_sections(blob: bytes) -> dict[str, Section]:
    """Sections of a little-endian ELF64 file by name ({} when ``blob`` is not one)."""
    if blob[:4] != b"\x7fELF" or blob[4] != 2 or blob[5] != 1:
        return {}
    shoff = struct.unpack_from("<Q", blob, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", blob, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", blob, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]

    def name(off: int) -> str:
        start = names_at + off
        return blob[start : blob.index(b"\0", start)].decode("ascii", "replace")

    return {name(h[0]): Section(addr=h[3], offset=h[4], size=h[5]) for h in headers}


def rip_targets(text: bytes, text_addr: int) -> set[int]:
    """Addresses loaded by ``lea reg, [rip + disp32]`` (REX.W forms) in x86-64 code at ``text_addr``."""
    targets: set[int] = set()
    for m in _RIP_LEA.finditer(text):
        end = m.start() + 7
        if end <= len(text):
            targets.add(text_addr + end + struct.unpack_from("<i", text, m.start() + 3)[0])
    return targets


def literals_at(data: bytes, base: int, addrs: Iterable[int]) -> set[str]:
    """The printable NUL-terminated strings starting at each address of ``addrs`` inside ``data``."""
    out: set[str] = set()
    for a in addrs:
        i = a - base
        if not 0 <= i < len(data):
            continue
        end = data.find(b"\0", i)
        run = data[i:end] if end > i else b""
        if run and all(0x20 <= c <= 0x7E for c in run):
            out.add(run.decode("ascii"))
    return out


def so_literals(blob: bytes) -> tuple[set[str], set[str]]:
    """``(whole C literals, merged tails that code addresses and that are no whole literal)`` of a .so."""
    whole = c_strings(blob)
    sec = elf_sections(blob)
    if ".text" not in sec or ".rodata" not in sec:
        return whole, set()
    text, ro = sec[".text"], sec[".rodata"]
    addrs = rip_targets(blob[text.offset : text.offset + text.size], text.addr)
    return whole, literals_at(blob[ro.offset : ro.offset + ro.size], ro.addr, addrs) - whole


def python_names(source: str) -> set[str]:
    """Names a module's source binds at top level, plus attributes it assigns (``DataType.itemsize = ...``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
    return out


@dataclass
class Bindings:
    """The names one bindings wheel defines."""

    wheel: str
    version: str
    names: set[str]
    tails: set[str] = field(default_factory=set)  # of names: found only as a code-addressed string tail

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def wheel_bindings(path: Path) -> Bindings:
    """Read the ``tensorrt*.so`` and the package ``__init__.py`` of a bindings wheel (nothing is loaded)."""
    names: set[str] = set()
    tails: set[str] = set()
    version = path.name.split("-")[1]
    with zipfile.ZipFile(path) as zf:
        members = zf.namelist()
        sos = [m for m in members if re.fullmatch(r"[^/]+/tensorrt[^/]*\.so", m)]
        if not sos:
            raise SystemExit(f"{path.name}: no tensorrt*.so in the wheel ({members[:8]} ...)")
        for m in sos:
            whole, tail = so_literals(zf.read(m))
            names |= whole
            tails |= tail
        for m in members:
            if re.fullmatch(r"[^/]+/__init__\.py", m):
                src = zf.read(m).decode("utf-8", "replace")
                names |= python_names(src)
                found = re.search(r'__version__\s*=\s*"([^"]+)"', src)
                version = found.group(1) if found else version
    return Bindings(wheel=path.name, version=version, names=names | tails, tails=tails - names)


def fetch_wheel(spec: str, cache: Path) -> Path:
    """``pip download --no-deps`` the wheel ``package==version`` into ``cache`` unless it is there."""
    package, _, version = spec.partition("==")
    if not version:
        raise SystemExit(f"wheel spec must be package==version, got {spec!r}")
    stem = f"{package.replace('-', '_')}-{version}-"
    cached = sorted(cache.glob(f"{stem}*cp311*.whl"))
    if not cached:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", *PIP_TAGS]
        cmd += ["-d", str(cache), spec]
        subprocess.run(cmd, check=True)
        cached = sorted(cache.glob(f"{stem}*cp311*.whl"))
    if not cached:
        raise SystemExit(f"pip did not leave a {stem}*.whl in {cache}")
    return cached[0]


# ---------------------------------------------------------------------------------------------------
# code side: names the dfq modules use, with the TensorRT majors that reach them
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """What is known on a path: the TensorRT majors that run it, the names ``hasattr`` tests required."""

    majors: frozenset[int] = ALL_MAJORS
    requires: frozenset[str] = frozenset()

    def refine(self, other: State | None) -> State:
        if other is None:
            return self
        return State(self.majors & other.majors, self.requires | other.requires)


@dataclass(frozen=True)
class Use:
    """One name the code looks up on TensorRT, where, and on which path."""

    name: str
    kind: str  # "module" | "object" | "hasattr" | "override"
    where: str  # "export/runtime.py:151 TrtPredictor.__init__"
    state: State

    def applies_to(self, major: int, names: set[str]) -> bool:
        return major in self.state.majors and self.state.requires <= names


_COMPARE: dict[type, Callable[[int, int], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


@dataclass
class _Scope:
    trt: dict[str, bool] = field(default_factory=dict)  # local name -> holds a TensorRT object
    modules: set[str] = field(default_factory=set)  # local names bound to the tensorrt module
    majors: set[str] = field(default_factory=set)  # local names bound to trt_major(trt)
    self_attrs: set[str] = field(default_factory=set)  # self.X attributes holding TensorRT objects

    def child(self) -> _Scope:
        return _Scope(dict(self.trt), set(self.modules), set(self.majors), set())


class _Collector:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.uses: list[Use] = []
        self.func: list[str] = []
        self.reach: dict[str, set[int]] = {}  # function -> majors that reach its TensorRT uses

    # -- recording ---------------------------------------------------------------------------------
    def _use(self, name: str, kind: str, node: ast.AST, state: State) -> None:
        where = f"{self.filename}:{getattr(node, 'lineno', 0)} {'.'.join(self.func) or '<module>'}"
        self.uses.append(Use(name, kind, where, state))
        self.reach.setdefault(".".join(self.func) or "<module>", set()).update(state.majors)

    # -- expressions -------------------------------------------------------------------------------
    def expr(self, node: ast.AST | None, scope: _Scope, state: State) -> bool:
        """Visit ``node`` (recording uses); True when it evaluates to a TensorRT object or the module."""
        if node is None:
            return False
        if isinstance(node, ast.Name):
            return node.id in scope.modules or scope.trt.get(node.id, False)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return node.attr in scope.self_attrs
            if self.expr(node.value, scope, state):
                self._use(node.attr, "object" if not self._on_module(node, scope) else "module", node, state)
                return True
            return False
        if isinstance(node, ast.Call):
            func_trt = self.expr(node.func, scope, state)
            args = [*node.args, *(k.value for k in node.keywords)]
            arg_trt = [self.expr(a, scope, state) for a in args]
            if isinstance(node.func, ast.Name) and node.func.id == "hasattr" and len(node.args) == 2:
                name = node.args[1]
                if arg_trt[0] and isinstance(name, ast.Constant) and isinstance(name.value, str):
                    self._use(name.value, "hasattr", node, state)
            return func_trt
        if isinstance(node, ast.IfExp):
            self.expr(node.test, scope, state)
            return self.expr(node.body, scope, state) | self.expr(node.orelse, scope, state)
        if isinstance(node, ast.Subscript):
            value = self.expr(node.value, scope, state)
            self.expr(node.slice, scope, state)
            return value
        for child in ast.iter_child_nodes(node):
            self.expr(child, scope, state)
        return False

    @staticmethod
    def _on_module(node: ast.Attribute, scope: _Scope) -> bool:
        root: ast.AST = node
        while isinstance(root, ast.Attribute):
            root = root.value
        return isinstance(root, ast.Name) and root.id in scope.modules

    def _is_major(self, node: ast.AST, scope: _Scope) -> bool:
        if isinstance(node, ast.Name):
            return node.id in scope.majors
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in MAJOR_FUNCS
            and len(node.args) == 1
            and self.expr(node.args[0], scope, State())
        )

    def condition(self, node: ast.AST, scope: _Scope) -> tuple[State | None, State | None]:
        """Refinements when ``node`` is true / false (None: nothing known)."""
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            true, false = self.condition(node.operand, scope)
            return false, true
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(v, scope) for v in node.values]
            side = 0 if isinstance(node.op, ast.And) else 1  # and: all true; or: all false
            merged = State()
            for p in parts:
                merged = merged.refine(p[side])
            return (merged, None) if side == 0 else (None, merged)
        if (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and type(node.ops[0]) in _COMPARE
            and isinstance(node.comparators[0], ast.Constant)
            and isinstance(node.comparators[0].value, int)
            and self._is_major(node.left, scope)
        ):
            op, bound = _COMPARE[type(node.ops[0])], node.comparators[0].value
            yes = frozenset(m for m in ALL_MAJORS if op(m, bound))
            return State(majors=yes), State(majors=ALL_MAJORS - yes)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "hasattr"
            and len(node.args) == 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and self.expr(node.args[0], scope, State())
        ):
            return State(requires=frozenset({node.args[1].value})), None
        return None, None

    # -- statements --------------------------------------------------------------------------------
    def block(self, stmts: Sequence[ast.stmt], scope: _Scope, state: State) -> None:
        for stmt in stmts:
            state = self.stmt(stmt, scope, state)

    def stmt(self, node: ast.stmt, scope: _Scope, state: State) -> State:
        """Visit one statement; returns the state for the statements after it."""
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = scope.child()
            inner.self_attrs = scope.self_attrs
            for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                inner.trt[a.arg] = False
                if a.arg == "trt":
                    inner.modules.add(a.arg)
            self.func.append(node.name)
            self.block(node.body, inner, state)
            self.func.pop()
        elif isinstance(node, ast.ClassDef):
            trt_base = any([self.expr(b, scope, state) for b in node.bases])
            inner = scope.child()
            self.func.append(node.name)
            for item in node.body:
                if trt_base and isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                    self._use(item.name, "override", item, state)
                self.stmt(item, inner, state)
            self.func.pop()
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if isinstance(node, ast.Import) and alias.name == MODULE_NAME:
                    scope.modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            value = node.value
            is_trt = self.expr(value, scope, state)
            is_module = (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name)
                and value.func.id in MODULE_LOADERS
            )
            is_major = value is not None and self._is_major(value, scope)
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                self._bind(t, scope, state, is_trt, is_module, is_major)
        elif isinstance(node, ast.If):
            self.expr(node.test, scope, state)
            true, false = self.condition(node.test, scope)
            self.block(node.body, scope, state.refine(true))
            self.block(node.orelse, scope, state.refine(false))
            if _ends(node.body):
                return state.refine(false)
            if node.orelse and _ends(node.orelse):
                return state.refine(true)
        elif isinstance(node, ast.For | ast.AsyncFor):
            self.expr(node.iter, scope, state)
            self._bind(node.target, scope, state, False, False, False)
            self.block(node.body, scope, state)
            self.block(node.orelse, scope, state)
        elif isinstance(node, ast.While):
            self.expr(node.test, scope, state)
            self.block(node.body, scope, state)
            self.block(node.orelse, scope, state)
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                is_trt = self.expr(item.context_expr, scope, state)
                if item.optional_vars is not None:
                    self._bind(item.optional_vars, scope, state, is_trt, False, False)
            self.block(node.body, scope, state)
        elif isinstance(node, ast.Try):
            self.block(node.body, scope, state)
            for h in node.handlers:
                self.block(h.body, scope, state)
            self.block(node.orelse, scope, state)
            self.block(node.finalbody, scope, state)
        else:
            for child in ast.iter_child_nodes(node):
                self.expr(child, scope, state)
        return state

    def _bind(
        self, target: ast.AST, scope: _Scope, state: State, is_trt: bool, is_module: bool, is_major: bool
    ) -> None:
        if isinstance(target, ast.Name):
            scope.trt[target.id] = is_trt
            (scope.modules.add if is_module else scope.modules.discard)(target.id)
            (scope.majors.add if is_major else scope.majors.discard)(target.id)
        elif isinstance(target, ast.Attribute):
            if isinstance(target.value, ast.Name) and target.value.id == "self":
                (scope.self_attrs.add if is_trt else scope.self_attrs.discard)(target.attr)
            elif self.expr(target.value, scope, state):
                self._use(target.attr, "object", target, state)
        elif isinstance(target, ast.Tuple | ast.List):
            for t in target.elts:
                self._bind(t, scope, state, False, False, False)
        else:
            self.expr(target, scope, state)


def _ends(stmts: Sequence[ast.stmt]) -> bool:
    return bool(stmts) and isinstance(stmts[-1], ast.Return | ast.Raise)


def collect_uses(source: str, filename: str = "<source>") -> tuple[list[Use], dict[str, set[int]]]:
    """TensorRT names ``source`` uses, and the majors that reach each function's uses."""
    col = _Collector(filename)
    col.block(ast.parse(source).body, _Scope(), State())
    return col.uses, col.reach


# ---------------------------------------------------------------------------------------------------
# the check
# ---------------------------------------------------------------------------------------------------


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
