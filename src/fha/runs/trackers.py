"""Experiment trackers beside the CSV logs: TensorBoard and Weights & Biases, chosen by name.

    fha train ... --log-to tensorboard --log-to wandb

Each is an optional extra (``pip install -e ".[tracking]"``); asking for one that is not
installed is a one-line error before training starts. TensorBoard event files go to
``RUN_DIR/tensorboard`` (``tensorboard --logdir RUN_DIR``); a resumed run drops the events
after its checkpoint. W&B writes to ``RUN_DIR/wandb`` in offline mode unless ``WANDB_MODE``
says otherwise (``wandb sync RUN_DIR/wandb/offline-run-*`` uploads later); each start or
resume is one W&B run, named after the run folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from fha.errors import FhaError

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
WANDB_PROJECT = "fha"
WANDB_DEFAULT_MODE = "offline"  # no uploads unless WANDB_MODE asks for them
INSTALL_HINT = 'pip install -e ".[tracking]"'


class Tracker(Protocol):
    def log(self, step: int, values: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    def __init__(self, run_dir: Path, config: Mapping[str, Any], start_step: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise FhaError(f"`log_to` tensorboard: the tensorboard package is not installed ({INSTALL_HINT})") from None
        # purge_step: events a previous attempt logged after the resumed step are dropped
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start_step or None)
        self.writer.add_text(
            "config", "\n".join(f"    {key} = {value!r}" for key, value in config.items()), global_step=start_step
        )

    def log(self, step: int, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, run_dir: Path, config: Mapping[str, Any], start_step: int) -> None:
        try:
            import wandb
        except ImportError:
            raise FhaError(f"`log_to` wandb: the wandb package is not installed ({INSTALL_HINT})") from None
        (run_dir / WANDB_DIR).mkdir(parents=True, exist_ok=True)
        # console "off": W&B does not wrap stdout/stderr, whose terminal test picks the progress display
        settings = wandb.Settings(console="off", silent=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
            name=run_dir.resolve().name,
            dir=str(run_dir),
            config=dict(config),
            reinit="create_new",
            settings=settings,
            # wandb.init's annotation lists four modes; its settings accept the legacy dryrun and run too
            mode=os.environ.get("WANDB_MODE", WANDB_DEFAULT_MODE),  # pyright: ignore[reportArgumentType]
        )
        self.offline = self.run.settings.mode == "offline"
        log.info("wandb: %s run %s in %s", self.run.settings.mode, self.run.id, self.run.dir)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def close(self) -> None:
        folder = Path(self.run.dir).parent
        self.run.finish()
        if self.offline:
            log.info("wandb: upload this offline run with: wandb sync %s", folder)


TRACKERS: dict[str, Callable[[Path, Mapping[str, Any], int], Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "wandb": WandbTracker,
}


def open_trackers(names: Sequence[str], run_dir: Path, config: Mapping[str, Any], start_step: int) -> list[Tracker]:
    """The trackers called `names` (each once), logging into `run_dir`."""
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise FhaError(f"`log_to` {unknown[0]}: unknown tracker (choose from {', '.join(TRACKERS)})")
    opened: list[Tracker] = []
    try:
        for name in dict.fromkeys(names):
            opened.append(TRACKERS[name](run_dir, config, start_step))
    except BaseException:
        for tracker in opened:
            tracker.close()
        raise
    return opened
