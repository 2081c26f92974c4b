"""The one exception type that the command line turns into a one-line message."""


class FhaError(Exception):
    """A problem with the user's input (files, configs, checkpoints) rather than a bug.

    The `fha` command prints ``fha: error: <message>`` and exits with status 2 instead of
    showing a traceback, so the message must name the file, field or value at fault.
    """


MAX_DETAIL_CHARS = 200


def one_line(err: BaseException) -> str:
    """An exception's message on one line (whitespace collapsed, long text cut), for FhaError details."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."
