"""fha.study.workers: one task per worker at a time, a stop request that lets the tasks under way
finish, and a worker that dies without taking the study with it."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import pytest
from worker_tasks import DYING_TASK, nothing, sleep_for, times_ten_or_die

from fha.study.workers import StopRequest, run_in_workers, stop_starting_on_signal


def test_every_task_comes_back_once_with_its_result():
    tasks = [0, 1, 3, 4]
    results = dict(run_in_workers(times_ten_or_die, tasks, workers=2, stop=StopRequest(), initializer=nothing))
    assert results == {0: 0, 1: 10, 3: 30, 4: 40}


def test_a_stop_request_lets_the_tasks_under_way_finish_and_starts_no_other(caplog):
    stop = StopRequest()
    ended = []
    for task, result in run_in_workers(times_ten_or_die, [0, 1, 3, 4, 5], workers=2, stop=stop, initializer=nothing):
        ended.append((task, result))
        stop.requested = True  # what SIGUSR1 does, once the first task has ended
    assert sorted(ended) == [(0, 0), (1, 10)]  # both were under way; neither was lost
    assert caplog.text.count("asked to stop: the trainings under way finish, no new one starts") == 1


def test_a_stop_request_is_acknowledged_while_every_worker_is_busy(caplog):
    """The request is said within a poll or two, not when the long task under way ends."""
    asked_at = []

    def request() -> None:
        asked_at.append(time.time())
        stop.requested = True

    timer = threading.Timer(0.5, request)

    class RequestOnceTheTaskIsUnderWay(StopRequest):
        def asked(self) -> bool:
            self.checks = getattr(self, "checks", 0) + 1
            if self.checks == 2:  # the second check comes right after the first task was submitted
                timer.start()
            return super().asked()

    stop = RequestOnceTheTaskIsUnderWay()
    try:
        tasks = run_in_workers(sleep_for, [6.0, 6.0], workers=1, stop=stop, initializer=nothing)
        ended = [(task, time.time()) for task, _ in tasks]
    finally:
        timer.cancel()
    assert [task for task, _ in ended] == [6.0]  # the second task never started
    said = [record.created for record in caplog.records if record.getMessage().startswith("asked to stop")]
    assert len(said) == 1 and said[0] - asked_at[0] < 3.0 and said[0] < ended[0][1] - 1.0


def test_a_stop_request_just_after_the_check_starts_no_task():
    """A SIGUSR1 between the loop's check and the submission (signals are held back only around the
    submission) still stops the task from starting."""

    class SignalRightAfterTheCheck(StopRequest):
        def asked(self) -> bool:
            answer = super().asked()
            self.requested = True
            return answer

    assert (
        list(run_in_workers(times_ten_or_die, [0, 1], workers=1, stop=SignalRightAfterTheCheck(), initializer=nothing))
        == []
    )


def test_a_dying_worker_fails_the_tasks_it_took_with_it_and_raises_nothing():
    tasks = [0, 1, DYING_TASK, 3, 4, 5]
    ended = list(run_in_workers(times_ten_or_die, tasks, workers=2, stop=StopRequest(), initializer=nothing))
    assert sorted(task for task, _ in ended) == tasks  # each once: the caller retries the failed ones
    results = dict(ended)
    assert isinstance(results[DYING_TASK], BrokenProcessPool)
    assert all(results[task] == task * 10 or isinstance(results[task], BrokenProcessPool) for task in tasks)
    assert results[0] == 0 or results[1] == 10  # the first task to end did so before any worker died


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this system")
def test_sigusr1_sets_the_request_and_the_handler_is_put_back():
    before = signal.getsignal(signal.SIGUSR1)
    with stop_starting_on_signal() as stop:
        assert not stop.asked()
        signal.raise_signal(signal.SIGUSR1)
        assert stop.requested and stop.asked()
    assert signal.getsignal(signal.SIGUSR1) is before
