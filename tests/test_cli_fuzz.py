"""Property-based fuzz of the whole ``dfq`` command line (hypothesis).

The promise under test (:class:`dfq.cli._DfqGroup`): bad input exits 2 with one ``error: ...`` line on
stderr, never a Python traceback. Every command of the click group is fuzzed (``bench`` as its
subcommands), with its options and arguments read from click's own command objects, so an option or a
command added later is fuzzed without editing this file.

An example is one command line: the command, then tokens built from its parameters with hostile values
(empty strings, huge or negative numbers, ``nan``/``inf``, unicode, control characters, 5000-character
strings, ``KEY=VALUE`` garbage with real config keys for the repeatable settings, paths that do not
exist, are files, lie in ``/proc``), repeated options, unknown options, stray positionals, and sometimes
an option left without its value at the end. Half the examples start from a valid command line
(:data:`BASES`) and add one to three drawn tokens, so hostile values also meet the checks deep in the
jobs, not only click's parsing. Paths are placeholders (``{run}``, ``{folder}``, ``{tmp}``, ...) filled
in per example with fresh copies in a temporary directory that is also the working directory: nothing
outside it is ever named, apart from ``/proc/x``, where nothing can be created.

Models are timm's tiny ``test_vit``/``test_resnet`` without hub weights (``--no-pretrained``) on the
CPU. The rare valid combinations run for real while the work is small; past a small budget the work is
replaced, where it would start and after every check before it, by :class:`_Reached`, counted as a
pass (:func:`_capped_work`: the inverter itself, block reconstruction, the distillation loop, the
inversion and ONNX Runtime speed measurements; a batch those would allocate must fit in memory). A hard
per-example deadline (``SIGALRM``, :data:`DEADLINE_S`) turns a hang into a failure that shows the
command line, and an address-space cap (:func:`_memory_cap`) a runaway allocation.

Failures whose fix lies outside the CLI and the request checks are :data:`KNOWN_BUGS`: counted, not
failed, by the fuzz, and each kept as an xfail with its example (:func:`test_known_bug_outside_the_cli`).

Profiles (``DFQ_FUZZ_PROFILE``), per command: ``ci`` (default) 15 derandomized examples (150 in all),
the same every run; ``fuzz`` 300 random ones (3000 in all) for a deeper search, e.g.
``DFQ_FUZZ_PROFILE=fuzz OMP_NUM_THREADS=1 pytest tests/test_cli_fuzz.py --hypothesis-show-statistics``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from dfq.cli import cli
from tests._fuzz_lines import COMMANDS, LONG, build_world, command_lines, materialize

pytestmark = pytest.mark.usefixtures("one_thread")

settings.register_profile(
    "ci", max_examples=15, derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip
settings.register_profile(
    "fuzz", max_examples=300, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip
PROFILE = os.environ.get("DFQ_FUZZ_PROFILE", "ci")
DEADLINE_S = 90.0
"""Hard limit of one example: the cheap valid ones take about a second, a refusal milliseconds."""
EXIT_CODES = {0, 2}
"""What a command may exit with here: success or bad input (130/143 need a signal, never sent)."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, image_folder: Path) -> dict[str, Path]:
    return build_world(tmp_path_factory.mktemp("fuzz-world"), image_folder)


# -- running one example ------------------------------------------------------------------------------
class _Reached(Exception):
    """The job passed every check and reached work this fuzz does not run (too long): a pass."""


class _Hung(BaseException):
    """The example ran past :data:`DEADLINE_S` (a BaseException: no ``except Exception`` swallows it)."""


CHEAP_IMAGES = 16
SMALLEST_IMAGE = (3, 32, 32)
"""The least an image of any model takes (float32), for :func:`_allocatable`."""


def _allocatable(batch: int, what: str) -> None:
    """What a stub checks before it stands in for the work: a batch the work would allocate at once
    must fit in the memory available (counted at :data:`SMALLEST_IMAGE`), else the real command fails
    in an allocation, with a traceback; the stub raises that MemoryError, a failure of the fuzz."""
    from dfq.memory import available_memory, set_bytes

    free = available_memory()
    if free is not None and set_bytes(batch, SMALLEST_IMAGE) > free:
        raise MemoryError(f"the {what} of {batch} images would be allocated: it cannot fit in {free} bytes")


@contextmanager
def _capped_work() -> Iterator[None]:
    """Run the cheap valid jobs for real; replace the long ones by :class:`_Reached` where the work
    starts, after the checks. Each stub wraps the function that does the work, so the checks before it
    (CLI, request, source plan, memory, model family) still run."""
    import dfq.distill
    import dfq.inversion.bench
    import dfq.jobs.calibrate
    import dfq.jobs.speed
    from dfq.inversion.registry import _INVERTERS

    def capped_inverter(entry: Any) -> Any:
        def fn(model: Any, config: Any, **kwargs: Any) -> Any:
            iterations = getattr(config, "iterations", 0)
            small = config.num_images <= CHEAP_IMAGES and iterations is not None and iterations <= 2
            if not small or (getattr(config, "batch_size", 0) or 0) > 64:
                raise _Reached(f"inversion {entry.name}")
            return entry.fn(model, config, **kwargs)

        return dataclasses.replace(entry, fn=fn)

    real_reconstruct = dfq.jobs.calibrate.reconstruct
    real_distill = dfq.distill.distill
    real_kept_counts = dfq.inversion.bench.kept_counts
    real_benchmark = dfq.inversion.bench.benchmark_inversion
    real_speedup = dfq.jobs.speed.ort_speedup
    real_float_onnx = dfq.jobs.speed.export_float_onnx
    speed: dict[str, Any] = {}

    def reconstruct(qmodel: Any, images: Any, config: Any, **kwargs: Any) -> Any:
        if config.iters > 2 or config.views > 2:
            raise _Reached("block reconstruction")
        return real_reconstruct(qmodel, images, config, **kwargs)

    def distill(*args: Any, **kwargs: Any) -> Any:
        config = args[2]
        _allocatable(config.batch_size, "distillation batch")
        if kwargs.get("synthesizer") is not None:
            _allocatable(config.synth_batch, "synthesized batch")
        if kwargs.get("synthesizer") is not None or config.steps > 2 or config.batch_size > 64:
            raise _Reached("distillation loop")
        return real_distill(*args, **kwargs)

    def benchmark_inversion(model: Any, **kwargs: Any) -> Any:
        speed.update(kwargs)
        return real_benchmark(model, **kwargs)

    def kept_counts(*args: Any, **kwargs: Any) -> Any:  # after benchmark_inversion's checks
        real_kept_counts(*args, **kwargs)
        _allocatable(speed["batch_size"], "inversion benchmark batch")
        raise _Reached("inversion benchmark")

    def ort_speedup(run: Any, batch_sizes: Any = (1, 8), **kwargs: Any) -> Any:
        speed.update(kwargs, batch_sizes=list(batch_sizes))
        return real_speedup(run, batch_sizes, **kwargs)

    def export_float_onnx(*args: Any, **kwargs: Any) -> Any:  # after ort_speedup's checks
        _allocatable(max(speed["batch_sizes"]), "ONNX Runtime timing batch")
        threads = speed.get("threads")
        small = max(speed["batch_sizes"]) <= 8 and speed.get("rounds", 7) * speed.get("iters", 5) <= 4
        if not small or (threads is not None and threads > 2):
            raise _Reached("ONNX Runtime timing")
        return real_float_onnx(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        for name, entry in list(_INVERTERS.items()):
            mp.setitem(_INVERTERS, name, capped_inverter(entry))
        mp.setattr(dfq.jobs.calibrate, "reconstruct", reconstruct)
        mp.setattr(dfq.distill, "distill", distill)
        mp.setattr(dfq.inversion.bench, "kept_counts", kept_counts)
        mp.setattr(dfq.inversion.bench, "benchmark_inversion", benchmark_inversion)
        mp.setattr(dfq.jobs.speed, "ort_speedup", ort_speedup)
        mp.setattr(dfq.jobs.speed, "export_float_onnx", export_float_onnx)
        mp.setenv("DFQ_PROGRESS", "0")
        mp.delenv("DFQ_DEBUG", raising=False)
        yield


MEMORY_HEADROOM = 6 << 30
"""Address space an example may add to what the process holds (:func:`_memory_cap`)."""


@contextmanager
def _memory_cap() -> Iterator[None]:
    """Cap the address space at what the process holds plus :data:`MEMORY_HEADROOM`: a hostile value
    that makes a job ask for tens of gigabytes fails at once with a MemoryError (a failure shown with its
    command line) instead of filling a shared machine. Not where CUDA is visible (it reserves huge
    address ranges), nor where the limit cannot be read."""
    import resource

    import torch

    try:
        held = next(int(line.split()[1]) << 10 for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("VmSize:"))  # fmt: skip
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    except (OSError, StopIteration, ValueError):
        held = None
    if held is None or torch.cuda.is_available():
        yield
        return
    cap = held + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@dataclasses.dataclass(frozen=True)
class KnownBug:
    """A failure the fuzz found whose fix lies outside the CLI and the request checks: counted by the fuzz
    (an event, not a failure) and kept with its example as an xfail (:func:`test_known_bug_outside_the_cli`),
    which fails once the bug is fixed, asking for the example to become an ``@example``."""

    name: str
    exception: str  # the exception's type name
    message: str  # a part of its message
    where: str  # a file its traceback passes through
    argv: tuple[str, ...]  # a command line that shows it
    reason: str

    def matches(self, error: BaseException) -> bool:
        frames = traceback.extract_tb(error.__traceback__)
        return (type(error).__name__ == self.exception and self.message in str(error)
                and any(f.filename.endswith(self.where) for f in frames))  # fmt: skip


_RECONSTRUCT = ("calibrate", "--model", "test_vit", "--inversion", "noise", "--num-images", "4", "--reconstruct",
                "--reconstruct-iters", "1", "--out", "out", "--no-pretrained", "--device", "cpu")  # fmt: skip
_DEEPINVERSION = ("invert", "--model", "test_vit", "--method", "deepinversion", "--num-images", "2", "--set",
                  "iterations=1", "--out", "set", "--no-pretrained", "--device", "cpu")  # fmt: skip
KNOWN_BUGS = [
]  # fmt: skip


def _hang(signum: int, frame: Any) -> None:
    raise _Hung


def _invoke(argv: list[str]) -> Result:
    """``dfq ARGV`` in-process (exceptions caught by the runner), with a hard deadline."""
    previous = signal.signal(signal.SIGALRM, _hang)
    signal.setitimer(signal.ITIMER_REAL, DEADLINE_S)
    try:
        return CliRunner().invoke(cli, argv, catch_exceptions=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _show(argv: list[str]) -> str:
    """``argv`` as a Python list, the 5000-character strings written ``LONG``: paste it into an ``@example``."""
    items = []
    for arg in argv:
        parts = [repr(p) for p in arg.split(LONG)]
        items.append(" + LONG + ".join(p for p in parts if p != "''") if LONG in arg else repr(arg))
    return "[" + ", ".join(items) + "]"


def _clip(text: str, limit: int = 4000) -> str:
    return text.replace(LONG, "<LONG>")[-limit:]


def _run(argv: list[str], world: dict[str, Path]) -> Result:
    """``dfq ARGV`` (placeholders filled in) in a fresh working directory, with the work capped."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="dfq-fuzz-", ignore_cleanup_errors=True) as name:
        tmp = Path(name)
        args = materialize(argv, world, tmp)
        os.chdir(tmp)
        try:
            with _capped_work(), _memory_cap():
                return _invoke(args)
        except _Hung:
            pytest.fail(f"dfq {_show(argv)} ran past {DEADLINE_S:.0f} s", pytrace=False)
        finally:
            os.chdir(cwd)


def _check(argv: list[str], world: dict[str, Path]) -> None:
    """Run one command line; fail, showing it, unless the promise holds (a known bug is only counted)."""
    result = _run(argv, world)
    error = result.exception
    command = " ".join(a for a in argv[:2] if a in {n for path in COMMANDS for n in path})
    event(f"{command}: " + ("reached stub" if isinstance(error, _Reached) else f"exit {result.exit_code}"))
    known = next((bug for bug in KNOWN_BUGS if error is not None and bug.matches(error)), None)
    if known is not None:
        event(f"known bug: {known.name}")
        return
    _assert_promise(argv, result)


def _assert_promise(argv: list[str], result: Result) -> None:
    """Exit 0 or 2, no traceback; on exit 2 exactly one ``error:`` line (notes aside, no Usage/Try lines).
    Reaching the stubbed work (:class:`_Reached`) is a pass."""
    shown = f"dfq {_show(argv)}\nexit {result.exit_code}\nstderr:\n{_clip(result.stderr, 3000)}"
    error = result.exception
    assert "Traceback" not in result.output, shown
    if isinstance(error, _Reached):
        return
    if error is not None and not isinstance(error, SystemExit):
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        pytest.fail(f"{shown}\nraised {type(error).__name__}:\n{_clip(trace)}", pytrace=False)
    assert result.exit_code in EXIT_CODES, shown
    if result.exit_code == 2:
        lines = [
            line for line in result.stderr.splitlines() if line.strip() and not line.startswith("note: ")
        ]
        assert len(lines) == 1 and lines[0].startswith("error: "), shown


_CPU = ["--no-pretrained", "--device", "cpu"]


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_no_command_line_gives_a_traceback(
    path: tuple[str, ...], data: st.DataObject, world: dict[str, Path]
) -> None:
    """The property, over each command in turn (so each gets its share of the examples)."""
    _check(data.draw(command_lines(path), label="argv"), world)


@settings(settings.get_profile(PROFILE), phases=[Phase.explicit])
@given(argv=command_lines())
# What the fuzz found and this change fixed (each raised a traceback before):
@example(argv=["export", "nul\x00byte"])  # ValueError: embedded null byte (click's Path check)
@example(argv=["eval", "--model", "test_vit", "--data", "b" * 300, *_CPU])  # OSError: file name too long
@example(argv=["bench", "ort", "b" * 300])  # the same, in ort_speedup's first check
@example(argv=["eval", "{run}", "--data", "{folder}", "--batch-size", str(2**63), *_CPU])  # islice overflow
@example(argv=["invert", "--model", "test_vit", "--method", "noise", "--num-images", "2", "--seed", str(2**64),
               "--out", "set", *_CPU])  # torch.manual_seed overflow  # fmt: skip
@example(argv=["report", "{run}", "--out", "/proc/x/y"])  # FileNotFoundError from the atomic writer
@example(argv=["report", "{run}", "--out", ""])  # OSError: device or resource busy (renaming onto '.')
@example(argv=["report", "{run}", "--out", "{run}/calibration"])  # IsADirectoryError
@example(argv=["report", "{run}", "--out", "{file}/x"])  # NotADirectoryError
@example(argv=["report", "{run}", "--out", "no/such/folder/page.html"])  # FileNotFoundError
@example(argv=["report", "{run}", "--out", "\udcff.html"])  # UnicodeEncodeError printing the path on stdout
@example(argv=["analyze", "{run}", "--device", "cpu:-1"])  # RuntimeError from torch.device
@example(argv=["analyze", "{run}", "--device", "meta"])  # NotImplementedError: cannot copy out of meta tensor
@example(argv=[*_DEEPINVERSION, "--set", f"jitter={2**64}"])  # ValueError: overflow in random_jitter_flip
@example(argv=["calibrate", "--model", "test_vit", "--inversion", "folder", "--set", "path={folder}", "--set",
               "crop_pct=1e-30", "--num-images", "4", "--out", "out", *_CPU])  # OverflowError in PIL's resize
@example(argv=[*_RECONSTRUCT, "--seed", str(2**63 - 1)])  # ValueError: overflow in reconstruct()'s unit seeds
@example(argv=[*_RECONSTRUCT, "--reconstruct-option", f"batch_size={2**64}"])  # overflow in images.split
# a batch no memory holds: an allocation error in the work (where the stubs stand: _allocatable)
@example(argv=["distill", "--teacher", "test_vit", "--student", "test_vit", "--inversion", "noise", "--num-images",
               "4", "--steps", "1", "--out", "out", "--batch-size", str(10**12), *_CPU])  # fmt: skip
@example(argv=["distill", "--teacher", "test_vit", "--student", "test_vit", "--inversion", "noise", "--alternate",
               "--steps", "1", "--out", "out", "--kd", f"synth_batch={10**12}", *_CPU])  # fmt: skip
@example(argv=["bench", "inversion", "--model", "test_vit", "--batch-size", str(10**12), *_CPU])
@example(argv=["bench", "ort", "{run}", "--batch-size", str(10**12)])
def test_fixed_regressions(argv: list[str], world: dict[str, Path]) -> None:
    """The examples the fuzz found (and this file's change fixed), run as they are."""
    _check(argv, world)


@pytest.mark.parametrize("bug", KNOWN_BUGS, ids=[b.name for b in KNOWN_BUGS])
def test_known_bug_outside_the_cli(bug: KnownBug, world: dict[str, Path]) -> None:
    """Each known bug still fails as recorded: an xfail with its reason. Fixed (or failing otherwise),
    the test fails and asks for the entry to become an ``@example`` of the fuzz."""
    result = _run(list(bug.argv), world)
    if result.exception is not None and bug.matches(result.exception):
        pytest.xfail(f"{bug.reason}; example: dfq {_show(list(bug.argv))}")
    pytest.fail(f"known bug {bug.name!r} no longer fails as recorded (exit {result.exit_code}, "
                f"{result.exception!r}): drop it from KNOWN_BUGS and add its example as an @example", pytrace=False)  # fmt: skip


def test_every_command_is_fuzzed() -> None:
    """The fuzz reads the commands from the group: a new command or subcommand is in it at once."""
    names = {" ".join(path) for path in COMMANDS}
    assert {"calibrate", "eval", "invert", "distill", "analyze", "report", "export", "export-set",
            "bench inversion", "bench ort"} <= names  # fmt: skip
