"""``fha study run SPEC --out DIR`` and ``fha study report DIR``: a fair comparison of variants over seeds."""

from __future__ import annotations

import argparse
from pathlib import Path

from fha.cli.options import add_device_argument, add_figure_arguments
from fha.errors import FhaError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study",
        help="run a study (variants x seeds, one tokenizer, paired batches) and report it",
        description="Train every variant of a study spec at every seed with one tokenizer and the same "
        "batches per seed, evaluate each run on the whole test text, and report paired "
        "differences with 95% t-intervals. See docs/studies.md.",
    )
    commands = parser.add_subparsers(dest="study_command", metavar="{run,report}", required=True)
    run = commands.add_parser(
        "run",
        help="train and evaluate the runs of a study (resumable)",
        description="Train and evaluate every run of SPEC into DIR; rerun the same "
        "command to resume after an interruption.",
    )
    run.add_argument("spec", type=Path, metavar="SPEC", help="the study TOML, e.g. studies/quick.toml")
    run.add_argument("--out", type=Path, required=True, metavar="DIR", help="the study folder")
    run.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="trainings at once, the CPU cores divided between them (default: one per core on CPU, one on a GPU)",
    )
    run.add_argument(
        "--shard",
        default="1/1",
        metavar="I/N",
        help="run only shard I of N (every N-th run), e.g. one task of an array job",
    )
    add_device_argument(run)
    run.set_defaults(func=run_run)
    report = commands.add_parser(
        "report",
        help="write report.md, report.html, results.csv and figures",
        description="Read a finished study folder (all shards) and write its report.",
    )
    report.add_argument("out", type=Path, metavar="DIR", help="the study folder")
    report.add_argument("--report-dir", type=Path, metavar="DIR", help="where to write the report (default: DIR)")
    add_figure_arguments(report)
    report.set_defaults(func=run_report)


def run_run(args: argparse.Namespace) -> int:
    from fha.study.runner import Shard, run_study
    from fha.study.spec import load_spec

    spec = load_spec(args.spec)
    progress = run_study(spec, args.out, jobs=args.jobs, shard=Shard.parse(args.shard), device=args.device)
    if progress.failed:
        details = "; ".join(f"{outcome.run.run_id} ({outcome.error})" for outcome in progress.failed)
        raise FhaError(f"{len(progress.failed)} run(s) failed twice: {details}; rerun the same command to retry them")
    if progress.waiting_for_sweep:
        print(
            f"this shard's sweep runs are done; other shards' are not: rerun this command when they are "
            f"({len(progress.finished)} runs finished here)"
        )
        return 0
    print(f"{len(progress.finished)} runs finished; report: fha study report {args.out}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from fha.study.report import write_report

    report = write_report(args.out, args.report_dir, fmt=args.format, dpi=args.dpi)
    print(report.verdict)
    print()
    for path in [report.csv, *report.figures, report.markdown, report.html]:
        print(f"wrote {path}")
    return 0
