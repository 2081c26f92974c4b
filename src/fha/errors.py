"""The one exception type that the command line turns into a one-line message."""


class FhaError(Exception):
    """A problem with the user's input (files, configs, checkpoints) rather than a bug.

    The `fha` command prints ``fha: error: <message>`` and exits with status 2 instead of
    showing a traceback, so the message must name the file, field or value at fault.
    """
