"""CSV logs of a run, plain numbers, kept consistent across resumes: ``log_data.csv`` (one row per
evaluation, `COLUMNS`) and ``metrics.csv`` (one row per `log_interval` steps, `fha.train.metrics`)."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from fha.errors import FhaError, one_line

COLUMNS = ("Step", "Learning Rate", "Train Loss", "Validation Loss", "Perplexity", "Time Elapsed", "Tokens/s")


def _format(value: float) -> str:
    """Integers as integers; floats with full precision (repr), so a resumed run can be compared exactly."""
    return str(value) if isinstance(value, int) else repr(float(value))


def _step_of(row: list[str], path: Path) -> int:
    try:
        return int(row[0])
    except ValueError:
        raise FhaError(f"{path}: malformed row {row!r} (the Step column must be a whole number)") from None


class LogBook:
    """Appends rows of `columns` (the first is the step) to a CSV file; rank 0 only."""

    def __init__(self, path: str | Path, columns: Sequence[str] = COLUMNS) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)

    def start(self, previous: Path | None = None, up_to_step: int | None = None) -> None:
        """Begin the file: empty, or the rows of `previous` with Step <= `up_to_step` (a resume).

        Rows after the resumed step came from the interrupted run and are replaced by the new ones.
        """
        rows: list[list[str]] = []
        if previous is not None and previous.is_file():
            try:
                with open(previous, newline="", encoding="utf-8") as handle:
                    reader = csv.reader(handle)
                    header = next(reader, None)
                    if header == list(self.columns):
                        rows = [row for row in reader if row and _step_of(row, previous) <= (up_to_step or 0)]
            except (UnicodeDecodeError, csv.Error) as err:
                raise FhaError(f"{previous}: not a readable training log ({one_line(err)})") from None
        temp = self.path.with_name(self.path.name + ".tmp")
        with open(temp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.columns)
            writer.writerows(rows)
        os.replace(temp, self.path)

    def append(self, step: int, lr: float, train_loss: float, val_loss: float, perplexity: float,
               elapsed: float, tokens_per_s: float) -> None:
        self.write_row((step, lr, train_loss, val_loss, perplexity, elapsed, tokens_per_s))

    def write_row(self, values: Sequence[float]) -> None:
        """One row of numbers in the order of `columns`."""
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerow([_format(v) for v in values])


def read_log(path: str | Path) -> list[dict[str, float]]:
    """The rows of a log_data.csv as numbers keyed by column name; a damaged file is an FhaError."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]
    except (UnicodeDecodeError, csv.Error, ValueError, TypeError) as err:
        raise FhaError(f"{path}: not a readable training log ({one_line(err)})") from None
