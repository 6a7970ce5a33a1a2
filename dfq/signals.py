"""SIGTERM as an interrupt, and interrupts held back across a short critical section.

:func:`terminate_as_interrupt` makes SIGTERM (``kill``, a launcher's or a session's stop) raise
:class:`Terminated`, a ``KeyboardInterrupt``, so every loop that checkpoints on Ctrl-C checkpoints on
it too; the caller tells the two apart by the class (exit 143 vs 130). The CLI and the benchmark
scripts that make sets install it.

A long loop turns Ctrl-C and ``kill`` (SIGTERM, raised as ``KeyboardInterrupt`` by the CLI) into a
checkpoint. An interrupt that lands inside an optimizer step would leave parameters and optimizer
moments half-updated, a state no checkpoint may record; :func:`deferred_interrupts` holds such a
signal until the step is complete and then delivers it to the handler that was installed before, so
the loop always stops on a committed iteration. Outside the main thread (where Python cannot install
handlers) it does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_HELD = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM raised as an interrupt, so long loops checkpoint exactly as on Ctrl-C."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM handler :func:`terminate_as_interrupt` installs."""
    raise Terminated


def terminate_as_interrupt() -> None:
    """Raise SIGTERM as :class:`Terminated` from now on (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the body of the ``with``; deliver the first one held when it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append((signum, frame))

    previous = {s: signal.signal(s, hold) for s in _HELD}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            signum, frame = caught[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)
