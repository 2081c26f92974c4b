"""Options that several commands share: where to compute, in which precision, how much to say."""

from __future__ import annotations

import argparse

from fha.device import DEVICE_HELP, PRECISION_HELP, PRECISIONS
from fha.figures import DEFAULT_DPI, DEFAULT_FORMAT, FIGURE_FORMATS, MIN_DPI


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """-v and -q, accepted before the command (``fha -v train``) and after it (``fha train -v``).

    The defaults are suppressed so that an option given before the command is not reset by
    the command's parser.
    """
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages")
    group.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="show only warnings and errors: no progress, no info messages")


def add_device_argument(parser: argparse.ArgumentParser, purpose: str = "") -> None:
    parser.add_argument("--device", default="auto", metavar="DEVICE", help=f"{purpose}{DEVICE_HELP}")


def add_figure_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default=DEFAULT_FORMAT, choices=FIGURE_FORMATS,
                        help=f"image format of the figures (default {DEFAULT_FORMAT}; svg and pdf are vector graphics)")
    parser.add_argument("--dpi", type=int, default=DEFAULT_DPI, metavar="N",
                        help=f"resolution of PNG figures in dots per inch (default {DEFAULT_DPI}, at least {MIN_DPI})")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
