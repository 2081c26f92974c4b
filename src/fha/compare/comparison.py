"""`compare_runs`: the runs' summaries, plots, tables and the report files, in one call."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fha import metric_names
from fha.compare.fairness import environment_rows, mismatch_notes, paired_rows, training_text_note
from fha.compare.names import check_names, derived_names
from fha.compare.plots import PlotOptions, first_kept_step, plot_losses
from fha.compare.report import ReportContent, Table, groups_table, runs_table, write_html, write_markdown
from fha.compare.runs import (
    RunSummary,
    SeedGroup,
    load_summary,
    seed_groups,
)
from fha.errors import FhaError, writing
from fha.evaluation import evaluate, held_out_documents
from fha.runs.folder import load_model_and_tokenizer
from fha.wording import counted

log = logging.getLogger(__name__)

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"


@dataclass
class Comparison:
    runs: list[RunSummary]
    groups: list[SeedGroup]
    plots: list[Path]
    markdown: Path
    html: Path
    sections: list[tuple[str, str, Table]]  # (heading, note, table): paired differences, environment


def compare_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    names: Sequence[str] | None = None,
    options: PlotOptions | None = None,
    data: str | None = None,
    device: str | torch.device = "cpu",
) -> Comparison:
    """Read the runs, evaluate them on `data` if given, and write plots and reports to `out_dir`."""
    options = options if options is not None else PlotOptions()
    if not run_dirs:
        raise FhaError("give at least one run folder")
    if names is not None and len(names) != len(run_dirs):
        raise FhaError(f"`names` gives {counted(len(names), 'name')} for {counted(len(run_dirs), 'run')}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FhaError(f"`out` {out_dir}: is a file, not a folder")
    if names is not None:
        check_names(names)
    runs = [load_summary(path, name) for path, name in zip(run_dirs, names or [None] * len(run_dirs))]
    if names is None:
        for run, name in zip(runs, derived_names(runs), strict=True):
            run.name = name
    for run in runs:
        if not len(run.log.after(first_kept_step(run.log, options.skip_first)).step):
            raise FhaError(
                f"`skip_first` {_skipped(options.skip_first)} leaves nothing of run {run.name} "
                f"(its last logged step is {run.steps})"
            )
    notes = mismatch_notes(runs)
    if data is not None:
        documents = held_out_documents(data)
        for run in runs:
            log.info("evaluating %s on %s", run.name, data)
            model, tokenizer = load_model_and_tokenizer(run.path, device)  # train_config.json not needed
            run.held_out = evaluate(model, documents, tokenizer=tokenizer).to_dict()
        counts = sorted({int(run.held_out[metric_names.TOKENS_SCORED]) for run in runs})
        scored = f"{counts[0]:,} tokens" if len(counts) == 1 else f"{counts[0]:,} to {counts[-1]:,} tokens by tokenizer"
        notes.append(
            f"Held-out metrics ({metric_names.BITS_PER_BYTE}, {metric_names.LOSS}, ...): the whole of {data} "
            f"({counted(len(documents), 'document', thousands=True)}, {scored} scored per run); "
            f"{metric_names.BITS_PER_BYTE} is the headline, since it does not depend on the tokenizer."
        )
        warning = training_text_note(runs, data)
        if warning is not None:
            notes.append(warning)
    else:
        notes.append(
            f"{metric_names.VAL_LOSS} is that of the last evaluation during training: the mean over eval windows "
            f"(the {metric_names.EVAL_WINDOWS} column: eval_samples batches of random windows), not a whole text; "
            f"give a held-out text (--data, or data= in Python) for {metric_names.BITS_PER_BYTE} over the whole of it."
        )
    for note in notes:
        if note.startswith("Warning:"):
            log.warning("%s", note)
    unfinished = [run.name for run in runs if not run.finished]
    if unfinished:
        notes.append(f"Unfinished (no final weights yet; numbers as of their last log row): {', '.join(unfinished)}.")
    if options.skip_first:
        notes.append(f"Curves leave out the first {_skipped(options.skip_first)}.")
    groups = seed_groups(runs)
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_losses(runs, groups, out_dir, options)
    run_rows = runs_table(runs)
    group_rows = groups_table(groups) if groups else None
    sections = _extra_sections(runs, groups, held_out=data is not None)
    markdown, page = out_dir / MARKDOWN_FILE, out_dir / HTML_FILE
    content = ReportContent(run_rows, group_rows, plots, notes, sections)
    write_markdown(markdown, content)
    write_html(page, content)
    return Comparison(runs, groups, plots, markdown, page, sections)


def _extra_sections(runs: list[RunSummary], groups: list[SeedGroup], *, held_out: bool) -> list[tuple[str, str, Table]]:
    sections = []
    metric, value_of = (
        (metric_names.BITS_PER_BYTE, lambda run: run.held_out[metric_names.BITS_PER_BYTE])
        if held_out
        else (metric_names.VAL_LOSS, lambda run: run.final_val_loss)
    )
    header, rows = paired_rows(groups, metric, value_of)
    if rows:
        sections.append(
            (
                "Paired differences",
                f"Seed groups with the same seeds, compared seed by seed with the first "
                f"such group: differences in {metric} (lower is better), mean with 95% Student t-interval.",
                Table(header, rows),
            )
        )
    environment = environment_rows(runs)
    if environment is not None:
        sections.append(("Environment", "From each run's run_info.json (— where a run has none).", Table(*environment)))
    return sections


def _skipped(skip_first: float) -> str:
    return f"{skip_first:.0%} of each run's steps" if 0 < skip_first < 1 else counted(int(skip_first), "step")
