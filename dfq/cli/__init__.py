"""The ``dfq`` command line: parse options into a request of the job layer (:mod:`dfq.jobs`), make one
call, print the result. Option choices come from the registries (presets, calibrators, inversion
methods, targets, backends, export formats).

Exit codes: 0 success, 2 bad input (one-line ``error: ...`` on stderr, no traceback; set
``DFQ_DEBUG=1`` to see it; click's own usage errors, such as an unknown option, a missing or badly
typed value or a bad choice, are printed the same way, without click's Usage/Try lines),
130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Both stop an
inversion at the current iteration with a resumable checkpoint (``dfq invert ... --resume``,
``dfq calibrate ... --resume``). A full disk is reported the same way (``error: no space left on device
writing ...``, exit 2). Notes the job goes on after (fewer images in a folder than asked) are one
``note: ...`` line each. Progress bars are drawn only when stderr is a terminal (``DFQ_PROGRESS=1``
forces them on, ``0`` off: :mod:`dfq._progress`).
Commands that produce figures print them as JSON with ``--json`` (for pipelines).

This package holds the group, its error handling and the entry point; each command family lives in its own
module (calibrate, invert, evaluate: eval/export/export-set, distill, analyze: analyze/report, bench) and is
added to the group here. Shared options and printing are in :mod:`dfq.cli._common`.
"""

from __future__ import annotations

import os
import signal
import threading
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
from dfq.errors import DfqError, DfqWarning

__all__ = ["cli", "main"]


class _Terminated(KeyboardInterrupt):
    """SIGTERM raised as an interrupt, so long loops checkpoint exactly as on Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated


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
    badly typed value, bad choice: printed as one line too, without click's Usage/Try lines); any other
    exception is a bug and keeps its traceback.
    ``DFQ_DEBUG=1`` shows the traceback of a DfqError too. Living in the group (not around it), this
    behaves the same under ``click.testing.CliRunner`` as in the console script.
    """

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        """The group's own options parsed; a click usage error (``dfq --bogus``) is one line and exit 2."""
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # bare ``dfq``: the help text, as click prints it
        except click.ClickException as e:
            click.echo(_usage_line(e), err=True)
            raise click.exceptions.Exit(2) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _notes():
                return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.ClickException as e:  # the command's options (parsed here), or an unknown command
            click.echo(_usage_line(e), err=True)
            ctx.exit(2)
        except DfqError as e:
            if os.environ.get("DFQ_DEBUG"):
                raise
            click.echo(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
            ctx.exit(2)
        except OSError as e:  # a full disk wherever it struck (dfq's own writers say it as a DfqError)
            if not is_out_of_space(e) or os.environ.get("DFQ_DEBUG"):
                raise
            click.echo(f"error: {out_of_space_error(e.filename or 'a file')}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt as e:
            terminated = isinstance(e, _Terminated)
            click.echo("terminated" if terminated else "interrupted", err=True)
            ctx.exit(143 if terminated else 130)


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
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    cli.main(args=argv, prog_name="dfq")
