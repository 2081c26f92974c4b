"""`run_study`: every cell of a study trained, evaluated and written to the ledger; resumable,
parallel, shardable, and able to grow.

The pipeline: the spec (`fha.study.spec`) becomes cells with fingerprints (`fha.study.plan`);
cells whose fingerprint is in the ledger are done; the rest are trained trunk by trunk
(`fha.study.execution`), tuning first and then evaluation at the chosen rates; the report
(`fha.study.report`) reads the ledger alone.

Fairness: one tokenizer for the whole study; the same data files for every run; the initial
weights depend on the init seed and the batch order on the data seed alone, so two variants
at one seed pair see the same batches (a paired design). Growth: a spec with more seeds,
variants, budgets or rates trains only the new cells; a change that would give a finished
cell another result (a setting, the data, the tokenizer) is refused, naming the change.
Grid points: each is tuned on its own, and its evaluation runs start once its tuning is done.
Sharding: shard I of N takes every N-th trunk of each phase (of each grid point), so N machines sharing the study
folder (or each with a folder of its own, merged by the report) split it without talking.
Stopping: SIGTERM or Ctrl-C stops the trainings under way at a checkpoint; SIGUSR1 lets them finish
(into the ledger) and starts no new one, so a study given a time limit (a session, a SLURM job)
stops without losing the work in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fha.device import pick_device
from fha.errors import FhaError, one_line
from fha.study.execution import CellOutcome, TrunkTask, execute_trunk, worker_init
from fha.study.layout import worker_log
from fha.study.ledger import Entry, Ledger, entry_path, read_entry
from fha.study.plan import Cell, Planner, TuningOutcome, tuning_outcome
from fha.study.prepare import prepare_study
from fha.study.spec import StudySpec
from fha.study.workers import StopRequest, handling, run_in_workers, stop_starting_on_signal
from fha.wording import counted, plural

log = logging.getLogger(__name__)

ATTEMPTS = 2  # a failing cell is retried once


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

    def take(self, items: list[Any]) -> list[Any]:
        return [item for position, item in enumerate(items) if position % self.count == self.index - 1]


@dataclass
class StudyProgress:
    finished: list[Cell] = field(default_factory=list)  # trained and evaluated by this call
    reused: int = 0  # cells found in the ledger
    failed: list[CellOutcome] = field(default_factory=list)
    waiting_for_others: bool = False  # this shard's part is done; other shards' tuning is not
    stopped: bool = False  # asked to start no new training (SIGUSR1): runs are left for another call
    tuning: dict[str, TuningOutcome] = field(default_factory=dict)  # by grid point ("" without a grid)


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
    spec: StudySpec,
    out_dir: Path,
    *,
    jobs: int | None = None,
    shard: Shard = Shard(),
    device: str = "auto",
    stop: StopRequest | None = None,
) -> StudyProgress:
    """Train and evaluate this shard's missing cells of `spec` into `out_dir`; `jobs` None: `default_jobs`.
    `stop`: a request set from outside (the command line sets one up before anything else); without
    it SIGUSR1 sets this call's own."""
    if jobs is None:
        jobs = default_jobs(pick_device(device))
    if not 1 <= jobs <= available_cores() * 4:
        raise FhaError(f"`jobs` must be between 1 and {available_cores() * 4}, got {jobs}")
    prepared = prepare_study(spec, out_dir)
    planner = Planner(spec, prepared.context)
    ledger = Ledger.read([out_dir])
    threads = max(1, available_cores() // jobs)
    log.info("%d %s at a time, %d %s each", jobs, plural(jobs, "training"), threads, plural(threads, "thread"))
    progress = StudyProgress()
    with _sigterm_as_interrupt(), stop_starting_on_signal(stop) as stop:
        runner = _Runner(spec, out_dir, planner, ledger, jobs, threads, device, shard, progress, stop)
        while True:  # tuning rounds: each may extend a grid and add cells
            progress.tuning = {point.label: tuning_outcome(planner, runner.score, point.label) for point in spec.points}
            ours = [
                trunk
                for label, outcome in progress.tuning.items()
                for trunk in shard.take(_trunks(planner.tuning_cells(outcome.grids, label)))
            ]
            missing = [_missing(trunk, runner) for trunk in ours if not runner.tried(trunk)]
            missing = [trunk for trunk in missing if trunk]
            if not missing:
                break
            runner.execute(missing)
            if runner.left:  # asked to stop starting trainings: the next round waits for another call
                progress.stopped = True
                return progress
        evaluation = []
        for label, outcome in progress.tuning.items():
            chosen = outcome.chosen
            if chosen is None:
                progress.waiting_for_others = True
                continue
            where = f" at {label}" if label else ""
            log.info("learning rates%s: %s", where, ", ".join(f"{name} {rate:g}" for name, rate in chosen.items()))
            if outcome.at_edge:
                log.warning(
                    "still at an edge of the grid%s after every extension (not tuned): %s",
                    where,
                    ", ".join(outcome.at_edge),
                )
            evaluation += _seed_major(shard.take(_trunks(planner.evaluation_cells(chosen, label))))
        ours = [_missing(trunk, runner) for trunk in evaluation]
        runner.execute([trunk for trunk in ours if trunk])
        progress.stopped = runner.left > 0
    return progress


def _trunks(cells: list[Cell]) -> list[list[Cell]]:
    """The cells grouped by trunk, in the spec's order. Shards split this list of every trunk of a phase,
    not of the missing ones, so that a shard's share does not change as other shards finish theirs."""
    groups: dict[Any, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.trunk, []).append(cell)
    return list(groups.values())


def _seed_major(trunks: list[list[Cell]]) -> list[list[Cell]]:
    """The trunks in training order: seed after seed, every variant at a seed before the next
    seed, so that a study stopped early has whole pairs. (Shards split the spec's order first,
    so this changes no shard's share.)"""
    order = {seeds: position for position, seeds in enumerate(dict.fromkeys(trunk[0].seeds for trunk in trunks))}
    return sorted(trunks, key=lambda trunk: order[trunk[0].seeds])


def _missing(trunk: list[Cell], runner: _Runner) -> list[Cell]:
    return [cell for cell in trunk if runner.score(cell) is None]


class _Runner:
    def __init__(
        self,
        spec: StudySpec,
        out_dir: Path,
        planner: Planner,
        ledger: Ledger,
        jobs: int,
        threads: int,
        device: str,
        shard: Shard,
        progress: StudyProgress,
        stop: StopRequest,
    ) -> None:
        self.spec, self.out_dir, self.planner, self.ledger = spec, out_dir, planner, ledger
        self.jobs, self.threads, self.device, self.shard, self.progress = jobs, threads, device, shard, progress
        self._tried: set[Any] = set()
        self.stop = stop  # set by SIGUSR1: the trainings under way finish, no new one starts
        self.left = 0  # trunks of the last `execute` left because of `stop`

    def entry(self, cell: Cell) -> Entry | None:
        return self.ledger.get(self.planner.plan(cell).fingerprint)

    def score(self, cell: Cell) -> float | None:
        entry = self.entry(cell)
        return None if entry is None else entry.metric("valid")

    def tried(self, trunk: list[Cell]) -> bool:
        return trunk[0].trunk in self._tried

    def execute(self, trunks: list[list[Cell]]) -> None:
        self.left = 0
        tasks = []
        for trunk in trunks:
            self._tried.add(trunk[0].trunk)
            every_budget = [trunk[0].at_budget(tokens) for tokens in self.spec.all_budgets]
            plans = tuple(self.planner.plan(cell) for cell in sorted(every_budget, key=lambda c: -c.tokens))
            todo = frozenset(self.planner.plan(cell).fingerprint for cell in trunk)
            tasks.append(TrunkTask(plans, todo, self.out_dir, self.spec, self.threads, self.device, self.jobs > 1))
        for attempt in range(1, ATTEMPTS + 1):
            if not tasks:
                return
            if self.stop.asked():
                self._note_left(tasks)
                return
            failed_tasks = []
            for task, outcomes in self._run_all(tasks):
                errors = [outcome for outcome in outcomes if outcome.error is not None]
                for outcome in outcomes:
                    if outcome.error is None:
                        self.ledger.add(read_entry(entry_path(self.out_dir, outcome.plan.fingerprint)))
                        self.progress.finished.append(outcome.plan.cell)
                if not errors:
                    continue
                for outcome in errors:
                    log.error("%s failed%s: %s", outcome.plan.cell.run_id, " again" * (attempt > 1), outcome.error)
                if attempt < ATTEMPTS:
                    todo = frozenset(outcome.plan.fingerprint for outcome in errors)
                    failed_tasks.append(dataclasses.replace(task, todo=todo))
                else:
                    self.progress.failed.extend(errors)
            tasks = failed_tasks

    def _run_all(self, tasks: list[TrunkTask]) -> Iterator[tuple[TrunkTask, list[CellOutcome]]]:
        """Each task's outcomes as it ends; no task starts once a stop is asked (the rest are `left`)."""
        if self.jobs == 1:
            waiting = list(tasks)
            while waiting and not self.stop.asked():
                task = waiting.pop(0)
                yield task, execute_trunk(task)
            self._note_left(waiting)
            return
        ended = set()
        results = run_in_workers(
            execute_trunk, tasks, workers=self.jobs, stop=self.stop, initializer=worker_init, initargs=(os.getpid(),)
        )
        for task, result in results:
            ended.add(id(task))
            if isinstance(result, BaseException):  # the worker process itself died
                outcomes = [CellOutcome(plan, one_line(result)) for plan in task.plans if plan.fingerprint in task.todo]
            else:
                outcomes = result
            log.info(
                "%s: %s (%d of %d trunks; output in %s)",
                task.label,
                "finished" if all(o.error is None for o in outcomes) else "failed",
                len(ended),
                len(tasks),
                worker_log(task.out_dir, task.plans[0]),
            )
            yield task, outcomes
        self._note_left([task for task in tasks if id(task) not in ended])

    def _note_left(self, waiting: list[TrunkTask]) -> None:
        self.left += len(waiting)
        if waiting:
            log.info("not started, as asked: %s", counted(len(waiting), "trunk"))


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (what `timeout` and schedulers send) stops the study like Ctrl-C."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    with handling(signal.SIGTERM, interrupt):
        yield
