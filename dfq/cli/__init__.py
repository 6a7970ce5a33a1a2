"""The ``dfq`` command line: parse options into a request of the job layer (:mod:`dfq.jobs`), make one
call, print the result. Option choices come from the registries (presets, calibrators, inversion
methods, targets, backends, export formats).

Exit codes: 0 success, 2 bad input (one-line ``error: ...`` on stderr, no traceback; set
``DFQ_DEBUG=1`` to see it; click's own usage errors, such as an unknown option, a missing or badly
typed value, an integer beyond 64 bits or a bad choice, are printed the same way, without click's
Usage/Try lines; so are an argument holding a NUL character and a path the OS refuses as too long or a
symlink loop, wherever it is first touched; ``tests/test_cli_fuzz.py`` fuzzes every command for this),
130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Both stop an
inversion at the current iteration with a resumable checkpoint (``dfq invert ... --resume``,
``dfq calibrate ... --resume``). A full disk is reported the same way (``error: no space left on device
writing ...``, exit 2). Notes the job goes on after (fewer images in a folder than asked) are one
``note: ...`` line each. Under torchrun each process's error line starts with its rank
(``error: rank 1: ...``). Progress bars are drawn only when stderr is a terminal (``DFQ_PROGRESS=1``
forces them on, ``0`` off: :mod:`dfq._progress`).
Commands that produce figures print them as JSON with ``--json`` (for pipelines).

This package holds the group, its error handling and the entry point; each command family lives in its own
module (calibrate, invert, evaluate: eval/export/export-set, distill, analyze: analyze/report, bench) and is
added to the group here. Shared options and printing are in :mod:`dfq.cli._common`.
"""

from __future__ import annotations

import errno
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import click

from dfq.atomic import is_out_of_space, out_of_space_error
from dfq.cli import analyze, bench, calibrate, distill, evaluate, invert
from dfq.cli._common import _model_options as _model_options  # re-exported: the helpers lived here
from dfq.cli._common import _pct as _pct
from dfq.cli._common import _print as _print
from dfq.cli._common import bound_integers
from dfq.distributed import ranked
from dfq.errors import DfqError, DfqWarning, shown
from dfq.signals import Terminated, terminate_as_interrupt

__all__ = ["cli", "main"]


_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP})
"""OSErrors only a path given on the command line causes, wherever it is first touched: a name longer
than the file system allows, a loop of symbolic links. Said as one ``error:`` line, not a traceback."""



def _usage_line(e: click.ClickException) -> str:
    """A click error (unknown option, missing value, bad choice, ...) as the one ``error:`` line."""
    message = " ".join(e.format_message().split()).rstrip(".")
    message = message[:1].lower() + message[1:] if message[1:2].islower() else message
    ctx = getattr(e, "ctx", None)
    if ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return f"error: {message}"


class _DfqGroup(click.Group):
    """The group that turns bad input into one ``error:`` line and exit 2, and interrupts into 130/143.

    Bad input is a :class:`DfqError` or a click usage error (unknown option or command, missing or
    badly typed value, bad choice, an integer beyond 64 bits: printed as one line too, without click's
    Usage/Try lines), an argument holding a NUL character, or an OSError only a given path causes (a
    name too long, a symlink loop: :data:`_PATH_ERRNOS`); any other exception is a bug and keeps its
    traceback. A path of undecodable bytes is printed back as those bytes (:func:`_bytes_as_given`).
    ``DFQ_DEBUG=1`` shows the traceback of a DfqError too. Living in the group (not around it), this
    behaves the same under ``click.testing.CliRunner`` as in the console script.
    """

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        bound_integers(cmd)  # every integer option within 64 bits, this command's and its subcommands'
        super().add_command(cmd, name)

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        """The group's own options parsed; a click usage error (``dfq --bogus``) is one line and exit 2."""
        held = next((a for a in args if isinstance(a, str) and "\x00" in a), None)
        if held is not None:  # no shell passes one; the Python API can, and os calls raise ValueError on it
            message = f"argument '{shown(held)}' holds a NUL character, which no path or value may contain"
            click.echo(f"error: {message}", err=True)
            raise click.exceptions.Exit(2)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # bare ``dfq``: the help text, as click prints it
        except click.ClickException as e:
            click.echo(_usage_line(e), err=True)
            raise click.exceptions.Exit(2) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _notes(), _bytes_as_given():
                return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.ClickException as e:  # the command's options (parsed here), or an unknown command
            click.echo(_usage_line(e), err=True)
            ctx.exit(2)
        except DfqError as e:
            if os.environ.get("DFQ_DEBUG"):
                raise
            click.echo(f"error: {ranked(str(e).splitlines()[0] if str(e) else type(e).__name__)}", err=True)
            ctx.exit(2)
        except OSError as e:  # a full disk wherever it struck (dfq's own writers say it as a DfqError)
            if os.environ.get("DFQ_DEBUG"):
                raise
            if is_out_of_space(e):
                click.echo(f"error: {ranked(out_of_space_error(e.filename or 'a file'))}", err=True)
            elif e.errno in _PATH_ERRNOS and e.filename is not None:  # a path of the command line
                reason = (e.strerror or "unusable path").lower()
                click.echo(f"error: {ranked(f'{shown(e.filename)}: {reason}')}", err=True)
            else:
                raise
            ctx.exit(2)
        except KeyboardInterrupt as e:
            terminated = isinstance(e, Terminated)
            click.echo("terminated" if terminated else "interrupted", err=True)
            ctx.exit(143 if terminated else 130)


@contextmanager
def _bytes_as_given() -> Iterator[None]:
    """Let stdout print lone surrogates back as the bytes they stand for (``surrogateescape``).

    Python decodes argv bytes that are not UTF-8 (``--out $'\\xff'``) to lone surrogates; a strict UTF-8
    stdout cannot encode them, so ``run written to OUT`` raised a UnicodeEncodeError after the work was
    done. stderr already escapes them (``backslashreplace``). The handler is put back afterwards.
    """
    stream = sys.stdout
    errors = getattr(stream, "errors", None)
    if errors != "strict" or not hasattr(stream, "reconfigure"):
        yield
        return
    stream.reconfigure(errors="surrogateescape")
    try:
        yield
    finally:
        try:
            stream.reconfigure(errors=errors)
        except (ValueError, OSError):  # closed meanwhile
            pass


@contextmanager
def _notes() -> Iterator[None]:
    """Print each :class:`DfqWarning` as one ``note: ...`` line on stderr (no file and line number);
    every other warning is shown as Python shows it."""
    previous = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:  # fmt: skip
        if issubclass(category, DfqWarning):
            click.echo(f"note: {' '.join(str(message).split())}", err=True)
        else:
            previous(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", DfqWarning)  # a note each time, not once per call site
        warnings.showwarning = show
        yield


@click.group(cls=_DfqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dfq")
def cli() -> None:
    """dfq: data-free quantization and deployment for timm models."""


cli.add_command(calibrate.calibrate)
cli.add_command(evaluate.eval_cmd)
cli.add_command(invert.invert)
cli.add_command(distill.distill)
cli.add_command(analyze.analyze)
cli.add_command(analyze.report_cmd)
cli.add_command(evaluate.export_cmd)
cli.add_command(bench.bench)
cli.add_command(evaluate.export_set_cmd)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``dfq``): SIGTERM stops like Ctrl-C, then the click group runs."""
    terminate_as_interrupt()
    cli.main(args=argv, prog_name="dfq")
