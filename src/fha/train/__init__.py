"""Training: configs, the learning-rate schedule, checkpoints, presets and the loop.

* `TrainConfig` (`config`), `LRSchedule` (`schedule`): what a run does, step by step.
* `load_experiment`, `parse_overrides`, `build_configs` (`presets`): TOML presets and ``--set``.
* `save_checkpoint`, `load_checkpoint` (`checkpoint`): atomic, complete checkpoints.
* `train(TrainRequest(...))` (`loop`): the loop itself, on one process or several (torchrun).
* `train_model(preset, overrides=..., data=..., out=...)` (`api`): the arguments of ``fha train``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fha.lazy import lazy_exports

_EXPORTS = {
    "build_configs": "fha.train.presets",
    "build_request": "fha.train.api",
    "Checkpoint": "fha.train.checkpoint",
    "load_checkpoint": "fha.train.checkpoint",
    "load_experiment": "fha.train.presets",
    "LRSchedule": "fha.train.schedule",
    "parse_overrides": "fha.train.presets",
    "plot_schedule": "fha.train.schedule",
    "preset_names": "fha.train.presets",
    "resolve_configs": "fha.train.api",
    "save_checkpoint": "fha.train.checkpoint",
    "train": "fha.train.loop",
    "train_model": "fha.train.api",
    "TrainConfig": "fha.train.config",
    "TrainingDiverged": "fha.train.loop",
    "TrainRequest": "fha.train.loop",
    "TrainResult": "fha.train.loop",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from fha.train.api import build_request, resolve_configs, train_model
    from fha.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from fha.train.config import TrainConfig
    from fha.train.loop import TrainingDiverged, TrainRequest, TrainResult, train
    from fha.train.presets import build_configs, load_experiment, parse_overrides, preset_names
    from fha.train.schedule import LRSchedule, plot_schedule

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
