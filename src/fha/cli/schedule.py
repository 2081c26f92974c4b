"""``fha schedule``: print (and plot) the learning-rate schedule of an experiment."""

from __future__ import annotations

import argparse
from pathlib import Path

from fha.cli.options import add_experiment_arguments
from fha.experiments import build_configs, load_experiment, merge, parse_overrides, preset_names
from fha.figure_formats import DEFAULT_DPI


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("schedule", help="show the learning-rate schedule of a preset or config")
    add_experiment_arguments(
        parser,
        preset_help=f"one of: {', '.join(preset_names())}",
        config_help="an experiment file",
        set_help="change a setting (repeatable), e.g. --set max_steps=5000",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="IMAGE",
        help="draw the schedule into this file; its suffix (.png, .svg, .pdf) sets the format",
    )
    parser.add_argument(
        "--dpi",
        type=int,
        default=DEFAULT_DPI,
        metavar="N",
        help=f"resolution of a PNG plot in dots per inch (default {DEFAULT_DPI})",
    )
    parser.set_defaults(func=run_schedule)


def run_schedule(args: argparse.Namespace) -> int:
    from fha.train.schedule import LRSchedule, plot_schedule

    tables = merge(load_experiment(args.preset, args.config), parse_overrides(args.overrides))
    _, train_config = build_configs(tables)
    schedule = LRSchedule.from_config(train_config)
    print(schedule.describe())
    if args.plot is not None:
        plot_schedule(schedule, args.plot, title=f"learning rate: {args.preset or args.config}", dpi=args.dpi)
        print(f"wrote {args.plot}")
    return 0
