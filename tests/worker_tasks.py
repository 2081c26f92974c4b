"""Tasks for tests/test_study_workers.py, in a module of their own: worker processes import it by name."""

from __future__ import annotations

import os
import time

DYING_TASK = 2
TASK_SECONDS = 0.2


def nothing() -> None:
    """A worker initialiser that does nothing (the study's own one loads torch)."""


def times_ten_or_die(task: int) -> int:
    """Ten times `task`, after a short while; the worker process dies at `DYING_TASK`."""
    if task == DYING_TASK:
        os._exit(9)
    time.sleep(TASK_SECONDS)
    return task * 10


def sleep_for(seconds: float) -> float:
    """`seconds`, after sleeping that long."""
    time.sleep(seconds)
    return seconds
