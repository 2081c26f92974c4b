"""The writing process's hold on a run folder: lock, preparation, a reversible --overwrite, final weights.

What a crash at any moment can cost is at most the steps since the last checkpoint:

* ``--overwrite`` first moves the previous run into ``RUN_DIR/.previous-run/`` and deletes it
  only once the new run has written its first checkpoint. A failure before that (an error,
  Ctrl-C) moves it back at once; a killed process leaves it there and the next process that
  takes the folder's lock moves it back (or finishes deleting it if the new run had already
  written a checkpoint).
* ``model.safetensors`` is the final weights of a finished run: it is removed when a run
  starts writing into the folder and appears, as a copy of the final checkpoint's weights,
  when the run ends, so it is never older than the log and the configs beside it.
* A folder whose run stopped before its first checkpoint holds nothing worth keeping; a new
  run in it clears it without asking.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from types import TracebackType

from fha.errors import FhaError
from fha.files import temporary_prefix
from fha.runs import lock as run_lock
from fha.runs.checkpoint import checkpoint_path, list_checkpoints
from fha.runs.folder import (
    CHECKPOINTS_DIR,
    LOG_FILE,
    METRICS_FILE,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    TRAIN_CONFIG_FILE,
)
from fha.runs.info import RUN_INFO_FILE
from fha.runs.trackers import TENSORBOARD_DIR, WANDB_DIR
from fha.wording import counted

log = logging.getLogger(__name__)

PREVIOUS_RUN_DIR = ".previous-run"
MOVED_LIST = ".moved"  # inside PREVIOUS_RUN_DIR: the names of the previous run's artefacts
_PUBLISH_TEMP = f".{MODEL_FILE}.tmp-"
# Moved aside checkpoints first and back last: while checkpoints/ holds a complete checkpoint,
# the folder's run is the one at the top level, which tells an interrupted move which way it went.
RUN_ARTEFACTS = (
    CHECKPOINTS_DIR,
    MODEL_FILE,
    MODEL_CONFIG_FILE,
    TRAIN_CONFIG_FILE,
    TOKENIZER_FILE,
    LOG_FILE,
    METRICS_FILE,
    RUN_INFO_FILE,
    TENSORBOARD_DIR,
    WANDB_DIR,
)
UNFINISHED_START = frozenset(
    (
        MODEL_CONFIG_FILE,
        TRAIN_CONFIG_FILE,
        TOKENIZER_FILE,
        LOG_FILE,
        CHECKPOINTS_DIR,
        METRICS_FILE,
        RUN_INFO_FILE,
        TENSORBOARD_DIR,
        WANDB_DIR,
    )
)
# Temporary files of a process killed while writing them (the log is rewritten via LOG_FILE.tmp on a start;
# the JSON files are written atomically, `fha.files`).
LEFTOVER_PREFIXES = (
    f"{LOG_FILE}.tmp",
    _PUBLISH_TEMP,
    *(temporary_prefix(name) for name in (MODEL_CONFIG_FILE, TRAIN_CONFIG_FILE, RUN_INFO_FILE)),
)


def check_out_dir(out_dir: Path) -> None:
    """Refuse an --out that can never be a run folder, before any work is done."""
    for parent in (out_dir, *out_dir.parents):
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == out_dir else f"lies below {parent}, which is a file"
            raise FhaError(f"{out_dir}: `out` must be a folder, and this {what}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _has_checkpoint(folder: Path) -> bool:
    return bool(list_checkpoints(folder))


class RunFolder:
    """Rank 0's exclusive use of ``path`` while one run writes it (a context manager).

    `resume_step`: the step of the checkpoint being resumed when it lies in this same folder
    (its later checkpoints are discarded with `overwrite`, refused without it); None otherwise.
    """

    def __init__(self, path: Path, *, overwrite: bool, resume_step: int | None = None) -> None:
        self.path = path
        self.overwrite = overwrite
        self.resume_step = resume_step
        self._held = contextlib.ExitStack()  # the lock, and undoing an unfinished --overwrite before releasing it
        self._aside: Path | None = None  # the previous run, until the new one's first checkpoint

    # ------------------------------------------------------------------ entering and leaving
    def __enter__(self) -> RunFolder:
        check_out_dir(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FhaError(f"{self.path}: cannot create the run folder ({err.strerror or err})") from None
        self._held.enter_context(run_lock.locked(self.path))
        self._held.callback(self._restore_if_replaced)
        try:
            self._recover_interrupted_overwrite()
            self._prepare()
        except BaseException:
            self._held.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._held.close()

    def _restore_if_replaced(self) -> None:
        """Leaving before the new run's first checkpoint (an error, Ctrl-C): the previous run comes back."""
        if self._aside is not None:
            self._restore_previous_run(self._aside)

    # ------------------------------------------------------------------ preparation
    def _prepare(self) -> None:
        for entry in self.path.iterdir():
            if entry.name.startswith(LEFTOVER_PREFIXES):
                _remove(entry)
        entries = {entry.name for entry in self.path.iterdir()} - {run_lock.LOCK_FILE}
        if self.resume_step is not None:
            self._discard_later_checkpoints(self.resume_step)
            _remove(self.path / MODEL_FILE)  # the resumed run's final weights come at its end
            return
        if _has_checkpoint(self.path) or (self.path / MODEL_FILE).exists():
            if not self.overwrite:
                raise FhaError(
                    f"{self.path}: folder is not empty; continue its run with `resume` {self.path}, replace it "
                    "with `overwrite`, or choose another `out`"
                )
            self._move_previous_run_aside()
        elif entries:
            unknown = sorted(entries - UNFINISHED_START)
            if unknown:
                raise FhaError(
                    f"{self.path}: folder holds files that are not a run's ({', '.join(unknown[:3])}); "
                    "choose another `out` or empty it"
                )
            for name in entries:
                _remove(self.path / name)
            log.info("%s: cleared the files of a start that stopped before its first checkpoint", self.path)

    def _discard_later_checkpoints(self, step: int) -> None:
        """Resuming an older checkpoint in its own folder: the later checkpoints belong to the
        abandoned continuation and a later ``--resume RUN_DIR`` would pick them, so they go, but
        only with --overwrite."""
        later = [path for found_step, path in list_checkpoints(self.path) if found_step > step]
        if not later:
            return
        if not self.overwrite:
            raise FhaError(
                f"{self.path}: holds checkpoints after step {step} ({', '.join(p.name for p in later)}); resume "
                "into another `out`, or pass `overwrite` to discard them"
            )
        for path in later:
            shutil.rmtree(path)
        log.warning("`overwrite`: removed %s after step %d", counted(len(later), "checkpoint"), step)

    # ------------------------------------------------------------------ a reversible --overwrite
    def _move_previous_run_aside(self) -> None:
        aside = self.path / PREVIOUS_RUN_DIR
        aside.mkdir()
        self._aside = aside
        names = [name for name in RUN_ARTEFACTS if (self.path / name).exists()]
        manifest = aside / f"{MOVED_LIST}.tmp"
        manifest.write_text("\n".join(names) + "\n", encoding="utf-8")
        os.replace(manifest, aside / MOVED_LIST)  # written before anything moves: restoring knows what to undo
        for name in names:
            os.replace(self.path / name, aside / name)
        log.warning(
            "`overwrite`: the previous run in %s is kept in %s until the new run's first checkpoint", self.path, aside
        )

    def checkpoint_written(self) -> None:
        """The new run is safe on disk: the previous one (if --overwrite moved it aside) can go."""
        if self._aside is not None:
            shutil.rmtree(self._aside)
            self._aside = None
            log.info("`overwrite`: removed the previous run of %s", self.path)

    def _restore_previous_run(self, aside: Path) -> None:
        self._aside = None
        try:
            moved = set((aside / MOVED_LIST).read_text(encoding="utf-8").split())
        except FileNotFoundError:
            moved = set()  # stopped before anything was moved
        for name in RUN_ARTEFACTS:  # what the failed run wrote and the previous one did not have
            if moved and name not in moved:
                _remove(self.path / name)
        for name in reversed(RUN_ARTEFACTS):
            if name in moved and (aside / name).exists():
                _remove(self.path / name)
                os.replace(aside / name, self.path / name)
        shutil.rmtree(aside)
        log.warning("%s: the new run stopped before its first checkpoint; the previous run is back in place", self.path)

    def _recover_interrupted_overwrite(self) -> None:
        """Finish what a killed --overwrite left: keep the new run if it has a checkpoint, else restore the old."""
        aside = self.path / PREVIOUS_RUN_DIR
        if not aside.exists():
            return
        if _has_checkpoint(self.path):
            shutil.rmtree(aside)
            log.info("%s: removed the previous run that an interrupted --overwrite had replaced", self.path)
            return
        self._restore_previous_run(aside)

    # ------------------------------------------------------------------ the end of a run
    def publish_final_weights(self, step: int) -> None:
        """Make the weights of the checkpoint of `step` (the last) the folder's ``model.safetensors`` (atomically)."""
        checkpoint = checkpoint_path(self.path, step)
        temp = self.path / f"{_PUBLISH_TEMP}{os.getpid()}"
        _remove(temp)
        try:
            os.link(checkpoint / MODEL_FILE, temp)
        except OSError:
            shutil.copyfile(checkpoint / MODEL_FILE, temp)
        os.replace(temp, self.path / MODEL_FILE)
