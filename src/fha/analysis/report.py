"""`write_analysis`: subheads.csv, report.md, report.html (one self-contained page) and the
figures of a sub-head table, with the tables and HTML of `fha.compare.report`."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fha.analysis.figures import draw_all
from fha.analysis.table import (
    INDUCTION_THRESHOLD,
    PREVIOUS_TOKEN_THRESHOLD,
    SubheadRow,
    SubheadTable,
    summary_by_size,
)
from fha.compare.plots import report_image
from fha.compare.report import HTML_STYLE, MISSING, Table, embedded_image, html_table, markdown_table
from fha.errors import writing
from fha.figure_formats import DEFAULT_DPI, DEFAULT_FORMAT, check_figure_options
from fha.html_page import html_page

CSV_FILE = "subheads.csv"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
TITLE = "What the sub-heads do"
TOP_SUBHEADS = 5  # the most important sub-heads listed per run
Section = tuple[str, str, Table]  # heading, a note above the table (may be empty), the table
DEFINITIONS = (
    "Entropy: of each query's attention, in bits, averaged over query positions (uniform attention over "
    "the t + 1 visible positions gives log2(t + 1)). Distance: mean of t − s under the weights. Previous-token "
    "and first-token: the weight on position t − 1 and on the window's first position (queries t ≥ 1). "
    "Induction: on random tokens repeated once, the weight a repeated token puts on the token that followed its "
    "first occurrence (Olsson et al., 2022). Copying: Σ Re λ / Σ |λ| over the eigenvalues of the sub-head's "
    "direct-path OV circuit (Elhage et al., 2021). Ablation: the increase of the loss on the text, in nats per "
    "token, when the sub-head's output is set to zero or to its mean over the text. Definitions and references: "
    "docs/analysis.md."
)


def _number(decimals: int, signed: bool = False) -> Callable[[float], str]:
    def fmt(value: float) -> str:
        if math.isnan(value):
            return MISSING
        if signed and round(value, decimals) == 0:
            return f"{0.0:.{decimals}f}"
        return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"

    return fmt


# (header, row -> cell) of the table of every sub-head
SUBHEAD_COLUMNS: list[tuple[str, Callable[[SubheadRow], str]]] = [
    ("run", lambda row: row.run),
    ("layer", lambda row: str(row.layer)),
    ("head", lambda row: str(row.head)),
    ("sub-head", lambda row: f"{row.subhead} of {row.num_subheads}"),
    ("size", lambda row: str(row.subhead_dim)),
    ("entropy (bits)", lambda row: _number(3)(row.entropy_bits)),
    ("distance", lambda row: _number(1)(row.mean_distance)),
    ("previous-token", lambda row: _number(3)(row.previous_token)),
    ("first-token", lambda row: _number(3)(row.first_token)),
    ("induction", lambda row: _number(3)(row.induction)),
    ("copying", lambda row: _number(2, signed=True)(row.copying)),
    ("zero-ablation Δloss", lambda row: _number(4, signed=True)(row.zero_ablation)),
    ("mean-ablation Δloss", lambda row: _number(4, signed=True)(row.mean_ablation)),
]


def _step(step: int | None) -> str:
    return MISSING if step is None else f"{step:,}"


def runs_table(table: SubheadTable, descriptions: Mapping[str, str]) -> Table:
    header = ["run", "attention", "step", "loss on the text (nats/token)", "sub-heads"]
    rows = []
    for run in table.runs():
        for step in table.steps(run):
            selected = table.select(run, step).rows
            rows.append(
                [
                    run,
                    descriptions.get(run, MISSING),
                    _step(step),
                    _number(4)(selected[0].clean_loss),
                    str(len(selected)),
                ]
            )
    return Table(header, rows)


def size_table(table: SubheadTable) -> Table:
    header = [
        "run",
        "step",
        "size",
        "sub-heads",
        "mean entropy (bits)",
        "mean previous-token",
        f"previous-token ≥ {PREVIOUS_TOKEN_THRESHOLD:g}",
        "max induction",
        f"induction ≥ {INDUCTION_THRESHOLD:g}",
        "mean zero-ablation Δloss",
        "max zero-ablation Δloss",
        "mean mean-ablation Δloss",
    ]
    rows = [
        [
            summary.run,
            _step(summary.step),
            str(summary.subhead_dim),
            str(summary.count),
            _number(3)(summary.mean_entropy_bits),
            _number(3)(summary.mean_previous_token),
            str(summary.previous_token_subheads),
            _number(3)(summary.max_induction),
            str(summary.induction_subheads),
            _number(4, signed=True)(summary.mean_zero_ablation),
            _number(4, signed=True)(summary.max_zero_ablation),
            _number(4, signed=True)(summary.mean_mean_ablation),
        ]
        for summary in summary_by_size(table)
    ]
    return Table(header, rows)


def subhead_table(rows: Sequence[SubheadRow]) -> Table:
    return Table([name for name, _ in SUBHEAD_COLUMNS], [[cell(row) for _, cell in SUBHEAD_COLUMNS] for row in rows])


def most_important(table: SubheadTable) -> list[SubheadRow]:
    """Each run's `TOP_SUBHEADS` sub-heads whose zero ablation costs most (last step)."""
    latest = table.latest()
    chosen = []
    for run in latest.runs():
        rows = [row for row in latest.rows if row.run == run]
        chosen += sorted(rows, key=lambda row: -row.zero_ablation)[:TOP_SUBHEADS]
    return chosen


@dataclass(frozen=True)
class AnalysisReport:
    csv: Path
    markdown: Path
    html: Path
    figures: list[Path]


def write_analysis(
    table: SubheadTable,
    out_dir: str | Path,
    *,
    descriptions: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
    fmt: str = DEFAULT_FORMAT,
    dpi: int = DEFAULT_DPI,
) -> AnalysisReport:
    """Write `table` (every run and step) as CSV, its report and figures into `out_dir`.

    descriptions: a phrase per run for the runs table (its attention variant); notes: lines
    that open the report (what was measured on which text).
    """
    check_figure_options(fmt, dpi)
    if not table.rows:
        raise ValueError("the table has no rows to report")
    out_dir = Path(out_dir)
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = table.to_csv(out_dir / CSV_FILE)
    figures = draw_all(table, out_dir, fmt, dpi)
    sections = [
        ("Runs", "", runs_table(table, descriptions or {})),
        (
            "By sub-head size",
            f"The counts are of sub-heads with a previous-token score of at least {PREVIOUS_TOKEN_THRESHOLD:g} and "
            f"with an induction score of at least {INDUCTION_THRESHOLD:g} (a convention; see docs/analysis.md).",
            size_table(table),
        ),
        (
            "Most important sub-heads",
            f"The {TOP_SUBHEADS} sub-heads of each run whose zero ablation raises the loss most.",
            subhead_table(most_important(table)),
        ),
        (
            "Every sub-head",
            f"At each run's last step; {CSV_FILE} has every step and full precision.",
            subhead_table(table.latest().rows),
        ),
    ]
    markdown = out_dir / MARKDOWN_FILE
    page = out_dir / HTML_FILE
    with writing(out_dir):
        markdown.write_text(markdown_page(TITLE, [*notes, DEFINITIONS], sections, figures))
        page.write_text(report_html(TITLE, [*notes, DEFINITIONS], sections, figures))
    return AnalysisReport(csv_path, markdown, page, figures)


def markdown_page(title: str, notes: Sequence[str], sections: Sequence[Section], figures: Sequence[Path]) -> str:
    """A Markdown report: the title, `notes` as paragraphs, each section's table, the figures linked."""
    parts = [f"# {title}", ""]
    parts += [line for note in notes for line in (note, "")]
    for heading, note, table in sections:
        parts += [f"## {heading}", ""]
        if note:
            parts += [note, ""]
        parts += [markdown_table(table), ""]
    parts += ["## Figures", ""]
    for figure in figures:
        parts += [f"![{figure.stem.replace('_', ' ')}]({report_image(figure).name})", ""]
        if report_image(figure) != figure:
            parts += [f"([{figure.name}]({figure.name}))", ""]
    return "\n".join(parts)


def report_html(title: str, notes: Sequence[str], sections: Sequence[Section], figures: Sequence[Path]) -> str:
    """The same as one self-contained HTML page, the figures inline."""
    parts = [f"<p>{html.escape(note)}</p>" for note in notes]
    for heading, note, table in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if note:
            parts.append(f"<p>{html.escape(note)}</p>")
        parts.append(html_table(table))
    parts.append("<h2>Figures</h2>")
    parts += [embedded_image(figure) for figure in figures]
    return html_page(title, HTML_STYLE, parts)
