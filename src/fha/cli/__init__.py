"""The `fha` console script: one parser, one subcommand per module in this package.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func`` to the function that runs it. Errors the user can fix (`FhaError`, `ValueError`
from config validation, missing files) become one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import platform
import signal
import sys
from typing import NoReturn

import torch

from fha import __version__, progress
from fha.cli.options import add_output_options
from fha.errors import FhaError

COMMAND_MODULES = ("tokenizer", "train", "schedule", "generate", "eval", "compare", "inspect", "cache", "study")

log = logging.getLogger("fha")


class _Parser(argparse.ArgumentParser):
    """Reports a usage mistake as the same one line as every other error (the usage is in --help)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.partition(" ")[2]  # "fha train" -> "train"; "" for fha itself
        where = f"{command}: " if command else ""
        self.exit(2, f"fha: error: {where}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fha", description="Fractal-Head Attention: train, inspect and compare small GPT models."
    )
    parser.add_argument("--version", action="version", version=version_text())
    _add_output_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"fha.cli.{name}").register(subparsers)
    for command in subparsers.choices.values():
        _add_output_options(command)
    return parser


def version_text() -> str:
    return f"fha {__version__} (torch {torch.__version__}, Python {platform.python_version()})"


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
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except (FhaError, ValueError, OSError) as err:  # OSError: missing files, permissions, a full disk
        print(f"fha: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fha: interrupted", file=sys.stderr)
        return 130
    finally:
        if argv is None:
            _ignore_late_interrupts()


def _ignore_late_interrupts() -> None:
    """The command is over (its files are written): a Ctrl-C or SIGTERM while the interpreter shuts
    down could only turn a finished command into a traceback, so the process ignores them."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
