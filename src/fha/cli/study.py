"""``fha study run|report|plan|export``: a fair comparison of variants over seeds, to a reviewer's standard."""

from __future__ import annotations

import argparse
from pathlib import Path

from fha.cli.options import add_device_argument, add_figure_arguments
from fha.errors import FhaError
from fha.wording import counted

WAITING_EXIT = 3  # this shard's part is done, other shards' tuning is not: run the command again later
DEFAULT_TIMING_STEPS = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study",
        help="run a study (variants x seeds, tuning apart, paired batches) and report it",
        description="Train every variant of a study spec at every seed with one tokenizer and the same "
        "batches per seed, tune learning rates on seeds of their own, evaluate each run on the whole "
        "validation and test texts, and report paired differences with intervals, p-values and n-gram "
        "references. See docs/studies.md.",
    )
    commands = parser.add_subparsers(dest="study_command", metavar="{run,report,plan,export}", required=True)
    run = commands.add_parser(
        "run",
        help="train and evaluate the runs of a study (resumable; a grown spec trains only what is new)",
        description="Train and evaluate every run of SPEC into DIR; rerun the same command to resume after an "
        f"interruption. Exit status {WAITING_EXIT}: this shard's part is done but other shards' tuning is not "
        "(rerun it once they are).",
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
        help="run only shard I of N (every N-th trunk of runs), e.g. one task of an array job",
    )
    add_device_argument(run)
    run.set_defaults(func=run_run)

    report = commands.add_parser(
        "report",
        help="write report.md, report.html, results.csv and figures from the ledgers",
        description="Read a study's ledger (one folder, or several: shards from other machines, a committed "
        "export) and write its report into the first folder.",
    )
    report.add_argument("out", type=Path, nargs="+", metavar="DIR", help="study folders (the first one's study.json)")
    report.add_argument("--report-dir", type=Path, metavar="DIR", help="where to write the report (default: DIR)")
    report.add_argument("--partial", action="store_true", help="report the runs finished so far, labelled partial")
    add_figure_arguments(report)
    report.set_defaults(func=run_report)

    plan = commands.add_parser(
        "plan",
        help="list the runs a spec will train, estimate the time, size the seeds from a pilot",
        description="List the runs of SPEC (new, or reusable from DIR's ledger), estimate the training time "
        "from a short timing of each variant here, and with --pilot the seeds needed for a target "
        "half-width of the primary contrast's 95% interval.",
    )
    plan.add_argument("spec", type=Path, metavar="SPEC")
    plan.add_argument("--out", type=Path, metavar="DIR", help="the study folder whose ledger counts as done")
    plan.add_argument(
        "--pilot", type=Path, metavar="DIR", help="a study folder with paired results of the primary contrast"
    )
    plan.add_argument(
        "--halfwidth", type=float, default=0.02, metavar="X", help="target 95%% half-width in bits/byte (default 0.02)"
    )
    plan.add_argument("--jobs", type=int, default=None, metavar="N", help="trainings at once (default as for run)")
    plan.add_argument(
        "--timing-steps",
        type=int,
        default=DEFAULT_TIMING_STEPS,
        metavar="N",
        help=f"optimiser steps timed per variant (default {DEFAULT_TIMING_STEPS}; 0: no timing)",
    )
    plan.set_defaults(func=run_plan)

    export = commands.add_parser(
        "export",
        help="copy a study's record, ledger and report for publishing (no weights)",
        description="Copy study.json, the tokenizer, the n-gram references, the ledger and the report of DIR "
        "into PATH; fha study report PATH rebuilds the same report.",
    )
    export.add_argument("out", type=Path, metavar="DIR")
    export.add_argument("--to", type=Path, required=True, metavar="PATH")
    export.set_defaults(func=run_export)


def run_run(args: argparse.Namespace) -> int:
    from fha.study.runner import Shard, run_study
    from fha.study.spec import load_spec

    spec = load_spec(args.spec)
    shard = Shard.parse(args.shard)
    try:
        progress = run_study(spec, args.out, jobs=args.jobs, shard=shard, device=args.device)
    except KeyboardInterrupt:
        raise FhaError(
            f"interrupted; the finished runs are in the ledger and a stopped run resumes from its checkpoint: "
            f"run fha study run {args.spec} --out {args.out} again"
        ) from None
    if progress.failed:
        details = "; ".join(f"{outcome.plan.cell.run_id} ({outcome.error})" for outcome in progress.failed)
        raise FhaError(
            f"{counted(len(progress.failed), 'run')} failed twice: {details}; rerun the same command to retry them"
        )
    if progress.waiting_for_others:
        print(
            f"shard {args.shard}: its tuning runs are done, other shards' are not; rerun this command when they are "
            f"({len(progress.finished)} runs finished here)"
        )
        return WAITING_EXIT
    print(f"{len(progress.finished)} runs trained now; report: fha study report {args.out}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from fha.study.report import write_report

    report = write_report(args.out, args.report_dir, fmt=args.format, dpi=args.dpi, partial=args.partial)
    print(report.verdict)
    print()
    for path in [report.csv, *report.figures, report.markdown, report.html]:
        print(f"wrote {path}")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    from fha.device import pick_device
    from fha.study.estimate import pilot_seeds, summarize
    from fha.study.layout import context_of, load_record
    from fha.study.ledger import Ledger
    from fha.study.plan import StudyContext
    from fha.study.prepare import checked_digests
    from fha.study.runner import available_cores, default_jobs
    from fha.study.spec import load_spec

    spec = load_spec(args.spec)
    jobs = args.jobs or default_jobs(pick_device("cpu"))
    if args.timing_steps < 0:
        raise FhaError(f"--timing-steps must be 0 or more, got {args.timing_steps}")
    if args.out is not None and (args.out / "study.json").is_file():
        context = context_of(args.out, load_record(args.out))
        ledger = Ledger.read([args.out])
    else:  # no tokenizer yet: its size is the requested vocabulary size, which the timing needs
        context = StudyContext(checked_digests(spec), "(not trained yet)", _vocab_size(spec), None)
        ledger = Ledger({})
    summary = summarize(
        spec, context, ledger, timing_steps=args.timing_steps, jobs=jobs, threads=max(1, available_cores() // jobs)
    )
    print(f"{len(summary.new)} runs to train, {len(summary.reusable)} reusable from the ledger")
    if summary.tuning_pending:
        print("  (evaluation runs counted at the base rate: tuning has not chosen the rates yet)")
    by_variant: dict[tuple[str, str], int] = {}
    for cell in summary.new:
        by_variant[cell.point, cell.variant] = by_variant.get((cell.point, cell.variant), 0) + 1
    for (point, name), count in by_variant.items():
        speed = summary.step_seconds.get((point, name))
        timing = f", {speed:.3f} s per step" if speed is not None else ""
        print(f"  {f'{point} ' if point else ''}{name}: {count} new{timing}")
    if summary.seconds is not None:
        print(f"estimated training time with {jobs} at once: {summary.seconds / 3600:.1f} h (evaluation not counted)")
    if args.pilot is not None:
        sd, pairs, needed = pilot_seeds(args.pilot, args.halfwidth)
        print(
            f"pilot {args.pilot}: paired SD {sd:.4f} bits/byte over {pairs} seeds; {needed} seeds give a 95% "
            f"half-width of {args.halfwidth:g} bits/byte"
        )
    return 0


def _vocab_size(spec) -> int:
    from fha.study.prepare import first_configs

    model, _ = first_configs(spec)
    return model.vocab_size


def run_export(args: argparse.Namespace) -> int:
    from fha.study.export import export_study

    written = export_study(args.out, args.to)
    print(f"exported {len(written)} files to {args.to}; check with: fha study report {args.to}")
    return 0
