"""A study read back from its ledgers: which cells the spec needs, which are there, and results.csv.

Everything comes from study.json and the ledger entries (of one folder, or several: shards
from other machines, a ledger committed under docs/results/); no weights, no run folders.
A cell is used only when an entry with its fingerprint exists, so a result is never pooled
with runs of other settings, data, tokenizer or budget.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fha.errors import FhaError
from fha.files import read_json
from fha.study.layout import REFERENCES_FILE, context_of, load_record, spec_of
from fha.study.ledger import Entry, Ledger
from fha.study.plan import TUNING, Cell, Planner, Seeds, StudyContext, TuningOutcome, tuning_outcome
from fha.study.spec import StudySpec

RESULTS_FILE = "results.csv"
RESULT_COLUMNS = (
    "run",
    "role",
    "variant",
    "init_seed",
    "data_seed",
    "learning_rate",
    "tokens",
    "parameters",
    "status",
    "valid_bits_per_byte",
    "test_bits_per_byte",
    "test_loss",
    "test_top1_accuracy",
    "train_sample_bits_per_byte",
    "fingerprint",
)
MAX_LISTED = 6  # cells named in an error before "and N more"


@dataclass
class StudyResults:
    spec: StudySpec
    context: StudyContext
    folders: list[Path]
    tuning: TuningOutcome
    cells: list[Cell]  # the evaluation cells the spec asks for
    entries: dict[Cell, Entry]  # every cell (tuning and evaluation) with a ledger entry
    references: dict[str, dict[int, float]]  # split -> n-gram order -> bits per byte (empty if not computed)

    @property
    def chosen_lr(self) -> dict[str, float]:
        return self.tuning.chosen or {}

    @property
    def missing(self) -> list[Cell]:
        return [cell for cell in self.cells if cell not in self.entries]

    @property
    def failed(self) -> list[Entry]:
        return [self.entries[cell] for cell in self.cells if cell in self.entries and self.entries[cell].diverged]

    @property
    def complete(self) -> bool:
        return not self.missing

    def values(
        self, variant: str, tokens: int, split: str = "test", metric: str = "bits_per_byte"
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

    def tuning_entries(self) -> list[Entry]:
        return sorted(
            (entry for cell, entry in self.entries.items() if cell.role == TUNING),
            key=lambda e: (e.cell.variant, e.cell.lr_max, e.cell.seeds, e.cell.tokens),
        )


def load_results(folders: list[Path], *, partial: bool = False) -> StudyResults:
    """The study of `folders[0]` (its study.json) with the ledgers of all `folders`; an FhaError names
    what is missing unless `partial`."""
    record = load_record(folders[0])
    spec, context = spec_of(folders[0], record), context_of(folders[0], record)
    ledger = Ledger.read(folders)
    planner = Planner(spec, context)
    by_fingerprint: dict[str, Entry] = ledger.entries

    def entry(cell: Cell) -> Entry | None:
        return by_fingerprint.get(planner.plan(cell).fingerprint)

    def score(cell: Cell) -> float | None:
        found = entry(cell)
        return None if found is None else found.metric("valid")

    tuning = tuning_outcome(planner, score)
    entries = {cell: found for cell in planner.tuning_cells(tuning.grids) if (found := entry(cell)) is not None}
    cells = planner.evaluation_cells(tuning.chosen) if tuning.done else []
    entries.update({cell: found for cell in cells if (found := entry(cell)) is not None})
    results = StudyResults(spec, context, folders, tuning, cells, entries, _references(folders[0], spec, context))
    if not partial:
        if not tuning.done:
            raise FhaError(
                f"{folders[0]}: tuning is not finished ({_listed([c.run_id for c in tuning.missing])} have no "
                "result); run fha study run on the spec again, or report what there is with --partial"
            )
        if results.missing:
            raise FhaError(
                f"{folders[0]}: {len(results.missing)} of {len(cells)} runs are not finished "
                f"({_listed([c.run_id for c in results.missing])}); run fha study run on the spec again (every "
                "shard), or report what there is with --partial"
            )
    return results


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


def results_csv(results: StudyResults) -> str:
    """One row per cell with a result (tuning and evaluation); floats at full precision, so equal studies
    give byte-equal files."""
    handle = io.StringIO()
    writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
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
            "learning_rate": repr(cell.lr_max),
            "tokens": cell.tokens,
            "parameters": entry.parameters,
            "status": "diverged" if entry.diverged else "finished",
            "fingerprint": entry.fingerprint,
        }
        if not entry.diverged:
            row.update(
                valid_bits_per_byte=repr(entry.metric("valid")),
                test_bits_per_byte=repr(entry.metric("test")),
                test_loss=repr(entry.metric("test", "loss")),
                test_top1_accuracy=repr(entry.metric("test", "top1_accuracy")),
                train_sample_bits_per_byte=repr(entry.metric("train_sample")),
            )
        writer.writerow(row)
    return handle.getvalue()
