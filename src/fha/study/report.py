"""`write_report`: report.md, report.html (one self-contained page), results.csv and figures of a study.

Every sentence of the verdict is generated from the numbers: a variant is called better or
worse than the baseline only when the 95% t-interval of its paired difference in test bits
per byte excludes zero, and indistinguishable otherwise.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fha.compare.report import Table, format_count, format_duration, format_rate, markdown_table
from fha.errors import writing
from fha.figure_formats import DEFAULT_DPI, DEFAULT_FORMAT
from fha.stats import Interval, PairedDifference, mean_interval, paired_difference
from fha.study.figures import draw_all
from fha.study.results import RESULTS_FILE, StudyResults, load_results, write_results_csv

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
BPB_DECIMALS = 4
MACHINE_NOTE = (
    "Columns marked * are machine-dependent: measured on a possibly shared machine, not a property of the model"
)
ENVIRONMENT_KEYS = (
    "fha_version",
    "torch_version",
    "python_version",
    "platform",
    "git_commit",
    "device",
    "threads",
    "world_size",
    "cpu_count",
)
HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1180px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.88em; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f2f2f2; }
img { max-width: 100%; height: auto; margin: 1em 0; display: block; }
code { overflow-wrap: anywhere; }
.verdict { font-size: 1.1em; background: #f6f8fa; border-left: 4px solid #4a7; padding: 0.6em 1em; }
"""


def fmt_bpb(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.{BPB_DECIMALS}f}"


def fmt_signed(value: float) -> str:
    """With its sign, except for values that round to zero (no "-0.0000")."""
    if math.isnan(value):
        return "—"
    if round(value, BPB_DECIMALS) == 0:
        return f"{0.0:.{BPB_DECIMALS}f}"
    return f"{value:+.{BPB_DECIMALS}f}"


def fmt_interval(interval: Interval, signed: bool = False) -> str:
    fmt = fmt_signed if signed else fmt_bpb
    if interval.n < 2:
        return f"{fmt(interval.mean)} (one seed: no interval)"
    return f"{fmt(interval.mean)} [{fmt(interval.low)}, {fmt(interval.high)}]"


@dataclass
class Report:
    results: StudyResults
    figures: list[Path]
    markdown: Path
    html: Path
    csv: Path
    verdict: str


def budget_phrase(results: StudyResults) -> str:
    spec = results.spec
    return f"{format_count(spec.tokens)} training tokens per run, {len(spec.seeds)} seeds"


def verdict(results: StudyResults) -> str:
    """One sentence per variant against the baseline, from the paired test bits per byte."""
    baseline = results.spec.baseline
    sentences = []
    for variant in results.spec.variants:
        if variant.name == baseline:
            continue
        paired = paired_difference(results.by_seed(variant.name), results.by_seed(baseline))
        sentences.append(_verdict_sentence(variant.name, baseline, paired))
    return " ".join(sentences) + f" Budget: {budget_phrase(results)}; lower bits per byte on the test text is better."


def _verdict_sentence(name: str, baseline: str, paired: PairedDifference) -> str:
    interval = paired.interval
    won = f"{name} was better at {paired.wins} of {paired.n} seeds"
    if interval.n < 2:
        return f"With one seed no interval can be given: {name} − {baseline} = {fmt_signed(interval.mean)} bits/byte."
    ci = f"95% CI [{fmt_signed(interval.low)}, {fmt_signed(interval.high)}]"
    if interval.high < 0:
        return (
            f"{name} is better than {baseline} by {fmt_bpb(-interval.mean)} bits/byte ({name} − {baseline} "
            f"= {fmt_signed(interval.mean)}, {ci}) at this budget; {won}."
        )
    if interval.low > 0:
        return (
            f"{name} is worse than {baseline} by {fmt_bpb(interval.mean)} bits/byte ({name} − {baseline} "
            f"= {fmt_signed(interval.mean)}, {ci}) at this budget; {won}."
        )
    return (
        f"{name} and {baseline} are indistinguishable at this budget: {name} − {baseline} = "
        f"{fmt_signed(interval.mean)} bits/byte, {ci}, which includes 0; {won}."
    )


def variants_table(results: StudyResults) -> Table:
    header = [
        "variant",
        "parameters",
        "test bits/byte: mean [95% CI]",
        "test loss (nats/token)",
        "test top-1",
        "learning rate (lr_max)",
        "tokens/s *",
        "wall time per run *",
    ]
    rows = []
    for variant in results.spec.variants:
        runs = results.of(variant.name)
        name = f"{variant.name} (baseline)" if variant.name == results.spec.baseline else variant.name
        rows.append(
            [
                name,
                f"{runs[0].parameters:,}",
                fmt_interval(mean_interval([run.test("bits_per_byte") for run in runs])),
                fmt_bpb(mean_interval([run.test("loss") for run in runs]).mean),
                f"{mean_interval([run.test('top1_accuracy') for run in runs]).mean:.2%}",
                f"{results.chosen_lr[variant.name]:g}",
                format_rate(mean_interval([run.tokens_per_s for run in runs]).mean),
                format_duration(mean_interval([run.wall_time_s for run in runs]).mean),
            ]
        )
    return Table(header, rows)


def paired_table(results: StudyResults) -> Table:
    baseline = results.spec.baseline
    header = ["difference", "per seed", "mean [95% CI]", "seeds won"]
    rows = []
    for variant in results.spec.variants:
        if variant.name == baseline:
            continue
        paired = paired_difference(results.by_seed(variant.name), results.by_seed(baseline))
        per_seed = ", ".join(f"{seed}: {fmt_signed(value)}" for seed, value in zip(paired.seeds, paired.differences))
        rows.append(
            [
                f"{variant.name} − {baseline}",
                per_seed,
                fmt_interval(paired.interval, signed=True),
                f"{paired.wins} of {paired.n}",
            ]
        )
    return Table(header, rows)


def sweep_table(results: StudyResults) -> Table:
    rates = list(results.spec.sweep.lr_max)
    header = ["variant", *(f"lr_max {rate:g}" for rate in rates)]
    rows = []
    for name, values in results.sweep.items():
        cells = []
        for rate in rates:
            cell = fmt_bpb(values[rate]) if math.isfinite(values[rate]) else "diverged"
            cells.append(f"{cell} (chosen)" if rate == results.chosen_lr[name] else cell)
        rows.append([name, *cells])
    return Table(header, rows)


def settings_table(results: StudyResults) -> Table:
    """The settings in which the variants differ: their own overrides and the learning rate."""
    keys = sorted({key for variant in results.spec.variants for key in variant.set})
    header = ["variant", *keys, "lr_max"]
    rows = [
        [variant.name, *(str(variant.set.get(key, "(base)")) for key in keys), f"{results.chosen_lr[variant.name]:g}"]
        for variant in results.spec.variants
    ]
    return Table(header, rows)


def environment(results: StudyResults) -> tuple[list[str], Table]:
    """(lines for what every run shares, a table of what differs per run)."""
    infos = [run.info for run in results.runs]
    shared, varying = [], []
    for key in ENVIRONMENT_KEYS:
        values = {str(info.get(key)) for info in infos}
        (shared if len(values) == 1 else varying).append(key)
    lines = [f"{key}: {infos[0].get(key)}" for key in shared]
    header = ["run", "started", *varying, "resumed", "tokens/s *", "wall time *"]
    rows = [
        [
            run.plan.run_id,
            str(run.info.get("date")),
            *(str(run.info.get(key)) for key in varying),
            str(len(run.info.get("resumes", []))),
            format_rate(run.tokens_per_s),
            format_duration(run.wall_time_s),
        ]
        for run in results.runs
    ]
    return lines, Table(header, rows)


def setup_lines(results: StudyResults) -> list[str]:
    spec, record = results.spec, results.record
    data = ", ".join(f"{name} {getattr(spec.data, name)} (sha256 {digest})" for name, digest in record["data"].items())
    test_tokens = results.runs[0].evaluation["test"]["num_tokens"]
    lines = [
        f"Base: {spec.base}; shared settings: {_settings(spec.set) or 'none'}.",
        f"Budget: {budget_phrase(results)} ({', '.join(map(str, spec.seeds))}); baseline: {spec.baseline}.",
        f"Data: {data}.",
        f"Tokenizer: {record['tokenizer_fingerprint']} (one for every run); the test text is "
        f"{test_tokens:,} predicted tokens, all of it scored once per run.",
        "Each seed fixes the initial weights and the batch order, so the variants at one seed saw the same batches.",
    ]
    if spec.sweep is not None:
        lines.append(
            f"Learning rate: lr_max swept over {', '.join(f'{r:g}' for r in spec.sweep.lr_max)} at seed "
            f"{spec.sweep.seed}, chosen per variant on validation bits per byte."
        )
    return lines


def _settings(values: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items())


def write_report(
    out_dir: Path, report_dir: Path | None = None, *, fmt: str = DEFAULT_FORMAT, dpi: int = DEFAULT_DPI
) -> Report:
    """Read the study in `out_dir` and write the report files into `report_dir` (default: `out_dir`);
    figures are PNG at `dpi`, and also in `fmt` when that is svg or pdf."""
    results = load_results(out_dir)
    report_dir = report_dir or out_dir
    csv_path = report_dir / RESULTS_FILE
    with writing(report_dir):
        report_dir.mkdir(parents=True, exist_ok=True)
        write_results_csv(csv_path, results)
    figures = draw_all(results, report_dir, fmt, dpi)
    text = verdict(results)
    env_lines, env_table = environment(results)
    sections: list[tuple[str, list[str], Table | None, str]] = [
        ("Setup", setup_lines(results), None, ""),
        ("Variants", [], variants_table(results), f"{MACHINE_NOTE}."),
        (
            "Paired differences against the baseline",
            [
                "Test bits per byte of the variant minus the baseline's at the same seed; 95% Student t-interval of "
                "the mean difference; a seed is won when the variant's value is lower."
            ],
            paired_table(results),
            "",
        ),
    ]
    if results.sweep:
        sections.append(
            (
                "Learning-rate sweep",
                ["Validation bits per byte over the whole validation text."],
                sweep_table(results),
                "",
            )
        )
    sections += [
        ("Settings that differ between variants", [], settings_table(results), ""),
        ("Environment", ["Shared by every run: " + "; ".join(env_lines) + "."], env_table, f"{MACHINE_NOTE}."),
    ]
    title = f"Study: {results.spec.description or out_dir.name}"
    markdown = report_dir / MARKDOWN_FILE
    page = report_dir / HTML_FILE
    markdown.write_text(_markdown(title, text, sections, figures))
    page.write_text(_html(title, text, sections, figures))
    return Report(results, figures, markdown, page, csv_path, text)


def _markdown(
    title: str, text: str, sections: Sequence[tuple[str, list[str], Table | None, str]], figures: Sequence[Path]
) -> str:
    parts = [f"# {title}", "", f"**Verdict.** {text}", ""]
    for heading, lines, table, note in sections:
        parts += [f"## {heading}", ""]
        parts += [line for item in lines for line in (item, "")]
        if table is not None:
            parts += [markdown_table(table), ""]
        if note:
            parts += [note, ""]
    parts += ["## Figures", ""]
    parts += [line for figure in figures for line in (f"![{figure.stem.replace('_', ' ')}]({figure.name})", "")]
    return "\n".join(parts)


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(
    title: str, text: str, sections: Sequence[tuple[str, list[str], Table | None, str]], figures: Sequence[Path]
) -> str:
    parts = [
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{HTML_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="verdict"><strong>Verdict.</strong> {html.escape(text)}</p>',
    ]
    for heading, lines, table, note in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts += [f"<p>{html.escape(line)}</p>" for line in lines]
        if table is not None:
            parts.append(_html_table(table))
        if note:
            parts.append(f"<p><small>{html.escape(note)}</small></p>")
    parts.append("<h2>Figures</h2>")
    for figure in figures:
        encoded = base64.b64encode(figure.read_bytes()).decode("ascii")
        parts.append(f'<img alt="{html.escape(figure.stem)}" src="data:image/png;base64,{encoded}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
