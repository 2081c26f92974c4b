"""Tasks in worker processes, and the study's two ways to stop.

SIGTERM and Ctrl-C stop everything at once (each training writes a checkpoint). SIGUSR1 asks
for less: the tasks under way finish and no new one starts (`StopRequest`). So that nothing is
queued when it comes, `run_in_workers` hands each worker one task at a time. The signal is
blocked while workers start: a worker inherits the block, then ignores the signal
(`fha.study.execution.worker_init`), so a signal sent to the whole process group (GNU
`timeout` does that) reaches the study alone, never a worker that is still starting.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

log = logging.getLogger(__name__)

STOP_STARTING_SIGNAL = getattr(signal, "SIGUSR1", None)  # none on Windows
POLL_S = 1.0  # how often the parent looks up from its workers (and at a stop request)

Task = TypeVar("Task")
Result = TypeVar("Result")


class StopRequest:
    """Set by SIGUSR1: finish the tasks under way, start no new one. A plain flag, because a signal
    handler must not take locks (an `Event` takes one, and logging does)."""

    def __init__(self) -> None:
        self.requested = False
        self._said = False

    def asked(self) -> bool:
        """Whether a stop was requested, saying so the first time."""
        if self.requested and not self._said:
            self._said = True
            log.warning("asked to stop: the trainings under way finish, no new one starts")
        return self.requested


@contextlib.contextmanager
def handling(signum: int, handler: Callable[[int, Any], None]) -> Iterator[None]:
    """`handler` for `signum` inside, the previous handler back afterwards. Outside the main thread
    no handler can be set: nothing changes there."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


@contextlib.contextmanager
def stop_starting_on_signal(stop: StopRequest | None = None) -> Iterator[StopRequest]:
    """SIGUSR1 (`kill -USR1`, SLURM's `--signal`, `timeout -s USR1`) sets the request it yields."""
    stop = stop or StopRequest()
    if STOP_STARTING_SIGNAL is None:
        yield stop
        return

    def request(signum: int, frame: Any) -> None:
        stop.requested = True

    with handling(STOP_STARTING_SIGNAL, request):
        yield stop


@contextlib.contextmanager
def _stop_signal_blocked() -> Iterator[None]:
    """SIGUSR1 held back (not lost) in this thread, and in the processes it starts meanwhile."""
    if STOP_STARTING_SIGNAL is None or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {STOP_STARTING_SIGNAL})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {STOP_STARTING_SIGNAL})


def run_in_workers(
    function: Callable[[Task], Result],
    tasks: list[Task],
    *,
    workers: int,
    stop: StopRequest,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...] = (),
) -> Iterator[tuple[Task, Result | BaseException]]:
    """`function(task)` in `workers` fresh processes, each task's result (or the exception that ended it)
    as it ends. A task starts only while `stop` is unset; the tasks never yielded were not started.
    A worker that dies breaks the pool: the tasks under way and those not yet started then come back
    with that error, for the caller to retry in a new pool."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited torch threads or state
    with _stop_signal_blocked():
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=initializer, initargs=initargs
        )
    waiting = list(tasks)
    running: dict[concurrent.futures.Future[Result], Task] = {}
    try:
        while True:
            while not stop.asked() and waiting and len(running) < workers:  # asked first: said at once
                task = waiting.pop(0)
                try:
                    with _stop_signal_blocked():
                        if stop.asked():  # a request that came since the check above: the task stays unstarted
                            waiting.insert(0, task)
                            break
                        running[pool.submit(function, task)] = task
                except BrokenProcessPool as broken:
                    for lost in [task, *waiting]:
                        yield lost, broken
                    waiting.clear()
            if not running:
                return
            ended, _ = concurrent.futures.wait(running, timeout=POLL_S, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in ended:
                task = running.pop(future)
                error = future.exception()
                yield task, future.result() if error is None else error
    except BaseException:
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _stop_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """One SIGTERM to every worker: a training checkpoints and stops, the worker exits."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(ProcessLookupError, OSError):
            os.kill(process.pid, signal.SIGTERM)
