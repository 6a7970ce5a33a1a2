"""The one exception type for bad user input.

Library code raises :class:`DfqError` for anything a user can fix (unknown model, missing file,
bad option combination). The CLI turns it into a one-line message and exit code 2; Python callers
catch it like any ``ValueError``. :class:`DfqWarning` is its mild sibling: the job goes on, and the
CLI prints the warning as one ``note: ...`` line (Python callers see an ordinary ``UserWarning``).
"""


class DfqError(ValueError):
    """A user-facing error: the message is one line and says what to do."""


class DfqWarning(UserWarning):
    """A user-facing note (the job goes on): one line, printed by the CLI as ``note: ...``."""


def shown(text: object, width: int = 80) -> str:
    """``text`` (a path or an argument) for a one-line message: control characters escaped, and cut
    to about ``width`` characters with its length said when longer.

    >>> shown("a\\nb")
    'a\\\\nb'
    >>> shown("x" * 100, width=50)
    'xxxxxxxxx…xxxxxxxxxxxxxxxxxxxx (100 characters)'
    >>> shown("\x1b" * 30 + "/run/name", width=50)  # cut between characters, the length of the original
    '\\\\x1b\\\\x1b\\\\x1b\\\\x1b\\\\x1b\\\\x1b\\\\x1b\\\\x1b\\\\x1b…\\\\x1b\\\\x1b\\\\x1b\\\\x1b\\\\x1b\\\\x1b\\\\x1b\\\\x1b\\\\x1b\\\\x1b\\\\x1b/run/name (39 characters)'
    """
    raw = str(text)
    full = _escaped(raw)
    if len(full) <= width:
        return full
    tail = 20  # a path's last characters name the file or run: keep enough of them
    head = max(width - tail - 21, 8)
    return f"{_escaped(raw[:head])}…{_escaped(raw[-tail:])} ({len(raw)} characters)"


def _escaped(text: str) -> str:
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
