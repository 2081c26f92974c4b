"""The study report's figures (matplotlib's object-oriented API: no pyplot, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fha.figure_formats import DEFAULT_DPI, DEFAULT_FORMAT, check_figure_options
from fha.figures import save_figure
from fha.stats import Interval, mean_interval, paired_difference
from fha.study.results import StudyResults

CURVES_FILE = "validation_curves"
TEST_FILE = "test_bits_per_byte"
PAIRED_FILE = "paired_differences"
SWEEP_FILE = "learning_rate_sweep"
FIGURE_INCHES = (7.0, 4.2)
BAND_ALPHA = 0.25
POINT_ALPHA = 0.6
JITTER = 0.08  # horizontal spread of the per-seed points around their variant
X_MARGIN = 0.5  # room left and right of the outer categories


def _named(figure: Figure, stem: str) -> Figure:
    """The figure with the file stem `draw_all` writes it under."""
    figure.set_label(stem)
    return figure


def _mean_with_interval(ax: Axes, position: float, interval: Interval) -> None:
    """A black dot at the mean with error bars to the interval's ends (no bars for one value)."""
    if interval.n < 2:
        ax.plot([position], [interval.mean], "o", color="black", zorder=3)
        return
    below, above = interval.mean - interval.low, interval.high - interval.mean
    ax.errorbar([position], [interval.mean], yerr=[[below], [above]], fmt="o", color="black", capsize=6, zorder=3)


def validation_curves(results: StudyResults) -> Figure:
    """Validation loss against tokens seen: the mean over seeds per variant, with a min-max band."""
    figure = Figure(figsize=FIGURE_INCHES, layout="constrained")
    ax = figure.subplots()
    for variant in results.spec.variants:
        runs = results.of(variant.name)
        steps = reduce(np.intersect1d, [run.log.step for run in runs])  # steps every seed logged
        rows = np.stack([run.log.val_loss[np.searchsorted(run.log.step, steps)] for run in runs])  # (seeds, steps)
        tokens = steps * runs[0].tokens_per_step
        (line,) = ax.plot(tokens, rows.mean(axis=0), label=f"{variant.name} (mean of {len(runs)} seeds)")
        ax.fill_between(
            tokens, rows.min(axis=0), rows.max(axis=0), color=line.get_color(), alpha=BAND_ALPHA, linewidth=0
        )
    ax.set_xlabel("training tokens seen")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("Validation loss (band: min-max over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _named(figure, CURVES_FILE)


def test_scores(results: StudyResults) -> Figure:
    """Each seed's test bits per byte, and the mean with its 95% t-interval, per variant."""
    figure = Figure(figsize=FIGURE_INCHES, layout="constrained")
    ax = figure.subplots()
    names = [variant.name for variant in results.spec.variants]
    for position, name in enumerate(names):
        values = list(results.by_seed(name).values())
        _seeds_with_interval(ax, position, values, mean_interval(values))
    _label_positions(
        ax,
        names,
        "test bits per byte (lower is better)",
        "Test bits per byte: seeds (gray), mean and 95% t-interval (black)",
    )
    return _named(figure, TEST_FILE)


def paired_differences(results: StudyResults) -> Figure:
    """Per variant, its test bits per byte minus the baseline's at the same seed."""
    baseline = results.spec.baseline
    others = [variant.name for variant in results.spec.variants if variant.name != baseline]
    figure = Figure(figsize=FIGURE_INCHES, layout="constrained")
    ax = figure.subplots()
    for position, name in enumerate(others):
        paired = paired_difference(results.by_seed(name), results.by_seed(baseline))
        _seeds_with_interval(ax, position, paired.differences, paired.interval)
    ax.axhline(0.0, color="firebrick", linewidth=1)
    _label_positions(
        ax,
        [f"{name} − {baseline}" for name in others],
        "difference in test bits per byte",
        "Paired differences (below 0: better than the baseline)",
    )
    return _named(figure, PAIRED_FILE)


def _seeds_with_interval(ax: Axes, position: int, values: Sequence[float], interval: Interval) -> None:
    """One value per seed as gray points spread around `position`, then the mean and its interval."""
    offsets = np.linspace(-JITTER, JITTER, len(values))
    ax.scatter(position + offsets, values, alpha=POINT_ALPHA, color="gray", zorder=2)
    _mean_with_interval(ax, position, interval)


def _label_positions(ax: Axes, labels: list[str], ylabel: str, title: str) -> None:
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlim(-X_MARGIN, len(labels) - 1 + X_MARGIN)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)


def sweep_curves(results: StudyResults) -> Figure:
    """Validation bits per byte against the peak learning rate, per variant (diverged rates left out)."""
    figure = Figure(figsize=FIGURE_INCHES, layout="constrained")
    ax = figure.subplots()
    for name, values in results.sweep.items():
        rates = sorted(rate for rate, value in values.items() if np.isfinite(value))
        (line,) = ax.plot(rates, [values[rate] for rate in rates], "o-", label=name)
        chosen = results.chosen_lr[name]
        ax.plot([chosen], [values[chosen]], "*", markersize=14, color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate (lr_max)")
    ax.set_ylabel("validation bits per byte")
    ax.set_title(f"Learning-rate sweep at seed {results.spec.sweep.seed} (star: chosen)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _named(figure, SWEEP_FILE)


def draw_all(results: StudyResults, out_dir: Path, fmt: str = DEFAULT_FORMAT, dpi: int = DEFAULT_DPI) -> list[Path]:
    """Write every figure as PNG at `dpi` (the reports embed these) and, for another `fmt`, also
    in that format beside it. Returns the PNG paths."""
    check_figure_options(fmt, dpi)
    figures = [validation_curves(results), test_scores(results), paired_differences(results)]
    if results.sweep:
        figures.append(sweep_curves(results))
    written = []
    for figure in figures:
        written.append(save_figure(figure, out_dir / f"{figure.get_label()}.png", dpi))
        if fmt != "png":
            save_figure(figure, out_dir / f"{figure.get_label()}.{fmt}", dpi)
    return written
