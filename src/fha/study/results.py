"""A study read back from its ledgers: which cells the spec needs, which are there, and results.csv.

Everything comes from study.json and the ledger entries (of one folder, or several: shards
from other machines, a ledger committed under docs/results/); no weights, no run folders.
A cell is used only when an entry with its fingerprint exists, so a result is never pooled
with runs of other settings, data, tokenizer or budget. A study with a grid is read as one
`StudyResults` per grid point, each a comparison of its own.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fha import metric_names
from fha.errors import FhaError
from fha.files import read_json
from fha.study.layout import REFERENCES_FILE, context_of, load_record, spec_of
from fha.study.ledger import Entry, Ledger
from fha.study.plan import TUNING, Cell, Planner, Seeds, StudyContext, TuningOutcome, tuning_outcome
from fha.study.spec import NO_GRID, GridPoint, StudySpec

RESULTS_FILE = "results.csv"
# the metrics of results.csv: (column, the study's text, the metric on it)
RESULT_METRICS = tuple(
    (metric_names.on_split(metric_names.STUDY_SPLITS[text], metric), text, metric)
    for text, metric in (
        ("valid", metric_names.BITS_PER_BYTE),
        ("test", metric_names.BITS_PER_BYTE),
        ("test", metric_names.LOSS),
        ("test", metric_names.TOP1_ACCURACY),
        ("train_sample", metric_names.BITS_PER_BYTE),
    )
)
# the cell's settings (spec and config names), its parameters and status, its metrics and fingerprint
RESULT_COLUMNS = (
    "run",
    "role",
    "variant",
    "init_seed",
    "data_seed",
    "lr_max",
    "tokens",
    metric_names.PARAMETERS,
    "status",
    *(column for column, _, _ in RESULT_METRICS),
    "fingerprint",
)
MAX_LISTED = 6  # cells named in an error before "and N more"


@dataclass
class StudyResults:
    """The results of one comparison: the whole study without a grid, or one grid point of it."""

    spec: StudySpec
    context: StudyContext
    folders: list[Path]
    tuning: TuningOutcome
    cells: list[Cell]  # the evaluation cells the spec asks for
    entries: dict[Cell, Entry]  # every cell (tuning and evaluation) with a ledger entry
    references: dict[str, dict[int, float]]  # split -> n-gram order -> bits per byte (empty if not computed)
    point: GridPoint = NO_GRID

    @property
    def chosen_lr(self) -> dict[str, float]:
        return self.tuning.chosen or {}

    @property
    def missing(self) -> list[Cell]:
        return [cell for cell in self.cells if cell not in self.entries]

    @property
    def failed(self) -> list[tuple[Cell, Entry]]:
        return [
            (cell, self.entries[cell]) for cell in self.cells if cell in self.entries and self.entries[cell].diverged
        ]

    @property
    def complete(self) -> bool:
        return not self.missing

    def values(
        self, variant: str, tokens: int, split: str = "test", metric: str = metric_names.BITS_PER_BYTE
    ) -> dict[Seeds, float]:
        """Per seed pair, the metric of the variant's evaluation runs at a budget (diverged runs left out)."""
        return {
            cell.seeds: self.entries[cell].metric(split, metric)
            for cell in self.cells
            if cell.variant == variant and cell.tokens == tokens and cell in self.entries
            if not self.entries[cell].diverged
        }

    def runs(self, variant: str, tokens: int) -> list[Entry]:
        return [
            self.entries[cell]
            for cell in self.cells
            if cell.variant == variant and cell.tokens == tokens and cell in self.entries
            if not self.entries[cell].diverged
        ]

    def tuning_entries(self) -> list[tuple[Cell, Entry]]:
        return sorted(
            ((cell, entry) for cell, entry in self.entries.items() if cell.role == TUNING),
            key=lambda item: (item[0].variant, item[0].lr_max, item[0].seeds, item[0].tokens),
        )


def load_results(folders: list[Path], *, partial: bool = False) -> list[StudyResults]:
    """The study of `folders[0]` (its study.json) with the ledgers of all `folders`, one `StudyResults` per
    grid point (one without a grid); an FhaError names what is missing unless `partial`."""
    record = load_record(folders[0])
    spec, context = spec_of(folders[0], record), context_of(folders[0], record)
    ledger = Ledger.read(folders)
    planner = Planner(spec, context)
    by_fingerprint: dict[str, Entry] = ledger.entries
    references = _references(folders[0], spec, context)

    def entry(cell: Cell) -> Entry | None:
        return by_fingerprint.get(planner.plan(cell).fingerprint)

    def score(cell: Cell) -> float | None:
        found = entry(cell)
        return None if found is None else found.metric("valid")

    points = []
    for point in spec.points:
        tuning = tuning_outcome(planner, score, point.label)
        tuned = planner.tuning_cells(tuning.grids, point.label)
        entries = {cell: found for cell in tuned if (found := entry(cell)) is not None}
        cells = planner.evaluation_cells(tuning.chosen, point.label) if tuning.chosen is not None else []
        entries.update({cell: found for cell in cells if (found := entry(cell)) is not None})
        points.append(StudyResults(spec, context, folders, tuning, cells, entries, references, point))
    if not partial:
        untuned = [cell for results in points if not results.tuning.done for cell in results.tuning.missing]
        if untuned:
            raise FhaError(
                f"{folders[0]}: tuning is not finished ({_listed([c.run_id for c in untuned])} have no "
                "result); run fha study run on the spec again, or report what there is with --partial"
            )
        missing = [cell for results in points for cell in results.missing]
        if missing:
            total = sum(len(results.cells) for results in points)
            raise FhaError(
                f"{folders[0]}: {len(missing)} of {total} runs are not finished "
                f"({_listed([c.run_id for c in missing])}); run fha study run on the spec again (every "
                "shard), or report what there is with --partial"
            )
    return points


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown if len(names) <= MAX_LISTED else f"{shown} and {len(names) - MAX_LISTED} more"


def _references(folder: Path, spec: StudySpec, context: StudyContext) -> dict[str, dict[int, float]]:
    data = read_json(folder / REFERENCES_FILE, "n-gram references")
    if not isinstance(data, dict) or data.get("tokenizer") != context.tokenizer_fingerprint:
        return {}
    if data.get("data") != context.data_digests or data.get("train_sample") != spec.data.train_sample:
        return {}
    try:
        return {
            split: {int(order): float(value) for order, value in orders.items() if math.isfinite(float(value))}
            for split, orders in data["bits_per_byte"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        raise FhaError(f"{folder / REFERENCES_FILE}: malformed; delete it and run the study again") from None


def results_csv(points: list[StudyResults]) -> str:
    """One row per cell with a result (tuning and evaluation); floats at full precision, so equal studies
    give byte-equal files. With a grid, each row also names its grid point and the point's settings."""
    spec = points[0].spec
    grid_columns = ["grid_point", *spec.grid.settings] if spec.grid is not None else []
    columns = [*RESULT_COLUMNS[:2], *grid_columns, *RESULT_COLUMNS[2:]]
    handle = io.StringIO()
    writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for results in points:
        ordered = sorted(
            results.entries.items(),
            key=lambda item: (item[0].role != TUNING, item[0].variant, item[0].lr_max, item[0].seeds, item[0].tokens),
        )
        for cell, entry in ordered:
            row: dict[str, Any] = {
                "run": cell.run_id,
                "role": cell.role,
                "variant": cell.variant,
                "init_seed": cell.seeds.init,
                "data_seed": cell.seeds.data,
                "lr_max": repr(cell.lr_max),
                "tokens": cell.tokens,
                metric_names.PARAMETERS: entry.parameters,
                "status": "diverged" if entry.diverged else "finished",
                "fingerprint": entry.fingerprint,
            }
            if grid_columns:
                row.update(grid_point=cell.point, **results.point.settings)
            if not entry.diverged:
                row.update({column: repr(entry.metric(text, metric)) for column, text, metric in RESULT_METRICS})
            writer.writerow(row)
    return handle.getvalue()
