"""Options that several commands share: what to run, where to compute, in which precision,
how much to say. Only argparse and names here: registering a command imports no torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from fha.choices import PRECISIONS
from fha.figure_formats import DEFAULT_DPI, DEFAULT_FORMAT, FIGURE_FORMATS, MAX_DPI, MIN_DPI

Parser = argparse.ArgumentParser | argparse._ArgumentGroup  # what options are added to

RUN_DIR_HELP = "run folder (model.safetensors, tokenizer.json)"
DEVICE_HELP = "cpu, cuda, cuda:N, mps or auto (default: cuda, then mps, then cpu)"
PRECISION_HELP = (
    "autocast dtype: auto (bf16 on CUDA cards that support it, else fp32), fp32, bf16 "
    "(CUDA, CPU, MPS) or fp16 (CUDA, MPS)"
)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """-v and -q, accepted before the command (``fha -v train``) and after it (``fha train -v``).

    The defaults are suppressed so that an option given before the command is not reset by
    the command's parser.
    """
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log debug messages, and show the traceback of an error",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show only warnings and errors: no progress, no info messages",
    )


def add_experiment_arguments(parser: Parser, *, preset_help: str, config_help: str, set_help: str) -> None:
    """--preset NAME, --config FILE and --set KEY=VALUE (repeatable, into ``args.overrides``)."""
    parser.add_argument("--preset", metavar="NAME", help=preset_help)
    parser.add_argument("--config", type=Path, metavar="FILE.toml", help=config_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help)


def add_device_argument(parser: argparse.ArgumentParser, purpose: str = "") -> None:
    parser.add_argument("--device", default="auto", metavar="DEVICE", help=f"{purpose}{DEVICE_HELP}")


def add_figure_arguments(parser: Parser) -> None:
    parser.add_argument(
        "--format",
        default=DEFAULT_FORMAT,
        choices=FIGURE_FORMATS,
        help=f"image format of the figures (default {DEFAULT_FORMAT}; svg and pdf are vector graphics)",
    )
    parser.add_argument(
        "--dpi",
        type=int,
        default=DEFAULT_DPI,
        metavar="N",
        help=f"resolution of PNG figures in dots per inch (default {DEFAULT_DPI}, {MIN_DPI} to {MAX_DPI})",
    )


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)


def add_run_dir_argument(parser: Parser, help: str = RUN_DIR_HELP) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=help)


def add_run_dirs_argument(parser: Parser) -> None:
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders")


def add_out_argument(parser: Parser, help: str, *, required: bool = True) -> None:
    parser.add_argument("--out", type=Path, required=required, metavar="DIR", help=help)


def add_data_argument(parser: Parser, help: str, *, required: bool = True) -> None:
    """--data SOURCE: a text file or the name of a hub dataset."""
    parser.add_argument("--data", required=required, metavar="SOURCE", help=help)


def add_batch_size_argument(parser: Parser, default: int) -> None:
    parser.add_argument(
        "--batch-size",
        type=int,
        default=default,
        metavar="N",
        help=f"context windows per forward pass (default {default})",
    )


def add_names_argument(parser: Parser, help: str) -> None:
    parser.add_argument("--names", nargs="+", metavar="NAME", help=help)
