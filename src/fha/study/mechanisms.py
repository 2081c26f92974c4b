"""``fha analyze STUDY_DIR``: what the sub-heads of a study's evaluation runs do, pooled over seeds.

Every finished evaluation run at one budget (the primary one unless asked otherwise) is
analysed with `fha.analysis.analyze_subheads` on one text, by default the study's validation
text with the study's tokenizer; `fha.analysis.pooling` then sums each run up per sub-head
size and pools the runs of each variant with 95% t-intervals over the seeds. Written into
the study folder (or another)::

    mechanisms.md, mechanisms.html   the pooled table, the runs, the figure
    mechanisms.csv                   pooled: variant, size, measure, runs, mean, interval
    mechanisms_runs.csv              per run and size: the values that were pooled
    mechanisms_subheads.csv          every sub-head of every run (fha analyze's columns)
    mechanisms_by_size.png           the pooled measures against the sub-head size
    analysed/FINGERPRINT-KEY.csv     each run's sub-heads, kept for later analyses (below)

Each run's table is also kept in ``analysed/``, named by the run's fingerprint and a key of
the text's token ids and the settings. A later analysis with the same text and settings reads
it instead of the weights, and `fha study export` copies it: a study whose runs were trained
on machines that are gone (their weights with them) can still be analysed whole, as long as
every run was analysed where it was trained. `MEASURES_VERSION` is part of the key.

`fha study report` adds a "Mechanisms" section when the study folder holds
mechanisms_runs.csv (`mechanisms_section`), so the export of a study keeps it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fha.analysis.pooling import (
    PooledMeasure,
    RunSummary,
    pool,
    pooled_table,
    read_run_summaries,
    run_summaries,
    write_pooled,
    write_run_summaries,
)
from fha.analysis.table import INDUCTION_THRESHOLD, PREVIOUS_TOKEN_THRESHOLD, SubheadTable
from fha.compare.report import Table, format_count
from fha.errors import FhaError, writing
from fha.figure_formats import DEFAULT_DPI, DEFAULT_FORMAT, check_figure_options
from fha.files import write_text_atomic
from fha.runs.folder import MODEL_FILE
from fha.study.layout import TOKENIZER_FILE, run_dir
from fha.study.plan import Cell, Planner
from fha.study.results import StudyResults, load_results
from fha.wording import counted

log = logging.getLogger(__name__)

MARKDOWN_FILE = "mechanisms.md"
HTML_FILE = "mechanisms.html"
POOLED_FILE = "mechanisms.csv"
RUNS_FILE = "mechanisms_runs.csv"
SUBHEADS_FILE = "mechanisms_subheads.csv"
FILES = (MARKDOWN_FILE, HTML_FILE, POOLED_FILE, RUNS_FILE, SUBHEADS_FILE)  # what `fha study export` copies
ANALYSED_DIR = "analysed"  # each run's table by fingerprint and settings key; `fha study export` copies it
MEASURES_VERSION = 1  # part of the settings key: raise it when a measure's definition changes
KEY_CHARS = 12  # hex digits of the settings key in a file name
NOT_MEASURING = ("tokenizer", "run", "step", "show_progress")  # analyze_subheads keywords that change no value
TITLE = "Mechanisms: what the sub-heads do, pooled over seeds"
SECTION_HEADING = "Mechanisms"
POOLING_NOTE = (
    "Each run is summed up per sub-head size (and over all its sub-heads): its number of induction sub-heads "
    f"(induction score ≥ {INDUCTION_THRESHOLD:g}) and previous-token sub-heads (score ≥ {PREVIOUS_TOKEN_THRESHOLD:g}), "
    "its largest induction score, the mean loss increase when one of its sub-heads is zero- or mean-ablated, and "
    "their mean attention entropy and distance (how far back they look). Each cell is the mean of those per-run "
    "values over the variant's evaluation runs with a 95% Student t-interval over the seeds; docs/analysis.md "
    "defines every measure."
)


@dataclass(frozen=True)
class StudyRun:
    """A finished evaluation run of the study, its fingerprint and its run folder."""

    cell: Cell
    fingerprint: str
    folder: Path

    def analysed(self, study_dir: Path, key: str) -> Path:
        """Where its table is kept for the text and settings of `key` (`settings_key`)."""
        return study_dir / ANALYSED_DIR / f"{self.fingerprint}-{key}.csv"


def study_runs(study_dir: Path, budget: int | None = None) -> tuple[StudyResults, int, list[StudyRun]]:
    """The study's results, the budget analysed (default: the primary one) and its finished
    evaluation runs (diverged ones left out)."""
    points = load_results([study_dir], partial=True)
    results = points[0]
    spec = results.spec
    if spec.grid is not None:
        raise FhaError(
            f"{study_dir}: a study with a [grid] pools runs of different settings; analyse one grid point's runs "
            "with fha analyze RUN [RUN ...]"
        )
    tokens = spec.tokens if budget is None else budget
    if tokens not in spec.all_budgets:
        raise FhaError(
            f"`budget` {budget}: not a budget of the study (its budgets: "
            f"{', '.join(format_count(b) for b in spec.all_budgets)} tokens)"
        )
    if not results.tuning.done:
        raise FhaError(f"{study_dir}: no evaluation run yet (tuning is not finished); analyse the study once it is")
    planner = Planner(spec, results.context)
    runs = [
        StudyRun(cell, plan.fingerprint, run_dir(study_dir, plan))
        for cell in results.cells
        if cell.tokens == tokens and cell in results.entries and not results.entries[cell].diverged
        for plan in (planner.plan(cell),)
    ]
    if not runs:
        raise FhaError(f"{study_dir}: no finished evaluation run at {format_count(tokens)} tokens to analyse")
    return results, tokens, runs


def study_text(study_dir: Path, results: StudyResults, data: str | None) -> tuple[Any, str]:
    """The token ids to analyse on, with the study's tokenizer, and a phrase naming the text:
    `data` (a file, or "tinystories"), or by default the study's validation text."""
    from fha.evaluation import encode_documents, held_out_documents
    from fha.study.prepare import checked_digests, study_documents
    from fha.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(study_dir / TOKENIZER_FILE)
    if data is not None:
        return encode_documents(held_out_documents(data), tokenizer)[0], data
    spec = results.spec
    try:
        digests = checked_digests(spec)
    except FhaError as err:
        raise FhaError(
            f"{study_dir}: the study's validation text is not here ({err}); give a text with --data"
        ) from None
    recorded = results.context.data_digests.get("valid")
    if digests["valid"] != recorded:
        raise FhaError(
            f"{study_dir}: the validation text changed since the study ran (now {digests['valid']}, the study "
            f"recorded {recorded}); give the text to analyse with --data"
        )
    source = spec.data.valid or "the validation split of the training text"
    return encode_documents(study_documents(spec)["valid"], tokenizer)[0], f"the study's validation text ({source})"


@dataclass(frozen=True)
class StudyMechanisms:
    """The sub-heads of a study's evaluation runs at one budget, measured on one text."""

    study_dir: Path
    description: str  # the study's
    tokens: int  # the budget
    text: str  # a phrase naming the text
    text_tokens: int
    table: SubheadTable  # every run's rows, labelled by its run id
    groups: dict[str, str]  # run id -> variant
    seeds: dict[str, str]  # run id -> seed label
    options: dict[str, Any]  # the analysis settings (analyze_subheads' keywords)

    @property
    def summaries(self) -> list[RunSummary]:
        return run_summaries(self.table, self.groups)

    @property
    def pooled(self) -> list[PooledMeasure]:
        return pool(self.summaries)


def analyze_study(
    study_dir: str | Path,
    *,
    budget: int | None = None,
    data: str | None = None,
    device: Any = "cpu",
    show_progress: bool = False,
    **options: Any,
) -> StudyMechanisms:
    """Analyse every finished evaluation run of the study at `budget` (default: the primary one)
    on `data` (default: the study's validation text); `options` go to `analyze_subheads`."""
    from fha.analysis import analyze_subheads
    from fha.runs.folder import load_model_and_tokenizer

    study_dir = Path(study_dir)
    results, tokens, runs = study_runs(study_dir, budget)
    text_tokens, text = study_text(study_dir, results, data)
    key = settings_key(text_tokens, options)
    _check_analysable(study_dir, tokens, runs, key)
    tables = []
    for run in runs:
        name, kept = run.cell.run_id, run.analysed(study_dir, key)
        if kept.is_file():
            tables.append(SubheadTable.read_csv(kept))
            log.info("%s: read from %s", name, kept)
            continue
        model, _ = load_model_and_tokenizer(run.folder, device)
        started = time.perf_counter()
        tables.append(analyze_subheads(model, text_tokens, run=name, show_progress=show_progress, **options))
        log.info("%s: %d sub-heads analysed in %.1f s", name, len(tables[-1]), time.perf_counter() - started)
        write_text_atomic(kept, tables[-1].csv_text())  # whole or not at all: a later analysis trusts it
    return StudyMechanisms(
        study_dir,
        results.spec.description or study_dir.name,
        tokens,
        text,
        len(text_tokens),
        SubheadTable.concat(tables),
        {run.cell.run_id: run.cell.variant for run in runs},
        {run.cell.run_id: run.cell.seeds.label for run in runs},
        dict(options),
    )


def settings_key(text_tokens: Any, options: dict[str, Any]) -> str:
    """A digest of what decides a run's measurements besides its weights: the token ids of the
    text, the settings of `analyze_subheads` (a default given or left out alike) and
    `MEASURES_VERSION`."""
    from fha.analysis import analyze_subheads

    settings = {
        name: parameter.default
        for name, parameter in inspect.signature(analyze_subheads).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in NOT_MEASURING
    }
    settings.update(options)
    digest = hashlib.sha256(np.ascontiguousarray(text_tokens, dtype=np.int64).tobytes())
    digest.update(json.dumps({"options": settings, "version": MEASURES_VERSION}, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:KEY_CHARS]


def _check_analysable(study_dir: Path, tokens: int, runs: Sequence[StudyRun], key: str) -> None:
    """Refuse before any work when a run has neither a kept table for `key` nor its weights."""
    missing = [run for run in runs if not run.analysed(study_dir, key).is_file()]
    missing = [run for run in missing if not (run.folder / MODEL_FILE).is_file()]
    if missing:
        raise FhaError(
            f"{study_dir}: no weights for {len(missing)} of {counted(len(runs), 'evaluation run')} at "
            f"{format_count(tokens)} tokens (e.g. {missing[0].folder / MODEL_FILE}), and no table of theirs kept "
            f"in {ANALYSED_DIR}/ for this text and these settings; analyse a study's runs where they were trained "
            "(an exported study holds only its ledger and the tables kept)"
        )


def runs_table(mechanisms: StudyMechanisms, summaries: Sequence[RunSummary]) -> Table:
    """One row per run: its variant, seed, loss on the text and its sub-heads summed up."""
    header = [
        "run",
        "variant",
        "seed",
        "loss on the text (nats/token)",
        "induction sub-heads",
        "previous-token sub-heads",
        "largest induction score",
        "mean zero-ablation Δloss",
    ]
    rows = []
    for s in summaries:
        if s.subhead_dim:
            continue
        rows.append(
            [
                s.run,
                s.group,
                mechanisms.seeds.get(s.run, "—"),
                f"{s.clean_loss:.4f}",
                f"{s.values['induction_subheads']:.0f}",
                f"{s.values['previous_token_subheads']:.0f}",
                f"{s.values['max_induction']:.3f}",
                f"{s.values['mean_zero_ablation']:+.4f}",
            ]
        )
    return Table(header, rows)


def _notes(mechanisms: StudyMechanisms) -> list[str]:
    per_variant: dict[str, int] = {}
    for variant in mechanisms.groups.values():
        per_variant[variant] = per_variant.get(variant, 0) + 1
    runs = ", ".join(f"{variant} {counted(count, 'run')}" for variant, count in per_variant.items())
    options = mechanisms.options
    scored = mechanisms.table.rows[0].ablation_tokens
    settings = ", ".join(f"{key}={value}" for key, value in options.items() if value is not None)
    return [
        f"Study: {mechanisms.description} ({mechanisms.study_dir}). Evaluation runs at "
        f"{format_count(mechanisms.tokens)} training tokens: {runs}.",
        f"Text: {mechanisms.text}, {mechanisms.text_tokens:,} tokens with the study's tokenizer; ablations on the "
        f"first {scored:,} predicted tokens" + (f". Settings: {settings}." if settings else "."),
        POOLING_NOTE,
    ]


def write_mechanisms(
    mechanisms: StudyMechanisms, out_dir: str | Path | None = None, *, fmt: str = DEFAULT_FORMAT, dpi: int = DEFAULT_DPI
) -> list[Path]:
    """Write the mechanisms files (module docstring) into `out_dir` (default: the study folder);
    returns the paths written."""
    from fha.analysis.figures import POOLED_STEM, pooled_by_size
    from fha.analysis.report import markdown_page, report_html

    check_figure_options(fmt, dpi)
    out_dir = Path(out_dir) if out_dir is not None else mechanisms.study_dir
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    summaries = mechanisms.summaries
    pooled = pool(summaries)
    written = [
        write_pooled(pooled, out_dir / POOLED_FILE),
        write_run_summaries(summaries, out_dir / RUNS_FILE),
        mechanisms.table.to_csv(out_dir / SUBHEADS_FILE),
    ]
    figure = pooled_by_size(pooled, summaries, out_dir / f"{POOLED_STEM}.{fmt}", dpi)
    sections = [
        ("By variant and sub-head size", "", pooled_table(pooled, summaries)),
        ("Runs", "Over all sub-heads of each run.", runs_table(mechanisms, summaries)),
    ]
    notes = _notes(mechanisms)
    markdown, page = out_dir / MARKDOWN_FILE, out_dir / HTML_FILE
    with writing(out_dir):
        markdown.write_text(markdown_page(TITLE, notes, sections, [figure]))
        page.write_text(report_html(TITLE, notes, sections, [figure]))
    return [*written, figure, markdown, page]


def mechanisms_section(folder: Path) -> tuple[str, list[str], Table | None, str]:
    """The study report's "Mechanisms" section (heading, lines, table, note) from the folder's
    mechanisms_runs.csv; its table is None when there is none."""
    path = folder / RUNS_FILE
    if not path.is_file():
        return SECTION_HEADING, [], None, ""
    summaries = read_run_summaries(path)
    if not summaries:
        raise FhaError(f"{path}: no runs; run fha analyze {folder} again")
    lines = [
        "What the sub-heads of the evaluation runs do, written by fha analyze STUDY_DIR: the text, the settings, "
        f"every run and a figure are in {MARKDOWN_FILE}. {POOLING_NOTE}"
    ]
    return SECTION_HEADING, lines, pooled_table(pool(summaries), summaries), ""
