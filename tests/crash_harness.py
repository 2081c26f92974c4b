"""Run ``fha ARGS...`` in this process and send it a signal at the N-th call of a chosen function.

    python crash_harness.py POINT:N:SIGNAL fha-arguments...

POINT names a function the run calls while writing its folder (see `POINTS`); the signal
(KILL or INT) arrives just before that call. SIGKILL stands for a crash or a power cut at
that moment; SIGINT for a Ctrl-C. Used by the kill-loop and interrupt tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys

import fha.runs.folder
import fha.runs.writer
from fha.cli import main

POINTS = {
    "replace": (os, "replace"),  # renames: moving a run aside and back, publishing checkpoints, logs, weights
    "rmtree": (shutil, "rmtree"),  # deleting the previous run after --overwrite, or leftovers
    "save_model": (fha.runs.folder, "save_model"),  # writing weights into a checkpoint's temporary folder
    "publish": (fha.runs.writer.RunFolder, "publish_final_weights"),  # the final save
}


def arm(point: str, count: int, signum: int) -> None:
    owner, name = POINTS[point]
    real = getattr(owner, name)
    calls = 0

    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == count:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    setattr(owner, name, wrapper)


if __name__ == "__main__":
    point, count, signal_name = sys.argv[1].split(":")
    arm(point, int(count), getattr(signal, f"SIG{signal_name}"))
    sys.exit(main(sys.argv[2:]))
