"""The run log: what a run reports as it trains, and the CSV files it leaves.

``log_data.csv`` has one `LogRow` per evaluation, ``metrics.csv`` one `MetricsRow` per
`log_interval` steps: the mean training loss of those steps' batches, their mean gradient
norm (before clipping), the learning rate of the last one, their throughput and the token
positions of every batch so far (``step x global batch x max_seq_len``). `RunLog` writes
both, sends the same numbers to the trackers chosen with ``fha train --log-to``
(`fha.runs.trackers`) and shows the progress bar and the evaluation lines; the training
loop calls it once per step and once per evaluation. The sums over an unfinished metrics
row travel in the checkpoint, so a resumed run writes exactly the rows of the uninterrupted
one (on CPU).

A row type owns its file's columns: each field names its column header in the file (a name
of `fha.metric_names`) and whether every log fha has written has it. Writers build rows,
readers get rows back; no other module spells a header. Reading is lenient where old runs
need it: headers written before the vocabulary (``Validation Loss``) read as their current
names, and an optional column that is missing (older logs have no tokens per second) or an empty
cell reads as NaN.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from fha import metric_names as names
from fha.errors import FhaError, one_line
from fha.progress import Progress, format_lr, short_count
from fha.runs.trackers import Tracker, open_trackers
from fha.wording import counted

log = logging.getLogger(__name__)

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

    step: int = _column(names.STEP, required=True)
    learning_rate: float = _column(names.LEARNING_RATE)
    train_loss: float = _column(names.TRAIN_LOSS, required=True)
    val_loss: float = _column(names.VAL_LOSS, required=True)
    perplexity: float = _column(names.VAL_PERPLEXITY)
    time_elapsed: float = _column(names.ELAPSED, required=True)  # seconds of training so far, across resumes
    tokens_per_s: float = _column(names.TOKENS_PER_S)


@dataclasses.dataclass(frozen=True)
class MetricsRow(_CsvRow):
    """The steps since the previous row of metrics.csv (`RunLog.step`)."""

    FILE: ClassVar[str] = "metrics.csv"

    step: int = _column(names.STEP, required=True)
    tokens_seen: int = _column(names.TOKENS_SEEN)
    learning_rate: float = _column(names.LEARNING_RATE)
    train_loss: float = _column(names.TRAIN_LOSS, required=True)  # the mean of the steps' batch losses
    grad_norm: float = _column(names.GRAD_NORM)
    tokens_per_s: float = _column(names.TOKENS_PER_S)
    time_elapsed: float = _column(names.ELAPSED, required=True)


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
            header = [_current_name(name) for name in reader.fieldnames or []]
            missing = [name for name in row_type.required_columns() if name not in header]
            if missing:
                raise FhaError(f"{path}: corrupt log (missing column {', '.join(missing)})")
            lines = [{_current_name(key): value for key, value in row.items() if key is not None} for row in reader]
    except (UnicodeDecodeError, csv.Error) as err:
        raise FhaError(f"{path}: corrupt log (not text: {one_line(err)})") from None
    return [row_type.from_cells(cells, path, line) for line, cells in enumerate(lines, start=2)]  # 1: header


def _current_name(header: str) -> str:
    """A column header as the vocabulary names it (logs written before it say ``Validation Loss``)."""
    header = header.strip()
    return names.OLD_NAMES.get(header, header)


def read_evaluations(path: str | Path) -> list[LogRow]:
    """The evaluations of a log_data.csv."""
    return read_rows(path, LogRow)


def _step_of(row: list[str], path: Path) -> int:
    try:
        return int(row[0])
    except ValueError:
        raise FhaError(f"{path}: malformed row {row!r} (the {names.STEP} column must be a whole number)") from None


class LogBook:
    """Appends rows of one type to its CSV file, keeping the file consistent across resumes; rank 0 only."""

    def __init__(self, path: str | Path, row_type: type[_CsvRow] = LogRow) -> None:
        self.path = Path(path)
        self.row_type = row_type

    def start(self, previous: Path | None = None, up_to_step: int | None = None) -> None:
        """Begin the file: empty, or the rows of `previous` with a step <= `up_to_step` (a resume).

        Rows after the resumed step came from the interrupted run and are replaced by the new ones.
        A previous file with other columns is not carried over; one with the same columns under
        the names of logs written before the vocabulary is, under the current header. The kept
        rows are copied as text, so they stay byte for byte what the interrupted run wrote.
        """
        columns = self.row_type.columns()
        rows: list[list[str]] = []
        if previous is not None and previous.is_file():
            try:
                with open(previous, newline="", encoding="utf-8") as handle:
                    reader = csv.reader(handle)
                    header = next(reader, None)
                    if header is not None and [_current_name(name) for name in header] == list(columns):
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


# ---------------------------------------------------------------------- the run log


def _tags(row_type: type[_CsvRow], group: str, fields: Sequence[str]) -> dict[str, str]:
    """The tracker tags of some fields of a row type: ``group/column``."""
    columns = {field.name: field.metadata[COLUMN] for field in dataclasses.fields(row_type)}
    return {name: f"{group}/{columns[name]}" for name in fields}


# what the trackers receive of one metrics row (train/...) and of one evaluation (eval/...)
STEP_TAGS = _tags(MetricsRow, "train", ("tokens_seen", "learning_rate", "train_loss", "grad_norm", "tokens_per_s"))
EVAL_TAGS = _tags(LogRow, "eval", ("train_loss", "val_loss", "perplexity"))
SPEED_SMOOTHING = 0.9  # weight of the running average of tokens/s shown in the progress bar
MIN_SECONDS = 1e-9  # the time an evaluation's speed is divided by when no step came before it
LARGEST_LOSS = math.log(sys.float_info.max)  # a larger loss has no float perplexity


@dataclasses.dataclass
class MetricsWindow:
    """Sums over the steps since the last metrics row."""

    steps: int = 0
    loss_sum: float = 0.0
    grad_norm_sum: float = 0.0
    tokens: int = 0
    seconds: float = 0.0

    def add(self, loss: float, grad_norm: float, tokens: int, seconds: float) -> None:
        self.steps += 1
        self.loss_sum += loss
        self.grad_norm_sum += grad_norm
        self.tokens += tokens
        self.seconds += seconds


class RunLog:
    """Everything a run reports as it trains: log_data.csv, metrics.csv, the trackers, the progress
    bar and the evaluation lines. Rank 0's writes and shows; on the other ranks (`enabled` False) it
    only keeps the metrics window, which a checkpoint saves and a resume restores.

    `tokens_per_step`: token positions of one global batch; `eval_windows`: how many random windows an
    evaluation reads (said in its line); `show_padding`: the bar shows the share of real targets.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        log_interval: int,
        tokens_per_step: int,
        eval_windows: int,
        show_padding: bool = False,
        trackers: Sequence[str] = (),
        enabled: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.log_interval = log_interval
        self.tokens_per_step = tokens_per_step
        self.eval_windows = eval_windows
        self.show_padding = show_padding
        self.tracker_names = tuple(trackers)
        self.enabled = enabled
        self.evaluations = LogBook(run_dir / LogRow.FILE, LogRow)
        self.metrics = LogBook(run_dir / MetricsRow.FILE, MetricsRow)
        self.window = MetricsWindow()
        self.trackers: list[Tracker] = []
        self.start_step = 0
        self._bar: Progress | None = None
        self._speed: float | None = None  # smoothed tokens/s of the steps, for the bar
        self._since_evaluation = (0, 0.0)  # real targets and seconds of the steps since the last evaluation

    def start(
        self, step: int, previous_run: Path | None = None, settings: Callable[[], Mapping[str, Any]] = dict
    ) -> None:
        """Begin at `step`: both CSV files empty, or holding `previous_run`'s rows up to `step` (a resume),
        and the trackers open, recording `settings()` as the run's configuration."""
        self.start_step = step
        if not self.enabled:
            return
        for book in (self.evaluations, self.metrics):
            book.start(previous_run / book.path.name if previous_run is not None else None, step)
        if self.tracker_names:
            self.trackers = open_trackers(self.tracker_names, self.run_dir, settings(), step)

    @contextlib.contextmanager
    def progress_bar(self, total_steps: int) -> Iterator[None]:
        """Show the steps taken inside the block as a bar (or plain lines); it closes when the block ends, so
        the finished bar stays above the messages that follow, drawn once."""
        self._bar = Progress(total_steps, "step", unit="step", initial=self.start_step, enabled=self.enabled)
        try:
            yield
        finally:
            self._bar.close()
            self._bar = None

    def step(
        self,
        step: int,
        *,
        learning_rate: float,
        loss: float,
        grad_norm: float,
        seconds: float,
        elapsed: float,
        real_tokens: int,
        real_fraction: float,
        final: bool = False,
    ) -> None:
        """Record optimiser step `step` (its rate, mean loss, gradient norm before clipping, its seconds and
        the run's so far, and the targets of its batch that count in the loss): a metrics row every
        `log_interval` steps and at the `final` one, and the bar moves on."""
        self.window.add(loss, grad_norm, self.tokens_per_step, seconds)
        tokens, spent = self._since_evaluation
        self._since_evaluation = (tokens + real_tokens, spent + seconds)
        if step % self.log_interval == 0 or final:
            window = self.window
            row = MetricsRow(
                step=step,
                tokens_seen=step * self.tokens_per_step,
                learning_rate=learning_rate,
                train_loss=window.loss_sum / window.steps,
                grad_norm=window.grad_norm_sum / window.steps,
                tokens_per_s=window.tokens / window.seconds if window.seconds > 0 else 0.0,
                time_elapsed=elapsed,
            )
            self.window = MetricsWindow()
            if self.enabled:
                self.metrics.append(row)
                self._send(row, STEP_TAGS)
        speed = real_tokens / seconds
        self._speed = speed if self._speed is None else SPEED_SMOOTHING * self._speed + (1 - SPEED_SMOOTHING) * speed
        if self._bar is not None:
            fields = {"loss": f"{loss:.4f}", "lr": format_lr(learning_rate), "tok/s": short_count(self._speed)}
            if self.show_padding:
                fields["real"] = f"{real_fraction:.0%}"  # share of positions that are not padding
            self._bar.set_fields(**fields)
            self._bar.update(1)

    def evaluation(
        self, step: int, *, learning_rate: float, train_loss: float, val_loss: float, elapsed: float
    ) -> LogRow:
        """Record the evaluation after `step` updates (the rate is that of the update that led there): a row
        of log_data.csv with the speed since the previous one, the trackers, and one line on the console."""
        tokens, spent = self._since_evaluation
        self._since_evaluation = (0, 0.0)
        row = LogRow(
            step=step,
            learning_rate=learning_rate,
            train_loss=train_loss,
            val_loss=val_loss,
            perplexity=math.exp(min(val_loss, LARGEST_LOSS)),
            time_elapsed=elapsed,
            tokens_per_s=tokens / max(spent, MIN_SECONDS),
        )
        if self.enabled:
            self.evaluations.append(row)
            self._send(row, EVAL_TAGS)
            log.info("%s", self._evaluation_line(row))
        return row

    def _evaluation_line(self, row: LogRow) -> str:
        """``step 300: train loss 2.8100, val loss 2.8134, perplexity 16.67 (over 640 random windows), lr 5.03e-03,
        61,000 tokens/s``: the windows say these are estimates, not the whole-text loss of `fha eval`."""
        line = (
            f"step {row.step}: train loss {row.train_loss:.4f}, val loss {row.val_loss:.4f}, perplexity "
            f"{row.perplexity:.2f} (over {counted(self.eval_windows, 'random window')}), lr "
            f"{format_lr(row.learning_rate)}"
        )
        if row.step > self.start_step:  # no speed before the first step of this call
            line += f", {row.tokens_per_s:,.0f} tokens/s"
        return line

    def _send(self, row: LogRow | MetricsRow, tags: Mapping[str, str]) -> None:
        values = {tag: float(getattr(row, name)) for name, tag in tags.items()}
        for tracker in self.trackers:
            tracker.log(row.step, values)

    def state_dict(self) -> dict[str, Any]:
        """The sums of the unfinished metrics row, for the checkpoint."""
        return dataclasses.asdict(self.window)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.window = MetricsWindow(**state)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
