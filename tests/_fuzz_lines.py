"""Hostile command lines for :mod:`tests.test_cli_fuzz`: the commands and their parameters read from
click, the hostile values, the hypothesis strategies that build a command line from them, and the
files the path placeholders (``{run}``, ``{folder}``, ...) name."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import click
from click.testing import CliRunner
from hypothesis import strategies as st

from dfq.cli import cli
from dfq.config import CNN_SITES, VIT_SITES

MODELS = ("test_vit", "test_resnet")


# -- the commands and their parameters, from click ----------------------------------------------------
def _leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], click.Command]:
    """Every runnable command of ``group`` by its path (``("bench", "ort")``), subgroups expanded."""
    found: dict[tuple[str, ...], click.Command] = {}
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found.update(_leaf_commands(command, (*prefix, name)))
        else:
            found[(*prefix, name)] = command
    return found


COMMANDS = _leaf_commands(cli)


# -- hostile values -----------------------------------------------------------------------------------
LONG = "a" * 5000
HOSTILE_NUMBERS = [
    "", " ", "0", "-1", "-0", "1e30", "-1e30", "1e-30", str(2**63), str(2**63 - 1), str(-(2**63)), str(2**64),
    "2**63", str(10**12), str(2**31), "9" * 400, "9" * 5000, "nan", "NaN", "-nan", "inf", "-inf", "Infinity",
    "0x10", "1_000", " 3 ", "٣", "1.5", "3e2", "--1", "+1", "1e309",
]  # fmt: skip
HOSTILE_TEXT = [
    "", " ", "-", "--", "-1", "=", "==", "a=b=c", ",", ",,", LONG, "ünï çødé ✓ 中文 🚀", "nul\x00byte",
    "\n", "line\nbreak", "\r\t\x0b\x0c", "\x1b[31mred\x1b[0m", "\udcff\udcfe", "\u202egnp.x", "\ufeffbom",
    "%s %d {0} {}", "$(touch pwned)", "'\"", "\\", "*", "?[", "None", "null", "true", "[]", "{}", "()",
]  # fmt: skip
PATH_VALUES = [
    "", " ", ".", "does-not-exist", "{tmp}/no/such/dir/x", "/proc/x", "/proc/x/y", "{file}", "{empty}",
    "{tmp}/" + LONG, "b" * 300, "ünï/中文", "new\nline", "\udcff", "{run}", "{run}/recipe.json",
    "{run}/calibration", "{run}/holdout", "{set}", "{folder}", "{junk}", "{broken_run}", "{loop}", "{file}/x",
    "-", "--out", "{tmp}/fresh/out",
]  # fmt: skip
PATH_SUFFIXES = ["", "", ".npz", ".npy", ".html", ".pt", ".onnx", "/"]
"""Endings drawn onto the paths above: some options refuse a path by its ending before anything else."""
CONFIG_KEYS = ["num_images", "seed", "path", "checkpoint_path", "", " ", "bogus", LONG, "__class__", "Iterations",
               "ünï"]  # fmt: skip
"""Filled in with every field of the inversion, reconstruction and distillation configs (:func:`_config_keys`)."""
CONFIG_VALUES = [
    "", "1", "0", "-1", "2", "0.5", "1e30", "nan", "inf", "-inf", "true", "false", "none", "None", "null",
    str(2**63), str(2**63 - 1), str(10**12), "1,2", "1,2,3", "(1,2)", "[1, 2]", "((50, 0.3),)", "1:0.5,0:2",
    "abc", LONG, "{tmp}/ck", "/proc/x", "{folder}", "{set}", "ünï", "a=b", "minmax", "learn", "frozen", "block",
]  # fmt: skip
DEVICES = ["cpu", "cuda", "meta", "cuda:0", "cpu:0", "cpu:-1", "mps", "CPU", ""]
UNKNOWN_TOKENS = ["--bogus", "-z", "--num_images", "---", "--=x", "-", "--", "--model-name", "--json=1", "-h",
                  "--help"]  # fmt: skip


def _config_keys() -> list[str]:
    from dfq.distill.config import DistillConfig
    from dfq.inversion.registry import _INVERTERS
    from dfq.quant.reconstruct import ReconstructConfig

    classes = [entry.config_cls for entry in _INVERTERS.values()] + [ReconstructConfig, DistillConfig]
    return sorted({*CONFIG_KEYS, *(f.name for cls in classes for f in dataclasses.fields(cls))})


def _safe(text: str) -> str:
    """A drawn string that cannot name a path outside the example's directory (absolute, ``..``, ``~``)."""
    text = text.replace("..", "__")
    return "x" + text if text.startswith(("/", "~")) else text


def _text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=20).map(_safe))


def _key_values(option: click.Option) -> st.SearchStrategy[str]:
    """``KEY=VALUE`` items: real config keys (or calibrator sites) with garbage values, and garbage forms."""
    from dfq.calibrators import calibrator_names

    if "SITE" in str(option.metavar):
        keys = st.sampled_from([*VIT_SITES, *CNN_SITES, "", "bogus", LONG])
        values = st.sampled_from([*calibrator_names(), "", "bogus", "MSE", "minmax=mse"])
    else:
        keys = st.sampled_from(_config_keys())
        values = st.one_of(st.sampled_from(CONFIG_VALUES), _text())
    forms: list[Callable[[str, str], str]] = [  # the plain form twice: drawn most often
        lambda k, v: f"{k}={v}", lambda k, v: f"{k}={v}", lambda k, v: k, lambda k, v: f"={v}",
        lambda k, v: f"{k}=={v}", lambda k, v: f" {k} = {v} ",
    ]  # fmt: skip
    return st.tuples(st.sampled_from(forms), keys, values).map(lambda t: t[0](t[1], t[2]))


def _values(param: click.Parameter) -> st.SearchStrategy[str]:
    """Values of one option or argument: a few plausible ones and hostile ones of its kind."""
    kind, name = param.type, param.name or ""
    if name in ("model_name", "teacher", "student"):  # never a hub name: nothing is downloaded
        return st.sampled_from(MODELS)
    if isinstance(param, click.Option) and param.multiple and "=" in str(param.metavar):
        return _key_values(param)
    if isinstance(kind, click.Choice):
        good = st.sampled_from([str(c) for c in kind.choices])
        return st.one_of(good, good, st.sampled_from(["", "bogus", "ONNX", LONG, "\n"]))
    if isinstance(kind, click.types.IntParamType | click.types.FloatParamType):
        good = st.sampled_from(["1", "2", "3", "4", "8"] if isinstance(kind, click.types.IntParamType) else
                               ["0.5", "1", "5", "5.0", "1e-3", "4.5"])  # fmt: skip
        return st.one_of(good, st.sampled_from(HOSTILE_NUMBERS), st.integers(-(2**70), 2**70).map(str))
    if isinstance(kind, click.Path):
        paths = st.tuples(st.sampled_from(PATH_VALUES), st.sampled_from(PATH_SUFFIXES)).map("".join)
        return st.one_of(paths, paths, _text())
    if name == "device":
        return st.one_of(st.sampled_from(DEVICES), _text())
    if name == "sites":
        parts = st.lists(st.sampled_from([*VIT_SITES, *CNN_SITES, "", " ", "bogus", "Q"]), max_size=4)
        return st.one_of(parts.map(",".join), _text())
    return _text()


def _tokens(param: click.Parameter) -> st.SearchStrategy[list[str]]:
    """One use of an option on the command line: a flag, ``NAME VALUE``, ``--name=VALUE``, or a value alone."""
    if isinstance(param, click.Argument):
        return _values(param).map(lambda v: [v])
    assert isinstance(param, click.Option)
    names = [*param.opts, *param.secondary_opts]
    if param.is_flag and not param.count:
        return st.sampled_from(names).map(lambda n: [n])
    joined = [n for n in param.opts if n.startswith("--")]
    forms = [st.tuples(st.sampled_from(names), _values(param)).map(list)]
    if joined:
        forms.append(st.tuples(st.sampled_from(joined), _values(param)).map(lambda t: [f"{t[0]}={t[1]}"]))
    return st.one_of(*forms)


def _pinned(command: click.Command) -> list[str]:
    """What every example of ``command`` ends with: no hub weights, the CPU (last wins over a drawn one)."""
    names = {p.name: p for p in command.params}
    pins: list[str] = []
    if "no_pretrained" in names:
        pins.append("--no-pretrained")
    device = names.get("device")
    if device is not None and isinstance(device.type, click.Choice):
        pins += ["--device", "cpu"]
    return pins


# fmt: off
BASES: dict[tuple[str, ...], list[list[str]]] = {
    ("calibrate",): [
        ["--model", "test_vit", "--inversion", "noise", "--num-images", "4", "--batch-size", "4", "--out", "out"],
        ["--model", "test_resnet", "--calib-folder", "{folder}", "--num-images", "4", "--out", "out"],
        ["--model", "test_vit", "--calib-set", "{set}", "--eval-folder", "{folder}", "--out", "{tmp}/runs/out"],
    ],
    ("invert",): [
        ["--model", "test_vit", "--method", "noise", "--num-images", "2", "--out", "set"],
        ["--model", "test_resnet", "--method", "deepinversion", "--set", "iterations=1", "--num-images", "2",
         "--out", "set"],
    ],
    ("eval",): [["{run}", "--data", "{folder}"], ["--model", "test_resnet", "--data", "{folder}"]],
    ("distill",): [
        ["--teacher", "test_vit", "--student", "test_vit", "--inversion", "noise", "--num-images", "4", "--steps", "1",
         "--batch-size", "2", "--out", "out"],
        ["--qat", "{run}", "--calib-set", "{set}", "--steps", "1", "--batch-size", "2", "--out", "out"],
    ],
    ("analyze",): [["{run}"], ["{run}", "--images", "{set}"]],
    ("report",): [["{run}"], ["{run}", "--out", "page.html"]],
    ("export",): [["{run}"]],
    ("export-set",): [["{set}", "--out", "cal.npz"], ["{run}", "--format", "npy", "--out", "cal.npy"]],
    ("bench", "inversion"): [["--model", "test_vit", "--batch-size", "1", "--steps-per-stage", "1", "--warmup", "0"]],
    ("bench", "ort"): [["{run}", "--rounds", "1", "--iters", "1", "--batch-size", "1"]],
}
# fmt: on
"""A valid command line of each command (placeholders filled in per example): half the examples are one
of these with one to three drawn tokens after it, so a hostile value meets the checks deep in the job,
not only click's parsing. A command without an entry is fuzzed from nothing only."""


@st.composite
def command_lines(draw: st.DrawFn, path: tuple[str, ...] | None = None) -> list[str]:
    """A command (``path``, or one drawn) and hostile tokens for it (see the module docstring), from
    nothing or after a valid base."""
    path = path or draw(st.sampled_from(sorted(COMMANDS)))
    command = COMMANDS[path]
    params = [p for p in command.params if p.name != "help"]
    options = [p for p in params if isinstance(p, click.Option)]
    body = st.one_of(
        *(_tokens(o) for o in options),
        st.sampled_from(UNKNOWN_TOKENS).map(lambda t: [t]),
        _text().map(lambda t: [t]),  # a stray positional
    )
    argv: list[str] = [*path]
    if path in BASES and draw(st.booleans()):  # a valid line, then a few tokens (the last of an option wins)
        argv += draw(st.sampled_from(BASES[path]))
        for tokens in draw(st.lists(st.one_of(*(_tokens(o) for o in options)), min_size=1, max_size=3)):
            argv += tokens
    else:
        for arg in (p for p in params if isinstance(p, click.Argument)):  # positionals first, mostly there
            if draw(st.integers(0, 5)) > 0:
                argv += draw(_tokens(arg))
        for option in options:  # required options mostly given: the checks behind them are reached
            if option.required and draw(st.integers(0, 5)) > 0:
                argv += draw(_tokens(option))
        for tokens in draw(st.lists(body, max_size=8)):
            argv += tokens
    argv += _pinned(command)
    valued = [o for o in options if not o.is_flag]
    if valued and draw(st.integers(0, 9)) == 0:  # an option as the last token: its value is missing
        argv.append(draw(st.sampled_from(valued)).opts[-1])
    return argv


# -- the world the placeholders name ------------------------------------------------------------------
def build_world(root: Path, image_folder: Path) -> dict[str, Path]:
    """Masters of what the path placeholders name, made in ``root``: a calibrated test_vit run (held-out
    images, ONNX export), a noise set, a text file, a garbage file, an empty folder, a broken run."""
    runner = CliRunner()
    base = ["--model", "test_vit", "--no-pretrained", "--device", "cpu", "--num-images", "4", "--json"]
    r = runner.invoke(cli, ["calibrate", *base, "--inversion", "noise", "--batch-size", "4", "--holdout", "4",
                            "--export", "onnx", "--out", str(root / "run")])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["invert", *base, "--method", "noise", "--out", str(root / "set")])
    assert r.exit_code == 0, r.output
    (root / "file").write_text("not what you are looking for\n")
    (root / "junk").write_bytes(b"PK\x03\x04 not a checkpoint \x00\xff" * 64)
    (root / "empty").mkdir()
    (root / "broken_run").mkdir()
    (root / "broken_run" / "recipe.json").write_text('{"model": ')
    return {"run": root / "run", "set": root / "set", "folder": image_folder, "file": root / "file",
            "junk": root / "junk", "empty": root / "empty", "broken_run": root / "broken_run"}  # fmt: skip


def materialize(argv: list[str], world: dict[str, Path], tmp: Path) -> list[str]:
    """``argv`` with its placeholders replaced by fresh copies in ``tmp`` (made only when named)."""
    text = "\n".join(argv)
    places = {"tmp": tmp}
    for name, master in world.items():
        if "{" + name + "}" not in text:
            continue
        places[name] = tmp / f"w-{name}"
        if master.is_dir():
            shutil.copytree(master, places[name], symlinks=True)
        else:
            shutil.copy2(master, places[name])
    if "{loop}" in text:
        places["loop"] = tmp / "w-loop"
        places["loop"].symlink_to(places["loop"].name)
    out = []
    for arg in argv:
        for name, path in places.items():
            arg = arg.replace("{" + name + "}", str(path))
        out.append(arg)
    return out
