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
    >>> shown("x" * 100, width=40)
    'xxxxxxxxx…xxxxxxxxxx (100 characters)'
    """
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))
    return text if len(text) <= width else f"{text[: width - 31]}…{text[-10:]} ({len(text)} characters)"
