"""The comparison report as tables of strings, written as Markdown and as one HTML page.

The HTML page embeds the plots as base64 data URIs, so it can be mailed or archived alone;
the Markdown file links the image files next to it. Its tables scroll sideways inside the
page when they are wider than the window, with numbers right-aligned.

Column headers are the names of `fha.metric_names`. One number format everywhere: counts with
thousands separators (90,304), losses with four decimals, perplexities with two, seconds with
one, accuracies as percentages (34.67%).
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fha import metric_names as names
from fha.compare.plots import UNFINISHED, report_image
from fha.compare.runs import HELD_OUT_PREFIX, RunSummary, SeedGroup, Spread
from fha.html_page import html_page
from fha.variants import describe_attention

MISSING = "—"
ACCURACY_SUFFIX = "_accuracy"  # held-out metrics shown as percentages
COUNTS = (names.TOKENS_SCORED, names.BYTES_SCORED)  # held-out numbers the notes give, not columns
TITLE = "Run comparison"
IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml"}
NUMBER_CELL = re.compile(r"[-+]?\d[\d,]*(\.\d+)?(%| s|m \d\ds|h \d\dm)?( ± .*)?")
HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
.table-scroll { max-width: 100%; overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: 0.9em; width: max-content; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td { white-space: nowrap; }
td.text { white-space: normal; max-width: 24em; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; margin: 1em 0; }
"""


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


def format_loss(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:.4f}"


def format_rate(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:,.0f}"


def format_count(count: int | None) -> str:
    """1234567 -> "1,234,567"."""
    return MISSING if count is None else f"{count:,}"


def format_perplexity(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:,.2f}"


def format_percent(value: float) -> str:
    """A share in [0, 1] as a percentage: 0.3467 -> "34.67%"."""
    return MISSING if math.isnan(value) else f"{value:.2%}"


def metric_format(key: str) -> Callable[[float], str]:
    """How a held-out metric of evaluate() is shown."""
    if key.endswith(ACCURACY_SUFFIX):
        return format_percent
    return format_perplexity if key == names.PERPLEXITY else format_loss


def format_seconds(seconds: float) -> str:
    """ "192.3"."""
    return MISSING if math.isnan(seconds) else f"{seconds:,.1f}"


HEADLINE_METRIC = names.BITS_PER_BYTE  # held-out metric shown first: it does not depend on the tokenizer


def _held_out_keys(runs: Sequence[RunSummary]) -> list[str]:
    """The held-out metric names, bits per byte first, when every run has them."""
    if not runs or not all(run.held_out for run in runs):
        return []
    keys = [key for key in runs[0].held_out if key not in COUNTS]
    return sorted(keys, key=lambda key: key != HEADLINE_METRIC)


# (header, how to format one run) for the columns that every report has
RUN_COLUMNS: list[tuple[str, Callable[[RunSummary], str]]] = [
    ("run", lambda run: run.name if run.finished else f"{run.name} ({UNFINISHED})"),
    ("attention", lambda run: describe_attention(run.model_config)),
    (names.PARAMETERS, lambda run: f"{run.num_parameters:,}"),
    (names.NON_EMBEDDING_PARAMETERS, lambda run: f"{run.num_non_embedding:,}"),
    (names.STEP, lambda run: f"{run.steps:,}"),
    (names.TOKENS_SEEN, lambda run: format_count(run.tokens_seen)),
]
# the last logged losses, measured on eval_samples random windows (not a whole text)
LOGGED_COLUMNS: list[tuple[str, Callable[[RunSummary], str]]] = [
    (names.VAL_LOSS, lambda run: format_loss(run.final_val_loss)),
    (names.VAL_PERPLEXITY, lambda run: format_perplexity(run.final_perplexity)),
    (names.EVAL_WINDOWS, lambda run: MISSING if run.eval_windows is None else f"{run.eval_windows:,}"),
]
SPEED_COLUMNS: list[tuple[str, Callable[[RunSummary], str]]] = [
    (names.TOKENS_PER_S, lambda run: format_rate(run.tokens_per_s)),
    (names.ELAPSED, lambda run: format_seconds(run.wall_time_s)),
]


def runs_table(runs: Sequence[RunSummary]) -> Table:
    """One row per run; held-out metrics (when measured, named without a split: the whole `--data`
    text) come before the logged eval-window losses (``val_loss_nats``)."""
    held_out = _held_out_keys(runs)
    header = [name for name, _ in RUN_COLUMNS] + held_out
    header += [name for name, _ in LOGGED_COLUMNS] + [name for name, _ in SPEED_COLUMNS]
    rows = []
    for run in runs:
        row = [cell(run) for _, cell in RUN_COLUMNS]
        row += [metric_format(key)(run.held_out[key]) for key in held_out]
        row += [cell(run) for _, cell in LOGGED_COLUMNS]
        row += [cell(run) for _, cell in SPEED_COLUMNS]
        rows.append(row)
    return Table(header, rows)


def format_spread(spread: Spread, fmt: Callable[[float], str]) -> str:
    """ "mean ± std (min–max)"."""
    return f"{fmt(spread.mean)} ± {fmt(spread.std)} ({fmt(spread.min)}–{fmt(spread.max)})"


def groups_table(groups: Sequence[SeedGroup]) -> Table:
    """One row per seed group: mean ± sample std (min–max) of each metric."""
    all_runs = [run for group in groups for run in group.runs]
    metrics: list[tuple[str, str, Callable[[float], str]]] = [
        (names.VAL_LOSS, "final_val_loss", format_loss),
        (names.VAL_PERPLEXITY, "final_perplexity", format_perplexity),
    ]
    metrics += [(key, HELD_OUT_PREFIX + key, metric_format(key)) for key in _held_out_keys(all_runs)]
    metrics += [(names.TOKENS_PER_S, "tokens_per_s", format_rate), (names.ELAPSED, "wall_time_s", format_seconds)]
    header = ["group", "runs", "seeds"] + [name for name, _, _ in metrics]
    rows = []
    for group in groups:
        seeds = ", ".join(str((run.train_config or {}).get("seed", MISSING)) for run in group.runs)
        row = [group.label, ", ".join(run.name for run in group.runs), seeds]
        row += [format_spread(group.spread(metric), fmt) for _, metric, fmt in metrics]
        rows.append(row)
    return Table(header, rows)


def markdown_table(table: Table) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(table.header), line(["---"] * len(table.header))] + [line(row) for row in table.rows])


def numeric_columns(table: Table) -> list[bool]:
    """Columns whose every cell is a number (or missing): these are right-aligned."""
    return (
        [
            all(cell == MISSING or NUMBER_CELL.fullmatch(cell) for cell in column) and any(column)
            for column in zip(*table.rows)
        ]
        if table.rows
        else [False] * len(table.header)
    )


def html_table(table: Table) -> str:
    """The table as HTML that scrolls sideways when wider than the page, numbers right-aligned."""
    kinds = ["num" if numeric else "text" for numeric in numeric_columns(table)]
    head = "".join(f'<th class="{kind}">{html.escape(cell)}</th>' for kind, cell in zip(kinds, table.header))
    body = "".join(
        "<tr>" + "".join(f'<td class="{kind}">{html.escape(cell)}</td>' for kind, cell in zip(kinds, row)) + "</tr>"
        for row in table.rows
    )
    return f'<div class="table-scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def embedded_image(plot: Path) -> str:
    """An ``<img>`` of the image the reports show for `plot` (`report_image`), inline as a data URI."""
    image = report_image(plot)
    encoded = base64.b64encode(image.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(plot.stem)}" src="data:{IMAGE_TYPES[image.suffix]};base64,{encoded}">'


GROUPS_NOTE = (
    "Runs with equal model configs whose train configs differ only in `seed`; "
    "mean ± sample standard deviation (min–max)."
)


@dataclass(frozen=True)
class ReportContent:
    """What report.md and report.html of a comparison show; `sections`: (heading, note, table) after
    the seed groups."""

    runs: Table
    groups: Table | None
    plots: Sequence[Path]
    notes: Sequence[str]
    sections: Sequence[tuple[str, str, Table]] = ()


def write_markdown(path: Path, content: ReportContent) -> None:
    parts = [f"# {TITLE}", ""]
    parts += [line for note in content.notes for line in (note, "")]
    parts += ["## Runs", "", markdown_table(content.runs), ""]
    if content.groups is not None:
        parts += ["## Seed groups", "", GROUPS_NOTE, "", markdown_table(content.groups), ""]
    for title, note, table in content.sections:
        parts += [f"## {title}", "", note, "", markdown_table(table), ""]
    parts += ["## Loss curves", ""]
    for plot in content.plots:
        parts += [f"![{plot.stem.replace('_', ' ')}]({report_image(plot).name})", ""]
        if report_image(plot) != plot:
            parts += [f"([{plot.name}]({plot.name}))", ""]
    path.write_text("\n".join(parts))


def write_html(path: Path, content: ReportContent) -> None:
    parts = [f"<p>{html.escape(note)}</p>" for note in content.notes]
    parts += ["<h2>Runs</h2>", html_table(content.runs)]
    if content.groups is not None:
        parts += [
            "<h2>Seed groups</h2>",
            f"<p>{html.escape(GROUPS_NOTE.replace('`', ''))}</p>",
            html_table(content.groups),
        ]
    for heading, note, table in content.sections:
        parts += [f"<h2>{html.escape(heading)}</h2>", f"<p>{html.escape(note)}</p>", html_table(table)]
    parts.append("<h2>Loss curves</h2>")
    parts += [embedded_image(plot) for plot in content.plots]
    path.write_text(html_page(TITLE, HTML_STYLE, parts))
