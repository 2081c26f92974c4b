"""``fha compare RUN_DIR [RUN_DIR ...] --out DIR``: loss curves and a report table of several runs."""

from __future__ import annotations

import argparse
import logging
import math

from fha.choices import X_AXIS_NAMES
from fha.cli import options
from fha.data.sources import TINYSTORIES
from fha.errors import FhaError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="plot and tabulate several runs side by side",
        description="Write loss curves (PNG, SVG or PDF), report.md and a self-contained report.html comparing "
        "runs. Runs whose configs differ only in the seed (same tokenizer and data) are grouped "
        "(mean and spread) and groups with the same seeds are compared seed by seed; runs still "
        "training or stopped (no final weights) are read from their logs and marked unfinished.",
    )
    options.add_run_dirs_argument(parser)
    options.add_out_argument(parser, "folder for the plots and reports")
    options.add_names_argument(
        parser,
        "names of the runs, in order (default: the folder names, or where those repeat, the parts of the "
        "paths or the settings that differ)",
    )
    parser.add_argument(
        "--x-axis",
        nargs="+",
        default=["tokens"],
        metavar="AXIS",
        help=f"x axes to plot, one figure each: {', '.join(X_AXIS_NAMES)} (default: tokens; wall time "
        "measures the machine's load as much as the model)",
    )
    parser.add_argument("--log-x", action="store_true", help="logarithmic x axis")
    parser.add_argument("--log-y", action="store_true", help="logarithmic loss axis")
    parser.add_argument(
        "--skip-first",
        default="0",
        metavar="N|FRACTION",
        help="leave the first N steps (an integer) or that fraction of each run's steps "
        "(a number below 1, e.g. 0.1) out of the plots",
    )
    options.add_data_argument(
        parser,
        f"also evaluate every run on this text (a .txt/.jsonl file, or {TINYSTORIES!r} for its validation split)",
        required=False,
    )
    options.add_device_argument(parser, "device for --data evaluation: ")
    options.add_figure_arguments(parser)
    parser.set_defaults(func=run_compare)


def parse_skip_first(text: str) -> float:
    """An integer number of steps (>= 0), or a fraction in (0, 1).

    Checked here rather than as an argparse ``type``, so that a bad value is the one-line
    ``fha: error:`` of every other bad input instead of argparse's usage text.
    """
    try:
        value = float(text)
    except ValueError:
        raise FhaError(f"--skip-first: expected a step count or a fraction, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value >= 1 and not value.is_integer()):
        raise FhaError(f"--skip-first: expected an integer step count >= 0 or a fraction below 1, got {text!r}")
    return value


def run_compare(args: argparse.Namespace) -> int:
    from fha.compare import PlotOptions, compare_runs
    from fha.compare.report import groups_table, markdown_table, runs_table
    from fha.device import setup_device

    skip_first = parse_skip_first(args.skip_first)
    device = setup_device(args.device) if args.data is not None else "cpu"
    options = PlotOptions(
        log_x=args.log_x,
        log_y=args.log_y,
        skip_first=skip_first,
        format=args.format,
        dpi=args.dpi,
        x_axes=tuple(args.x_axis),
    )
    comparison = compare_runs(args.run_dirs, args.out, names=args.names, options=options, data=args.data, device=device)
    print(markdown_table(runs_table(comparison.runs)))
    if comparison.groups:
        print()
        print(markdown_table(groups_table(comparison.groups)))
    for heading, _, table in comparison.sections:
        print(f"\n{heading}:\n{markdown_table(table)}")
    print()
    for path in [*comparison.plots, comparison.markdown, comparison.html]:
        print(f"wrote {path}")
    return 0
