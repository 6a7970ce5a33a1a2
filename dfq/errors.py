"""The one exception type for bad user input.

Library code raises :class:`DfqError` for anything a user can fix (unknown model, missing file,
bad option combination). The CLI turns it into a one-line message and exit code 2; Python callers
catch it like any ``ValueError``.
"""


class DfqError(ValueError):
    """A user-facing error: the message is one line and says what to do."""
