"""Scaling over a grid that changes the model's size: test bits per byte against parameters.

An axis of the grid *changes the size* when two grid points that differ on it alone have
models with different parameter counts (read from the ledger). Grid points that agree on
every other axis form a *series* (one series when every axis changes the size). Per variant
and series, the mean test bits per byte at the primary budget at each size is fitted with
``L = E + A * N**-alpha`` (`fha.stats.fit_power_law`, which needs 3 sizes or more), and each
contrast's paired difference is given at each size with its 95% interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fha.errors import FhaValueError
from fha.stats import (
    MIN_POWER_LAW_POINTS,
    Interval,
    PairedDifference,
    PowerLawFit,
    fit_power_law,
    mean_interval,
    paired_difference,
)
from fha.study.results import StudyResults
from fha.study.spec import GRID_POINTS, Grid, GridPoint, StudySpec


@dataclass(frozen=True)
class Size:
    """One variant at one grid point of a series: its parameters and its seeds' test bits per byte."""

    point: GridPoint
    parameters: int
    values: tuple[float, ...]
    interval: Interval


@dataclass(frozen=True)
class Series:
    """One variant's sizes along the size axes, the other axes held at `context`."""

    variant: str
    context: str  # the other axes' settings, e.g. "fractal_split=2" ("" when every axis changes the size)
    sizes: tuple[Size, ...]  # by increasing parameters
    fit: PowerLawFit | None
    note: str  # why there is no fit ("" with one)

    @property
    def label(self) -> str:
        return f"{self.variant} ({self.context})" if self.context else self.variant


@dataclass(frozen=True)
class SizeDifference:
    """A contrast (variant − baseline) at one grid point of a series."""

    variant: str
    context: str
    point: GridPoint
    parameters: int  # the variant's
    paired: PairedDifference

    @property
    def label(self) -> str:
        return f"{self.variant} ({self.context})" if self.context else self.variant


@dataclass(frozen=True)
class Scaling:
    axes: tuple[str, ...]  # the grid axes that change the size, for a reader (`Grid.axis_title`)
    series: tuple[Series, ...]
    differences: tuple[SizeDifference, ...]


def parameter_counts(points: Sequence[StudyResults]) -> dict[tuple[str, str], int]:
    """(grid point label, variant) -> parameters, from any finished ledger entry of that variant there."""
    counts = {}
    for results in points:
        for cell, entry in results.entries.items():
            if entry.parameters > 0:
                counts.setdefault((results.point.label, cell.variant), entry.parameters)
    return counts


def size_axes(spec: StudySpec, counts: dict[tuple[str, str], int]) -> tuple[int, ...]:
    """The indexes of the grid axes along which some variant's parameter count changes."""
    if spec.grid is None:
        return ()
    points = spec.points
    found = []
    for axis in range(len(spec.grid.axis_names)):
        for first in points:
            if any(_changes_size(first, second, axis, spec, counts) for second in points):
                found.append(axis)
                break
    return tuple(found)


def _changes_size(
    first: GridPoint, second: GridPoint, axis: int, spec: StudySpec, counts: dict[tuple[str, str], int]
) -> bool:
    differ = [index for index, (a, b) in enumerate(zip(first.coordinates, second.coordinates)) if a != b]
    if differ != [axis]:
        return False
    sizes = [(counts.get((first.label, name)), counts.get((second.label, name))) for name in spec.variant_names]
    return any(a is not None and b is not None and a != b for a, b in sizes)


def _context(grid: Grid, point: GridPoint, axes: tuple[int, ...]) -> str:
    """The settings of `point` on the axes that are not size axes."""
    keys = [
        key
        for index, name in enumerate(grid.axis_names)
        if index not in axes
        for key in (grid.points[0] if name == GRID_POINTS else [name])
    ]
    return point.describe(keys)


def scaling(points: Sequence[StudyResults]) -> Scaling | None:
    """The scaling series and the paired differences by size; None when no grid axis changes the size."""
    spec = points[0].spec
    counts = parameter_counts(points)
    axes = size_axes(spec, counts)
    if spec.grid is None or not axes:
        return None
    series, differences = [], []
    contexts: dict[str, list[StudyResults]] = {}
    for results in points:
        contexts.setdefault(_context(spec.grid, results.point, axes), []).append(results)
    for context, members in contexts.items():
        for name in spec.variant_names:
            sizes = []
            for results in members:
                values = tuple(results.values(name, spec.tokens).values())
                parameters = counts.get((results.point.label, name))
                if values and parameters is not None:
                    sizes.append(Size(results.point, parameters, values, mean_interval(list(values))))
            if sizes:
                sizes.sort(key=lambda size: size.parameters)
                fit, note = _fit(sizes)
                series.append(Series(name, context, tuple(sizes), fit, note))
        for name in spec.contrasts:
            for results in members:
                variant, baseline = results.values(name, spec.tokens), results.values(spec.baseline, spec.tokens)
                parameters = counts.get((results.point.label, name))
                if set(variant) & set(baseline) and parameters is not None:
                    differences.append(
                        SizeDifference(name, context, results.point, parameters, paired_difference(variant, baseline))
                    )
    names = tuple(spec.grid.axis_title(spec.grid.axis_names[axis]) for axis in axes)
    return Scaling(names, tuple(series), tuple(differences))


def _fit(sizes: list[Size]) -> tuple[PowerLawFit | None, str]:
    distinct = len({size.parameters for size in sizes})
    if distinct < MIN_POWER_LAW_POINTS:
        return None, f"{distinct} {'size' if distinct == 1 else 'sizes'}: a power law needs {MIN_POWER_LAW_POINTS}"
    try:
        return fit_power_law([size.parameters for size in sizes], [size.interval.mean for size in sizes]), ""
    except FhaValueError as err:
        return None, str(err)
