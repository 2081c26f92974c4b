"""Training: the loop and what it drives step by step.

* `train(TrainRequest(...))` (`loop`): the loop itself, on one process or several (torchrun,
  `distributed`), over the batches of `corpus` and `fha.data`, with `optim` and `LRSchedule` (`schedule`).
* `train_model(preset, overrides=..., data=..., out=...)` (`api`): the arguments of ``fha train``.

What a run is set up from lives beside `fha.config`: `fha.train_config.TrainConfig` and the
experiment files and ``--set`` overrides of `fha.experiments`; what it writes lives in `fha.runs`
(checkpoints, logs, the run folder).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fha.lazy import lazy_exports

if TYPE_CHECKING:
    from fha.train.api import build_request, resolve_configs, train_model
    from fha.train.loop import TrainingDiverged, TrainRequest, TrainResult, train
    from fha.train.schedule import LRSchedule, plot_schedule

__getattr__, __dir__, __all__ = lazy_exports(__name__)
