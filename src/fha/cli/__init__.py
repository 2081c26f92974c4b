"""The `fha` console script: one parser, one subcommand per module in this package.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func`` to the function that runs it. Registering imports nothing heavy (the command's
function imports the library), so ``fha --help`` and usage errors answer without torch.

Errors the user can fix (`FhaError`) become one line on stderr and exit status 2, with the
library's backquoted parameter names (`data`) written as the flags that set them (--data);
anything else is a bug and keeps its traceback. ``-v`` shows the traceback of an FhaError too.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
import platform
import re
import signal
import sys
from typing import NoReturn

from fha import __version__, progress
from fha.cli.options import add_output_options
from fha.errors import FhaError

BROKEN_PIPE_EXIT = 141  # what a shell reports for a process ended by SIGPIPE (128 + 13)

COMMAND_MODULES = (
    "tokenizer",
    "train",
    "schedule",
    "generate",
    "eval",
    "compare",
    "analyze",
    "inspect",
    "export",
    "cache",
    "study",
)

log = logging.getLogger("fha")


class _Parser(argparse.ArgumentParser):
    """Reports a usage mistake as the same one line as every other error (the usage is in --help)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.partition(" ")[2]  # "fha train" -> "train"; "" for fha itself
        where = f"{command}: " if command else ""
        self.exit(2, f"fha: error: {where}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fha", description="Fractal-Head Attention: train, inspect and compare small GPT models.")
    parser.add_argument("--version", action="version", version=version_text())
    _add_output_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"fha.cli.{name}").register(subparsers)
    for command in subparsers.choices.values():
        _add_output_options(command)
    return parser


# The library's parameters (named `like_this` in its messages) and the flags that set them.
PARAMETER_FLAGS = {
    "ablation_tokens": "--ablation-tokens",
    "account": "--account",
    "batch_size": "--batch-size",
    "budget": "--budget",
    "config": "--config",
    "cpus": "--cpus",
    "data": "--data",
    "device": "--device",
    "dpi": "--dpi",
    "drain_minutes": "--drain",
    "format": "--format",
    "gpus": "--gpus",
    "induction_length": "--induction-length",
    "induction_sequences": "--induction-sequences",
    "job_name": "--job-name",
    "jobs": "--jobs",
    "log_to": "--log-to",
    "max_running": "--max-running",
    "max_tokens": "--max-tokens",
    "mem": "--mem",
    "names": "--names",
    "out": "--out",
    "overrides": "--set",
    "overwrite": "--overwrite",
    "partition": "--partition",
    "precision": "--precision",
    "preset": "--preset",
    "python": "--python",
    "qos": "--qos",
    "resume": "--resume",
    "rounds": "--rounds",
    "scripts": "--scripts",
    "setup": "--setup",
    "shard": "--shard",
    "shards": "--shards",
    "skip_first": "--skip-first",
    "time": "--time",
    "tokenizer": "--tokenizer",
    "val_data": "--val-data",
    "x_axes": "--x-axis",
}
_PARAMETER = re.compile(r"`(\w+)`")


def version_text() -> str:
    """The versions of fha, torch (read from its metadata: importing torch takes a second) and Python."""
    return f"fha {__version__} (torch {importlib.metadata.version('torch')}, Python {platform.python_version()})"


def in_flags(message: str) -> str:
    """A library message as the command line says it: `data` becomes --data."""
    return _PARAMETER.sub(lambda match: PARAMETER_FLAGS.get(match.group(1), match.group(0)), message)


class _FlagsFormatter(logging.Formatter):
    """Log messages name the library's parameters as the command line does, like its errors."""

    def format(self, record: logging.LogRecord) -> str:
        return in_flags(super().format(record))


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    """-v/-q on this parser and on every sub-command below it (``fha tokenizer train -q``)."""
    add_output_options(parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_output_options(child)


def main(argv: list[str] | None = None) -> int:
    """Run one command; `argv` None means the process's own command line (the `fha` program)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False)
    progress.set_mode("off" if quiet else "auto")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FlagsFormatter("%(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING if quiet else logging.INFO,
        handlers=[handler],
    )
    if argv is None:
        _ignore_stop_requests()
    try:
        return int(args.func(args) or 0)
    except FhaError as err:
        log.debug("the error's traceback (shown because of -v):", exc_info=True)
        print(f"fha: error: {in_flags(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fha: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_EXIT
    finally:
        if argv is None:
            _ignore_late_interrupts()


def _silence_stdout() -> None:
    """The reader of our output has gone (``fha study plan ... | head``): stop like other command-line
    tools, without a traceback, and without a second error when Python flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _ignore_late_interrupts() -> None:
    """The command is over (its files are written): a Ctrl-C or SIGTERM while the interpreter shuts
    down could only turn a finished command into a traceback, so the process ignores them."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _ignore_stop_requests() -> None:
    """SIGUSR1 asks `fha study run` to start no new training (it listens while it runs); by default the
    signal would end the process, so an fha process ignores it wherever nothing listens."""
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
