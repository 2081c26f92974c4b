"""Per-step training metrics: ``metrics.csv`` every `log_interval` steps, and optional trackers.

A row of ``metrics.csv`` summarises the steps since the previous row: the mean training loss
of their batches, their mean gradient norm (before clipping), the learning rate of the last
one, and their throughput. `Tokens Seen` counts the token positions of every batch so far
(``step x global batch x max_seq_len``). The sums over an unfinished window travel in the
checkpoint, so a resumed run writes exactly the rows of the uninterrupted one (on CPU).

Evaluations (the rows of ``log_data.csv``) and the metrics rows also go to the trackers
chosen with ``fha train --log-to`` (TensorBoard, Weights & Biases; `fha.runs.trackers`).
The CSV files are always written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fha.runs.folder import METRICS_FILE
from fha.runs.logbook import METRICS_COLUMNS, LogBook, LogRow, MetricsRow
from fha.runs.trackers import Tracker

__all__ = ["METRICS_COLUMNS", "METRICS_FILE", "MetricsWindow", "RunLogger"]
# tracker names of the fields of one metrics row and one evaluation (log_data.csv) row
STEP_TAGS = {
    "tokens_seen": "train/tokens_seen",
    "learning_rate": "train/lr",
    "train_loss": "train/loss",
    "grad_norm": "train/grad_norm",
    "tokens_per_s": "train/tokens_per_s",
}
EVAL_TAGS = {"train_loss": "eval/train_loss", "val_loss": "eval/val_loss", "perplexity": "eval/perplexity"}


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


class RunLogger:
    """Writes metrics.csv and feeds the trackers; on ranks other than 0 it only keeps the window."""

    def __init__(
        self,
        run_dir: Path,
        log_interval: int,
        tokens_per_step: int,
        trackers: Sequence[Tracker] = (),
        enabled: bool = True,
    ) -> None:
        self.log_interval = log_interval
        self.tokens_per_step = tokens_per_step
        self.trackers = list(trackers)
        self.enabled = enabled
        self.book = LogBook(run_dir / METRICS_FILE, MetricsRow)
        self.window = MetricsWindow()

    def start(self, previous_run: Path | None, step: int) -> None:
        """Begin metrics.csv: empty, or the previous run's rows up to the resumed `step`."""
        if self.enabled:
            previous = previous_run / METRICS_FILE if previous_run is not None else None
            self.book.start(previous, step)

    def record_step(
        self,
        step: int,
        lr: float,
        loss: float,
        grad_norm: float,
        seconds: float,
        elapsed: float,
        *,
        final: bool = False,
    ) -> MetricsRow | None:
        """Count one optimiser step; returns the metrics row when one is due (every `log_interval`
        steps, and at the last step)."""
        self.window.add(loss, grad_norm, self.tokens_per_step, seconds)
        if step % self.log_interval and not final:
            return None
        window = self.window
        row = MetricsRow(
            step=step,
            tokens_seen=step * self.tokens_per_step,
            learning_rate=lr,
            train_loss=window.loss_sum / window.steps,
            grad_norm=window.grad_norm_sum / window.steps,
            tokens_per_s=window.tokens / window.seconds if window.seconds > 0 else 0.0,
            time_elapsed=elapsed,
        )
        self.window = MetricsWindow()
        if self.enabled:
            self.book.append(row)
            self._send(row, STEP_TAGS)
        return row

    def record_eval(self, row: LogRow) -> None:
        """Send an evaluation (a log_data.csv row) to the trackers."""
        if self.enabled:
            self._send(row, EVAL_TAGS)

    def _send(self, row: LogRow | MetricsRow, tags: Mapping[str, str]) -> None:
        values = {tag: float(getattr(row, name)) for name, tag in tags.items()}
        for tracker in self.trackers:
            tracker.log(row.step, values)

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.window)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.window = MetricsWindow(**state)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
