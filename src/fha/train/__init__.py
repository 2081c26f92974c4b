"""Training: configs, the learning-rate schedule, checkpoints, presets and the loop.

* `TrainConfig` (`config`), `LRSchedule` (`schedule`): what a run does, step by step.
* `load_experiment`, `parse_overrides`, `build_configs` (`presets`): TOML presets and ``--set``.
* `save_checkpoint`, `load_checkpoint` (`checkpoint`): atomic, complete checkpoints.
* `train(TrainRequest(...))` (`loop`): the loop itself, on one process or several (torchrun).
* `train_model(preset, overrides=..., data=..., out=...)` (`api`): the arguments of ``fha train``.
"""

from fha.train.api import build_request, resolve_configs, train_model
from fha.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fha.train.config import TrainConfig
from fha.train.loop import TrainingDiverged, TrainRequest, TrainResult, train
from fha.train.presets import (
    build_configs,
    load_experiment,
    parse_overrides,
    preset_names,
)
from fha.train.schedule import LRSchedule, plot_schedule

__all__ = [
    "Checkpoint",
    "LRSchedule",
    "TrainConfig",
    "TrainRequest",
    "TrainResult",
    "TrainingDiverged",
    "build_configs",
    "build_request",
    "load_checkpoint",
    "load_experiment",
    "parse_overrides",
    "plot_schedule",
    "preset_names",
    "resolve_configs",
    "save_checkpoint",
    "train",
    "train_model",
]
