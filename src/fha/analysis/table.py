"""The measurements of every sub-head as a table: one `SubheadRow` per run, training step,
layer, head and sub-head, written to and read from CSV, and summed up by sub-head size.

Runs are put together by concatenating their tables (`SubheadTable.concat`, each labelled
with its run by `labelled`); `fha.analysis.pooling` pools a study's seeds from such a table.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fha.errors import FhaError, writing

INDUCTION_THRESHOLD = 0.4  # an induction sub-head puts at least this weight on the induction target
PREVIOUS_TOKEN_THRESHOLD = 0.4  # a previous-token sub-head puts at least this weight on t - 1
IDENTITY = ("run", "step", "layer", "head", "subhead", "subhead_dim", "num_subheads")
# (column, what it is, unit) of every measurement, in the order of the CSV
METRICS = (
    ("entropy_bits", "attention entropy", "bits"),
    ("mean_distance", "mean attention distance", "positions"),
    ("previous_token", "previous-token score", "weight"),
    ("first_token", "first-token mass", "weight"),
    ("induction", "induction score", "weight"),
    ("copying", "copying score", "-1..1"),
    ("zero_ablation", "zero-ablation loss increase", "nats/token"),
    ("mean_ablation", "mean-ablation loss increase", "nats/token"),
)
METRIC_NAMES = tuple(name for name, _, _ in METRICS)


@dataclass(frozen=True)
class SubheadRow:
    """One sub-head: where it sits, its size, and what it does (docs/analysis.md defines each)."""

    run: str
    step: int | None  # training step of the weights; None when unknown (an exported model)
    layer: int
    head: int
    subhead: int
    subhead_dim: int
    num_subheads: int  # sub-heads of its head
    entropy_bits: float
    mean_distance: float
    previous_token: float
    first_token: float
    induction: float
    copying: float
    zero_ablation: float  # loss increase, nats/token
    mean_ablation: float
    clean_loss: float  # the model's loss on the ablations' text, nats/token, nothing ablated
    ablation_tokens: int  # predicted tokens the losses average over

    @property
    def position(self) -> tuple[int, int, int]:
        return (self.layer, self.head, self.subhead)


COLUMNS = tuple(field.name for field in dataclasses.fields(SubheadRow))
_INTEGER_COLUMNS = ("layer", "head", "subhead", "subhead_dim", "num_subheads", "ablation_tokens")


def _step_order(step: int | None) -> tuple[bool, int]:
    """Steps in training order; unknown (final weights of an exported model) last."""
    return (step is None, step or 0)


@dataclass(frozen=True)
class SubheadTable:
    """Rows of `SubheadRow`, in the order they were measured (run, step, layer, head, sub-head)."""

    rows: tuple[SubheadRow, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[SubheadRow]:
        return iter(self.rows)

    @classmethod
    def concat(cls, tables: Iterable[SubheadTable]) -> SubheadTable:
        return cls(tuple(row for table in tables for row in table.rows))

    def labelled(self, run: str | None = None, step: int | None = None) -> SubheadTable:
        """The rows with `run` and/or `step` set (None leaves that column as it is)."""
        changes = {key: value for key, value in (("run", run), ("step", step)) if value is not None}
        return SubheadTable(tuple(dataclasses.replace(row, **changes) for row in self.rows))

    def runs(self) -> list[str]:
        return list(dict.fromkeys(row.run for row in self.rows))

    def steps(self, run: str) -> list[int | None]:
        return sorted({row.step for row in self.rows if row.run == run}, key=_step_order)

    def select(self, run: str, step: int | None) -> SubheadTable:
        return SubheadTable(tuple(row for row in self.rows if row.run == run and row.step == step))

    def latest(self) -> SubheadTable:
        """Each run's rows at its last step (its final weights)."""
        return SubheadTable.concat(self.select(run, self.steps(run)[-1]) for run in self.runs())

    def csv_text(self) -> str:
        """The table as the text of its CSV file."""
        handle = io.StringIO(newline="")
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in self.rows:
            writer.writerow(["" if value is None else value for value in dataclasses.astuple(row)])
        return handle.getvalue()

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        with writing(path), path.open("w", newline="") as handle:
            handle.write(self.csv_text())
        return path

    @classmethod
    def read_csv(cls, path: str | Path) -> SubheadTable:
        """A table written by `to_csv`; anything else is an FhaError naming the file."""
        path = Path(path)
        try:
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                if tuple(reader.fieldnames or ()) != COLUMNS:
                    raise FhaError(f"{path}: not a sub-head table (expected the columns {', '.join(COLUMNS)})")
                return cls(tuple(_parse_row(line) for line in reader))
        except OSError as err:
            raise FhaError(f"{path}: cannot read the sub-head table ({err.strerror})") from None
        except ValueError as err:
            raise FhaError(f"{path}: a row is not a sub-head measurement ({err})") from None


def _parse_row(line: dict[str, str]) -> SubheadRow:
    # SubheadRow's keyword arguments, each column parsed to its field's type (str, int or float)
    values: dict[str, Any] = {"run": line["run"], "step": int(line["step"]) if line["step"] else None}
    for name in COLUMNS[2:]:
        values[name] = int(line[name]) if name in _INTEGER_COLUMNS else float(line[name])
    return SubheadRow(**values)


@dataclass(frozen=True)
class SizeSummary:
    """The sub-heads of one size in one run at one step."""

    run: str
    step: int | None
    subhead_dim: int
    count: int
    mean_entropy_bits: float
    mean_previous_token: float
    previous_token_subheads: int  # previous-token score >= PREVIOUS_TOKEN_THRESHOLD
    max_induction: float
    induction_subheads: int  # induction score >= INDUCTION_THRESHOLD
    mean_zero_ablation: float
    max_zero_ablation: float
    mean_mean_ablation: float


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def summary_by_size(table: SubheadTable) -> list[SizeSummary]:
    """One summary per run, step and sub-head size (largest first)."""
    summaries = []
    for run in table.runs():
        for step in table.steps(run):
            rows = table.select(run, step).rows
            for size in sorted({row.subhead_dim for row in rows}, reverse=True):
                group = [row for row in rows if row.subhead_dim == size]
                summaries.append(
                    SizeSummary(
                        run=run,
                        step=step,
                        subhead_dim=size,
                        count=len(group),
                        mean_entropy_bits=_mean([row.entropy_bits for row in group]),
                        mean_previous_token=_mean([row.previous_token for row in group]),
                        previous_token_subheads=sum(row.previous_token >= PREVIOUS_TOKEN_THRESHOLD for row in group),
                        max_induction=max(row.induction for row in group),
                        induction_subheads=sum(row.induction >= INDUCTION_THRESHOLD for row in group),
                        mean_zero_ablation=_mean([row.zero_ablation for row in group]),
                        max_zero_ablation=max(row.zero_ablation for row in group),
                        mean_mean_ablation=_mean([row.mean_ablation for row in group]),
                    )
                )
    return summaries
