"""The study report's figures (matplotlib's object-oriented API: no pyplot, no display).

Categories run down the y axis (horizontal bars), so long variant names never collide;
every seed is a point, jittered so that none hides under the mean; the baseline and the
n-gram references are marked; curves are in bits per byte, the verdict's unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from fha.figure_formats import DEFAULT_DPI, DEFAULT_FORMAT, check_figure_options
from fha.figures import plain_log_ticks, save_figure
from fha.stats import Interval, mean_interval, paired_difference
from fha.study.results import StudyResults

CURVES_FILE = "validation_curves"
TEST_FILE = "test_bits_per_byte"
PAIRED_FILE = "paired_differences"
BUDGETS_FILE = "difference_by_budget"
SWEEP_FILE = "learning_rate_sweep"
FIGURE_WIDTH = 7.5
ROW_INCHES = 0.45  # height per category of a horizontal figure
MIN_HEIGHT = 2.6
BAND_ALPHA = 0.2
POINT_ALPHA = 0.55
JITTER = 0.18  # vertical spread of the per-seed points around their category
SKIP_FIRST_FRACTION = 0.1  # curves start after this share of training: the first evaluations dwarf the rest
NGRAM_NAMES = {1: "unigram", 2: "bigram", 3: "trigram"}
REFERENCE_STYLE = {"color": "dimgray", "linestyle": ":", "linewidth": 1}
LN2 = math.log(2)


def _named(figure: Figure, stem: str) -> Figure:
    figure.set_label(stem)
    return figure


def _horizontal(count: int) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(FIGURE_WIDTH, max(MIN_HEIGHT, 1.2 + ROW_INCHES * count)), layout="constrained")
    return figure, figure.subplots()


def _seeds_with_interval(ax: Axes, position: int, values: Sequence[float], interval: Interval) -> None:
    """Each seed a gray point jittered around `position`; the mean with its 95% interval in black."""
    offsets = np.random.default_rng(position).uniform(-JITTER, JITTER, len(values))
    ax.scatter(values, position + offsets, alpha=POINT_ALPHA, color="gray", s=18, zorder=2)
    if interval.n < 2:
        ax.plot([interval.mean], [position], "o", color="black", zorder=3)
        return
    ax.errorbar(
        [interval.mean],
        [position],
        xerr=[[interval.mean - interval.low], [interval.high - interval.mean]],
        fmt="o",
        color="black",
        capsize=5,
        zorder=3,
    )


def _categories(ax: Axes, labels: list[str], xlabel: str, title: str) -> None:
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # the first category on top
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)


def _references(ax: Axes, results: StudyResults, split: str, *, vertical: bool) -> None:
    for order, value in sorted(results.references.get(split, {}).items()):
        if order < 2:
            continue  # the unigram model is far off every trained model's scale
        line = ax.axvline if vertical else ax.axhline
        line(value, **REFERENCE_STYLE)
        label = f" {NGRAM_NAMES.get(order, f'{order}-gram')}"
        if vertical:
            ax.annotate(label, (value, 0), xycoords=("data", "axes fraction"), fontsize="x-small", color="dimgray")
        else:
            ax.annotate(label, (0, value), xycoords=("axes fraction", "data"), fontsize="x-small", color="dimgray")


def test_scores(results: StudyResults) -> Figure:
    """Each seed's test bits per byte at the primary budget, and the mean with its interval, per variant."""
    names = [name for name in results.spec.variant_names if results.values(name, results.spec.tokens)]
    figure, ax = _horizontal(len(names))
    for position, name in enumerate(names):
        values = list(results.values(name, results.spec.tokens).values())
        _seeds_with_interval(ax, position, values, mean_interval(values))
    labels = [f"{name} (baseline)" if name == results.spec.baseline else name for name in names]
    _references(ax, results, "test", vertical=True)
    _categories(ax, labels, "test bits per byte (lower is better)", "Test bits per byte: seeds, mean and 95% interval")
    return _named(figure, TEST_FILE)


def paired_differences(results: StudyResults) -> Figure:
    """Per contrast at the primary budget, the seeds' differences and the mean difference with its interval."""
    spec = results.spec
    baseline = results.values(spec.baseline, spec.tokens)
    pairs = [
        (name, paired_difference(values, baseline))
        for name in spec.contrasts
        if set(values := results.values(name, spec.tokens)) & set(baseline)
    ]
    figure, ax = _horizontal(len(pairs))
    for position, (_, paired) in enumerate(pairs):
        _seeds_with_interval(ax, position, paired.differences, paired.interval)
    ax.axvline(0.0, color="firebrick", linewidth=1)
    if spec.equivalence_margin is not None:
        ax.axvspan(-spec.equivalence_margin, spec.equivalence_margin, color="green", alpha=0.08, linewidth=0)
    _categories(
        ax,
        [f"{name} − {spec.baseline}" for name, _ in pairs],
        "difference in test bits per byte (below 0: better than the baseline)",
        "Paired differences at the primary budget",
    )
    return _named(figure, PAIRED_FILE)


def difference_by_budget(results: StudyResults) -> Figure:
    """Each contrast's mean paired difference against the budget, with its 95% interval as a band."""
    spec = results.spec
    figure = Figure(figsize=(FIGURE_WIDTH, 4.2), layout="constrained")
    ax = figure.subplots()
    for name in spec.contrasts:
        points = []
        for tokens in spec.all_budgets:
            variant, baseline = results.values(name, tokens), results.values(spec.baseline, tokens)
            if set(variant) & set(baseline):
                points.append((tokens, paired_difference(variant, baseline).interval))
        if not points:
            continue
        tokens = np.array([t for t, _ in points]) / 1e6
        (line,) = ax.plot(tokens, [i.mean for _, i in points], "o-", label=f"{name} − {spec.baseline}")
        if all(i.n >= 2 for _, i in points):
            ax.fill_between(
                tokens,
                [i.low for _, i in points],
                [i.high for _, i in points],
                color=line.get_color(),
                alpha=BAND_ALPHA,
            )
    ax.axhline(0.0, color="firebrick", linewidth=1)
    ax.set_xlabel("training tokens per run (M)")
    ax.set_ylabel("difference in test bits per byte")
    ax.set_title("Paired difference by budget (band: 95% interval)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _named(figure, BUDGETS_FILE)


def validation_curves(results: StudyResults) -> Figure:
    """Top: validation bits per byte against tokens, the mean over seeds per variant. Bottom: each variant's
    paired difference to the baseline with its 95% interval as a band. Both start after the first tenth."""
    spec = results.spec
    figure = Figure(figsize=(FIGURE_WIDTH, 6.4), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    means: dict[str, tuple[np.ndarray, dict]] = {}
    seeds_shown = set()
    for name in spec.variant_names:
        runs = results.runs(name, spec.tokens)
        curves = {run.cell.seeds: run for run in runs if run.curve.get("step")}
        if not curves:
            continue
        steps = reduce(np.intersect1d, [np.asarray(run.curve["step"]) for run in curves.values()])
        steps = steps[steps >= SKIP_FIRST_FRACTION * max(steps)]
        per_seed = {}
        for seeds, run in curves.items():
            step = np.asarray(run.curve["step"])
            loss = np.asarray(run.curve["val_loss"])[np.searchsorted(step, steps)]
            valid = run.data["metrics"]["valid"]
            per_seed[seeds] = loss / LN2 * valid["num_tokens"] / valid["num_bytes"]  # nats/token -> bits/byte
        tokens_per_step = spec.tokens / max(run.curve["step"])
        tokens = steps * tokens_per_step / 1e6
        top.plot(tokens, np.mean(list(per_seed.values()), axis=0), label=name)
        means[name] = (tokens, per_seed)
        seeds_shown.add(len(per_seed))
    _references(top, results, "valid", vertical=False)
    top.set_ylabel("validation bits per byte")
    counts = ", ".join(str(n) for n in sorted(seeds_shown))
    top.set_title(f"Validation bits per byte (mean of {counts} seeds; from eval windows)")
    top.grid(True, alpha=0.3)
    if means:
        top.legend(fontsize="small")
    if spec.baseline in means:
        base_tokens, base = means[spec.baseline]
        for name, (tokens, per_seed) in means.items():
            shared = sorted(set(per_seed) & set(base))
            if name == spec.baseline or len(tokens) != len(base_tokens) or not shared:
                continue
            differences = np.stack([per_seed[s] - base[s] for s in shared])  # (seeds, steps)
            intervals = [mean_interval(list(column)) for column in differences.T]
            (line,) = bottom.plot(tokens, [i.mean for i in intervals], label=f"{name} − {spec.baseline}")
            if len(shared) >= 2:
                bottom.fill_between(
                    tokens,
                    [i.low for i in intervals],
                    [i.high for i in intervals],
                    color=line.get_color(),
                    alpha=BAND_ALPHA,
                )
        bottom.axhline(0.0, color="firebrick", linewidth=1)
        bottom.legend(fontsize="small")
    bottom.set_ylabel("difference to baseline")
    bottom.set_xlabel("training tokens seen (M)")
    bottom.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    bottom.grid(True, alpha=0.3)
    return _named(figure, CURVES_FILE)


def sweep_curves(results: StudyResults) -> Figure:
    """Mean validation bits per byte over the tuning seeds against the peak rate (star: chosen)."""
    figure = Figure(figsize=(FIGURE_WIDTH, 4.2), layout="constrained")
    ax = figure.subplots()
    for name, scores in results.tuning.scores.items():
        rates = sorted(rate for rate, value in scores.items() if math.isfinite(value))
        if not rates:
            continue
        (line,) = ax.plot(rates, [scores[rate] for rate in rates], "o-", label=name)
        chosen = results.chosen_lr.get(name)
        if chosen in rates:
            ax.plot([chosen], [scores[chosen]], "*", markersize=14, color=line.get_color())
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    ax.set_xlabel("peak learning rate (lr_max)")
    ax.set_ylabel("mean validation bits per byte")
    seeds = results.spec.sweep.seeds
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    ax.set_title(f"Learning-rate tuning on {which} (star: chosen)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _named(figure, SWEEP_FILE)


def draw_all(results: StudyResults, out_dir: Path, fmt: str = DEFAULT_FORMAT, dpi: int = DEFAULT_DPI) -> list[Path]:
    """Write every figure as PNG at `dpi` (the reports embed these) and, for another `fmt`, also
    in that format beside it. Returns the PNG paths."""
    check_figure_options(fmt, dpi)
    figures = []
    if results.cells and any(results.values(name, results.spec.tokens) for name in results.spec.variant_names):
        figures += [validation_curves(results), test_scores(results), paired_differences(results)]
        if len(results.spec.all_budgets) > 1:
            figures.append(difference_by_budget(results))
    if results.spec.sweep is not None and results.tuning.scores:
        figures.append(sweep_curves(results))
    written = []
    for figure in figures:
        written.append(save_figure(figure, out_dir / f"{figure.get_label()}.png", dpi))
        if fmt != "png":
            save_figure(figure, out_dir / f"{figure.get_label()}.{fmt}", dpi)
    return written
