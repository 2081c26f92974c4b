"""The study report's figures (matplotlib's object-oriented API: no pyplot, no display).

Categories run down the y axis (horizontal bars), so long variant names never collide;
every seed is a point, jittered so that none hides under the mean; the baseline and the
n-gram references are marked; curves are in bits per byte, the verdict's unit. With a grid,
the test scores and paired differences show every grid point, the other figures are drawn per
grid point (its label ends their file names), and a grid that changes the model's size adds
`scaling.png`.
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

from fha import metric_names as names
from fha.figure_formats import DEFAULT_DPI, DEFAULT_FORMAT, check_figure_options
from fha.figures import plain_log_ticks, save_figure
from fha.stats import Interval, mean_interval, paired_difference
from fha.study.results import StudyResults
from fha.study.scaling import Scaling, scaling
from fha.study.spec import StudySpec
from fha.wording import plural

CURVES_FILE = "validation_curves"
TEST_FILE = "test_bits_per_byte"
PAIRED_FILE = "paired_differences"
BUDGETS_FILE = "difference_by_budget"
SWEEP_FILE = "learning_rate_sweep"
SCALING_FILE = "scaling"
TEST_BPB = names.on_split(names.TEST, names.BITS_PER_BYTE)
VAL_BPB = names.on_split(names.VAL, names.BITS_PER_BYTE)
FIT_POINTS = 200  # points of a drawn power-law curve
DODGE = 1.03  # factor between the sizes of neighbouring contrasts on the log axis, so their intervals do not overlap
FIGURE_WIDTH = 7.5
CURVES_WIDTH = 9.5  # the curves carry their legends beside the panels
ROW_INCHES = 0.45  # height per category of a horizontal figure
MIN_HEIGHT = 2.6
BAND_ALPHA = 0.2
POINT_ALPHA = 0.55
JITTER = 0.18  # vertical spread of the per-seed points around their category
SKIP_FIRST_FRACTION = 0.1  # curves start after this share of training: the first evaluations dwarf the rest
NGRAM_NAMES = {1: "unigram", 2: "bigram", 3: "trigram"}
LEGEND_BESIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}  # right of the axes
REFERENCE_STYLE = {"color": "dimgray", "linestyle": ":", "linewidth": 1}
LN2 = math.log(2)


def _named(figure: Figure, stem: str, results: StudyResults | None = None) -> Figure:
    """`figure` labelled with its file stem: with a grid, the grid point's label is appended."""
    label = results.point.label if results is not None else ""
    figure.set_label(f"{stem}_{label}" if label else stem)
    return figure


def _titled(results: StudyResults, title: str) -> str:
    """A figure title, with its grid point's settings when the study has a grid."""
    return f"{title} ({results.point.title})" if results.point.label else title


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


def _at_point(results: StudyResults, text: str) -> str:
    """A category label, with its grid point's settings when the study has a grid."""
    return f"{text} [{results.point.title}]" if results.point.label else text


def test_scores(points: Sequence[StudyResults]) -> Figure:
    """Each seed's test bits per byte at the primary budget, and the mean with its interval, per variant (and
    grid point)."""
    spec = points[0].spec
    rows = [(results, name) for results in points for name in spec.variant_names if results.values(name, spec.tokens)]
    figure, ax = _horizontal(len(rows))
    for position, (results, name) in enumerate(rows):
        values = list(results.values(name, spec.tokens).values())
        _seeds_with_interval(ax, position, values, mean_interval(values))
    labels = [_at_point(results, f"{name} (baseline)" if name == spec.baseline else name) for results, name in rows]
    _references(ax, points[0], "test", vertical=True)
    _categories(ax, labels, f"{TEST_BPB} (lower is better)", f"{TEST_BPB}: seeds, mean and 95% interval")
    return _named(figure, TEST_FILE)


def paired_differences(points: Sequence[StudyResults]) -> Figure:
    """Per contrast (and grid point) at the primary budget, the seeds' differences and the mean difference
    with its interval."""
    spec = points[0].spec
    pairs = []
    for results in points:
        baseline = results.values(spec.baseline, spec.tokens)
        pairs += [
            (_at_point(results, f"{name} − {spec.baseline}"), paired_difference(values, baseline))
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
        [label for label, _ in pairs],
        f"{TEST_BPB} difference (below 0: better than the baseline)",
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
    ax.set_xlabel("tokens per run (M)")
    ax.set_ylabel(f"{TEST_BPB} difference")
    ax.set_title(_titled(results, "Paired difference by budget (band: 95% interval)"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _named(figure, BUDGETS_FILE, results)


def _has_curves(results: StudyResults) -> bool:
    return any(
        run.curve.get("step") for name in results.spec.variant_names for run in results.runs(name, results.spec.tokens)
    )


def validation_curves(results: StudyResults) -> Figure:
    """Top: validation bits per byte against tokens, the mean over seeds per variant. Bottom: each variant's
    mean paired difference to the baseline; the primary contrast's 95% interval is a band (one band per
    contrast would bury every line once there are several). Both start after the first tenth; the legends
    sit beside the panels, never over a curve."""
    spec = results.spec
    figure = Figure(figsize=(CURVES_WIDTH, 6.4), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    means: dict[str, tuple[np.ndarray, dict, str]] = {}  # name -> (tokens, bits/byte per seed, line colour)
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
            tokens_per_byte = run.metric("valid", names.TOKENS_SCORED) / run.metric("valid", names.BYTES_SCORED)
            per_seed[seeds] = loss / LN2 * tokens_per_byte  # nats/token -> bits/byte
        tokens_per_step = spec.tokens / max(run.curve["step"])
        tokens = steps * tokens_per_step / 1e6
        (line,) = top.plot(tokens, np.mean(list(per_seed.values()), axis=0), label=name)
        means[name] = (tokens, per_seed, line.get_color())
        seeds_shown.add(len(per_seed))
    _references(top, results, "valid", vertical=False)
    top.set_ylabel(VAL_BPB)
    counts = ", ".join(str(n) for n in sorted(seeds_shown))
    seeds_word = plural(max(seeds_shown, default=0), "seed")
    top.set_title(_titled(results, f"{VAL_BPB} (mean of {counts} {seeds_word}; from eval windows)"))
    top.grid(True, alpha=0.3)
    if means:
        top.legend(fontsize="small", **LEGEND_BESIDE)
    if spec.baseline in means:
        base_tokens, base, _ = means[spec.baseline]
        for name, (tokens, per_seed, color) in means.items():
            shared = sorted(set(per_seed) & set(base))
            if name == spec.baseline or len(tokens) != len(base_tokens) or not shared:
                continue
            differences = np.stack([per_seed[s] - base[s] for s in shared])  # (seeds, steps)
            intervals = [mean_interval(list(column)) for column in differences.T]
            bottom.plot(tokens, [i.mean for i in intervals], color=color, label=f"{name} − {spec.baseline}")
            if name == spec.primary and len(shared) >= 2:
                bottom.fill_between(
                    tokens,
                    [i.low for i in intervals],
                    [i.high for i in intervals],
                    color=color,
                    alpha=BAND_ALPHA,
                )
        bottom.axhline(0.0, color="black", linewidth=0.8)  # not red: a variant's line may be red
        bottom.legend(
            fontsize="small",
            title=f"band: 95% interval of {spec.primary} − {spec.baseline}",
            title_fontsize="small",
            **LEGEND_BESIDE,
        )
    bottom.set_ylabel(f"difference to {spec.baseline}")
    bottom.set_xlabel(f"{names.TOKENS_SEEN} (M)")
    bottom.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    bottom.grid(True, alpha=0.3)
    return _named(figure, CURVES_FILE, results)


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
    ax.set_xlabel("lr_max")
    ax.set_ylabel(f"mean {VAL_BPB}")
    sweep = results.spec.sweep
    assert sweep is not None, "sweep curves are drawn only for a spec with a [sweep]"
    seeds = sweep.seeds
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    ax.set_title(_titled(results, f"Learning-rate tuning on {which} (star: chosen)"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _named(figure, SWEEP_FILE, results)


def scaling_figure(found: Scaling, spec: StudySpec) -> Figure:
    """Top: test bits per byte against parameters per variant (seeds, mean with its 95% interval) with the
    fitted power law. Bottom: each contrast's paired difference at each size with its 95% interval."""
    figure = Figure(figsize=(FIGURE_WIDTH, 7.0), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    for series in found.series:
        sizes = np.array([size.parameters for size in series.sizes], dtype=float)
        means = [size.interval.mean for size in series.sizes]
        label = series.label
        if series.fit is not None:
            fit = series.fit
            label += f": {fit.E:.3f} + {fit.A:.3g}·N^−{fit.alpha:.3f}"
        (line,) = top.plot(sizes, means, "o", label=label)
        color = line.get_color()
        for size in series.sizes:
            top.scatter([size.parameters] * len(size.values), size.values, color=color, alpha=POINT_ALPHA, s=10)
            if size.interval.n >= 2:
                top.errorbar(
                    [size.parameters],
                    [size.interval.mean],
                    yerr=[[size.interval.mean - size.interval.low], [size.interval.high - size.interval.mean]],
                    color=color,
                    capsize=4,
                )
        if series.fit is not None:
            dense = np.geomspace(sizes.min(), sizes.max(), FIT_POINTS)
            top.plot(dense, [series.fit.predict(n) for n in dense], "--", color=color, linewidth=1)
    top.set_xscale("log")
    top.set_ylabel(TEST_BPB)
    top.set_title(f"Scaling at the primary budget along {', '.join(found.axes)} (dashed: L = E + A·N^−α)")
    top.grid(True, which="both", alpha=0.3)
    top.legend(fontsize="small")
    labels = sorted({difference.label for difference in found.differences})
    for index, label in enumerate(labels):
        shown = sorted((d for d in found.differences if d.label == label), key=lambda d: d.parameters)
        shift = DODGE ** (index - (len(labels) - 1) / 2)  # side by side on the log axis
        sizes = [difference.parameters * shift for difference in shown]
        intervals = [difference.paired.interval for difference in shown]
        (line,) = bottom.plot(sizes, [i.mean for i in intervals], "o-", label=f"{label} − {spec.baseline}")
        for size, interval in zip(sizes, intervals):
            if interval.n >= 2:
                bottom.errorbar(
                    [size],
                    [interval.mean],
                    yerr=[[interval.mean - interval.low], [interval.high - interval.mean]],
                    color=line.get_color(),
                    capsize=4,
                )
    bottom.axhline(0.0, color="firebrick", linewidth=1)
    if spec.equivalence_margin is not None:
        bottom.axhspan(-spec.equivalence_margin, spec.equivalence_margin, color="green", alpha=0.08, linewidth=0)
    bottom.set_ylabel(f"{TEST_BPB} paired difference (95% interval)")
    bottom.set_xlabel(f"{names.PARAMETERS} N")
    bottom.grid(True, which="both", alpha=0.3)
    if labels:
        bottom.legend(fontsize="small")
    return _named(figure, SCALING_FILE)


def draw_all(
    points: Sequence[StudyResults], out_dir: Path, fmt: str = DEFAULT_FORMAT, dpi: int = DEFAULT_DPI
) -> list[Path]:
    """Write every figure as PNG at `dpi` (the reports embed these) and, for another `fmt`, also
    in that format beside it. With a grid, the test scores and paired differences show every grid
    point, the curves, budgets and tuning figures are drawn per grid point, and a grid that changes
    the model's size adds the scaling figure. Returns the PNG paths."""
    check_figure_options(fmt, dpi)
    spec = points[0].spec
    evaluated = [
        results
        for results in points
        if results.cells and any(results.values(name, spec.tokens) for name in spec.variant_names)
    ]
    figures = [validation_curves(results) for results in evaluated if _has_curves(results)]
    if evaluated:
        figures += [test_scores(evaluated), paired_differences(evaluated)]
    if len(spec.all_budgets) > 1:
        figures += [difference_by_budget(results) for results in evaluated]
    if spec.sweep is not None:
        figures += [sweep_curves(results) for results in points if results.tuning.scores]
    found = scaling(points)
    if found is not None and found.series:
        figures.append(scaling_figure(found, points[0].spec))
    written = []
    for figure in figures:
        written.append(save_figure(figure, out_dir / f"{figure.get_label()}.png", dpi))
        if fmt != "png":
            save_figure(figure, out_dir / f"{figure.get_label()}.{fmt}", dpi)
    return written
