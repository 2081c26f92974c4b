"""``fha analyze RUN_DIR [RUN_DIR ...] --data TEXT --out DIR``: what every sub-head does.

Attention entropy and distance, previous-token, first-token, induction and copying scores,
and the loss increase of zero- and mean-ablating each sub-head, per layer, head and sub-head
of every run (with ``--checkpoints`` also of every checkpoint), written as subheads.csv,
report.md, report.html and figures.

``fha analyze STUDY_DIR`` analyses a study's evaluation runs at one budget on the study's
validation text and pools them over seeds (`fha.study.mechanisms`): mechanisms.md and the
rest, into the study folder, where ``fha study report`` finds them.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from fha.choices import ANALYSIS_ABLATION_TOKENS as DEFAULT_ABLATION_TOKENS
from fha.choices import ANALYSIS_BATCH_SIZE as DEFAULT_BATCH_SIZE
from fha.choices import ANALYSIS_INDUCTION_SEQUENCES as DEFAULT_INDUCTION_SEQUENCES
from fha.cli import options
from fha.data.sources import TINYSTORIES
from fha.errors import FhaError
from fha.figure_formats import check_figure_options
from fha.wording import counted

log = logging.getLogger(__name__)

ALL = "all"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="measure what every head and sub-head of trained runs does",
        description="Per layer, head and sub-head (with its size): attention entropy and mean distance, "
        "previous-token and first-token weight, induction score on repeated random tokens, copying score, and "
        "the loss increase when the sub-head is zero- or mean-ablated. Writes subheads.csv, report.md, a "
        "self-contained report.html and figures. Given a study folder instead, it analyses the study's evaluation "
        "runs on the study's validation text and pools them over seeds with 95% intervals (mechanisms.md, "
        "mechanisms.html, CSV and a figure in the study folder; fha study report then shows them). "
        "docs/analysis.md defines every measurement.",
    )
    parser.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="run folders, or one study folder (the folder of fha study run)",
    )
    options.add_data_argument(
        parser,
        f"the text to measure on: a .txt or .jsonl file, or {TINYSTORIES!r} for its validation split "
        "(needed for run folders; a study's default is its validation text)",
        required=False,
    )
    options.add_out_argument(
        parser,
        "folder for the CSV, reports, figures (needed for run folders; a study's default is its folder)",
        required=False,
    )
    parser.add_argument(
        "--budget",
        type=int,
        metavar="TOKENS",
        help="a study's budget whose evaluation runs are analysed (default: its primary budget)",
    )
    options.add_names_argument(parser, "names of the runs, in order (default: folder names)")
    parser.add_argument(
        "--checkpoints",
        action="store_true",
        help="also analyse every checkpoint (RUN_DIR/checkpoints/step-N), to see how the sub-heads change",
    )
    parser.add_argument("--max-tokens", type=int, metavar="N", help="use only the first N tokens of the text")
    parser.add_argument(
        "--ablation-tokens",
        default=str(DEFAULT_ABLATION_TOKENS),
        metavar="N|all",
        help=f"measure the ablations on the first N predicted tokens (default {DEFAULT_ABLATION_TOKENS:,}); "
        "they cost about a forward pass per sub-head, the other measurements one pass over the whole text",
    )
    options.add_batch_size_argument(parser, DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--induction-length",
        type=int,
        metavar="N",
        help="random tokens before their repeat (default 50, or what fits the context)",
    )
    parser.add_argument(
        "--induction-sequences",
        type=int,
        default=DEFAULT_INDUCTION_SEQUENCES,
        metavar="N",
        help=f"random sequences for the induction score (default {DEFAULT_INDUCTION_SEQUENCES})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sequences (default 0)")
    options.add_device_argument(parser)
    options.add_figure_arguments(parser)
    parser.set_defaults(func=run_analyze)


def run_names(run_dirs: list[Path], names: list[str] | None) -> list[str]:
    """The runs' names: `names`, or the folder names; they must tell the runs apart."""
    if names is not None and len(names) != len(run_dirs):
        raise FhaError(f"--names gives {counted(len(names), 'name')} for {counted(len(run_dirs), 'run')}")
    chosen = names if names is not None else [path.resolve().name for path in run_dirs]
    repeated = sorted({name for name in chosen if chosen.count(name) > 1})
    if repeated:
        raise FhaError(f"two runs are named {repeated[0]!r}; tell them apart with --names")
    return chosen


def parse_ablation_tokens(text: str) -> int | None:
    """A token count, or None for "all"; checked here so that a bad value is one line."""
    if text == ALL:
        return None
    try:
        return int(text)
    except ValueError:
        raise FhaError(f"--ablation-tokens: expected a number of tokens or {ALL!r}, got {text!r}") from None


def _measurement_options(args: argparse.Namespace, ablation_tokens: int | None) -> dict[str, Any]:
    """The settings of the measurements, the same for run folders and for a study's runs."""
    return {
        "batch_size": args.batch_size,
        "max_tokens": args.max_tokens,
        "ablation_tokens": ablation_tokens,
        "induction_length": args.induction_length,
        "induction_sequences": args.induction_sequences,
        "seed": args.seed,
    }


def _study_folder(args: argparse.Namespace) -> Path | None:
    """The study folder among the arguments (None for run folders), checked to come alone and
    without the options of run folders; run folders need --data and --out."""
    from fha.study.layout import STUDY_FILE

    studies = [path for path in args.run_dirs if (path / STUDY_FILE).is_file()]
    if not studies:
        missing = [path for path in args.run_dirs if not path.exists()]
        if missing:
            raise FhaError(f"{missing[0]}: no such run folder (nor a study folder)")
        for flag, value in (("--data", args.data), ("--out", args.out)):
            if value is None:
                raise FhaError(f"{flag} is needed for run folders (only a study folder has a default)")
        if args.budget is not None:
            raise FhaError("--budget is for a study folder; run folders are analysed as they are")
        return None
    if len(args.run_dirs) > 1:
        raise FhaError(f"{studies[0]} is a study folder: analyse it alone (its evaluation runs are pooled over seeds)")
    for flag, given in (("--names", args.names is not None), ("--checkpoints", args.checkpoints)):
        if given:
            raise FhaError(f"{flag} is for run folders; a study's runs are named by the study")
    return studies[0]


def run_analyze(args: argparse.Namespace) -> int:
    check_figure_options(args.format, args.dpi)
    ablation_tokens = parse_ablation_tokens(args.ablation_tokens)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise FhaError(f"--out {args.out}: is a file, not a folder")
    study = _study_folder(args)
    if study is not None:
        return _analyze_study(study, args, ablation_tokens)
    names = run_names(args.run_dirs, args.names)
    from fha.analysis import SubheadTable, analyze_subheads, write_analysis
    from fha.analysis.analyze import induction_length_for
    from fha.analysis.report import size_table
    from fha.compare.report import markdown_table
    from fha.device import setup_device
    from fha.evaluation import encode_documents, held_out_documents
    from fha.runs.folder import load_model_and_tokenizer
    from fha.variants import describe_attention

    weights = {name: _weights_by_step(run_dir, args.checkpoints) for name, run_dir in zip(names, args.run_dirs)}
    device = setup_device(args.device)
    documents = held_out_documents(args.data)
    tables, descriptions, token_counts, lengths = [], {}, {}, set()
    for name, steps in weights.items():
        for step, folder in steps:
            model, tokenizer = load_model_and_tokenizer(folder, device)
            tokens, _ = encode_documents(documents, tokenizer)
            started = time.perf_counter()
            table = analyze_subheads(
                model, tokens, run=name, step=step, show_progress=True, **_measurement_options(args, ablation_tokens)
            )
            tables.append(table)
            where = name if step is None else f"{name} step {step}"
            log.info("%s: %d sub-heads analysed in %.1f s", where, len(table), time.perf_counter() - started)
            lengths.add(induction_length_for(model, args.induction_length))
            descriptions[name] = describe_attention(model.config)
            token_counts[name] = (min(len(tokens), args.max_tokens or len(tokens)), table.rows[0].ablation_tokens)
    table = SubheadTable.concat(tables)
    counts = ", ".join(
        f"{name} {count:,} tokens, ablations on the first {scored:,} predicted"
        for name, (count, scored) in token_counts.items()
    )
    notes = [
        f"Text: {args.data} ({counts}; each run's own tokenizer). Induction: {args.induction_sequences} random "
        f"sequences of {'/'.join(str(n) for n in sorted(lengths))} ordinary tokens, each repeated once after <bos> "
        f"(seed {args.seed})."
    ]
    assert args.out is not None  # run folders without --out were refused before any work
    report = write_analysis(table, args.out, descriptions=descriptions, notes=notes, fmt=args.format, dpi=args.dpi)
    print(markdown_table(size_table(table)))
    print()
    for path in [report.csv, report.markdown, report.html, *report.figures]:
        print(f"wrote {path}")
    return 0


def _weights_by_step(run_dir: Path, checkpoints: bool) -> list[tuple[int | None, Path]]:
    """(training step, folder to load) of the run's final weights (its latest checkpoint when
    unfinished), after every earlier checkpoint with `checkpoints`."""
    from fha.runs.folder import (
        CHECKPOINT_NAME,
        MODEL_FILE,
        TRAIN_CONFIG_FILE,
        list_checkpoints,
        require_run_dir,
        weights_folder,
    )
    from fha.train_config import TrainConfig

    final = require_run_dir(weights_folder(run_dir))
    match = CHECKPOINT_NAME.match(final.name)
    if final != run_dir and match:
        step: int | None = int(match.group(1))
    elif (run_dir / TRAIN_CONFIG_FILE).is_file():
        step = TrainConfig.from_json(run_dir / TRAIN_CONFIG_FILE).max_steps
    else:
        step = None
    if not checkpoints:
        return [(step, final)]
    earlier = [(n, folder) for n, folder in list_checkpoints(run_dir) if (folder / MODEL_FILE).is_file()]
    if not earlier:
        raise FhaError(f"{run_dir}: no checkpoints to analyse (--checkpoints reads {run_dir}/checkpoints/step-N)")
    return [*((n, folder) for n, folder in earlier if step is None or n < step), (step, final)]


def _analyze_study(study: Path, args: argparse.Namespace, ablation_tokens: int | None) -> int:
    from fha.analysis.pooling import pooled_table
    from fha.compare.report import markdown_table
    from fha.device import setup_device
    from fha.study.mechanisms import analyze_study, study_runs, write_mechanisms

    study_runs(study, args.budget)  # checked before the device line: a study without weights is one line
    mechanisms = analyze_study(
        study,
        budget=args.budget,
        data=args.data,
        device=setup_device(args.device),
        show_progress=True,
        **_measurement_options(args, ablation_tokens),
    )
    written = write_mechanisms(mechanisms, args.out, fmt=args.format, dpi=args.dpi)
    summaries = mechanisms.summaries
    print(markdown_table(pooled_table(mechanisms.pooled, summaries)))
    print()
    for path in written:
        print(f"wrote {path}")
    return 0
