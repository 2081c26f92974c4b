"""Checkpoints: ``RUN_DIR/checkpoints/step-N/``, written atomically, read with one-line errors.

A checkpoint folder holds everything a resume needs and is itself a loadable run folder::

    model.safetensors     weights after N optimiser steps
    model_config.json     ModelConfig
    train_config.json     TrainConfig
    tokenizer.json        the run's tokenizer
    training_state.pt     step, optimizer, RNG states, batch sampler position, data sources,
                          elapsed time (tensors and plain Python values only: loaded with
                          ``torch.load(weights_only=True)``)

It is first written under a hidden temporary name in the same folder and then renamed, so
a crash while writing leaves no folder that looks like a checkpoint; leftovers of such a
crash are removed by the next save.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from fha.config import ModelConfig
from fha.errors import FhaError, one_line
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
# What the training loop writes into training_state.pt and a resume reads back.
RESUME_STATE_TYPES: dict[str, type | tuple[type, ...]] = {
    "optimizer": dict,
    "sampler": dict,
    "rng": dict,
    "data": dict,
    "elapsed": (int, float),
}


@dataclass
class Checkpoint:
    """A checkpoint read back from disk; the weights are applied with `load_weights_into`."""

    path: Path
    step: int
    model_config: ModelConfig
    train_config: TrainConfig
    tokenizer: Tokenizer
    state: dict[str, Any]

    @property
    def run_dir(self) -> Path | None:
        """The run folder the checkpoint belongs to (``RUN_DIR/checkpoints/step-N``), or None for a
        checkpoint folder that was copied out of its run."""
        if self.path.parent.name != CHECKPOINTS_DIR:
            return None
        return self.path.parent.parent

    def check_resumable(self) -> None:
        """Raise a one-line FhaError unless the state holds what the training loop needs to resume."""
        state_file = self.path / STATE_FILE
        for key, kind in RESUME_STATE_TYPES.items():
            if key not in self.state:
                raise FhaError(f"{state_file}: cannot resume from this checkpoint (no {key!r} recorded)")
            if not isinstance(self.state[key], kind) or isinstance(self.state[key], bool):
                raise FhaError(f"{state_file}: cannot resume from this checkpoint ({key!r} is damaged)")

    def load_weights_into(self, model: GPT) -> None:
        read_weights_into(model, self.path / MODEL_FILE, label="checkpoint weights")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"{CHECKPOINT_PREFIX}{step}"


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: GPT,
    train_config: TrainConfig,
    tokenizer: Tokenizer,
    state: dict[str, Any],
) -> Path:
    """Write ``checkpoints/step-{step}`` atomically (replacing one of the same step) and return it."""
    final = checkpoint_path(run_dir, step)
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
        torch.save({**state, "step": step}, temp / STATE_FILE)
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
    path = Path(path)
    if not path.exists():
        raise FhaError(f"{path}: no such checkpoint or run folder")
    if not path.is_dir():
        raise FhaError(f"{path}: not a checkpoint (expected a run folder or its checkpoints/step-N folder)")
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
    """Read a checkpoint (a folder, or the latest of a run folder); every problem is an FhaError."""
    folder = find_checkpoint(path)
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise FhaError(f"{folder}: incomplete checkpoint (no {name})")
    model_config = ModelConfig.from_json(folder / MODEL_CONFIG_FILE)
    train_config = TrainConfig.from_json(folder / TRAIN_CONFIG_FILE)
    tokenizer = Tokenizer.load(folder / TOKENIZER_FILE)
    state_file = folder / STATE_FILE
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise FhaError(f"{state_file}: corrupt checkpoint ({one_line(err)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise FhaError(f"{state_file}: corrupt checkpoint (no step recorded)")
    return Checkpoint(folder, state["step"], model_config, train_config, tokenizer, state)
