"""CSV logs of a run, plain numbers, kept consistent across resumes: ``log_data.csv`` (one
`LogRow` per evaluation) and ``metrics.csv`` (one `MetricsRow` per `log_interval` steps,
`fha.runs.metrics`).

A row type owns its file's columns: each field names its column header in the file and
whether every log fha has written has it. Writers build rows, readers get rows back; no other
module spells a header. Reading is lenient where old runs need it: an optional column that
is missing (older logs have no ``Tokens/s``) or an empty cell reads as NaN.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from fha.errors import FhaError, one_line

COLUMN, REQUIRED = "column", "required"  # keys of a row field's metadata


def _column(header: str, *, required: bool = False) -> Any:
    """A row field written under `header`; a log without a `required` column is corrupt."""
    return dataclasses.field(metadata={COLUMN: header, REQUIRED: required})


class _CsvRow:
    """What `LogRow` and `MetricsRow` share: their columns, and a row to and from CSV text.

    The first field is the step; fields typed ``int`` hold whole numbers, the others floats.
    """

    FILE: ClassVar[str]  # the file's name in a run folder, for messages
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # subclasses are dataclasses

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """The header of the file, in field order."""
        return tuple(field.metadata[COLUMN] for field in dataclasses.fields(cls))

    @classmethod
    def required_columns(cls) -> tuple[str, ...]:
        return tuple(field.metadata[COLUMN] for field in dataclasses.fields(cls) if field.metadata[REQUIRED])

    def values(self) -> tuple[float, ...]:
        """The row's numbers in the order of `columns`."""
        return tuple(getattr(self, field.name) for field in dataclasses.fields(self))

    def cells(self) -> list[str]:
        """The row as CSV cells: integers as integers, floats with full precision (repr), so a
        resumed run can be compared exactly."""
        return [str(value) if isinstance(value, int) else repr(float(value)) for value in self.values()]

    @classmethod
    def from_cells(cls, cells: Mapping[str, str | None], path: Path, line: int) -> Any:
        """The row of one CSV line (header -> text). The step must be there; another absent
        column or empty cell is NaN."""
        values = {}
        for index, field in enumerate(dataclasses.fields(cls)):
            header = field.metadata[COLUMN]
            text = cells.get(header)
            if index == 0 and (text is None or not text.strip()):
                raise FhaError(f"{path}:{line}: corrupt log (no {header})")
            values[field.name] = _number(text, path, line, header, whole=field.type == "int")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class LogRow(_CsvRow):
    """One evaluation: a row of log_data.csv. The losses are means per target over `eval_samples`
    batches; the learning rate is that of the update that led to `step`; `tokens_per_s` is the
    throughput since the previous row (0 at step 0)."""

    FILE: ClassVar[str] = "log_data.csv"

    step: int = _column("Step", required=True)
    learning_rate: float = _column("Learning Rate")
    train_loss: float = _column("Train Loss", required=True)
    val_loss: float = _column("Validation Loss", required=True)
    perplexity: float = _column("Perplexity")
    time_elapsed: float = _column("Time Elapsed", required=True)  # seconds of training so far, across resumes
    tokens_per_s: float = _column("Tokens/s")


@dataclasses.dataclass(frozen=True)
class MetricsRow(_CsvRow):
    """The steps since the previous row of metrics.csv (`fha.runs.metrics`)."""

    FILE: ClassVar[str] = "metrics.csv"

    step: int = _column("Step", required=True)
    tokens_seen: int = _column("Tokens Seen")
    learning_rate: float = _column("Learning Rate")
    train_loss: float = _column("Train Loss", required=True)
    grad_norm: float = _column("Grad Norm")
    tokens_per_s: float = _column("Tokens/s")
    time_elapsed: float = _column("Time Elapsed", required=True)


Row = TypeVar("Row", bound=_CsvRow)
COLUMNS = LogRow.columns()
METRICS_COLUMNS = MetricsRow.columns()


def _number(text: str | None, path: Path, line: int, column: str, *, whole: bool) -> float:
    """The number in a cell (an int for a `whole` column); NaN when the cell is empty."""
    if text is None or not text.strip():
        return math.nan
    try:
        number = float(text)
    except ValueError:
        raise FhaError(f"{path}:{line}: corrupt log ({column} is {text.strip()!r}, not a number)") from None
    if whole and number.is_integer():
        return int(number)
    if whole and math.isfinite(number):
        raise FhaError(f"{path}:{line}: corrupt log ({column} is {text.strip()!r}, not a whole number)")
    return number


def read_rows(path: str | Path, row_type: type[Row]) -> list[Row]:
    """The rows of a log file; a missing required column or an unreadable number is an FhaError."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            missing = [name for name in row_type.required_columns() if name not in header]
            if missing:
                raise FhaError(f"{path}: corrupt log (missing column {', '.join(missing)})")
            lines = [{key.strip(): value for key, value in row.items() if key is not None} for row in reader]
    except (UnicodeDecodeError, csv.Error) as err:
        raise FhaError(f"{path}: corrupt log (not text: {one_line(err)})") from None
    return [row_type.from_cells(cells, path, line) for line, cells in enumerate(lines, start=2)]  # 1: header


def read_evaluations(path: str | Path) -> list[LogRow]:
    """The evaluations of a log_data.csv."""
    return read_rows(path, LogRow)


def _step_of(row: list[str], path: Path) -> int:
    try:
        return int(row[0])
    except ValueError:
        raise FhaError(f"{path}: malformed row {row!r} (the Step column must be a whole number)") from None


class LogBook:
    """Appends rows of one type to its CSV file, keeping the file consistent across resumes; rank 0 only."""

    def __init__(self, path: str | Path, row_type: type[_CsvRow] = LogRow) -> None:
        self.path = Path(path)
        self.row_type = row_type

    def start(self, previous: Path | None = None, up_to_step: int | None = None) -> None:
        """Begin the file: empty, or the rows of `previous` with Step <= `up_to_step` (a resume).

        Rows after the resumed step came from the interrupted run and are replaced by the new ones.
        A previous file with other columns is not carried over. The kept rows are copied as text,
        so they stay byte for byte what the interrupted run wrote.
        """
        columns = self.row_type.columns()
        rows: list[list[str]] = []
        if previous is not None and previous.is_file():
            try:
                with open(previous, newline="", encoding="utf-8") as handle:
                    reader = csv.reader(handle)
                    header = next(reader, None)
                    if header == list(columns):
                        rows = [row for row in reader if row and _step_of(row, previous) <= (up_to_step or 0)]
            except (UnicodeDecodeError, csv.Error) as err:
                raise FhaError(f"{previous}: not a readable training log ({one_line(err)})") from None
        temp = self.path.with_name(self.path.name + ".tmp")
        with open(temp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(rows)
        os.replace(temp, self.path)

    def append(self, row: _CsvRow) -> None:
        if not isinstance(row, self.row_type):
            raise TypeError(f"{self.path.name} takes {self.row_type.__name__}, not {type(row).__name__}")
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerow(row.cells())
