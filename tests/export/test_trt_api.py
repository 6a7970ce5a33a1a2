"""Tests of ``benchmarks/trt_api_check.py``: the TensorRT name check of dfq's export code.

The parsing helpers (C strings and string tails of an ELF in ``_trt_bindings.py``, AST name collection
with per-version paths in ``_trt_uses.py``, the verdict in the script) run on tiny synthetic inputs and
need no network. The check against the real bindings wheels downloads ~4 MB from the package index and
is marked ``slow``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"


def _load_checker() -> tuple[ModuleType, ModuleType, ModuleType]:
    """The script, loaded by file path, and the two sibling modules it imports."""
    sys.path.insert(0, str(BENCHMARKS))  # as when the script runs: its siblings import from its directory
    try:
        spec = importlib.util.spec_from_file_location("trt_api_check", BENCHMARKS / "trt_api_check.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
        spec.loader.exec_module(module)
        return module, importlib.import_module("_trt_bindings"), importlib.import_module("_trt_uses")
    finally:
        sys.path.remove(str(BENCHMARKS))


chk, trt_bindings, trt_uses = _load_checker()


def _elf(text: bytes, text_addr: int, rodata: bytes, rodata_addr: int) -> bytes:
    """A minimal little-endian ELF64 file with .text, .rodata and .shstrtab sections."""
    shstr = b"\0.text\0.rodata\0.shstrtab\0"
    body = text + rodata + shstr
    text_off, ro_off = 64, 64 + len(text)
    shstr_off, shoff = ro_off + len(rodata), 64 + len(body)
    header = b"\x7fELF\x02\x01\x01" + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 4, 3)

    def sh(name: int, off: int, size: int, addr: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, 1, 0, addr, off, size, 0, 0, 1, 0)

    table = bytes(64) + sh(1, text_off, len(text), text_addr) + sh(7, ro_off, len(rodata), rodata_addr)
    table += sh(15, shstr_off, len(shstr), 0)
    return header + body + table


def _lea(rex: int, modrm: int, at: int, target: int) -> bytes:
    """``lea reg, [rip + disp]`` placed at address ``at`` loading ``target``."""
    return bytes([rex, 0x8D, modrm]) + struct.pack("<i", target - (at + 7))


def test_c_strings_only_nul_terminated_runs() -> None:
    blob = b"\x01\x02get_tensor_mode\x00junk\xffexecute_async_v3\x00x\x00no_nul"
    assert trt_bindings.c_strings(blob) == {"get_tensor_mode", "execute_async_v3"}


def test_string_tails_count_only_where_code_points_at_them() -> None:
    rodata = b"get_fields_to_serialize\x00ILogger\x00IPluginV3OneRuntime\x00"
    ro_addr, text_addr = 0x2000, 0x1000
    logger_at = ro_addr + rodata.index(b"ILogger") + 1
    text = _lea(0x48, 0x35, text_addr, ro_addr + len("get_fields_to_")) + b"\x90"
    text += _lea(0x4C, 0x05, text_addr + len(text), logger_at)
    assert trt_bindings.rip_targets(text, text_addr) == {ro_addr + 14, logger_at}
    whole, tails = trt_bindings.so_literals(_elf(text, text_addr, rodata, ro_addr))
    assert {"get_fields_to_serialize", "ILogger", "IPluginV3OneRuntime"} <= whole
    assert tails == {"serialize", "Logger"}  # "Runtime" is a tail too, but no code loads it
    # not an ELF: whole strings only
    assert trt_bindings.so_literals(rodata) == (trt_bindings.c_strings(rodata), set())


def test_python_names_of_the_wheel_init() -> None:
    src = (
        "from .tensorrt import *\n__version__ = '10.0.1'\ndef volume(x):\n    v = 1\nDataType.itemsize = 1\n"
    )
    assert {"__version__", "volume", "itemsize"} <= trt_bindings.python_names(src)


SNIPPET = """
def build(path):
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    network = trt.Builder(logger).create_network(0)
    x = torch.zeros(1)
    if trt_major(trt) >= 11:
        raise RuntimeError(trt.__version__)
    config = make_config()
    config.set_flag(trt.BuilderFlag.INT8)
    if hasattr(network, "int8_calibrator"):
        network.int8_calibrator = None
    return str(network.num_layers) + str(x.shape)


def flags(trt):
    major = trt_major(trt)
    if major == 10:
        return trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    return trt.Only11


class Predictor:
    def __init__(self, trt):
        self.engine = trt.Runtime(None).deserialize_cuda_engine(b"")

    def run(self):
        return self.engine.create_execution_context().execute_async_v3(0)


def calibrator(trt, entropy):
    if trt_major(trt) >= 11:
        raise ValueError("implicit calibration was removed in 11.0")
    base = trt.IInt8EntropyCalibrator2 if entropy else trt.IInt8MinMaxCalibrator

    class C(base):
        def get_batch(self, names):
            return None
    return C
"""


def _by_name(uses: list) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for u in uses:
        out.setdefault(u.name, set()).update(u.state.majors)
    return out


def test_collect_uses_follows_tensorrt_objects_and_version_branches() -> None:
    uses, reach = trt_uses.collect_uses(SNIPPET, "snippet.py")
    majors = _by_name(uses)
    both, ten = {10, 11}, {10}
    for name in ("Logger", "WARNING", "Builder", "create_network", "Runtime", "deserialize_cuda_engine"):
        assert majors[name] == both, name
    assert majors["create_execution_context"] == majors["execute_async_v3"] == both
    assert majors["__version__"] == {11}  # the raise message: only 11.x reaches it
    for name in (
        "BuilderFlag",
        "INT8",
        "num_layers",
        "STRONGLY_TYPED",
        "IInt8EntropyCalibrator2",
        "get_batch",
    ):
        assert majors[name] == ten, name
    assert majors["Only11"] == {11}
    assert (
        "set_flag" not in majors and "shape" not in majors and "zeros" not in majors
    )  # not TensorRT objects
    guarded = [u for u in uses if u.name == "int8_calibrator"]
    assert {u.kind for u in guarded} == {"hasattr", "object"}
    assert next(u for u in guarded if u.kind == "object").state.requires == {"int8_calibrator"}
    assert reach["calibrator.C"] == ten and reach["Predictor.run"] == both


def test_check_respects_versions_and_guards() -> None:
    uses, _ = trt_uses.collect_uses(SNIPPET, "snippet.py")
    every = {u.name for u in uses}
    v10 = trt_bindings.Bindings("a.whl", "10.0.1", every - {"Only11", "get_batch"})
    v11_absent = {"BuilderFlag", "INT8", "int8_calibrator", "get_batch"}
    v11 = trt_bindings.Bindings("b.whl", "11.4.0", every - v11_absent)
    r10, r11 = chk.check(uses, v10), chk.check(uses, v11)
    assert set(r10.missing) == {"get_batch"} and "Only11" not in r10.checked
    assert r11.missing == {} and "INT8" not in r11.checked and "Only11" in r11.checked
    assert chk.dead_guards(uses, [r10, r11]) == []
    no_guard = trt_bindings.Bindings("a.whl", "10.0.1", every - {"int8_calibrator"})
    assert [u.name for u in chk.dead_guards(uses, [chk.check(uses, no_guard), r11])] == ["int8_calibrator"]


def test_export_modules_legacy_calibrator_is_a_10x_path() -> None:
    uses = []
    for rel in chk.CHECKED_FILES:
        uses += trt_uses.collect_uses((REPO / rel).read_text(), rel)[0]
    majors = _by_name(uses)
    for name in ("IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "get_batch", "write_calibration_cache"):
        assert majors[name] == {10}, name
    assert majors["STRONGLY_TYPED"] == {10}
    for name in ("create_network", "execute_async_v3", "set_tensor_address", "create_timing_cache", "FLOAT"):
        assert majors[name] == {10, 11}, name


@pytest.mark.slow
def test_export_code_names_exist_in_real_bindings() -> None:
    cache = os.environ.get("DFQ_TRT_WHEELS", str(Path.home() / ".cache" / "dfq" / "trt-wheels"))
    cmd = [sys.executable, str(REPO / "benchmarks" / "trt_api_check.py"), "--cache", cache]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and "Traceback" in proc.stderr and "pip" in proc.stderr:
        pytest.skip(f"could not download the bindings wheels: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "names checked, 0 missing" in proc.stdout and "verdict: OK" in proc.stdout
