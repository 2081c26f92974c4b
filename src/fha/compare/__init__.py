"""Putting runs side by side: loss curves, a table of their numbers, seed groups.

    from fha.compare import compare_runs, PlotOptions
    comparison = compare_runs(["runs/fha", "runs/mha"], "report/", options=PlotOptions(log_y=True))

writes ``loss_vs_step.png``, ``loss_vs_time.png`` (or ``.svg``, ``.pdf``: ``PlotOptions(format=...)``),
``report.md`` and ``report.html`` (plots embedded) into the output folder. See `fha.compare.runs` for what is read from each run
and how seed groups are found.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fha.compare.plots import PlotOptions, first_kept_step, plot_losses
from fha.compare.report import groups_table, runs_table, write_html, write_markdown
from fha.compare.runs import (
    RunSummary,
    SeedGroup,
    Spread,
    TrainingLog,
    load_summary,
    read_log,
    seed_groups,
)
from fha.errors import FhaError
from fha.evaluate import evaluate, held_out_documents
from fha.run import load_model_and_tokenizer

log = logging.getLogger(__name__)

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"

__all__ = [
    "Comparison",
    "PlotOptions",
    "RunSummary",
    "SeedGroup",
    "Spread",
    "TrainingLog",
    "compare_runs",
    "held_out_documents",
    "load_summary",
    "read_log",
    "seed_groups",
]


@dataclass
class Comparison:
    runs: list[RunSummary]
    groups: list[SeedGroup]
    plots: list[Path]
    markdown: Path
    html: Path


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
        raise FhaError(f"--names gives {len(names)} names for {len(run_dirs)} runs")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FhaError(f"--out {out_dir}: is a file, not a folder")
    runs = [load_summary(path, name) for path, name in zip(run_dirs, names or [None] * len(run_dirs))]
    for run in runs:
        if not len(run.log.after(first_kept_step(run.log, options.skip_first)).step):
            raise FhaError(f"--skip-first {_skipped(options.skip_first)} leaves nothing of run {run.name} "
                           f"(its last logged step is {run.steps})")
    notes = []
    if data is not None:
        documents = held_out_documents(data)
        for run in runs:
            log.info("evaluating %s on %s", run.name, data)
            model, tokenizer = load_model_and_tokenizer(run.path, device)  # train_config.json not needed
            run.held_out = evaluate(model, documents, tokenizer=tokenizer).to_dict()
        notes.append(f"Held-out metrics: {data} ({len(documents):,} documents).")
    unfinished = [run.name for run in runs if not run.finished]
    if unfinished:
        notes.append(f"Unfinished (no final weights yet; numbers as of their last log row): {', '.join(unfinished)}.")
    if options.skip_first:
        notes.append(f"Curves leave out the first {_skipped(options.skip_first)}.")
    groups = seed_groups(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_losses(runs, groups, out_dir, options)
    run_rows = runs_table(runs)
    group_rows = groups_table(groups) if groups else None
    markdown, page = out_dir / MARKDOWN_FILE, out_dir / HTML_FILE
    write_markdown(markdown, run_rows, group_rows, plots, notes)
    write_html(page, run_rows, group_rows, plots, notes)
    return Comparison(runs, groups, plots, markdown, page)


def _skipped(skip_first: float) -> str:
    return f"{skip_first:.0%} of each run's steps" if 0 < skip_first < 1 else f"{int(skip_first)} steps"
