"""Loss curves of several runs: train and validation loss against tokens seen (default), step or wall time.

A run that belongs to a seed group is drawn as part of the group: the mean over its members
as a line and the min-max range as a shaded band, at the steps all members logged. The
training loss comes from metrics.csv (every log_interval steps) when the runs have it, else
from the evaluations of log_data.csv; curves of evaluations carry a marker at each point.
Unfinished runs are labelled so. Drawn with matplotlib's object-oriented API (no pyplot, no
display needed), as PNG, SVG or PDF (`fha.figures`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fha import metric_names as names
from fha.choices import X_AXIS_NAMES
from fha.compare.runs import RunSummary, SeedGroup, TrainingLog
from fha.errors import FhaError
from fha.figure_formats import DEFAULT_DPI, DEFAULT_FORMAT, check_figure_options
from fha.figures import grid, plain_log_ticks, save_figure

logger = logging.getLogger(__name__)

LOSS_VS_TOKENS_FILE = "loss_vs_tokens.png"  # with the default format
LOSS_VS_STEP_FILE = "loss_vs_step.png"
LOSS_VS_TIME_FILE = "loss_vs_time.png"
REPORT_IMAGE_SUFFIXES = (".png", ".svg")  # what the reports can show; a PDF gets a PNG copy beside it
TOKENS = "tokens"  # x column computed from the step and the run's tokens per step
PANEL_INCHES = (6.0, 4.2)
BAND_ALPHA = 0.25
EVAL_MARKER = "o"
MARKER_SIZE = 3.5
UNFINISHED = "unfinished"
# (panel title and y label, TrainingLog column) for the two panels of each figure
PANELS = ((names.TRAIN_LOSS, "train_loss"), (names.VAL_LOSS, "val_loss"))
# x axis name -> (axis label, column, file stem). Wall time measures the machine's load as much as the model.
X_AXES: dict[str, tuple[str, str, str]] = dict(
    zip(
        X_AXIS_NAMES,  # tokens, step, time
        (
            (names.TOKENS_SEEN, TOKENS, Path(LOSS_VS_TOKENS_FILE).stem),
            (names.STEP, "step", Path(LOSS_VS_STEP_FILE).stem),
            (f"{names.ELAPSED} (machine-dependent)", "time_s", Path(LOSS_VS_TIME_FILE).stem),
        ),
        strict=True,
    )
)


@dataclass(frozen=True)
class PlotOptions:
    log_x: bool = False
    log_y: bool = False
    skip_first: float = 0.0  # an int >= 1: first step kept; a fraction in (0, 1): share of each run's steps dropped
    format: str = DEFAULT_FORMAT  # png, svg or pdf
    dpi: int = DEFAULT_DPI
    x_axes: tuple[str, ...] = ("tokens",)  # one figure per entry, names of X_AXES

    def __post_init__(self) -> None:
        check_figure_options(self.format, self.dpi)
        for name in self.x_axes:
            if name not in X_AXES:
                raise FhaError(f"`x_axes` {name!r}: expected one of {', '.join(X_AXES)}")


def _x_values(run: RunSummary, log: TrainingLog, x_column: str) -> np.ndarray:
    """A column of `log` (a run's log_data.csv or metrics.csv), or the tokens seen at its steps."""
    if x_column != TOKENS:
        return getattr(log, x_column)
    if run.tokens_per_step is None:
        raise FhaError(
            f'run {run.name} has no train_config.json, so its tokens seen are unknown; use the x axis "step"'
        )
    return log.step * run.tokens_per_step


def first_kept_step(log: TrainingLog, skip_first: float) -> float:
    """The first step drawn: `skip_first` itself, or that fraction of the run's last step."""
    if 0 < skip_first < 1:
        return skip_first * float(log.step[-1])
    return skip_first


@dataclass(frozen=True)
class _Series:
    label: str
    x: np.ndarray
    y: np.ndarray
    low: np.ndarray | None = None  # band, for seed groups
    high: np.ndarray | None = None
    markers: bool = True  # points are evaluations (sparse), not metrics rows


def _source(runs: Sequence[RunSummary], y_column: str) -> str:
    """ "metrics" when the curve can come from every run's metrics.csv, else "log"."""
    dense = y_column == "train_loss" and all(run.metrics is not None and len(run.metrics.step) for run in runs)
    return "metrics" if dense else "log"


def _label(run: RunSummary) -> str:
    return run.name if run.finished else f"{run.name} ({UNFINISHED})"


def _run_series(run: RunSummary, x_column: str, y_column: str, options: PlotOptions) -> _Series:
    source = getattr(run, _source([run], y_column))
    log = source.after(first_kept_step(source, options.skip_first))
    x, y = _x_values(run, log, x_column), getattr(log, y_column)
    keep = ~np.isnan(y) & _drawable(x, options)
    return _Series(_label(run), x[keep], y[keep], markers=source is run.log)


def _group_series(group: SeedGroup, x_column: str, y_column: str, options: PlotOptions) -> _Series:
    source = _source(group.runs, y_column)
    sources = [getattr(run, source) for run in group.runs]
    logs = [log.after(first_kept_step(log, options.skip_first)) for log in sources]
    steps = reduce(np.intersect1d, [log.step for log in logs])  # steps every member logged
    x_rows, y_rows = [], []
    for run, log in zip(group.runs, logs):
        rows = np.searchsorted(log.step, steps)  # steps are increasing in a log
        x_rows.append(_x_values(run, log, x_column)[rows])
        y_rows.append(getattr(log, y_column)[rows])
    xs, ys = np.stack(x_rows), np.stack(y_rows)  # (members, steps)
    keep = ~np.isnan(ys).any(axis=0) & _drawable(xs.mean(axis=0), options)
    xs, ys = xs[:, keep], ys[:, keep]
    unfinished = f", {UNFINISHED}" if not all(run.finished for run in group.runs) else ""
    label = f"{group.label} (mean of {len(group.runs)} seeds, min-max band{unfinished})"
    return _Series(label, xs.mean(axis=0), ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0), markers=source == "log")


def _drawable(x: np.ndarray, options: PlotOptions) -> np.ndarray:
    """The points a log x axis can show: step 0 and time 0 are left out rather than clipped,
    so that they do not stretch the loss axis to values the plot never shows."""
    return x > 0 if options.log_x else np.ones(len(x), dtype=bool)


def _draw(ax: Axes, series: Sequence[_Series], title: str, x_label: str, options: PlotOptions) -> None:
    for item in series:
        (line,) = ax.plot(
            item.x, item.y, label=item.label, marker=EVAL_MARKER if item.markers else None, markersize=MARKER_SIZE
        )
        if item.low is not None and item.high is not None:
            ax.fill_between(item.x, item.low, item.high, color=line.get_color(), alpha=BAND_ALPHA, linewidth=0)
    ax.set_title(title)
    ax.set_xlabel(x_label)
    ax.set_ylabel(title)
    if options.log_x:
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
    if options.log_y:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    grid(ax, minor=options.log_x or options.log_y)


def _in_run_order(runs: Sequence[RunSummary], groups: Sequence[SeedGroup]) -> list[RunSummary | SeedGroup]:
    """Each run alone, or its group in place of its first member."""
    group_of = {id(run): group for group in groups for run in group.runs}
    items: list[RunSummary | SeedGroup] = []
    for run in runs:
        item = group_of.get(id(run), run)
        if not any(item is seen for seen in items):
            items.append(item)
    return items


def plot_losses(
    runs: Sequence[RunSummary], groups: Sequence[SeedGroup], out_dir: Path, options: PlotOptions
) -> list[Path]:
    """Write one figure per x axis of `options` (loss_vs_tokens by default) in `options.format`, train and
    validation panels each; returns their paths. A PDF gets a PNG copy beside it for the reports
    (`report_image`)."""
    curves = _in_run_order(runs, groups)
    written = []
    axes_names = list(dict.fromkeys(options.x_axes))
    unknown = [run.name for run in runs if run.tokens_per_step is None]
    if "tokens" in axes_names and unknown:
        logger.warning(
            "tokens seen are unknown for %s (no train_config.json): plotting against step instead", ", ".join(unknown)
        )
        axes_names = list(dict.fromkeys("step" if name == "tokens" else name for name in axes_names))
    for x_label, x_column, stem in (X_AXES[name] for name in axes_names):
        figure = Figure(figsize=(PANEL_INCHES[0] * len(PANELS), PANEL_INCHES[1]), layout="constrained")
        axes = figure.subplots(1, len(PANELS), squeeze=False)[0]
        for ax, (title, y_column) in zip(axes, PANELS):
            series = [
                _group_series(item, x_column, y_column, options)
                if isinstance(item, SeedGroup)
                else _run_series(item, x_column, y_column, options)
                for item in curves
            ]
            _draw(ax, series, title, x_label, options)
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:  # a panel with curves says whose they are
                ax.legend(fontsize="small")
        written.append(save_report_figure(figure, out_dir / f"{stem}.{options.format}", options.dpi))
    return written


def save_report_figure(figure: Figure, path: Path, dpi: int) -> Path:
    """`save_figure`, and a PNG copy beside a PDF for the reports to show (`report_image`)."""
    path = save_figure(figure, path, dpi)
    if path.suffix not in REPORT_IMAGE_SUFFIXES:
        save_figure(figure, report_image(path), dpi)
    return path


def report_image(plot: Path) -> Path:
    """The image file the reports show for a plot: itself, or its PNG copy."""
    return plot if plot.suffix in REPORT_IMAGE_SUFFIXES else plot.with_suffix(".png")
