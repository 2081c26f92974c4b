"""Figures of a sub-head table (matplotlib's object-oriented API: no pyplot, no display).

* one heatmap per measurement, runs side by side: layers down, the layer's heads across, each
  sub-head a cell as wide as its size (a head of 32 cut into 4 shows 4 cells of 8), so that
  a value and the size it belongs to are read together;
* importance against size: the loss increase of each sub-head's ablation, by sub-head size;
* with several training steps, each measurement against the step, one line per sub-head;
* for runs pooled over seeds (`fha.analysis.pooling`), the pooled measures against the
  sub-head size, one colour per group, with their 95% intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from fha.analysis.pooling import ALL_SIZES, MEASURE_LABELS, PooledMeasure, RunSummary
from fha.analysis.table import METRICS, SubheadRow, SubheadTable
from fha.compare.plots import save_report_figure
from fha.figures import grid

HEATMAP_PANEL_INCHES = (5.2, 0.75)  # width of one run's panel; height per layer
HEATMAP_EXTRA_INCHES = 1.4  # title, axis labels and colour bar
MIN_LABELED_FRACTION = 0.09  # cells narrower than this share of the panel get no number
CELL_FONT_SIZE = 6
DARK_FRACTION = 0.6  # the outer part of a diverging colour range, dark enough for white text
HEAD_LINE_WIDTH = 2.0
SUBHEAD_LINE_WIDTH = 0.6
SUBHEAD_LINE_COLOR = "0.6"  # grey: visible on the light and the dark ends of the maps
SEQUENTIAL = "viridis"
DIVERGING = "RdBu_r"  # red: the measure is positive, blue: negative
# Measurements whose sign matters: drawn with a diverging map centred on zero.
SIGNED = ("copying", "zero_ablation", "mean_ablation")
FIXED_RANGES = {"previous_token": (0.0, 1.0), "first_token": (0.0, 1.0), "induction": (0.0, 1.0), "copying": (-1, 1)}
CELL_FORMATS = {
    "entropy_bits": "{:.2f}",
    "mean_distance": "{:.1f}",
    "previous_token": "{:.2f}",
    "first_token": "{:.2f}",
    "induction": "{:.2f}",
    "copying": "{:+.2f}",
    "zero_ablation": "{:+.3f}",
    "mean_ablation": "{:+.3f}",
}
SCATTER_INCHES = (6.0, 4.2)
JITTER = 0.12  # horizontal spread of one run's points around its size
POINT_SIZE = 18
POINT_ALPHA = 0.75
MEAN_MARK_WIDTH = 0.08  # half-width of the bar at each run's mean per size
TRAINING_PANEL_INCHES = (4.0, 3.0)
TRAINING_METRICS = ("induction", "previous_token", "entropy_bits", "zero_ablation")
SIZE_COLORS = colormaps["plasma"]
LABELS = {name: f"{label} ({unit})" for name, label, unit in METRICS}
NAMES = {name: label for name, label, _ in METRICS}
HEATMAP_STEM = "subheads_{metric}"
IMPORTANCE_STEM = "importance_vs_size"
TRAINING_STEM = "over_training"


def _value_range(values: Sequence[float], metric: str) -> tuple[float, float]:
    if metric in FIXED_RANGES:
        return FIXED_RANGES[metric]
    finite = [value for value in values if np.isfinite(value)] or [0.0]
    if metric in SIGNED:
        reach = max(abs(value) for value in finite) or 1.0
        return -reach, reach
    low, high = min(finite), max(finite)
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def _text_color(value: float, limits: tuple[float, float], signed: bool) -> str:
    """White on the dark end of viridis and on the dark ends of the diverging map, else black."""
    middle, half = (limits[0] + limits[1]) / 2, (limits[1] - limits[0]) / 2
    if signed:
        return "white" if abs(value - middle) > DARK_FRACTION * half else "black"
    return "white" if value < middle else "black"


def _layer_strip(rows: Sequence[SubheadRow], metric: str) -> tuple[np.ndarray, list[SubheadRow]]:
    """One layer's values spread over its head dimensions: (width,), and its rows in column order."""
    ordered = sorted(rows, key=lambda row: (row.head, row.subhead))
    return np.concatenate([np.full(row.subhead_dim, getattr(row, metric)) for row in ordered]), ordered


def _heatmap_panel(
    ax: Axes, rows: Sequence[SubheadRow], metric: str, limits: tuple[float, float], title: str
) -> AxesImage:
    layers = sorted({row.layer for row in rows})
    strips = [_layer_strip([row for row in rows if row.layer == layer], metric) for layer in layers]
    width = max(len(values) for values, _ in strips)
    grid_values = np.full((len(layers), width), np.nan)
    for y, (values, _) in enumerate(strips):
        grid_values[y, : len(values)] = values
    colormap = colormaps[DIVERGING if metric in SIGNED else SEQUENTIAL].with_extremes(bad="white")
    image = ax.imshow(
        np.ma.masked_invalid(grid_values),
        cmap=colormap,
        vmin=limits[0],
        vmax=limits[1],
        aspect="auto",
        interpolation="nearest",
        extent=(0, width, len(layers) - 0.5, -0.5),
    )
    for y, (_, ordered) in enumerate(strips):
        left = 0
        for row in ordered:
            starts_head = row.subhead == 0
            ax.vlines(
                left,
                y - 0.5,
                y + 0.5,
                color="black" if starts_head else SUBHEAD_LINE_COLOR,
                linewidth=HEAD_LINE_WIDTH if starts_head else SUBHEAD_LINE_WIDTH,
            )
            value = getattr(row, metric)
            if row.subhead_dim >= MIN_LABELED_FRACTION * width and np.isfinite(value):
                ax.text(
                    left + row.subhead_dim / 2,
                    y,
                    CELL_FORMATS[metric].format(value),
                    ha="center",
                    va="center",
                    fontsize=CELL_FONT_SIZE,
                    color=_text_color(value, limits, metric in SIGNED),
                )
            left += row.subhead_dim
    _, first_layer = strips[0]
    centers = {row.head: row.subhead_dim * row.num_subheads * (row.head + 0.5) for row in first_layer}
    ax.set_xticks(list(centers.values()), [f"head {head}" for head in centers])
    ax.set_yticks(range(len(layers)), [f"layer {layer}" for layer in layers])
    ax.set_xlabel("cell width: the sub-head's size (dimensions)")
    ax.set_title(title, fontsize="medium")
    return image


def _panel_title(table: SubheadTable, run: str, step: int | None) -> str:
    steps = table.steps(run)
    return run if len(steps) == 1 or step is None else f"{run} (step {step:,})"


def heatmaps(table: SubheadTable, out_dir: Path, fmt: str, dpi: int) -> list[Path]:
    """One figure per measurement, each run's last step in its own panel, on one colour scale."""
    latest = table.latest()
    runs = latest.runs()
    layers = max(len({row.layer for row in latest.rows if row.run == run}) for run in runs)
    written = []
    for metric, label, unit in METRICS:
        limits = _value_range([getattr(row, metric) for row in latest.rows], metric)
        figure = Figure(
            figsize=(
                HEATMAP_PANEL_INCHES[0] * len(runs),
                HEATMAP_PANEL_INCHES[1] * layers + HEATMAP_EXTRA_INCHES,
            ),
            layout="constrained",
        )
        axes = figure.subplots(1, len(runs), squeeze=False)[0]
        images = []
        for ax, run in zip(axes, runs):
            step = latest.steps(run)[-1]
            images.append(
                _heatmap_panel(ax, latest.select(run, step).rows, metric, limits, _panel_title(table, run, step))
            )
        figure.colorbar(images[-1], ax=list(axes), label=f"{label} ({unit})", shrink=0.9)
        figure.suptitle(f"{label} of every sub-head")
        written.append(save_report_figure(figure, out_dir / f"{HEATMAP_STEM.format(metric=metric)}.{fmt}", dpi))
    return written


def importance_vs_size(table: SubheadTable, out_dir: Path, fmt: str, dpi: int) -> Path:
    """The loss increase of zero and mean ablation of each sub-head against its size (last steps)."""
    latest = table.latest()
    runs = latest.runs()
    sizes = sorted({row.subhead_dim for row in latest.rows})
    figure = Figure(figsize=(SCATTER_INCHES[0] * 2, SCATTER_INCHES[1]), layout="constrained")
    axes = figure.subplots(1, 2)
    offsets = np.linspace(-JITTER, JITTER, len(runs)) if len(runs) > 1 else [0.0]
    for ax, metric in zip(axes, ("zero_ablation", "mean_ablation")):
        for offset, run in zip(offsets, runs):
            rows = [row for row in latest.rows if row.run == run]
            x = [sizes.index(row.subhead_dim) + offset for row in rows]
            points = ax.scatter(x, [getattr(row, metric) for row in rows], s=POINT_SIZE, alpha=POINT_ALPHA, label=run)
            for size in sizes:
                values = [getattr(row, metric) for row in rows if row.subhead_dim == size]
                if values:
                    position = sizes.index(size) + offset
                    ax.hlines(
                        np.mean(values),
                        position - MEAN_MARK_WIDTH,
                        position + MEAN_MARK_WIDTH,
                        color=points.get_facecolor()[0],
                        linewidth=2,
                    )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(sizes)), [str(size) for size in sizes])
        ax.set_xlim(-0.5, len(sizes) - 0.5)
        ax.set_xlabel("sub-head size (dimensions)")
        ax.set_ylabel(LABELS[metric])
        ax.set_title(NAMES[metric], fontsize="medium")
        grid(ax)
    axes[-1].legend(fontsize="small")
    figure.suptitle("What removing one sub-head costs, by its size (bars: each run's mean per size)")
    return save_report_figure(figure, out_dir / f"{IMPORTANCE_STEM}.{fmt}", dpi)


def over_training(table: SubheadTable, out_dir: Path, fmt: str, dpi: int) -> Path | None:
    """Each of `TRAINING_METRICS` against the training step, one line per sub-head coloured by its
    size, one row of panels per run; None when no run has more than one step."""
    runs = [run for run in table.runs() if len([s for s in table.steps(run) if s is not None]) > 1]
    if not runs:
        return None
    sizes = sorted({row.subhead_dim for row in table.rows})
    color = {size: SIZE_COLORS(index / max(1, len(sizes) - 1) * 0.85) for index, size in enumerate(sizes)}
    figure = Figure(
        figsize=(TRAINING_PANEL_INCHES[0] * len(TRAINING_METRICS), TRAINING_PANEL_INCHES[1] * len(runs)),
        layout="constrained",
    )
    axes = figure.subplots(len(runs), len(TRAINING_METRICS), squeeze=False)
    for row_axes, run in zip(axes, runs):
        # every step is set: the sort key's `or 0` below is for type checkers
        rows = [row for row in table.rows if row.run == run and row.step is not None]
        for ax, metric in zip(row_axes, TRAINING_METRICS):
            for position in dict.fromkeys(row.position for row in rows):
                series = sorted((row for row in rows if row.position == position), key=lambda row: row.step or 0)
                ax.plot(
                    [row.step for row in series],
                    [getattr(row, metric) for row in series],
                    color=color[series[0].subhead_dim],
                    linewidth=1.0,
                    marker="o",
                    markersize=2.5,
                )
            ax.set_title(f"{run}: {NAMES[metric]}", fontsize="medium")
            ax.set_xlabel("training step")
            ax.set_ylabel(LABELS[metric])
            grid(ax)
    handles = [axes[0][0].plot([], [], color=color[size], label=f"sub-heads of {size}")[0] for size in reversed(sizes)]
    figure.legend(handles=handles, loc="outside right upper", fontsize="small")
    figure.suptitle("How each sub-head changes over training (one line per sub-head)")
    return save_report_figure(figure, out_dir / f"{TRAINING_STEM}.{fmt}", dpi)


def draw_all(table: SubheadTable, out_dir: Path, fmt: str, dpi: int) -> list[Path]:
    figures = [*heatmaps(table, out_dir, fmt, dpi), importance_vs_size(table, out_dir, fmt, dpi)]
    training = over_training(table, out_dir, fmt, dpi)
    return figures if training is None else [*figures, training]


POOLED_PANEL_INCHES = (4.6, 3.6)
POOLED_COLUMNS = 3
POOLED_MEASURES = (
    "induction_subheads",
    "previous_token_subheads",
    "mean_distance_tokens",
    "mean_zero_ablation",
    "mean_mean_ablation",
    "mean_entropy_bits",
)
POOLED_STEM = "mechanisms_by_size"
RUN_POINT_ALPHA = 0.35
CAP_SIZE = 3
SIGNED_POOLED = ("mean_zero_ablation", "mean_mean_ablation")  # drawn with the zero line


def pooled_by_size(pooled: Sequence[PooledMeasure], summaries: Sequence[RunSummary], path: Path, dpi: int) -> Path:
    """Each of `POOLED_MEASURES` against the sub-head size, one colour per group: every run's
    value (faint) and the mean over the runs with its 95% interval."""
    sizes = sorted({s.subhead_dim for s in summaries if s.subhead_dim != ALL_SIZES}, reverse=True)
    groups = list(dict.fromkeys(s.group for s in summaries))
    offsets = np.linspace(-JITTER, JITTER, len(groups)) if len(groups) > 1 else [0.0]
    rows = -(-len(POOLED_MEASURES) // POOLED_COLUMNS)  # rounded up
    figure = Figure(
        figsize=(POOLED_PANEL_INCHES[0] * POOLED_COLUMNS, POOLED_PANEL_INCHES[1] * rows), layout="constrained"
    )
    axes = list(figure.subplots(rows, POOLED_COLUMNS, squeeze=False).flat)
    for unused in axes[len(POOLED_MEASURES) :]:
        unused.set_axis_off()
    for ax, measure in zip(axes, POOLED_MEASURES):
        for index, (offset, group) in enumerate(zip(offsets, groups)):
            color = f"C{index}"
            runs = [s for s in summaries if s.group == group and s.subhead_dim != ALL_SIZES]
            ax.scatter(
                [sizes.index(s.subhead_dim) + offset for s in runs],
                [s.values[measure] for s in runs],
                s=POINT_SIZE / 2,
                color=color,
                alpha=RUN_POINT_ALPHA,
                linewidths=0,
            )
            means = [p for p in pooled if p.group == group and p.measure == measure and p.subhead_dim != ALL_SIZES]
            intervals = [p.interval for p in means]
            below = [i.mean - i.low if i.n > 1 else 0.0 for i in intervals]
            above = [i.high - i.mean if i.n > 1 else 0.0 for i in intervals]
            ax.errorbar(
                [sizes.index(p.subhead_dim) + offset for p in means],
                [i.mean for i in intervals],
                yerr=[below, above],
                fmt="o",
                color=color,
                capsize=CAP_SIZE,
                label=group,
            )
        if measure in SIGNED_POOLED:
            ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(sizes)), [str(size) for size in sizes])
        ax.set_xlim(-0.5, len(sizes) - 0.5)
        ax.set_xlabel("sub-head size (dimensions)")
        ax.set_title(MEASURE_LABELS[measure], fontsize="medium")
        grid(ax)
    axes[len(POOLED_MEASURES) - 1].legend(fontsize="small")
    figure.suptitle("Per run and sub-head size (points: runs; bars: mean over the runs, 95% t-interval)")
    return save_report_figure(figure, path, dpi)
