"""The names a TensorRT bindings wheel defines, read from the wheel without loading it.

This file owns the binding side of ``trt_api_check.py``: fetching a ``tensorrt-cuXX-bindings`` wheel
(``pip download``, cached) and reading its vocabulary into :class:`Bindings`. Nothing is imported or
executed from the wheel; its ``tensorrt.so`` holds every pybind11 name (class, enum member, method,
property, argument) as a C string literal.

What counts as a binding name (:func:`wheel_bindings`):

* every NUL-terminated printable run in the ``.so`` (what ``strings`` prints), plus
* every C string that *starts at an address the machine code loads* (RIP-relative ``lea`` in
  ``.text``). The linker merges string tails, so ``"serialize"`` may exist only as the end of
  ``"get_fields_to_serialize"``; it is a literal of its own only when code points at its first byte
  (``R_X86_64_RELATIVE`` relocations were tried too and add no literal in these wheels);
* the names the wheel's Python ``__init__.py`` binds (``__version__``, ``volume``, ...).
"""

from __future__ import annotations

import ast
import re
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

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
