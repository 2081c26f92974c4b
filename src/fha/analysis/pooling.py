"""What the sub-heads of a group of runs do, pooled over their seeds with 95% t-intervals.

Each run's sub-head table (its last step) is first summed up per sub-head size, and over all
its sub-heads: how many induction and previous-token sub-heads it has, its largest induction
score, the mean importance of its sub-heads. Those per-run values are the sample: a group
(a study's variant) gets their mean over its runs with a Student t-interval (`fha.stats`),
so the interval says how much the answer moves from one seed to the next, not how the
sub-heads of one model differ.

    per_run = run_summaries(table, groups)      # one RunSummary per run and size (and "all")
    pooled = pool(per_run)                      # one PooledMeasure per group, size and measure
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fha.analysis.table import INDUCTION_THRESHOLD, PREVIOUS_TOKEN_THRESHOLD, SubheadRow, SubheadTable
from fha.compare.report import MISSING, Table
from fha.errors import FhaError, writing
from fha.stats import Interval, mean_interval

ALL_SIZES = 0  # the `subhead_dim` of a summary over every sub-head of a run


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


# (name, what it is, how one run's sub-heads of one size give it) of every pooled measure
MEASURES: tuple[tuple[str, str, Callable[[Sequence[SubheadRow]], float]], ...] = (
    (
        "induction_subheads",
        f"induction sub-heads (score ≥ {INDUCTION_THRESHOLD:g})",
        lambda rows: float(sum(row.induction >= INDUCTION_THRESHOLD for row in rows)),
    ),
    (
        "previous_token_subheads",
        f"previous-token sub-heads (score ≥ {PREVIOUS_TOKEN_THRESHOLD:g})",
        lambda rows: float(sum(row.previous_token >= PREVIOUS_TOKEN_THRESHOLD for row in rows)),
    ),
    ("max_induction", "largest induction score", lambda rows: max(row.induction for row in rows)),
    (
        "mean_zero_ablation",
        "mean zero-ablation Δloss (nats/token)",
        lambda rows: _mean([r.zero_ablation for r in rows]),
    ),
    (
        "mean_mean_ablation",
        "mean mean-ablation Δloss (nats/token)",
        lambda rows: _mean([r.mean_ablation for r in rows]),
    ),
    ("mean_entropy_bits", "mean attention entropy (bits)", lambda rows: _mean([row.entropy_bits for row in rows])),
    (
        "mean_distance_tokens",
        "mean attention distance (tokens)",
        lambda rows: _mean([row.mean_distance for row in rows]),
    ),
)
NEWER_MEASURES = ("mean_distance_tokens",)  # absent from files written before them: read as NaN
MEASURE_NAMES = tuple(name for name, _, _ in MEASURES)
MEASURE_LABELS = {name: label for name, label, _ in MEASURES}


@dataclass(frozen=True)
class RunSummary:
    """One run's sub-heads of one size (`ALL_SIZES`: all of them), summed up by every measure."""

    group: str  # the run's variant
    run: str
    subhead_dim: int
    subheads: int
    clean_loss: float
    values: dict[str, float]  # measure name -> value


def _size_label(size: int) -> str:
    return "all" if size == ALL_SIZES else str(size)


def run_summaries(table: SubheadTable, groups: Mapping[str, str]) -> list[RunSummary]:
    """One summary per run of `table` (its last step), per sub-head size, largest first, then
    over all its sub-heads; groups: the group (variant) of each run, by the run's label."""
    latest = table.latest()
    missing = [run for run in latest.runs() if run not in groups]
    if missing:
        raise ValueError(f"runs without a group: {', '.join(missing)}")
    summaries = []
    for run in latest.runs():
        rows = [row for row in latest.rows if row.run == run]
        sizes = sorted({row.subhead_dim for row in rows}, reverse=True)
        for size in [*sizes, ALL_SIZES]:
            chosen = rows if size == ALL_SIZES else [row for row in rows if row.subhead_dim == size]
            summaries.append(
                RunSummary(
                    groups[run],
                    run,
                    size,
                    len(chosen),
                    chosen[0].clean_loss,
                    {name: measure(chosen) for name, _, measure in MEASURES},
                )
            )
    return summaries


@dataclass(frozen=True)
class PooledMeasure:
    """A measure of one group's sub-heads of one size: its mean over the runs and 95% t-interval."""

    group: str
    subhead_dim: int  # ALL_SIZES: every sub-head
    measure: str
    interval: Interval
    runs_above_zero: int  # runs whose value is above zero (for counts: runs that have such a sub-head)


def _keys(summaries: Iterable[RunSummary]) -> list[tuple[str, int]]:
    """(group, size) in order of first appearance, each group's sizes largest first and "all" last."""
    keys = list(dict.fromkeys((s.group, s.subhead_dim) for s in summaries))
    groups = list(dict.fromkeys(group for group, _ in keys))
    return sorted(keys, key=lambda key: (groups.index(key[0]), key[1] == ALL_SIZES, -key[1]))


def pool(summaries: Sequence[RunSummary]) -> list[PooledMeasure]:
    """Every measure of every group and size: the mean over the group's runs with its t-interval."""
    pooled = []
    for group, size in _keys(summaries):
        chosen = [s for s in summaries if (s.group, s.subhead_dim) == (group, size)]
        for name in MEASURE_NAMES:
            values = [s.values[name] for s in chosen]
            pooled.append(PooledMeasure(group, size, name, mean_interval(values), sum(v > 0 for v in values)))
    return pooled


# ------------------------------------------------------------------------------ CSV files
RUN_COLUMNS = ("group", "run", "subhead_dim", "subheads", "clean_loss", *MEASURE_NAMES)
OLDER_RUN_COLUMNS = tuple(column for column in RUN_COLUMNS if column not in NEWER_MEASURES)
POOLED_COLUMNS = ("group", "subhead_dim", "measure", "runs", "mean", "ci_low", "ci_high", "std", "runs_above_zero")


def write_run_summaries(summaries: Sequence[RunSummary], path: Path) -> Path:
    """The per-run values, at full precision (`subhead_dim` 0 is every sub-head)."""
    with writing(path), path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(RUN_COLUMNS)
        for s in summaries:
            writer.writerow(
                [s.group, s.run, s.subhead_dim, s.subheads, repr(s.clean_loss)]
                + [repr(s.values[name]) for name in MEASURE_NAMES]
            )
    return path


def read_run_summaries(path: Path) -> list[RunSummary]:
    """A file of `write_run_summaries`; anything else is an FhaError naming it."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) not in (RUN_COLUMNS, OLDER_RUN_COLUMNS):
                raise FhaError(f"{path}: not a table of per-run sub-head summaries (expected {', '.join(RUN_COLUMNS)})")
            return [
                RunSummary(
                    line["group"],
                    line["run"],
                    int(line["subhead_dim"]),
                    int(line["subheads"]),
                    float(line["clean_loss"]),
                    {name: float(line[name]) if name in line else math.nan for name in MEASURE_NAMES},
                )
                for line in reader
            ]
    except OSError as err:
        raise FhaError(f"{path}: cannot read the per-run summaries ({err.strerror})") from None
    except (ValueError, TypeError) as err:
        raise FhaError(f"{path}: a row is not a per-run summary ({err})") from None


def write_pooled(pooled: Sequence[PooledMeasure], path: Path) -> Path:
    with writing(path), path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(POOLED_COLUMNS)
        for p in pooled:
            numbers = (p.interval.mean, p.interval.low, p.interval.high, p.interval.std)
            writer.writerow([p.group, p.subhead_dim, p.measure, p.interval.n, *map(repr, numbers), p.runs_above_zero])
    return path


# ------------------------------------------------------------------------------ the table
DECIMALS = {
    "induction_subheads": 2,
    "previous_token_subheads": 2,
    "max_induction": 3,
    "mean_entropy_bits": 2,
    "mean_distance_tokens": 1,
}
SIGNED_DECIMALS = {"mean_zero_ablation": 4, "mean_mean_ablation": 4}


def _number(measure: str, value: float) -> str:
    if math.isnan(value):
        return MISSING
    if measure in SIGNED_DECIMALS:
        decimals = SIGNED_DECIMALS[measure]
        return f"{0.0:.{decimals}f}" if round(value, decimals) == 0 else f"{value:+.{decimals}f}"
    return f"{value:.{DECIMALS[measure]}f}"


def interval_text(measure: str, interval: Interval) -> str:
    """``mean [low, high]``, or ``mean (one run)``."""
    mean = _number(measure, interval.mean)
    if interval.n < 2:
        return f"{mean} (one run)"
    return f"{mean} [{_number(measure, interval.low)}, {_number(measure, interval.high)}]"


def pooled_table(pooled: Sequence[PooledMeasure], summaries: Sequence[RunSummary]) -> Table:
    """One row per group and size: runs, sub-heads per run, runs with an induction sub-head, and
    every measure as mean [95% CI]."""
    header = ["variant", "size", "runs", "sub-heads per run", "runs with an induction sub-head"]
    header += [MEASURE_LABELS[name] for name in MEASURE_NAMES]
    by_key = {(p.group, p.subhead_dim, p.measure): p for p in pooled}
    rows = []
    for group, size in _keys(summaries):
        counts = sorted({s.subheads for s in summaries if (s.group, s.subhead_dim) == (group, size)})
        induction = by_key[(group, size, "induction_subheads")]
        rows.append(
            [
                group,
                _size_label(size),
                str(induction.interval.n),
                "/".join(map(str, counts)),
                f"{induction.runs_above_zero} of {induction.interval.n}",
                *(interval_text(name, by_key[(group, size, name)].interval) for name in MEASURE_NAMES),
            ]
        )
    return Table(header, rows)
