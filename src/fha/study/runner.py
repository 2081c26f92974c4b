"""`run_study`: train and evaluate every run of a study, resumably, in parallel, or one shard of it.

Fairness: one tokenizer for the whole study; every run gets the same data files; the batch
order and the initial weights depend on the seed alone, so two variants at seed k see the
same batches (a paired design). Robustness: a finished run (its eval.json exists) is never
redone, an interrupted one resumes from its last checkpoint, a failing one is retried once
and then reported. Sharding: shard I of N takes every N-th run of each phase (the sweep,
then the main runs), so N machines sharing the study folder split it without talking.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import math
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fha.data import TokenData, prepare_tokens
from fha.data.cache_location import token_cache_dir
from fha.data.sources import load_documents, load_splits
from fha.device import pick_device
from fha.errors import FhaError, one_line, writing
from fha.evaluation import evaluate
from fha.run import MODEL_FILE, load_model_and_tokenizer
from fha.run_info import file_digest
from fha.study.layout import (
    EVAL_FILE,
    STUDY_FILE,
    TOKENIZER_FILE,
    chosen_learning_rates,
    read_eval,
    read_json,
    run_dir,
    worker_log,
    write_json_atomic,
)
from fha.study.spec import RunPlan, StudySpec
from fha.tokenizer import Tokenizer
from fha.train.checkpoint import list_checkpoints, load_checkpoint
from fha.train.corpus import SOURCE_HASH_CHARS, train_tokenizer
from fha.train.loop import TrainingDiverged, TrainRequest, train

log = logging.getLogger(__name__)

ATTEMPTS = 2  # a failing run is retried once
EVAL_SPLITS = ("valid", "test")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, sep, count = text.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            raise FhaError(f"`shard` {text!r}: expected I/N, e.g. 1/4") from None
        if not sep or not 1 <= shard.index <= shard.count:
            raise FhaError(f"`shard` {text!r}: expected I/N with 1 <= I <= N, e.g. 1/4")
        return shard

    def take(self, runs: list[RunPlan]) -> list[RunPlan]:
        return [run for position, run in enumerate(runs) if position % self.count == self.index - 1]


@dataclass(frozen=True)
class RunTask:
    """What a worker needs to train and evaluate one run (plain data, so it pickles)."""

    run: RunPlan
    out_dir: Path
    spec: StudySpec
    threads: int
    device: str
    redirect_output: bool


@dataclass(frozen=True)
class RunOutcome:
    run: RunPlan
    error: str | None = None  # None: finished


@dataclass
class StudyProgress:
    finished: list[RunPlan]
    failed: list[RunOutcome]
    waiting_for_sweep: bool = False


def default_jobs(device: torch.device) -> int:
    """On CPU one training per core, each with one thread: measured faster than one training with
    every core on a 2-core machine (docs/studies.md); on an accelerator one training at a time."""
    return available_cores() if device.type == "cpu" else 1


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_study(
    spec: StudySpec, out_dir: Path, *, jobs: int | None = None, shard: Shard = Shard(), device: str = "auto"
) -> StudyProgress:
    """Train and evaluate this shard's runs of `spec` into `out_dir`; `jobs` None: `default_jobs`."""
    if jobs is None:
        jobs = default_jobs(pick_device(device))
    if jobs < 1:
        raise FhaError(f"`jobs` must be 1 or more, got {jobs}")
    missing = spec.data.missing_files()
    if missing:
        raise FhaError(f"data file not found: {', '.join(missing)}")
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = prepare_study(spec, out_dir)
    tokenize_eval_texts(spec, tokenizer)  # once here, so that parallel workers find them cached
    threads = max(1, available_cores() // jobs)
    log.info("%d training(s) at a time, %d thread(s) each", jobs, threads)
    progress = StudyProgress([], [])
    sweep = shard.take(spec.sweep_runs())
    _execute(sweep, spec, out_dir, jobs, threads, device, progress)
    chosen = chosen_learning_rates(spec, out_dir)
    if chosen is None:
        progress.waiting_for_sweep = True
        return progress
    log.info("learning rates: %s", ", ".join(f"{name} {lr:g}" for name, lr in chosen.items()))
    _execute(shard.take(spec.main_runs(chosen)), spec, out_dir, jobs, threads, device, progress)
    return progress


def prepare_study(spec: StudySpec, out_dir: Path) -> Tokenizer:
    """Write study.json and the study's tokenizer, or check that the folder holds this very study."""
    record = {
        "spec": spec.to_dict(),
        "spec_folder": str(spec.folder.resolve()),
        "data": {name: file_digest(path) for name, path in _data_files(spec).items()},
    }
    tokenizer_path = out_dir / TOKENIZER_FILE
    existing = read_json(out_dir / STUDY_FILE)
    if existing is not None:
        for key in ("spec", "data"):
            if existing.get(key) != record[key]:
                difference = _first_difference(existing.get(key), record[key], key)
                raise FhaError(f"{out_dir}: holds another study ({difference}); use another `out`")
    if spec.data.tokenizer is not None:
        tokenizer = Tokenizer.load(spec.data.tokenizer)
    elif tokenizer_path.is_file():
        tokenizer = Tokenizer.load(tokenizer_path)
    else:
        vocab_size = spec.configs(spec.first_run())[0].vocab_size
        tokenizer = train_tokenizer(_train_documents(spec), vocab_size)
    if not tokenizer_path.is_file():
        temporary = out_dir / f".{TOKENIZER_FILE}.tmp"
        tokenizer.save(temporary)
        temporary.replace(tokenizer_path)
    record["tokenizer_fingerprint"] = tokenizer.fingerprint
    if existing is not None and existing.get("tokenizer_fingerprint") != tokenizer.fingerprint:
        raise FhaError(
            f"{out_dir}: its runs use tokenizer {existing.get('tokenizer_fingerprint')}, "
            f"this spec gives {tokenizer.fingerprint}; use another `out`"
        )
    if existing is None:
        write_json_atomic(out_dir / STUDY_FILE, record)
    return tokenizer


def _first_difference(old: Any, new: Any, where: str) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{where}.{key}")
    return f"{where} was {old!r}, the spec gives {new!r}"


def _data_files(spec: StudySpec) -> dict[str, str]:
    return {name: getattr(spec.data, name) for name in ("train", "valid", "test") if getattr(spec.data, name)}


def _train_documents(spec: StudySpec) -> list[str]:
    return _splits(spec)["train"]


def _splits(spec: StudySpec) -> dict[str, list[str]]:
    """The training and validation documents exactly as `train` reads them."""
    _, config = spec.configs(spec.first_run())
    return load_splits(spec.data.train, spec.data.valid, val_fraction=config.val_fraction, seed=config.split_seed)


def tokenize_eval_texts(spec: StudySpec, tokenizer: Tokenizer) -> dict[str, TokenData]:
    """The whole validation and test texts as token arrays (cached like training data)."""
    _, config = spec.configs(spec.first_run())
    if spec.data.valid is not None:
        valid, valid_from = load_documents(spec.data.valid), file_digest(spec.data.valid)
    else:  # the held-out split of the training file
        valid = _splits(spec)["val"]
        valid_from = f"{file_digest(spec.data.train)} val_fraction={config.val_fraction} split_seed={config.split_seed}"
    texts = {"valid": (valid, valid_from), "test": (load_documents(spec.data.test), file_digest(spec.data.test))}
    folder = token_cache_dir()
    result = {}
    for split, (documents, source) in texts.items():
        description = f"study {split} text: {source}"
        digest = hashlib.sha256(description.encode("utf-8")).hexdigest()[:SOURCE_HASH_CHARS]
        name = f"study-{split}-{tokenizer.fingerprint}-{digest}"
        result[split] = prepare_tokens(documents, tokenizer, folder, name, description)
    return result


def _execute(
    runs: list[RunPlan], spec: StudySpec, out_dir: Path, jobs: int, threads: int, device: str, progress: StudyProgress
) -> None:
    pending = []
    for run in runs:
        if run in progress.finished:
            continue  # a sweep run that is also a main run
        if read_eval(out_dir, run) is not None:
            log.info("%s: finished earlier, skipped", run.run_id)
            progress.finished.append(run)
        elif run not in pending:
            pending.append(run)
    for attempt in range(1, ATTEMPTS + 1):
        if not pending:
            return
        if attempt > 1:
            log.warning("retrying %d failed run(s) once: %s", len(pending), ", ".join(r.run_id for r in pending))
        outcomes = _run_all(pending, spec, out_dir, jobs, threads, device)
        pending = []
        for outcome in outcomes:
            if outcome.error is None:
                progress.finished.append(outcome.run)
            elif attempt < ATTEMPTS:
                log.error("%s failed: %s", outcome.run.run_id, outcome.error)
                pending.append(outcome.run)
            else:
                log.error("%s failed again: %s", outcome.run.run_id, outcome.error)
                progress.failed.append(outcome)


def _run_all(
    runs: list[RunPlan], spec: StudySpec, out_dir: Path, jobs: int, threads: int, device: str
) -> list[RunOutcome]:
    tasks = [RunTask(run, out_dir, spec, threads, device, redirect_output=jobs > 1) for run in runs]
    if jobs == 1:
        return [execute(task) for task in tasks]
    outcomes = []
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited torch threads or state
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(execute, task): task for task in tasks}
        try:
            for future in concurrent.futures.as_completed(futures):
                task = futures[future]
                error = future.exception()
                if isinstance(error, KeyboardInterrupt):
                    raise KeyboardInterrupt
                outcome = RunOutcome(task.run, one_line(error)) if error is not None else future.result()
                outcomes.append(outcome)  # an error here means the worker process itself died
                log.info(
                    "%s: %s (%d of %d; output in %s)",
                    task.run.run_id,
                    "finished" if outcome.error is None else "failed",
                    len(outcomes),
                    len(tasks),
                    worker_log(task.out_dir, task.run),
                )
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)  # running trainings checkpoint and stop
            raise
    return outcomes


def execute(task: RunTask) -> RunOutcome:
    """Train (or resume) and evaluate one run; failures come back as an outcome, never as an exception."""
    folder = run_dir(task.out_dir, task.run)
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if task.redirect_output:
            stack.enter_context(_output_to(worker_log(task.out_dir, task.run)))
        torch.set_num_threads(task.threads)
        log.info("%s: training (%d threads)", task.run.run_id, task.threads)
        try:
            result = _train_and_evaluate(task, folder)
        except TrainingDiverged as err:
            if task.run not in task.spec.sweep_runs():
                return RunOutcome(task.run, one_line(err))
            write_json_atomic(folder / EVAL_FILE, {"diverged": str(err), "valid": {"bits_per_byte": math.inf}})
            log.warning("%s: diverged (%s); the sweep counts it as the worst rate", task.run.run_id, err)
            return RunOutcome(task.run)
        except Exception as err:
            log.debug("%s failed", task.run.run_id, exc_info=True)
            return RunOutcome(task.run, one_line(err))
        write_json_atomic(folder / EVAL_FILE, result)
        log.info("%s: test bits/byte %.4f", task.run.run_id, result["test"]["bits_per_byte"])
    return RunOutcome(task.run)


def _train_and_evaluate(task: RunTask, folder: Path) -> dict[str, Any]:
    spec = task.spec
    if not (folder / MODEL_FILE).is_file():
        tokenizer = Tokenizer.load(task.out_dir / TOKENIZER_FILE)
        model_config, train_config = spec.configs(task.run)
        model_config = model_config.replace(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id)
        checkpoints = list_checkpoints(folder)
        resume = None
        if checkpoints:
            resume = load_checkpoint(checkpoints[-1][1])
            if resume.model_config != model_config or resume.train_config != train_config:
                raise FhaError(f"{checkpoints[-1][1]}: its configs are not this run's; delete {folder} to redo it")
        train(
            TrainRequest(
                model_config,
                train_config,
                spec.data.train,
                folder,
                val_data=spec.data.valid,
                tokenizer=tokenizer,
                device=task.device,
                overwrite=resume is None,
                resume=resume,
            )
        )
    model, tokenizer = load_model_and_tokenizer(folder, pick_device(task.device))
    texts = tokenize_eval_texts(spec, tokenizer)
    return {split: evaluate(model, texts[split]).to_dict() for split in EVAL_SPLITS}


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
