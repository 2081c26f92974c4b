"""`write_report`: report.md, report.html (one self-contained page), results.csv and figures of a study,
built from its ledgers alone.

Every sentence of the verdict is generated from the numbers. The primary contrast (spec
`primary` against the baseline, at the primary budget) is tested at the 5% level; the other
contrasts are Holm-adjusted among themselves. A contrast is called better or worse only when
its 95% interval excludes zero (and, for the others, its Holm-adjusted p-value is below 0.05);
"equivalent within +-delta" only when the spec declares `equivalence_margin`, the interval
lies inside it and (for the others) the Holm-adjusted p of the two one-sided tests is below the
2.5% level that a 95% interval inside the margin stands for; otherwise it is inconclusive,
with the interval's half-width and the smallest difference the study could detect at 80% power.
When the n-gram references are known and runs are no better than the bigram model, the verdict
says the models are still at n-gram level.

With a grid, each grid point is such a comparison of its own (its section, its sentences in the
verdict, its Holm family); no correction is made across grid points. A grid that changes the
model's size adds a scaling section (`fha.study.scaling`).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fha import metric_names as names
from fha.compare.report import Table, format_count, format_seconds, html_table, markdown_table
from fha.errors import FhaValueError
from fha.figure_formats import DEFAULT_DPI, DEFAULT_FORMAT
from fha.files import write_text_atomic
from fha.html_page import html_page
from fha.stats import (
    ALPHA,
    CONFIDENCE,
    MIN_POWER_LAW_POINTS,
    PairedDifference,
    SeedKey,
    equivalence,
    equivalence_p,
    holm_bonferroni,
    mean_interval,
    minimum_detectable_effect,
    paired_difference,
    variance_components,
)
from fha.study.figures import draw_all
from fha.study.mechanisms import SECTION_HEADING as MECHANISMS
from fha.study.mechanisms import mechanisms_section
from fha.study.results import RESULTS_FILE, StudyResults, load_results, results_csv
from fha.study.scaling import scaling

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
BPB_DECIMALS = 4
NGRAM_NAMES = {1: "unigram", 2: "bigram", 3: "trigram"}
MACHINE_NOTE = "Columns marked * are machine-dependent: measured on a possibly shared machine"
TEST_BPB = names.on_split(names.TEST, names.BITS_PER_BYTE)
EQUIVALENCE_LEVEL = (1 - CONFIDENCE) / 2  # each one-sided test's level when a 95% interval lies inside the margin
PILOT_TEXTS = ("valid", "test", "train_sample")  # the study's texts, in the tuning runs' table
PAIRED, VARIANTS, TUNING_SECTION, VARIANCE = (
    "Paired differences against the baseline",
    "Variants",
    "Learning-rate tuning",
    "Variance by source (crossed seeds)",
)
REFERENCES, TUNING_RUNS = "n-gram references", "Tuning runs at every budget"
SECTION_ORDER = (
    PAIRED,
    VARIANTS,
    REFERENCES,
    TUNING_SECTION,
    TUNING_RUNS,
    VARIANCE,
    MECHANISMS,
)  # the report without a grid
PAIRED_TEXT = (
    "Test bits per byte of the variant minus the baseline's at the same seed pair; 95% Student t-interval; "
    "two-sided paired t test; the primary contrast at the primary budget at the 5% level, the other contrasts "
    "Holm-adjusted within their budget; secondary budgets are reported beside the primary one, not corrected "
    "across budgets; sign-flip p: the paired randomisation test over the differences' sign patterns, which does "
    "not assume normal differences (a check on the t test; Holm-adjusted like it in the verdict); MDE: the "
    "smallest true difference this number of seeds detects with 80% power, from the observed paired SD."
)
HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1180px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.88em; max-width: 100%; display: block;
        overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; hyphens: none; word-break: keep-all; }
.num { text-align: right; }
td { overflow-wrap: anywhere; }
img { max-width: 100%; height: auto; margin: 1em 0; display: block; }
code { overflow-wrap: anywhere; }
.verdict { font-size: 1.1em; background: #f6f8fa; border-left: 4px solid #4a7; padding: 0.6em 1em; }
"""


def fmt_bpb(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:.{BPB_DECIMALS}f}"


def fmt_signed(value: float) -> str:
    """With its sign, except for values that round to zero (no "-0.0000")."""
    if not math.isfinite(value):
        return "—"
    if round(value, BPB_DECIMALS) == 0:
        return f"{0.0:.{BPB_DECIMALS}f}"
    return f"{value:+.{BPB_DECIMALS}f}"


def fmt_p(value: float) -> str:
    if math.isnan(value):
        return "—"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def _equals_p(value: float) -> str:
    """``= 0.0312`` or ``< 0.0001``: what follows "p" in a sentence."""
    text = fmt_p(value)
    return text if text.startswith("<") else f"= {text}"


def seeds_phrase(count: int) -> str:
    return f"{count} seed" if count == 1 else f"{count} seeds"


@dataclass(frozen=True)
class Section:
    heading: str
    lines: list[str]
    table: Table | None = None
    note: str = ""
    level: int = 2  # 2: a section of the report; 3: a part of one (a grid point's tables)


@dataclass(frozen=True)
class Contrast:
    """One variant against the baseline at one budget."""

    variant: str
    baseline: str
    tokens: int
    paired: PairedDifference
    adjusted_p: float  # Holm-adjusted among the secondary contrasts; the primary's own p for the primary
    sign_flip_adjusted_p: float  # the same for the sign-flip test's p
    equivalence_adjusted_p: float  # the same for the two one-sided tests' p (NaN without a margin)
    mde: float  # smallest true difference detected with 80% power at the 5% level (NaN with < 2 pairs)
    family_size: int  # how many contrasts Holm's correction counts this one among (1 for the primary)

    @property
    def name(self) -> str:
        return f"{self.variant} − {self.baseline}"

    @property
    def halfwidth(self) -> float:
        interval = self.paired.interval
        return (interval.high - interval.low) / 2 if interval.n >= 2 else math.nan

    @property
    def sign_flip_floor(self) -> float:
        """The smallest (Holm-adjusted) sign-flip p-value any outcome at these seeds could give."""
        return min(1.0, self.family_size * self.paired.sign_flip_floor)


def contrasts(results: StudyResults, tokens: int) -> list[Contrast]:
    """Every variant against the baseline at `tokens`, the primary first; Holm over the others."""
    spec = results.spec
    values = {name: results.values(name, tokens) for name in (spec.baseline, *spec.contrasts)}
    return contrasts_of(values, spec.baseline, spec.primary, tokens, spec.equivalence_margin)


def contrasts_of(
    values: Mapping[str, Mapping[SeedKey, float]], baseline: str, primary: str, tokens: int, margin: float | None
) -> list[Contrast]:
    """Each variant of `values` (per seed) against `baseline`, in order: the `primary` tested alone,
    the others' p-values (t, sign-flip, equivalence) Holm-adjusted among themselves."""
    paired = {
        name: paired_difference(seeds, values[baseline])
        for name, seeds in values.items()
        if name != baseline and set(seeds) & set(values[baseline])
    }
    others = [name for name in paired if name != primary]

    def secondary(p_value: Callable[[PairedDifference[SeedKey]], float]) -> dict[str, float]:
        return holm_bonferroni({name: p_value(paired[name]) for name in others})

    def tost(pair: PairedDifference[SeedKey]) -> float:
        return math.nan if margin is None else equivalence_p(pair.interval, margin)

    t_adjusted, flip_adjusted, tost_adjusted = (
        secondary(lambda pair: pair.p_value),
        secondary(lambda pair: pair.sign_flip_p),
        secondary(tost),
    )
    family = sum(1 for p in t_adjusted.values() if not math.isnan(p))
    found = []
    for name, pair in paired.items():
        if name == primary:
            adjusted = (pair.p_value, pair.sign_flip_p, tost(pair))
        else:
            adjusted = (t_adjusted[name], flip_adjusted[name], tost_adjusted[name])
        found.append(
            Contrast(name, baseline, tokens, pair, *adjusted, _mde(pair), 1 if name == primary else max(family, 1))
        )
    return found


def _mde(paired: PairedDifference) -> float:
    interval = paired.interval
    if interval.n < 2 or not interval.std > 0:
        return math.nan
    try:
        return minimum_detectable_effect(interval.std, interval.n)
    except FhaValueError:
        return math.nan


def contrast_sentence(contrast: Contrast, margin: float | None, primary: bool) -> str:
    interval, name, base = contrast.paired.interval, contrast.variant, contrast.baseline
    wins = f"{name} was better at {contrast.paired.wins} of {seeds_phrase(contrast.paired.n)}"
    if interval.n < 2:
        return f"With one seed no interval can be given: {name} − {base} = {fmt_signed(interval.mean)} bits/byte."
    ci = f"95% CI [{fmt_signed(interval.low)}, {fmt_signed(interval.high)}]"
    flip = f"sign-flip test p {_equals_p(contrast.paired.sign_flip_p)}" + (
        "" if primary else f", Holm-adjusted {fmt_p(contrast.sign_flip_adjusted_p)}"
    )
    p_text = f"p {_equals_p(contrast.paired.p_value)}" + (
        "" if primary else f", Holm-adjusted {fmt_p(contrast.adjusted_p)}"
    )
    significant = interval.excludes_zero and contrast.adjusted_p < ALPHA
    if significant:
        direction = "better" if interval.high < 0 else "worse"
        return (
            f"{name} is {direction} than {base} by {fmt_bpb(abs(interval.mean))} bits/byte ({name} − {base} = "
            f"{fmt_signed(interval.mean)}, {ci}, {p_text}, {flip}){_unconfirmed(contrast)}; {wins}."
        )
    unproven = ""
    if margin is not None and equivalence(interval, margin):
        tost = (
            f"two one-sided tests against ±{margin:g}, each at the {EQUIVALENCE_LEVEL:.1%} level of a 95% interval: "
            f"p {_equals_p(equivalence_p(interval, margin))}"
        ) + ("" if primary else f", Holm-adjusted {fmt_p(contrast.equivalence_adjusted_p)}")
        if contrast.equivalence_adjusted_p < EQUIVALENCE_LEVEL:
            return (
                f"{name} and {base} are equivalent within ±{margin:g} bits/byte: {name} − {base} = "
                f"{fmt_signed(interval.mean)}, {ci} (half-width {fmt_bpb(contrast.halfwidth)}) lies inside the margin "
                f"({tost}; tests of a zero difference: {p_text}, {flip}); {wins}."
            )
        unproven = f"; it lies inside ±{margin:g} but is not shown equivalent after Holm's correction ({tost})"
    p_text += f", {flip}"
    detectable = (
        f"; this design detects a true difference of {fmt_bpb(contrast.mde)} bits/byte with 80% power"
        if math.isfinite(contrast.mde)
        else ""
    )
    return (
        f"{name} − {base} is inconclusive: {fmt_signed(interval.mean)} bits/byte, {ci} (half-width "
        f"{fmt_bpb(contrast.halfwidth)}), {p_text}{detectable}{unproven}; no difference larger than "
        f"{fmt_bpb(max(abs(interval.low), abs(interval.high)))} bits/byte is consistent with it; {wins}."
    )


def _unconfirmed(contrast: Contrast) -> str:
    """What the sign-flip test adds to a difference the t test calls significant (empty when it agrees)."""
    if contrast.sign_flip_adjusted_p < ALPHA:
        return ""
    smallest = contrast.sign_flip_floor
    if smallest >= ALPHA:
        correction = (
            "" if contrast.family_size == 1 else f" and Holm's correction over {contrast.family_size} contrasts"
        )
        return (
            f"; with {seeds_phrase(contrast.paired.n)}{correction} the sign-flip test cannot go below p = "
            f"{smallest:.4g}, so it cannot confirm a difference at the 5% level"
        )
    return "; the sign-flip test, which does not assume normal differences, does not confirm it at the 5% level"


def regime_sentence(results: StudyResults) -> str:
    """Where the runs stand against the n-gram references on the test text (empty when unknown)."""
    test = results.references.get("test", {})
    if 2 not in test:
        return ""
    values = [
        entry.metric("test") for name in results.spec.variant_names for entry in results.runs(name, results.spec.tokens)
    ]
    if not values:
        return ""
    bigram, trigram = test[2], test.get(3, math.nan)
    above_bigram = sum(1 for value in values if value >= bigram)
    if above_bigram:
        return (
            f"{above_bigram} of {len(values)} runs at the primary budget are no better than the bigram reference "
            f"({fmt_bpb(bigram)} bits/byte on the test text): the models are still at n-gram level and the "
            "comparison measures early learning speed, not what the attention is worth."
        )
    past = sum(1 for value in values if value < trigram)
    return (
        f"All {len(values)} runs at the primary budget beat the bigram reference ({fmt_bpb(bigram)} bits/byte) and "
        f"{past} beat the trigram reference ({fmt_bpb(trigram)})."
    )


def budget_phrase(results: StudyResults) -> str:
    return f"{format_count(results.spec.tokens)} training tokens per run"


def comparison_sentences(results: StudyResults) -> list[str]:
    """The verdict on one comparison (the study without a grid, or one grid point): how far it is, failed
    runs, every contrast at the primary budget, untuned variants and the n-gram regime."""
    sentences = []
    if not results.tuning.done:
        finished = len(results.tuning_entries())
        total = finished + len(results.tuning.missing)
        sentences.append(
            f"PARTIAL: tuning in progress ({finished} of {total} tuning runs finished so far); no evaluation run yet."
        )
    elif not results.complete:
        done = len([c for c in results.cells if c in results.entries])
        sentences.append(f"PARTIAL: {done} of {len(results.cells)} evaluation runs finished; not a final result.")
    for cell, entry in results.failed:
        sentences.append(f"{cell.run_id} failed ({entry.diverged}): its seed is left out of its contrasts.")
    found = contrasts(results, results.spec.tokens)
    for contrast in found:
        sentences.append(
            contrast_sentence(contrast, results.spec.equivalence_margin, contrast.variant == results.spec.primary)
        )
    if not found:
        sentences.append("No contrast can be computed yet.")
    for name in results.tuning.at_edge:
        sentences.append(
            f"{name} is not tuned: its best rate ({results.chosen_lr[name]:g}) is at the edge of the grid after "
            "every extension."
        )
    regime = regime_sentence(results)
    if regime:
        sentences.append(regime)
    return sentences


def budget_sentence(points: Sequence[StudyResults]) -> str:
    seeds = len({cell.seeds for results in points for cell in results.cells})
    counted_seeds = f", {seeds_phrase(seeds)}" if seeds else ""
    return f"Budget: {budget_phrase(points[0])}{counted_seeds}; lower bits per byte on the test text is better."


def verdict(results: StudyResults) -> str:
    return " ".join([*comparison_sentences(results), budget_sentence([results])])


def grid_verdict(points: Sequence[StudyResults]) -> str:
    """The verdict of a study with a grid: each grid point's own, then what they share."""
    parts = [f"At {results.point.title}: {' '.join(comparison_sentences(results))}" for results in points]
    parts.append(
        f"Each of the {len(points)} grid points is a comparison of its own (tuned, evaluated and tested apart; no "
        "correction across grid points)."
    )
    parts.append(budget_sentence(points))
    return " ".join(parts)


# ---------------------------------------------------------------- tables
def contrast_table(results: StudyResults) -> Table:
    header = [
        "budget",
        "difference",
        "mean [95% CI]",
        "half-width",
        "p",
        "Holm p",
        "sign-flip p",
        "80% MDE",
        "seeds won",
    ]
    rows = []
    for tokens in reversed(results.spec.all_budgets):
        for contrast in contrasts(results, tokens):
            interval = contrast.paired.interval
            primary = contrast.variant == results.spec.primary
            at_primary_budget = tokens == results.spec.tokens
            if primary:
                holm = "(primary)" if at_primary_budget else "not corrected"
            else:
                holm = fmt_p(contrast.adjusted_p)
            rows.append(
                [
                    format_count(tokens) + (" (primary)" if at_primary_budget else " (secondary)"),
                    contrast.name + (" (primary)" if primary else ""),
                    _interval_text(interval.mean, interval.low, interval.high, interval.n, signed=True),
                    fmt_bpb(contrast.halfwidth),
                    fmt_p(contrast.paired.p_value),
                    holm,
                    fmt_p(contrast.paired.sign_flip_p),
                    fmt_bpb(contrast.mde),
                    f"{contrast.paired.wins} of {contrast.paired.n}",
                ]
            )
    return Table(header, rows)


def _interval_text(mean: float, low: float, high: float, n: int, signed: bool = False) -> str:
    fmt = fmt_signed if signed else fmt_bpb
    if n < 2:
        return f"{fmt(mean)} (one seed)"
    return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"


def variants_table(results: StudyResults) -> Table:
    header = [
        "variant",
        "parameters",
        "lr_max",
        "budget",
        "runs",
        f"{TEST_BPB} [95% CI]",
        names.on_split(names.VAL, names.BITS_PER_BYTE),
        names.on_split(names.TRAIN_SAMPLE, names.BITS_PER_BYTE),
        names.on_split(names.TEST, names.TOP1_ACCURACY),
    ]
    rows = []
    for name in results.spec.variant_names:
        label = f"{name} (baseline)" if name == results.spec.baseline else name
        if name in results.tuning.at_edge:
            label += " (not tuned)"
        for tokens in reversed(results.spec.all_budgets):
            runs = results.runs(name, tokens)
            if not runs:
                continue
            test = mean_interval([run.metric("test") for run in runs])
            rows.append(
                [
                    label,
                    f"{runs[0].parameters:,}",
                    f"{results.chosen_lr.get(name, math.nan):g}",
                    format_count(tokens),
                    str(len(runs)),
                    _interval_text(test.mean, test.low, test.high, test.n),
                    fmt_bpb(mean_interval([run.metric("valid") for run in runs]).mean),
                    fmt_bpb(mean_interval([run.metric("train_sample") for run in runs]).mean),
                    f"{mean_interval([run.metric('test', 'top1_accuracy') for run in runs]).mean:.2%}",
                ]
            )
    return Table(header, rows)


def references_table(results: StudyResults) -> Table | None:
    if not results.references:
        return None
    orders = sorted({order for values in results.references.values() for order in values})
    header = ["text", *(f"{NGRAM_NAMES.get(order, f'{order}-gram')} {names.BITS_PER_BYTE}" for order in orders)]
    rows = [
        [split, *(fmt_bpb(values.get(order, math.nan)) for order in orders)]
        for split, values in results.references.items()
    ]
    return Table(header, rows)


def tuning_table(results: StudyResults) -> Table | None:
    if results.spec.sweep is None:
        return None
    header = [
        "variant",
        "lr_max",
        "seeds",
        f"mean {names.on_split(names.VAL, names.BITS_PER_BYTE)} (primary budget)",
        "chosen",
    ]
    rows = []
    for name, scores in results.tuning.scores.items():
        for rate, score in scores.items():
            count = sum(
                1
                for cell, _ in results.tuning_entries()
                if cell.variant == name and cell.lr_max == rate and cell.tokens == results.spec.tokens
            )
            chosen = results.chosen_lr.get(name) == rate
            rows.append(
                [name, f"{rate:g}", str(count), fmt_bpb(score) if math.isfinite(score) else "diverged", "yes" * chosen]
            )
    return Table(header, rows)


def pilot_table(points: Sequence[StudyResults]) -> Table | None:
    entries = [item for results in points for item in results.tuning_entries()]
    if not entries:
        return None
    header = ["run", *(names.on_split(names.STUDY_SPLITS[text], names.BITS_PER_BYTE) for text in PILOT_TEXTS)]
    header.append(f"{names.ELAPSED} *")
    rows = [
        [
            cell.run_id,
            *(("diverged",) * 3 if entry.diverged else tuple(fmt_bpb(entry.metric(text)) for text in PILOT_TEXTS)),
            format_seconds(entry.wall_time_s),
        ]
        for cell, entry in entries
    ]
    return Table(header, rows)


def variance_table(results: StudyResults) -> Table | None:
    """With crossed seeds: each variant's test bits/byte split into init, data order and residual variance."""
    if results.spec.data_seeds is None:
        return None
    header = ["variant", "init seed variance", "data order variance", "residual variance", "note"]
    rows = []
    for name in results.spec.variant_names:
        values = results.values(name, results.spec.tokens)
        try:
            split = variance_components({(seeds.init, seeds.data): value for seeds, value in values.items()})
        except FhaValueError as err:
            rows.append([name, "—", "—", "—", str(err)])
            continue
        note = f"clipped to 0: {', '.join(split.clipped)}" if split.clipped else ""
        rows.append([name, f"{split.init_seed:.3g}", f"{split.data_order:.3g}", f"{split.residual:.3g}", note])
    return Table(header, rows)


def setup_lines(points: Sequence[StudyResults]) -> list[str]:
    results = points[0]
    spec, context = results.spec, results.context
    data = ", ".join(f"{name} {path} (sha256 {context.data_digests[name]})" for name, path in spec.data.files().items())
    labels = {cell.seeds.label for results in points for cell in results.cells}
    seeds = ", ".join(sorted(labels, key=lambda s: (len(s), s)))
    lines = [
        f"Base: {spec.base}; shared settings: {_settings(spec.set) or 'none'}.",
        f"Primary budget {budget_phrase(results)}"
        + (
            f"; secondary budgets {', '.join(format_count(b) for b in spec.all_budgets if b != spec.tokens)}"
            if spec.budgets
            else ""
        )
        + f"; baseline {spec.baseline}; primary contrast {spec.primary} − {spec.baseline}.",
        f"Evaluation seeds: {seeds or 'none yet'}"
        + (
            " (init seed x data seed, crossed)"
            if spec.data_seeds is not None
            else " (each sets the initial weights and the batch order)"
        )
        + "; variants at one seed saw the same batches.",
        f"Data: {data}.",
        f"Tokenizer: {context.tokenizer_fingerprint} ({context.vocab_size} tokens, one for every run). "
        f"Every run is scored on the whole validation and test texts"
        + (f" and on {spec.data.train_sample} training documents (memorisation)" if spec.data.train_sample else "")
        + ".",
    ]
    if spec.sweep is not None:
        lines.append(
            f"Learning rate: lr_max grid {', '.join(f'{r:g}' for r in spec.sweep.grid)} (extended up to "
            f"{spec.sweep.max_extensions} steps beyond a winning edge) on tuning seeds "
            f"{', '.join(map(str, spec.sweep.seeds))}, never evaluation seeds; chosen per variant by mean validation "
            "bits per byte at the primary budget" + (", at each grid point apart." if spec.grid is not None else ".")
        )
    if spec.grid is not None:
        axes = " x ".join(spec.grid.axis_title(name) for name in spec.grid.axis_names)
        lines.append(
            f"Grid: {len(points)} grid points ({'; '.join(results.point.title for results in points)}), each "
            f"crossed with every variant; axes {axes}. "
            "Each grid point is a comparison of its own, with its own tuning, evaluation runs and contrasts (the "
            "primary at the 5% level, the others Holm-adjusted among themselves; no correction across grid points)."
        )
        lines.append(PAIRED_TEXT)
    return lines


def _settings(values: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items())


def grid_point_lines(results: StudyResults) -> list[str]:
    rates = ", ".join(f"{name} {rate:g}" for name, rate in results.chosen_lr.items())
    return [
        f"{results.point.title} for every variant; its runs are under runs/{results.point.label}/; learning rates: "
        + (rates or "not chosen yet")
        + "."
    ]


def comparison_sections(results: StudyResults, level: int) -> list[Section]:
    """The tables of one comparison (the study without a grid, or one grid point), those with rows."""
    sections = [
        Section(PAIRED, [PAIRED_TEXT] if level == 2 else [], contrast_table(results)),
        Section(VARIANTS, [], variants_table(results)),
        Section(TUNING_SECTION, ["Mean validation bits per byte over the tuning seeds."], tuning_table(results)),
        Section(VARIANCE, [], variance_table(results)),
    ]
    return [replace(section, level=level) for section in sections if section.table is not None and section.table.rows]


# ---------------------------------------------------------------- scaling
def scaling_sections(points: Sequence[StudyResults]) -> list[Section]:
    """With a grid that changes the model's size: the power-law fits, the sizes and the differences by size."""
    found = scaling(points)
    if found is None:
        return []
    axes = ", ".join(found.axes)
    lines = [
        f"The grid changes the model's size along {axes}. Per variant (and per setting of the other axes), the mean "
        "test bits per byte at the primary budget at each size is fitted with L = E + A·N^−α by least squares "
        f"(N: parameters; E ≥ 0, A > 0, α > 0), which needs {MIN_POWER_LAW_POINTS} sizes or more; below, each "
        "contrast's paired difference at each size with its 95% interval (as in the grid point's section)."
    ]
    if any(series.fit is not None and len(series.sizes) == MIN_POWER_LAW_POINTS for series in found.series):
        lines.append(
            f"With {MIN_POWER_LAW_POINTS} sizes the law has as many parameters as there are points: the fit describes "
            "the trend, it cannot test the law (more sizes would)."
        )
    if not any(series.fit is not None for series in found.series):
        lines.append(f"No power law is fitted: {'; '.join(sorted({s.label + ': ' + s.note for s in found.series}))}.")
    fits = Table(
        ["series", "sizes", "parameters", "E", "A", "α", "RMS residual", "note"],
        [
            [
                series.label,
                str(len(series.sizes)),
                f"{series.sizes[0].parameters:,} – {series.sizes[-1].parameters:,}",
                *(
                    (
                        fmt_bpb(series.fit.E),
                        f"{series.fit.A:.4g}",
                        f"{series.fit.alpha:.4f}",
                        f"{math.sqrt(series.fit.residual / len(series.sizes)):.2g}",
                    )
                    if series.fit is not None
                    else ("—",) * 4
                ),
                series.note,
            ]
            for series in found.series
        ],
    )
    sizes = Table(
        ["series", "grid point", names.PARAMETERS, "runs", f"{TEST_BPB} [95% CI]", "power law"],
        [
            [
                series.label,
                size.point.title,
                f"{size.parameters:,}",
                str(size.interval.n),
                _interval_text(size.interval.mean, size.interval.low, size.interval.high, size.interval.n),
                fmt_bpb(series.fit.predict(size.parameters)) if series.fit is not None else "—",
            ]
            for series in found.series
            for size in series.sizes
        ],
    )
    differences = Table(
        ["difference", "grid point", "parameters", "mean [95% CI]", "half-width", "seeds won"],
        [
            [
                f"{difference.label} − {points[0].spec.baseline}",
                difference.point.title,
                f"{difference.parameters:,}",
                _interval_text(
                    difference.paired.interval.mean,
                    difference.paired.interval.low,
                    difference.paired.interval.high,
                    difference.paired.interval.n,
                    signed=True,
                ),
                fmt_bpb(
                    (difference.paired.interval.high - difference.paired.interval.low) / 2
                    if difference.paired.interval.n >= 2
                    else math.nan
                ),
                f"{difference.paired.wins} of {difference.paired.n}",
            ]
            for difference in found.differences
        ],
    )
    return [
        Section("Scaling", lines),
        *(
            Section(heading, [], table, level=3)
            for heading, table in (
                ("Power-law fits", fits),
                ("Test bits per byte by size", sizes),
                ("Paired differences by size", differences),
            )
            if table.rows
        ),
    ]


# ---------------------------------------------------------------- writing
@dataclass
class Report:
    points: list[StudyResults]  # one per grid point; one without a grid
    figures: list[Path]
    markdown: Path
    html: Path
    csv: Path
    verdict: str


def write_report(
    folders: Sequence[Path],
    report_dir: Path | None = None,
    *,
    fmt: str = DEFAULT_FORMAT,
    dpi: int = DEFAULT_DPI,
    partial: bool = False,
) -> Report:
    """Read the study in `folders` (the first one's study.json, every one's ledger) and write the report
    into `report_dir` (default: the first folder). With a grid, every grid point has a section of its
    own, and a grid that changes the model's size a scaling section."""
    folders = [Path(folder) for folder in folders]
    points = load_results(folders, partial=partial)
    results = points[0]
    report_dir = report_dir or folders[0]
    csv_path = report_dir / RESULTS_FILE
    write_text_atomic(csv_path, results_csv(points))
    figures = draw_all(points, report_dir, fmt, dpi)
    shared = [
        Section(
            REFERENCES,
            ["Interpolated Kneser–Ney models fitted on the training text with the study's tokenizer."],
            references_table(results),
        ),
        Section(TUNING_RUNS, [], pilot_table(points), f"{MACHINE_NOTE}."),
        Section(*mechanisms_section(folders[0])),  # written by fha analyze STUDY_DIR
    ]
    shared = [section for section in shared if section.table is not None and section.table.rows]
    if results.spec.grid is None:
        text = verdict(results)
        found = {section.heading: section for section in [*comparison_sections(results, level=2), *shared]}
        sections = [Section("Setup", setup_lines(points)), *(found[name] for name in SECTION_ORDER if name in found)]
    else:
        text = grid_verdict(points)
        sections = [Section("Setup", setup_lines(points))]
        for point in points:
            sections.append(Section(f"Grid point {point.point.title}", grid_point_lines(point)))
            sections += comparison_sections(point, level=3)
        sections += scaling_sections(points)
        sections += shared
    title = f"Study: {results.spec.description or folders[0].name}"
    markdown = report_dir / MARKDOWN_FILE
    page = report_dir / HTML_FILE
    write_text_atomic(markdown, _markdown(title, text, sections, figures))
    write_text_atomic(page, _html(title, text, sections, figures))
    return Report(points, figures, markdown, page, csv_path, text)


def _markdown(title: str, text: str, sections: Sequence[Section], figures: Sequence[Path]) -> str:
    parts = [f"# {title}", "", f"**Verdict.** {text}", ""]
    for section in sections:
        parts += [f"{'#' * section.level} {section.heading}", ""]
        parts += [line for item in section.lines for line in (item, "")]
        if section.table is not None:
            parts += [markdown_table(section.table), ""]
        if section.note:
            parts += [section.note, ""]
    parts += ["## Figures", ""]
    parts += [line for figure in figures for line in (f"![{figure.stem.replace('_', ' ')}]({figure.name})", "")]
    return "\n".join(parts)


def _html(title: str, text: str, sections: Sequence[Section], figures: Sequence[Path]) -> str:
    parts = [f'<p class="verdict"><strong>Verdict.</strong> {html.escape(text)}</p>']
    for section in sections:
        parts.append(f"<h{section.level}>{html.escape(section.heading)}</h{section.level}>")
        parts += [f"<p>{html.escape(line)}</p>" for line in section.lines]
        if section.table is not None:
            parts.append(html_table(section.table))
        if section.note:
            parts.append(f"<p><small>{html.escape(section.note)}</small></p>")
    parts.append("<h2>Figures</h2>")
    for figure in figures:
        encoded = base64.b64encode(figure.read_bytes()).decode("ascii")
        parts.append(f'<img alt="{html.escape(figure.stem)}" src="data:image/png;base64,{encoded}">')
    return html_page(title, HTML_STYLE, parts)
