"""Training and evaluating the cells of one trunk, in this process or in a worker process.

A *trunk* is the cells of one variant, rate, seed pair and role, differing only in budget.
The largest budget is trained first; each smaller budget then resumes from the latest
checkpoint of that run at which the two runs' configs and learning rates have agreed on
every step so far (with a WSD schedule and warmup given in steps: the stable phase), so
it is bit for bit the run it would be if trained on its own, at a fraction of the cost.
Where no such checkpoint exists (a cosine schedule, or the run folder deleted), the budget
is trained from scratch. Each finished cell is evaluated on the whole validation and test
texts and the training sample, and written to the ledger.

Worker processes die with the study: they ask the kernel for SIGTERM when their parent dies
(Linux) and also watch their parent's pid; SIGTERM, like Ctrl-C, makes a training write a
checkpoint and stop, and the worker then exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fha import metric_names as names
from fha.config import ModelConfig
from fha.errors import FhaError, one_line
from fha.evaluation import evaluate
from fha.files import write_json_atomic
from fha.runs.checkpoint import Checkpoint, list_checkpoints, load_checkpoint
from fha.runs.folder import (
    LOG_FILE,
    METRICS_FILE,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    TRAIN_CONFIG_FILE,
    load_model_and_tokenizer,
)
from fha.runs.info import read_run_info
from fha.runs.logbook import LogRow, MetricsRow, read_rows
from fha.study.layout import EVAL_FILE, TOKENIZER_FILE, run_dir, worker_log
from fha.study.ledger import SPLITS, ledger_metrics, write_entry
from fha.study.plan import CellPlan
from fha.study.prepare import data_digests, evaluation_texts, study_documents
from fha.study.spec import LOG_ONLY, StudySpec
from fha.study.workers import STOP_STARTING_SIGNAL
from fha.tokenizer import Tokenizer
from fha.train.loop import TrainingDiverged, TrainRequest, train
from fha.train.schedule import LRSchedule
from fha.train_config import TrainConfig

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies (Linux)
PARENT_WATCH_S = 1.0
STOPPED_EXIT = 130  # a worker stopped by a signal after checkpointing


@dataclass(frozen=True)
class TrunkTask:
    """What a worker needs to train and evaluate one trunk (plain data, so it pickles)."""

    plans: tuple[CellPlan, ...]  # every budget of the trunk, largest first
    todo: frozenset[str]  # fingerprints of the cells still to do
    out_dir: Path
    spec: StudySpec
    threads: int
    device: str
    redirect_output: bool

    @property
    def label(self) -> str:
        return self.plans[0].cell.run_id.rsplit("/", 1)[0]


@dataclass(frozen=True)
class CellOutcome:
    plan: CellPlan
    error: str | None = None  # None: in the ledger (finished or diverged)


def execute_trunk(task: TrunkTask) -> list[CellOutcome]:
    """Train and evaluate the trunk's cells still to do; failures come back as outcomes."""
    with contextlib.ExitStack() as stack:
        if task.redirect_output:
            stack.enter_context(_output_to(worker_log(task.out_dir, task.plans[0])))
        torch.set_num_threads(task.threads)
        tokenizer = Tokenizer.load(task.out_dir / TOKENIZER_FILE)
        texts = None
        outcomes = []
        trunk_folder = run_dir(task.out_dir, task.plans[0])
        for plan in task.plans:
            if plan.fingerprint not in task.todo:
                continue
            log.info("%s: training (%d threads)", plan.cell.run_id, task.threads)
            try:
                if texts is None:
                    texts = evaluation_texts(task.spec, tokenizer, study_documents(task.spec), data_digests(task.spec))
                record = _train_and_evaluate(task, plan, tokenizer, texts, trunk_folder)
            except KeyboardInterrupt:
                if task.redirect_output:  # a worker: its parent is stopping or gone
                    logging.shutdown()
                    os._exit(STOPPED_EXIT)
                raise
            except Exception as err:
                log.debug("%s failed", plan.cell.run_id, exc_info=True)
                outcomes.append(CellOutcome(plan, one_line(err)))
                continue
            write_entry(task.out_dir, plan, record)
            outcomes.append(CellOutcome(plan))
    return outcomes


def _train_and_evaluate(
    task: TrunkTask, plan: CellPlan, tokenizer: Tokenizer, texts: dict[str, Any], trunk_folder: Path
) -> dict[str, Any]:
    folder = run_dir(task.out_dir, plan)
    started = time.time()
    branched_from = None
    try:
        if (folder / MODEL_FILE).is_file():
            _check_finished_folder(folder, plan)
        else:
            branched_from = _train(task, plan, tokenizer, folder, trunk_folder)
    except TrainingDiverged as err:
        log.warning("%s: diverged (%s)", plan.cell.run_id, err)
        return {"diverged": one_line(err), "finished": _now()}
    model, _ = load_model_and_tokenizer(folder, "cpu" if task.device == "auto" else task.device)
    metrics = {split: evaluate(model, texts[split]).to_dict() for split in SPLITS if split in texts}
    for split, values in metrics.items():
        if not all(math.isfinite(float(v)) for v in values.values()):
            return {"diverged": f"{split} metrics are not finite: {values}", "finished": _now()}
    curve, wall_time_s = _curve(folder, plan)
    write_json_atomic(folder / EVAL_FILE, metrics)
    log.info("%s: test bits/byte %.4f", plan.cell.run_id, metrics["test"][names.BITS_PER_BYTE])
    return {
        "metrics": {split: ledger_metrics(values) for split, values in metrics.items()},
        "parameters": model.num_parameters(),
        "curve": curve,
        "wall_time_s": wall_time_s,
        "run_info": read_run_info(folder) or {},
        "branched_from": branched_from,
        "finished": _now(),
        "seconds_this_call": round(time.time() - started, 1),
    }


def _train(
    task: TrunkTask, plan: CellPlan, tokenizer: Tokenizer, folder: Path, trunk_folder: Path
) -> dict[str, Any] | None:
    """Train the cell into `folder`: resumed from its own checkpoint, branched from the trunk's, or fresh.
    Returns where it branched from (None when it did not)."""
    resume, branched_from = _own_checkpoint(folder, plan), None
    if resume is None and folder != trunk_folder:
        resume = _trunk_checkpoint(trunk_folder, plan)
        if resume is not None:
            branched_from = {"run": trunk_folder.name, "step": resume.step}
            log.info("%s: branching from %s at step %d", plan.cell.run_id, trunk_folder, resume.step)
    folder.mkdir(parents=True, exist_ok=True)
    own = resume is not None and branched_from is None
    train(
        TrainRequest(
            plan.model_config,
            plan.train_config,
            task.spec.data.train,
            folder,
            val_data=task.spec.data.valid,
            tokenizer=None if resume is not None else tokenizer,
            device=task.device,
            overwrite=not own,
            resume=resume,
            continue_hint=f"run fha study run on the spec with --out {task.out_dir} again to continue",
        )
    )
    return branched_from


def _same_run(config: TrainConfig, other: TrainConfig) -> bool:
    """Equal apart from what only changes logging."""
    strip = dict.fromkeys(LOG_ONLY)
    return {**config.to_dict(), **strip} == {**other.to_dict(), **strip}


def _own_checkpoint(folder: Path, plan: CellPlan) -> Checkpoint | None:
    """The folder's latest checkpoint, if it belongs to this very cell."""
    checkpoints = list_checkpoints(folder)
    if not checkpoints:
        return None
    checkpoint = load_checkpoint(checkpoints[-1][1])
    if checkpoint.model_config != plan.model_config or not _same_run(checkpoint.train_config, plan.train_config):
        raise FhaError(f"{checkpoints[-1][1]}: its configs are not those of {plan.cell.run_id}; delete {folder}")
    return checkpoint


def branch_step(trunk: TrainConfig, branch: TrainConfig, steps: list[int]) -> int | None:
    """The latest of `steps` from which `branch` can continue `trunk` exactly: the configs differ only in
    `max_steps` and the learning rates agree on every step before it. None when there is none."""
    if not _same_run(trunk.replace(max_steps=branch.max_steps), branch):
        return None
    old, new = LRSchedule.from_config(trunk), LRSchedule.from_config(branch)
    agree = 0
    while agree < min(trunk.max_steps, branch.max_steps) and old(agree) == new(agree):
        agree += 1
    usable = [step for step in steps if 0 < step <= agree and step < branch.max_steps]
    return max(usable) if usable else None


def _trunk_checkpoint(trunk_folder: Path, plan: CellPlan) -> Checkpoint | None:
    checkpoints = dict(list_checkpoints(trunk_folder))
    if not checkpoints:
        return None
    latest = load_checkpoint(checkpoints[max(checkpoints)])
    if latest.model_config != plan.model_config:
        return None
    step = branch_step(latest.train_config, plan.train_config, sorted(checkpoints))
    return None if step is None else load_checkpoint(checkpoints[step])


def _check_finished_folder(folder: Path, plan: CellPlan) -> None:
    model_config = ModelConfig.from_json(folder / MODEL_CONFIG_FILE)
    train_config = TrainConfig.from_json(folder / TRAIN_CONFIG_FILE)
    if model_config != plan.model_config or not _same_run(train_config, plan.train_config):
        raise FhaError(f"{folder}: holds a run with other configs than {plan.cell.run_id}; delete it")


def _curve(folder: Path, plan: CellPlan) -> tuple[dict[str, list[float]], float]:
    """The validation and training loss at every evaluation and the gradient norm of every logged step,
    and the seconds of training the log records."""
    rows = read_rows(folder / LOG_FILE, LogRow)
    if not rows or rows[-1].step != plan.train_config.max_steps:
        raise FhaError(f"{folder / LOG_FILE}: ends at step {rows[-1].step if rows else None}, not at the run's last")
    curve: dict[str, list[float]] = {
        "step": [row.step for row in rows],
        "val_loss": [row.val_loss for row in rows],
        "train_loss": [row.train_loss for row in rows],
        "learning_rate": [row.learning_rate for row in rows],
    }
    metrics_path = folder / METRICS_FILE
    if metrics_path.is_file():
        steps = read_rows(metrics_path, MetricsRow)
        curve["grad_norm_step"] = [row.step for row in steps]
        curve["grad_norm"] = [row.grad_norm for row in steps]
        curve["step_train_loss"] = [row.train_loss for row in steps]
    return curve, float(rows[-1].time_elapsed)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- worker processes
def worker_init(parent: int) -> None:
    """In a new worker of the study process `parent`: its own process group (a terminal's Ctrl-C reaches
    the parent alone, which passes one SIGTERM on), SIGUSR1 ignored (it is for the parent), SIGTERM
    when the parent dies, and a watch on the parent's pid. The kernel's promise is asked for first; a
    parent already gone by then ends the worker."""
    os.setpgrp()
    if STOP_STARTING_SIGNAL is not None:  # the study's own request; by default it would kill a worker
        signal.signal(STOP_STARTING_SIGNAL, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {STOP_STARTING_SIGNAL})  # blocked while the worker started
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(STOPPED_EXIT)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_WATCH_S)
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def _output_to(path: Path):
    """Send this process's log records and progress bars to `path` (parallel workers would interleave)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as stream, contextlib.redirect_stderr(stream):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield
        finally:
            root.removeHandler(handler)
