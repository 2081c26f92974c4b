"""The exceptions that the command line turns into a one-line message.

The library names what was wrong in its own words: a parameter in backquotes (`data`), a
setting with its value (max_steps=50), a file by its path. The command line, which knows its
flags, rewrites a backquoted parameter as the flag that sets it (`data` -> --data) and catches
nothing else, so that a bug still shows its traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


class FhaError(Exception):
    """A problem with the user's input (files, configs, checkpoints) rather than a bug.

    The `fha` command prints ``fha: error: <message>`` and exits with status 2 instead of
    showing a traceback, so the message must name the file, field or value at fault.
    """


class FhaValueError(FhaError, ValueError):
    """A setting or argument whose value is not allowed; the message names the field or parameter
    and the allowed values. A ValueError too, as Python callers expect of a bad value."""


MAX_DETAIL_CHARS = 200


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of a file the user named; a missing or unreadable file is one FhaError
    calling it `what` ("tokenizer file", "study spec")."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FhaError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise FhaError(f"{path}: cannot read {what} ({one_line(err)})") from None


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an OSError raised while creating or writing `path` (a folder under a file, no
    permission, a full disk) into an FhaError naming the path."""
    try:
        yield
    except OSError as err:
        raise FhaError(f"{path}: cannot write here ({err.strerror or one_line(err)})") from err


def one_line(err: BaseException) -> str:
    """An exception's message on one line (whitespace collapsed, long text cut), for FhaError details."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."
