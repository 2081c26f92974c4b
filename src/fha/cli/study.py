"""``fha study run|report|plan|export``: a fair comparison of variants over seeds, to a reviewer's standard."""

from __future__ import annotations

import argparse
from pathlib import Path

from fha.cli.options import DEVICE_HELP, add_device_argument, add_figure_arguments, add_out_argument
from fha.errors import FhaError
from fha.study import WAITING_EXIT
from fha.wording import counted

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
    commands = parser.add_subparsers(dest="study_command", metavar="{run,report,plan,export,sbatch}", required=True)
    run = commands.add_parser(
        "run",
        help="train and evaluate the runs of a study (resumable; a grown spec trains only what is new)",
        description="Train and evaluate every run of SPEC into DIR; rerun the same command to resume after an "
        "interruption. Ctrl-C or SIGTERM stops the trainings under way at a checkpoint; SIGUSR1 lets them finish "
        "and starts no new one (e.g. timeout --preserve-status -s USR1 2h fha study run ...). "
        f"Exit status {WAITING_EXIT}: runs are left for a later call of the same command, because this shard's "
        "part is done but other shards' tuning is not, or because SIGUSR1 asked it to stop.",
    )
    run.add_argument("spec", type=Path, metavar="SPEC", help="the study TOML, e.g. studies/quick.toml")
    add_out_argument(run, "the study folder")
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
    add_out_argument(plan, "the study folder whose ledger counts as done", required=False)
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

    sbatch = commands.add_parser(
        "sbatch",
        help="write SLURM scripts: rounds of a job array of shards, then the report (docs/studies.md)",
        description="Prepare the study folder DIR (study.json, tokenizer, n-gram references) and write three "
        "scripts into DIR/slurm: shard.sbatch, whose array task I runs shard I of N; report.sbatch; and "
        "submit.sh, which submits rounds of the array, each after every task of the round before (a sweep's "
        "tuning must end before evaluation starts), then the report once the last round has succeeded.",
    )
    sbatch.add_argument("spec", type=Path, metavar="SPEC", help="the study TOML")
    add_out_argument(sbatch, "the study folder, on a shared file system")
    sbatch.add_argument(
        "--shards", type=int, metavar="N", help="array tasks (default: one per variant and evaluation seed)"
    )
    sbatch.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="rounds of the array (default: 1 without a sweep or with one shard, else max_extensions + 2; "
        "more rounds resume runs stopped by the time limit)",
    )
    sbatch.add_argument("--max-running", type=int, metavar="N", help="array tasks running at once (default: no limit)")
    sbatch.add_argument("--partition", metavar="P", help="SLURM partition (default: the cluster's)")
    sbatch.add_argument("--account", metavar="A", help="SLURM account to charge")
    sbatch.add_argument("--qos", metavar="Q", help="SLURM quality of service")
    sbatch.add_argument(
        "--time", metavar="T", help="time limit of each task, e.g. 2:00:00 or 1-12:00:00 (default: the partition's)"
    )
    sbatch.add_argument(
        "--drain",
        type=int,
        metavar="MINUTES",
        help="MINUTES before a task's time limit, let its trainings under way finish and start no new one "
        "(SLURM's --signal, SIGUSR1); about one training's time (default: the limit stops them at a checkpoint)",
    )
    sbatch.add_argument("--cpus", type=int, default=1, metavar="N", help="CPUs per task (default 1)")
    sbatch.add_argument("--gpus", type=int, default=0, metavar="N", help="GPUs per task (default 0)")
    sbatch.add_argument("--mem", metavar="M", help="memory per task, e.g. 16G (default: the cluster's)")
    sbatch.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="trainings at once in a task, its CPUs divided between them (default: one per CPU, one on a GPU)",
    )
    sbatch.add_argument("--device", metavar="DEVICE", help=f"the tasks' device: {DEVICE_HELP}")
    sbatch.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="a shell line each job runs first, e.g. 'module load cuda' (repeatable)",
    )
    sbatch.add_argument("--python", metavar="PATH", help="the interpreter the jobs run fha with (default: this one)")
    sbatch.add_argument("--job-name", metavar="NAME", help="SLURM job name (default: fha- and the spec's name)")
    sbatch.add_argument(
        "--scripts", type=Path, metavar="FOLDER", help="where to write the scripts (default: DIR/slurm)"
    )
    sbatch.set_defaults(func=run_sbatch)


def run_run(args: argparse.Namespace) -> int:
    from fha.study.runner import Shard, run_study
    from fha.study.spec import load_spec
    from fha.study.workers import stop_starting_on_signal

    try:
        with stop_starting_on_signal() as stop:  # SIGUSR1 while the study is prepared counts too
            spec = load_spec(args.spec)
            shard = Shard.parse(args.shard)
            progress = run_study(spec, args.out, jobs=args.jobs, shard=shard, device=args.device, stop=stop)
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
    if progress.stopped:
        print(
            f"stopped as asked (SIGUSR1) after {counted(len(progress.finished), 'run')} trained now; the rest "
            f"start when you run fha study run {args.spec} --out {args.out} again"
        )
        return WAITING_EXIT
    if progress.waiting_for_others:
        print(
            f"shard {args.shard}: its tuning runs are done, other shards' are not; rerun this command when they are "
            f"({counted(len(progress.finished), 'run')} finished here)"
        )
        return WAITING_EXIT
    print(f"{counted(len(progress.finished), 'run')} trained now; report: fha study report {args.out}")
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


def run_sbatch(args: argparse.Namespace) -> int:
    import sys

    from fha.study.prepare import prepare_study
    from fha.study.slurm import (
        REPORT_SCRIPT,
        SHARD_SCRIPT,
        SUBMIT_SCRIPT,
        SlurmJobs,
        default_shards,
        job_name_for,
        rounds_needed,
        write_scripts,
    )
    from fha.study.spec import load_spec

    spec = load_spec(args.spec)
    out_dir = args.out.absolute()
    widest = default_shards(spec)
    shards = widest if args.shards is None else args.shards
    jobs = SlurmJobs(  # checked before the study folder is prepared
        spec=args.spec.absolute(),
        out_dir=out_dir,
        workdir=Path.cwd(),
        scripts=(args.scripts or out_dir / "slurm").absolute(),
        python=args.python or sys.executable,
        shards=shards,
        rounds=rounds_needed(spec, shards) if args.rounds is None else args.rounds,
        min_rounds=rounds_needed(spec, shards),
        job_name=args.job_name or job_name_for(args.spec),
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        time=args.time,
        cpus=args.cpus,
        gpus=args.gpus,
        mem=args.mem,
        max_running=args.max_running,
        drain_minutes=args.drain,
        jobs=args.jobs,
        device=args.device,
        setup=tuple(args.setup),
    )
    prepare_study(spec, args.out)
    print(f"prepared {args.out}: study.json, tokenizer, n-gram references")
    for path in write_scripts(jobs):
        print(f"wrote {_shown(path)}")
    if jobs.shards > widest:
        print(f"note: {jobs.shards} shards, but the evaluation has {widest} trunks: some tasks will have nothing to do")
    shard, report = _shown(jobs.scripts / SHARD_SCRIPT), _shown(jobs.scripts / REPORT_SCRIPT)
    print(f"submit with: bash {_shown(jobs.scripts / SUBMIT_SCRIPT)}, which runs")
    after = ""
    for round_number in range(1, jobs.rounds + 1):
        print(
            f"  sbatch --parsable {after}{shard} {round_number}  # array of {jobs.shards} shards, round {round_number}"
        )
        after = f"--dependency=afterany:ROUND{round_number} "
    print(f"  sbatch --parsable --dependency=afterok:ROUND{jobs.rounds} {report}")
    return 0


def _shown(path: Path) -> str:
    """`path` relative to the working folder when it lies inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
