"""metrics.csv (per-step rows, exact across resumes) and the TensorBoard and W&B trackers."""

from __future__ import annotations

import csv
import json
import struct
import sys
import time
from pathlib import Path

import pytest
from train_helpers import run_tiny, tiny_model_config, tiny_train_config

from fha.errors import FhaError
from fha.runs import trackers
from fha.runs.checkpoint import load_checkpoint
from fha.runs.folder import METRICS_FILE
from fha.runs.logbook import METRICS_COLUMNS
from fha.runs.trackers import TENSORBOARD_DIR, WANDB_DIR
from fha.train.loop import TrainRequest, train
from fha.train.schedule import LRSchedule

BATCH_SIZE, SEQ_LEN = 4, 16  # train_helpers' tiny configs
EXACT = ("step", "tokens_seen", "learning_rate", "train_loss_nats", "grad_norm")  # not timings


def read_rows(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == METRICS_COLUMNS
        return [{key: float(value) for key, value in row.items()} for row in reader]


def exact(rows: list[dict[str, float]]) -> list[tuple[float, ...]]:
    return [tuple(row[key] for key in EXACT) for row in rows]


@pytest.mark.slow
def test_metrics_rows_average_the_steps_since_the_last_row(corpus, tmp_path):
    every_step = read_rows(run_tiny(corpus, tmp_path / "one", log_interval=1).run_dir / METRICS_FILE)
    assert [row["step"] for row in every_step] == [1, 2, 3, 4, 5, 6]
    schedule = LRSchedule.from_config(tiny_train_config())
    for row in every_step:
        assert row["tokens_seen"] == row["step"] * BATCH_SIZE * SEQ_LEN
        assert row["learning_rate"] == schedule(int(row["step"]) - 1)  # the rate of the update that led there
        assert row["grad_norm"] > 0 and row["tokens_per_s"] > 0

    # every 4 steps: a row at 4 (mean of steps 1-4) and one at the end (mean of steps 5-6)
    grouped = read_rows(run_tiny(corpus, tmp_path / "four", log_interval=4).run_dir / METRICS_FILE)
    assert [row["step"] for row in grouped] == [4, 6]
    for row, members in zip(grouped, (every_step[0:4], every_step[4:6]), strict=True):
        for key in ("train_loss_nats", "grad_norm"):
            assert row[key] == pytest.approx(sum(m[key] for m in members) / len(members), rel=1e-12)
        assert row["learning_rate"] == members[-1]["learning_rate"]


@pytest.mark.slow
def test_resumed_metrics_equal_the_uninterrupted_run(corpus, tmp_path):
    """The checkpoint at step 3 is inside a 4-step window; its sums travel with it."""
    full = run_tiny(corpus, tmp_path / "full", log_interval=4, checkpoint_interval=3)
    checkpoint = load_checkpoint(full.run_dir / "checkpoints" / "step-3")
    resumed = train(
        TrainRequest(
            checkpoint.model_config,
            checkpoint.train_config,
            str(corpus),
            tmp_path / "resumed",
            device="cpu",
            resume=checkpoint,
        )
    )
    assert exact(read_rows(resumed.run_dir / METRICS_FILE)) == exact(read_rows(full.run_dir / METRICS_FILE))


def test_log_interval_must_be_positive():
    with pytest.raises(ValueError, match="^log_interval must be positive, got 0$"):
        tiny_train_config(log_interval=0)


def test_unknown_or_missing_tracker_is_a_clear_error(corpus, tmp_path, monkeypatch):
    def start(trackers: tuple[str, ...], out: str) -> None:
        train(
            TrainRequest(
                tiny_model_config(), tiny_train_config(), str(corpus), tmp_path / out, device="cpu", trackers=trackers
            )
        )

    with pytest.raises(FhaError, match=r"^`log_to` mlflow: unknown tracker \(choose from tensorboard, wandb\)$"):
        start(("mlflow",), "a")
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if the extra were not installed
    with pytest.raises(FhaError, match=r"^`log_to` wandb: the wandb package is not installed \(pip install"):
        start(("wandb",), "b")


class RecordingTracker:
    """A tracker that keeps what it is sent (every instance, in `opened`)."""

    opened: list[RecordingTracker] = []

    def __init__(self, run_dir: Path, config: dict, start_step: int) -> None:
        self.config, self.start_step, self.logged, self.closed = config, start_step, [], False
        RecordingTracker.opened.append(self)

    def log(self, step: int, values: dict) -> None:
        self.logged.append((step, dict(values)))

    def close(self) -> None:
        self.closed = True


def test_trackers_get_every_csv_row_and_start_at_the_resumed_step(corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(trackers.TRACKERS, "recording", RecordingTracker)
    monkeypatch.setattr(RecordingTracker, "opened", [])
    configs = _tiny_configs(log_interval=3, checkpoint_interval=4)
    run = train(TrainRequest(*configs, str(corpus), tmp_path / "run", device="cpu", trackers=("recording",)))
    (tracker,) = RecordingTracker.opened
    assert tracker.closed and tracker.start_step == 0
    assert tracker.config["max_steps"] == 6 and tracker.config["dim"] == configs[0].dim
    assert tracker.config["data"] == str(corpus)
    metrics = read_rows(run.run_dir / METRICS_FILE)
    steps = [(step, sorted(values)) for step, values in tracker.logged]
    eval_tags = ["eval/train_loss_nats", "eval/val_loss_nats", "eval/val_perplexity"]
    train_tags = sorted(
        ["train/tokens_seen", "train/learning_rate", "train/train_loss_nats", "train/grad_norm", "train/tokens_per_s"]
    )
    # evaluations every 2 steps, metrics rows every 3, in the order they happen
    assert steps == [(0, eval_tags), (2, eval_tags), (3, train_tags), (4, eval_tags), (6, train_tags), (6, eval_tags)]
    sent = {step: values for step, values in tracker.logged if "train/train_loss_nats" in values}
    for row in metrics:
        assert sent[row["step"]]["train/train_loss_nats"] == row["train_loss_nats"]
        assert sent[row["step"]]["train/tokens_per_s"] == row["tokens_per_s"]
    evaluations = [values for step, values in tracker.logged if "eval/val_loss_nats" in values]
    assert [values["eval/val_loss_nats"] for values in evaluations] == [row.val_loss for row in run.history]

    checkpoint = load_checkpoint(run.run_dir / "checkpoints" / "step-4")
    train(
        TrainRequest(
            *configs, str(corpus), tmp_path / "resumed", device="cpu", resume=checkpoint, trackers=("recording",)
        )
    )
    resumed = RecordingTracker.opened[-1]
    assert resumed.start_step == 4 and resumed.closed
    assert [step for step, _ in resumed.logged] == [6, 6]


def test_tensorboard_reader_loads_the_scalars(corpus, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(
        TrainRequest(
            *_tiny_configs(log_interval=2), str(corpus), tmp_path / "run", device="cpu", trackers=("tensorboard",)
        )
    )
    events = EventAccumulator(str(run.run_dir / TENSORBOARD_DIR))
    events.Reload()
    metrics = read_rows(run.run_dir / METRICS_FILE)
    for column in ("train_loss_nats", "grad_norm", "learning_rate"):
        tag = f"train/{column}"
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [int(row["step"]) for row in metrics] == [2, 4, 6]
        assert [s.value for s in scalars] == pytest.approx([row[column] for row in metrics], rel=1e-6)  # float32
    evals = events.Scalars("eval/val_loss_nats")
    assert [s.step for s in evals] == [h.step for h in run.history] == [0, 2, 4, 6]
    assert [s.value for s in evals] == pytest.approx([h.val_loss for h in run.history], rel=1e-6)


def test_offline_wandb_run_records_the_metrics(corpus, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    run = train(
        TrainRequest(*_tiny_configs(log_interval=3), str(corpus), tmp_path / "run", device="cpu", trackers=("wandb",))
    )
    (log_file,) = (run.run_dir / WANDB_DIR).glob("offline-run-*/run-*.wandb")
    records = _finished_wandb_log(log_file, wandb_internal_pb2.Record)
    history = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item}
            history[row["_step"]] = row
    metrics = read_rows(run.run_dir / METRICS_FILE)
    assert sorted(history) == [0, 2, 3, 4, 6]  # evaluations every 2 steps, metrics every 3
    for row in metrics:
        assert history[row["step"]]["train/train_loss_nats"] == row["train_loss_nats"]
        assert history[row["step"]]["train/tokens_seen"] == row["tokens_seen"]
    for row in run.history:
        assert history[row.step]["eval/val_loss_nats"] == row.val_loss


WANDB_HEADER = 7  # ":W&B", a 2-byte magic number and a version byte
WANDB_BLOCK = 32768  # the log is cut into blocks; a record header never straddles two
RECORD_HEADER = struct.Struct("<IHB")  # checksum, length, kind
FULL, LAST = 1, 4  # kinds of a record's last (or only) piece
WANDB_FLUSH_WAIT_S = 60.0
WANDB_POLL_S = 0.1


def _finished_wandb_log(path: Path, record_type: type) -> list:
    """The parsed records of a W&B log, once its writer (a separate process, which may still be
    flushing when `finish` returns) has written the final "exit" record."""
    deadline = time.monotonic() + WANDB_FLUSH_WAIT_S
    while True:
        records = []
        for data in _wandb_records(path):
            record = record_type()
            record.ParseFromString(data)
            records.append(record)
        if any(record.WhichOneof("record_type") == "exit" for record in records) or time.monotonic() > deadline:
            return records
        time.sleep(WANDB_POLL_S)


def _wandb_records(path: Path) -> list[bytes]:
    """The records of a W&B transaction log (LevelDB's log format), read the plain way."""
    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    records, pieces, pos = [], b"", WANDB_HEADER
    while pos + RECORD_HEADER.size <= len(raw):
        left = WANDB_BLOCK - pos % WANDB_BLOCK
        if left < RECORD_HEADER.size:
            pos += left  # padding at the end of a block
            continue
        _, length, kind = RECORD_HEADER.unpack_from(raw, pos)
        if length == 0 and kind == 0:
            pos += left
            continue
        pieces += raw[pos + RECORD_HEADER.size : pos + RECORD_HEADER.size + length]
        pos += RECORD_HEADER.size + length
        if kind in (FULL, LAST):
            records.append(pieces)
            pieces = b""
    return records


def _tiny_configs(**train_changes):
    return tiny_model_config(), tiny_train_config(**train_changes)
