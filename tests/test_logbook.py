"""The log files' row types: what is written reads back as the same row, and logs written
before the row types and the metric vocabulary existed read as they always did."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from fha.compare import read_log as compare_read_log
from fha.errors import FhaError
from fha.runs.logbook import COLUMNS, METRICS_COLUMNS, LogBook, LogRow, MetricsRow, read_evaluations, read_rows

# A log_data.csv as fha wrote it before LogRow and the metric vocabulary existed (header and number formats).
OLD_ROWS = "0,1e-05,4.158883476257324,4.1588,63.99,0.0,0.0\r\n2,0.0094,3.9,3.95,51.935,1.25,1234.5\r\n"
OLD_LOG = "Step,Learning Rate,Train Loss,Validation Loss,Perplexity,Time Elapsed,Tokens/s\r\n" + OLD_ROWS
NEW_HEADER = "step,learning_rate,train_loss_nats,val_loss_nats,val_perplexity,elapsed_s,tokens_per_s\r\n"
OLD_METRICS = (
    "Step,Tokens Seen,Learning Rate,Train Loss,Grad Norm,Tokens/s,Time Elapsed\n3,192,0.01,4.0,0.5,100.0,0.75\n"
)
ROW = LogRow(
    step=4,
    learning_rate=0.003,
    train_loss=3.25,
    val_loss=3.5,
    perplexity=math.exp(3.5),
    time_elapsed=2.5,
    tokens_per_s=987.25,
)


def test_the_columns_on_disk_are_the_metric_vocabulary():
    assert COLUMNS == (
        "step",
        "learning_rate",
        "train_loss_nats",
        "val_loss_nats",
        "val_perplexity",
        "elapsed_s",
        "tokens_per_s",
    )
    assert METRICS_COLUMNS == (
        "step",
        "tokens_seen",
        "learning_rate",
        "train_loss_nats",
        "grad_norm",
        "tokens_per_s",
        "elapsed_s",
    )


def test_a_written_row_reads_back_equal(tmp_path):
    book = LogBook(tmp_path / "log_data.csv", LogRow)
    book.start()
    book.append(ROW)
    book.append(dataclasses.replace(ROW, step=6, val_loss=1 / 3))  # a float repr needs all its digits
    assert read_evaluations(tmp_path / "log_data.csv") == [ROW, dataclasses.replace(ROW, step=6, val_loss=1 / 3)]
    metrics = MetricsRow(
        step=3,
        tokens_seen=192,
        learning_rate=0.01,
        train_loss=4.0,
        grad_norm=0.5,
        tokens_per_s=100.0,
        time_elapsed=0.75,
    )
    book = LogBook(tmp_path / "metrics.csv", MetricsRow)
    book.start()
    book.append(metrics)
    (read,) = read_rows(tmp_path / "metrics.csv", MetricsRow)
    assert read == metrics and isinstance(read.step, int) and isinstance(read.tokens_seen, int)


def test_a_log_in_the_old_format_reads_and_its_rows_are_written_byte_for_byte(tmp_path):
    path = tmp_path / "log_data.csv"
    path.write_bytes(OLD_LOG.encode())
    rows = read_evaluations(path)
    assert rows == [
        LogRow(0, 1e-05, 4.158883476257324, 4.1588, 63.99, 0.0, 0.0),
        LogRow(2, 0.0094, 3.9, 3.95, 51.935, 1.25, 1234.5),
    ]
    assert isinstance(rows[0].step, int)
    book = LogBook(tmp_path / "again.csv", LogRow)
    book.start()
    for row in rows:
        book.append(row)
    assert (tmp_path / "again.csv").read_bytes() == (NEW_HEADER + OLD_ROWS).encode()
    assert read_evaluations(tmp_path / "again.csv") == rows
    (tmp_path / "metrics.csv").write_text(OLD_METRICS)
    (metrics,) = read_rows(tmp_path / "metrics.csv", MetricsRow)
    assert metrics == MetricsRow(3, 192, 0.01, 4.0, 0.5, 100.0, 0.75)


def test_a_resume_keeps_the_rows_up_to_its_step_as_written(tmp_path):
    previous = tmp_path / "previous.csv"
    previous.write_bytes(OLD_LOG.encode())
    book = LogBook(tmp_path / "log_data.csv", LogRow)
    book.start(previous, up_to_step=1)  # a run from before the vocabulary: its rows go on under the new header
    book.append(ROW)
    assert book.path.read_bytes().startswith((NEW_HEADER + OLD_ROWS.splitlines(keepends=True)[0]).encode())
    assert read_evaluations(book.path) == [read_evaluations(previous)[0], ROW]
    again = LogBook(tmp_path / "resumed-again.csv", LogRow)
    again.start(book.path, up_to_step=4)
    assert again.path.read_bytes() == book.path.read_bytes()


def test_an_older_log_without_tokens_per_second_reads_as_nan(tmp_path):
    path = tmp_path / "log_data.csv"
    path.write_text(
        "Step,Learning Rate,Train Loss,Validation Loss,Perplexity,Time Elapsed\n"
        "0,0.001,4.0,4.1,60.3,0.0\n10,0.002,3.0,,20.1,5.0\n"
    )
    first, second = read_evaluations(path)
    assert math.isnan(first.tokens_per_s) and math.isnan(second.val_loss) and second.train_loss == 3.0
    log = compare_read_log(path)
    assert list(log.step) == [0, 10] and all(math.isnan(rate) for rate in log.tokens_per_s)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Step,Train Loss\n0,4.0\n", "corrupt log (missing column val_loss_nats, elapsed_s)"),
        ("step,train_loss_nats\n0,4.0\n", "corrupt log (missing column val_loss_nats, elapsed_s)"),
        (
            "Step,Train Loss,Validation Loss,Time Elapsed\n0,4.0,x,1.0\n",
            "log_data.csv:2: corrupt log (val_loss_nats is 'x', not a number)",
        ),
        (
            "step,train_loss_nats,val_loss_nats,elapsed_s\n2.5,4.0,4.0,1.0\n",
            "log_data.csv:2: corrupt log (step is '2.5', not a whole number)",
        ),
        ("step,train_loss_nats,val_loss_nats,elapsed_s\n,4.0,4.0,1.0\n", "log_data.csv:2: corrupt log (no step)"),
    ],
)
def test_a_damaged_log_is_one_error_naming_the_problem(tmp_path: Path, text: str, message: str):
    path = tmp_path / "log_data.csv"
    path.write_text(text)
    with pytest.raises(FhaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_evaluations(path)


def test_rows_are_values():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ROW.step = 5  # type: ignore[misc]
