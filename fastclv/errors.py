"""fastclv's exceptions: one base class, split into terminal and transient errors.

Every message says what went wrong and where (file, row, column or table) and ends with a
hint. Schedulers retry only :class:`TransientError`; a :class:`TerminalError` fails fast.
"""

from __future__ import annotations


class FastclvError(Exception):
    """Base class of every error fastclv raises on purpose."""

    #: Whether retrying the same run can succeed (a scheduler reads this).
    transient: bool = False
    #: Process exit code used by the command line.
    exit_code: int = 1


class TerminalError(FastclvError):
    """Retrying will not help: the input, the configuration or the data is wrong."""


class TransientError(FastclvError):
    """A passing condition (connection refused, lock timeout, storage hiccup): retry later."""

    transient = True
    exit_code = 75  # EX_TEMPFAIL


class ConfigError(TerminalError):
    """A setting is missing or invalid."""

    exit_code = 2


class InputError(TerminalError):
    """An input file is missing, unreadable, or lacks a required column."""

    exit_code = 2


class VerificationError(TerminalError):
    """The DuckDB cross-check disagrees with the Polars result; nothing was loaded."""

    exit_code = 3


class LoadError(TerminalError):
    """PostgreSQL rejected the load for a reason a retry will not fix."""


def printable(text: str, *, keep: str = "") -> str:
    r"""``text`` with control characters escaped (``\x1b``), safe to print to a terminal.

    Characters in ``keep`` (a message's own line breaks, ``"\n"``) are left as they are.

    >>> printable("id\x1b[2J\n", keep="\n")
    'id\\x1b[2J\n'
    """
    return "".join(
        c if c.isprintable() or c == " " or c in keep else c.encode("unicode_escape").decode() for c in text
    )


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, without its closing ``.`` or ``!``.

    For wrapping a library's error in a sentence of ours (its type's name when it says nothing).
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].rstrip(".!") if lines else type(exc).__name__
