"""What `fha compare` knows about one run, read from its folder, and seed groups of runs.

Only small files are read: model_config.json, train_config.json (optional; read as plain
JSON, with renamed fields under their current names), log_data.csv and metrics.csv
(optional). Parameter counts come from building the model on PyTorch's "meta" device, which
allocates nothing. A run still training or stopped (no model.safetensors yet) is read all
the same and marked unfinished.

Seed groups: runs whose model configs are equal, whose train configs are equal in every
field except ``seed``, and which used the same tokenizer and data (run_info.json) are
repeats of one experiment. Runs without a train_config.json are never grouped, since
nothing says how they were trained.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fha.compare.names import group_labels
from fha.config import ModelConfig
from fha.errors import FhaError
from fha.files import existing_folder
from fha.model.gpt import GPT
from fha.runs.folder import LOG_FILE, METRICS_FILE, MODEL_CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, TRAIN_CONFIG_FILE
from fha.runs.info import read_run_info
from fha.runs.logbook import LogRow, MetricsRow, read_rows
from fha.tokenizer import Tokenizer
from fha.train_config import TrainConfig

# Train config fields that size one optimizer step, and the one that repeats differ in.
BATCH_SIZE, GRAD_ACCUM, SEED = "batch_size", "grad_accum_steps", "seed"
EVAL_SAMPLES, DEFAULT_EVAL_SAMPLES = "eval_samples", 20  # TrainConfig's default, read without the training code
HELD_OUT_PREFIX = "held_out:"  # metric names of SeedGroup.spread that come from RunSummary.held_out


@dataclass(frozen=True)
class TrainingLog:
    """The columns of log_data.csv that compare uses, one entry per evaluation."""

    step: np.ndarray  # int64
    train_loss: np.ndarray  # float64; NaN where a row left it empty
    val_loss: np.ndarray
    time_s: np.ndarray
    tokens_per_s: np.ndarray  # all NaN when the log has no tokens_per_s column

    @classmethod
    def of_rows(cls, rows: Sequence[LogRow | MetricsRow]) -> TrainingLog:
        """The rows' columns; those of metrics.csv have no validation loss (all NaN)."""

        def column(name: str) -> np.ndarray:
            return np.array([getattr(row, name, math.nan) for row in rows], dtype=np.float64)

        return cls(
            column("step").astype(np.int64),
            column("train_loss"),
            column("val_loss"),
            column("time_elapsed"),
            column("tokens_per_s"),
        )

    def after(self, first_step: float) -> TrainingLog:
        """The rows with step >= first_step."""
        keep = self.step >= first_step
        return TrainingLog(
            *(column[keep] for column in (self.step, self.train_loss, self.val_loss, self.time_s, self.tokens_per_s))
        )


def read_log(path: Path) -> TrainingLog:
    """Parse log_data.csv; a missing file, missing column or unreadable number is an FhaError."""
    if not path.is_file():
        raise FhaError(f"{path.parent}: no {path.name} (the run has not logged an evaluation yet)")
    rows = read_rows(path, LogRow)
    if not rows:
        raise FhaError(f"{path}: the log has no rows")
    return TrainingLog.of_rows(rows)


def read_metrics_log(path: Path) -> TrainingLog | None:
    """Parse metrics.csv (training loss every log_interval steps) as a TrainingLog without
    validation losses; None when the run has none (older runs). Bad content is an FhaError."""
    if not path.is_file():
        return None
    return TrainingLog.of_rows(read_rows(path, MetricsRow))


@dataclass
class RunSummary:
    """One run as compare reports it."""

    name: str
    path: Path
    model_config: ModelConfig
    train_config: dict[str, Any] | None
    log: TrainingLog
    num_parameters: int
    num_non_embedding: int
    held_out: dict[str, float] = field(default_factory=dict)  # evaluate() metrics when --data is given
    finished: bool = True  # False while the run has no final weights (still training, or stopped)
    metrics: TrainingLog | None = None  # metrics.csv's rows (val_loss all NaN), when the run has one
    info: dict[str, Any] | None = None  # run_info.json (None for runs trained before it existed)
    tokenizer_fingerprint: str | None = None

    @property
    def data_key(self) -> str | None:
        """The digests of the training and validation data (None when run_info.json does not record them)."""
        data = (self.info or {}).get("data")
        if not data:
            return None
        parts = []
        for split in ("train", "val"):
            entry = data.get(split, {})
            parts.append(f"{split} {entry.get('sha256') or json.dumps(entry, sort_keys=True)}")
        return ", ".join(parts)

    @property
    def eval_windows(self) -> int | None:
        """Windows behind each logged loss: eval_samples batches of batch_size (per process)."""
        if self.train_config is None or BATCH_SIZE not in self.train_config:
            return None
        return int(self.train_config.get(EVAL_SAMPLES, DEFAULT_EVAL_SAMPLES)) * int(self.train_config[BATCH_SIZE])

    @property
    def final_val_loss(self) -> float:
        """The last logged validation loss (NaN if none was logged)."""
        logged = self.log.val_loss[~np.isnan(self.log.val_loss)]
        return float(logged[-1]) if len(logged) else math.nan

    @property
    def final_perplexity(self) -> float:
        return math.exp(self.final_val_loss) if not math.isnan(self.final_val_loss) else math.nan

    @property
    def steps(self) -> int:
        """Optimizer steps done: the step of the last log row."""
        return int(self.log.step[-1])

    @property
    def tokens_per_step(self) -> int | None:
        """batch_size x grad_accum_steps x max_seq_len (training windows fill the context), or
        None without a train config."""
        if self.train_config is None or BATCH_SIZE not in self.train_config:
            return None
        return (
            int(self.train_config[BATCH_SIZE])
            * int(self.train_config.get(GRAD_ACCUM, 1))
            * self.model_config.max_seq_len
        )

    @property
    def tokens_seen(self) -> int | None:
        per_step = self.tokens_per_step
        return None if per_step is None else per_step * self.steps

    @property
    def wall_time_s(self) -> float:
        return float(self.log.time_s[-1])

    @property
    def tokens_per_s(self) -> float:
        """Training throughput over the whole run.

        Each tokens_per_s entry is the rate of the interval since the previous row (the first
        row, at step 0, has none and logs 0), so the rates are averaged weighted by the
        intervals' lengths in elapsed_s: that is tokens trained / training time, even
        for data-parallel runs whose global batch the train config does not show. A log
        without the column falls back to tokens seen / wall time.
        """
        durations = np.diff(self.log.time_s)  # (rows - 1,) seconds of each interval
        rates = self.log.tokens_per_s[1:]
        usable = ~np.isnan(rates) & ~np.isnan(durations) & (durations > 0)
        if usable.any():
            return float((rates[usable] * durations[usable]).sum() / durations[usable].sum())
        if self.tokens_seen is None or not self.wall_time_s > 0:
            return math.nan
        return self.tokens_seen / self.wall_time_s

    def experiment_key(self) -> str | None:
        """Equal for runs that differ only in their seed; None for runs never grouped."""
        if self.train_config is None:
            return None
        train = {key: value for key, value in self.train_config.items() if key != SEED}
        return json.dumps(
            [self.model_config.to_dict(), train, self.tokenizer_fingerprint, self.data_key], sort_keys=True, default=str
        )


def load_summary(path: str | Path, name: str | None = None) -> RunSummary:
    """Read a run folder (model_config.json, log_data.csv; train_config.json, metrics.csv optional)."""
    path = _run_folder(path)
    config = ModelConfig.from_json(path / MODEL_CONFIG_FILE)
    train_config = _read_train_config(path / TRAIN_CONFIG_FILE)
    log = read_log(path / LOG_FILE)
    info = read_run_info(path)
    fingerprint = (info or {}).get("tokenizer_fingerprint")
    if fingerprint is None and (path / TOKENIZER_FILE).is_file():
        fingerprint = Tokenizer.load(path / TOKENIZER_FILE).fingerprint
    with torch.device("meta"):  # counts parameters without allocating them
        model = GPT(config)
    return RunSummary(
        name=name if name is not None else path.resolve().name,
        path=path,
        model_config=config,
        train_config=train_config,
        log=log,
        num_parameters=model.num_parameters(),
        num_non_embedding=model.num_parameters(non_embedding=True),
        finished=(path / MODEL_FILE).is_file(),
        metrics=read_metrics_log(path / METRICS_FILE),
        info=info,
        tokenizer_fingerprint=fingerprint,
    )


def _run_folder(path: str | Path) -> Path:
    """A folder with a model config; its weights may be missing (an unfinished run)."""
    path = existing_folder(path, "run folder", "not a run folder (it is a file)")
    if not (path / MODEL_CONFIG_FILE).is_file():
        raise FhaError(f"{path}: not a run folder (no {MODEL_CONFIG_FILE})")
    return path


def _read_train_config(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = TrainConfig.json_fields(path)  # runs written before a field was renamed group with newer ones
    for key in (BATCH_SIZE, GRAD_ACCUM):
        value = data.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FhaError(f"{path}: {key} must be a positive whole number, got {value!r}")
    return data


@dataclass(frozen=True)
class Spread:
    """Mean and spread of one metric over the runs of a seed group."""

    mean: float
    std: float  # sample standard deviation (n - 1 in the denominator)
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        array = np.asarray(values, dtype=np.float64)
        std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
        return cls(float(array.mean()), std, float(array.min()), float(array.max()))


@dataclass
class SeedGroup:
    """Runs of one experiment with different seeds (two or more)."""

    label: str
    runs: list[RunSummary]

    def spread(self, metric: str) -> Spread:
        """Spread of a RunSummary attribute (``"final_val_loss"``) or held-out metric (``"held_out:loss"``)."""
        return Spread.of([_metric(run, metric) for run in self.runs])


def _metric(run: RunSummary, metric: str) -> float:
    if metric.startswith(HELD_OUT_PREFIX):
        return run.held_out[metric.removeprefix(HELD_OUT_PREFIX)]
    return float(getattr(run, metric))


def seed_groups(runs: Sequence[RunSummary]) -> list[SeedGroup]:
    """Groups of two or more runs with the same `experiment_key`, in the order of their first run."""
    members: dict[str, list[RunSummary]] = {}
    for run in runs:
        key = run.experiment_key()
        if key is not None:
            members.setdefault(key, []).append(run)
    groups = [group for group in members.values() if len(group) > 1]
    labels = group_labels([[run.name for run in group] for group in groups])
    return [SeedGroup(label, group) for label, group in zip(labels, groups, strict=True)]
