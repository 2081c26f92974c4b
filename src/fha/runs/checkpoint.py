"""Checkpoints: ``RUN_DIR/checkpoints/step-N/``, written atomically, read with one-line errors.

A checkpoint folder holds everything a resume needs and is itself a loadable run folder::

    model.safetensors     weights after N optimiser steps
    model_config.json     ModelConfig
    train_config.json     TrainConfig
    tokenizer.json        the run's tokenizer
    training_state.pt     `TrainingState`: step, optimizer, RNG states, batch sampler position,
                          data sources, elapsed time (tensors and plain Python values only:
                          loaded with ``torch.load(weights_only=True)``)

It is first written under a hidden temporary name in the same folder and then renamed, so
a crash while writing leaves no folder that looks like a checkpoint; leftovers of such a
crash are removed by the next save.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from safetensors import SafetensorError

from fha.config import ModelConfig
from fha.errors import FhaError, one_line
from fha.files import existing_folder
from fha.model.gpt import GPT
from fha.runs.folder import (
    CHECKPOINT_NAME,
    CHECKPOINT_PREFIX,
    CHECKPOINTS_DIR,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    TRAIN_CONFIG_FILE,
    list_checkpoints,
    read_weights_into,
    save_weights,
)
from fha.tokenizer import Tokenizer
from fha.train_config import TrainConfig

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
_TEMP_MARK = ".tmp-"
_OLD_MARK = ".old-"
REQUIRED_FILES = (MODEL_FILE, MODEL_CONFIG_FILE, TRAIN_CONFIG_FILE, TOKENIZER_FILE, STATE_FILE)


class _Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any], /) -> Any: ...  # positional: optimizers call it state_dict


@dataclass
class TrainingState:
    """What a resume needs beside the weights, configs and tokenizer: ``training_state.pt``.

    `step` optimiser updates are done; `optimizer` and `sampler` are the state dicts of the
    optimiser and the batch sampler, `rng` every random generator the run touches (rank 0's),
    `elapsed` the seconds of training so far, `data` the run's data sources and fingerprints
    (`fha.train.corpus.DataSources`), `metrics_window` the sums of the unfinished metrics.csv row
    (`fha.runs.logbook.RunLog`). Saved as a plain dict of tensors and Python values, so a checkpoint
    loads with ``torch.load(weights_only=True)``; older checkpoints without `metrics_window` or
    `world_size` load with their defaults.
    """

    step: int
    optimizer: dict[str, Any]
    sampler: dict[str, Any]
    rng: dict[str, Any]
    elapsed: float
    data: dict[str, Any]
    metrics_window: dict[str, Any] = field(default_factory=dict)
    world_size: int | None = None

    # The entries a resume cannot do without, and their types.
    REQUIRED: ClassVar[dict[str, type | tuple[type, ...]]] = {
        "optimizer": dict,
        "sampler": dict,
        "rng": dict,
        "data": dict,
        "elapsed": (int, float),
    }

    @classmethod
    def capture(
        cls,
        step: int,
        *,
        optimizer: _Stateful,
        sampler: _Stateful,
        elapsed: float,
        data: dict[str, Any],
        metrics_window: dict[str, Any],
        world_size: int,
    ) -> TrainingState:
        """The state of a run after `step` updates, random generators included."""
        return cls(
            step, optimizer.state_dict(), sampler.state_dict(), _rng_states(), elapsed, data, metrics_window, world_size
        )

    def restore(self, optimizer: _Stateful, sampler: _Stateful, metrics: _Stateful, rank: int, path: Path) -> None:
        """Load the states of the optimiser, the sampler and the metrics window, and the random generators
        (rank > 0 derives its own); `path` names the checkpoint in errors."""
        try:
            optimizer.load_state_dict(self.optimizer)
            sampler.load_state_dict(self.sampler)
            metrics.load_state_dict(self.metrics_window)
            _set_rng_states(self.rng, rank)
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as err:
            raise FhaError(f"{path}: cannot resume from this checkpoint ({err})") from None

    def save(self, path: Path) -> None:
        torch.save(
            {
                "optimizer": self.optimizer,
                "sampler": self.sampler,
                "rng": self.rng,
                "elapsed": self.elapsed,
                "metrics_window": self.metrics_window,
                "world_size": self.world_size,
                "data": self.data,
                "step": self.step,
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> TrainingState:
        """Read and check a ``training_state.pt``; every problem is a one-line FhaError."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
            raise FhaError(f"{path}: corrupt checkpoint ({one_line(err)})") from None
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise FhaError(f"{path}: corrupt checkpoint (no step recorded)")
        for key, kind in cls.REQUIRED.items():
            if key not in state:
                raise FhaError(f"{path}: cannot resume from this checkpoint (no {key!r} recorded)")
            if not isinstance(state[key], kind) or isinstance(state[key], bool):
                raise FhaError(f"{path}: cannot resume from this checkpoint ({key!r} is damaged)")
        return cls(
            step=state["step"],
            optimizer=state["optimizer"],
            sampler=state["sampler"],
            rng=state["rng"],
            elapsed=float(state["elapsed"]),
            data=state["data"],
            metrics_window=state.get("metrics_window", {}),
            world_size=state.get("world_size"),
        )


def _rng_states() -> dict[str, Any]:
    """Every random generator the run touches (rank 0's; other ranks re-derive theirs)."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
        "numpy_pos": int(numpy_state["state"]["pos"]),
    }


def _set_rng_states(states: dict[str, Any], rank: int) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(("MT19937", states["numpy_key"].numpy().astype(np.uint32), states["numpy_pos"], 0, 0.0))
    if rank:
        torch.manual_seed(int(torch.randint(2**31, (1,))) + rank)  # different dropout masks per process


@dataclass
class Checkpoint:
    """A checkpoint read back from disk, its training state checked; the weights are applied with
    `load_weights_into`."""

    path: Path
    model_config: ModelConfig
    train_config: TrainConfig
    tokenizer: Tokenizer
    state: TrainingState

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def run_dir(self) -> Path | None:
        """The run folder the checkpoint belongs to (``RUN_DIR/checkpoints/step-N``), or None for a
        checkpoint folder that was copied out of its run."""
        if self.path.parent.name != CHECKPOINTS_DIR:
            return None
        return self.path.parent.parent

    def load_weights_into(self, model: GPT) -> None:
        read_weights_into(model, self.path / MODEL_FILE, label="checkpoint weights")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"{CHECKPOINT_PREFIX}{step}"


def save_checkpoint(
    run_dir: str | Path, *, model: GPT, train_config: TrainConfig, tokenizer: Tokenizer, state: TrainingState
) -> Path:
    """Write ``checkpoints/step-{state.step}`` atomically (replacing one of the same step) and return it."""
    final = checkpoint_path(run_dir, state.step)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(parent)
    temp = parent / f".{final.name}{_TEMP_MARK}{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    try:
        temp.mkdir()
        save_weights(model, temp)
        train_config.to_json(temp / TRAIN_CONFIG_FILE)
        tokenizer.save(temp / TOKENIZER_FILE)
        state.save(temp / STATE_FILE)
        _sync_folder(temp)
    except (OSError, SafetensorError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
        shutil.rmtree(temp, ignore_errors=True)
        free = shutil.disk_usage(parent).free
        raise FhaError(
            f"{final}: cannot write the checkpoint ({one_line(err)}; {free / 2**20:,.0f} MiB free on "
            "that disk); the earlier checkpoints are untouched"
        ) from None
    if final.exists():
        old = parent / f".{final.name}{_OLD_MARK}{os.getpid()}"
        os.replace(final, old)
        os.replace(temp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temp, final)
    log.debug("wrote checkpoint %s", final)
    return final


def _sync_folder(folder: Path) -> None:
    """Flush the files' contents to disk before the rename makes the checkpoint visible."""
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _remove_leftovers(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.name.startswith(".") and (_TEMP_MARK in entry.name or _OLD_MARK in entry.name):
            shutil.rmtree(entry, ignore_errors=True)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the latest checkpoint of a run folder."""
    path = existing_folder(
        path, "checkpoint or run folder", "not a checkpoint (expected a run folder or its checkpoints/step-N folder)"
    )
    if (path / STATE_FILE).exists() or CHECKPOINT_NAME.match(path.name):
        return path
    checkpoints = list_checkpoints(path)
    if not checkpoints and (path / TRAIN_CONFIG_FILE).is_file():
        raise FhaError(
            f"{path}: no checkpoint to resume from: its run stopped before its first checkpoint; run "
            "the same fha train command again (it starts over in this folder)"
        )
    if not checkpoints:
        raise FhaError(f"{path}: no checkpoint to resume from (no {CHECKPOINTS_DIR}/{CHECKPOINT_PREFIX}N folder)")
    return checkpoints[-1][1]


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint (a folder, or the latest of a run folder) and check that a run can resume from
    it; every problem is an FhaError."""
    folder = find_checkpoint(path)
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise FhaError(f"{folder}: incomplete checkpoint (no {name})")
    model_config = ModelConfig.from_json(folder / MODEL_CONFIG_FILE)
    train_config = TrainConfig.from_json(folder / TRAIN_CONFIG_FILE)
    tokenizer = Tokenizer.load(folder / TOKENIZER_FILE)
    return Checkpoint(folder, model_config, train_config, tokenizer, TrainingState.load(folder / STATE_FILE))
