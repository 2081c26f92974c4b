"""The run folder: what training leaves behind and everything else reads.

    RUN_DIR/
      model.safetensors    final weights (tied output layer stored once)
      model_config.json    ModelConfig
      train_config.json    TrainConfig (absent for a bare exported model)
      tokenizer.json       the tokenizer the model was trained with
      log_data.csv         one row per evaluation
      metrics.csv          one row per log_interval training steps
      checkpoints/step-N/  everything a resume needs (itself loadable like a run folder)

A run that is still training, or was stopped, has no model.safetensors yet; `load_run` then
uses its latest checkpoint and says so.
"""

from __future__ import annotations

import logging
import re
import stat
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from fha.config import ModelConfig
from fha.errors import FhaError, one_line, writing
from fha.files import existing_folder
from fha.model.gpt import GPT
from fha.runs.logbook import LogRow, MetricsRow
from fha.tokenizer import Tokenizer
from fha.train_config import TrainConfig

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "model_config.json"
TRAIN_CONFIG_FILE = "train_config.json"
TOKENIZER_FILE = "tokenizer.json"
LOG_FILE = LogRow.FILE  # log_data.csv
METRICS_FILE = MetricsRow.FILE  # metrics.csv
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step-"
CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")  # checkpoints/step-N


class RunConfigs(NamedTuple):
    model: ModelConfig
    train: TrainConfig | None  # None for a bare exported model


class LoadedRun(NamedTuple):
    model: GPT
    tokenizer: Tokenizer
    configs: RunConfigs


def save_weights(model: GPT, directory: str | Path) -> None:
    """Write model.safetensors and model_config.json into directory.

    safetensors creates its files readable by their owner only; the weights get the
    permissions the config file got from the umask, like the rest of the run folder.
    """
    directory = Path(directory)
    config_file, weights = directory / MODEL_CONFIG_FILE, directory / MODEL_FILE
    with writing(directory):
        directory.mkdir(parents=True, exist_ok=True)
        model.config.to_json(config_file)
        save_model(model, str(weights))
        weights.chmod(stat.S_IMODE(config_file.stat().st_mode))


def load_weights(directory: str | Path, device: str | torch.device = "cpu") -> GPT:
    """Build the model described by directory/model_config.json and load its weights."""
    directory = require_run_dir(directory)
    model = GPT(ModelConfig.from_json(directory / MODEL_CONFIG_FILE))
    read_weights_into(model, directory / MODEL_FILE)
    return model.to(device)


def read_weights_into(model: GPT, weights: Path, label: str = "weights") -> None:
    """Load a safetensors file into model; a missing, unreadable, damaged, mismatched or non-finite
    (a diverged run's) file is a one-line FhaError."""
    try:
        with open(weights, "rb"):
            pass
    except OSError as err:
        raise FhaError(f"{weights}: cannot read the {label} ({err.strerror or one_line(err)})") from None
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise FhaError(f"{weights}: corrupt {label} ({one_line(err)})") from None
    if missing or unexpected:
        raise FhaError(
            f"{weights}: {label} do not match model_config.json "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    non_finite = non_finite_tensors(model)
    if non_finite:
        raise FhaError(
            f"{weights}: the {label} hold NaN or infinite values ({len(non_finite)} tensors, e.g. "
            f"{', '.join(non_finite[:3])}); the run diverged before they were saved"
        )


def non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the parameters that hold a NaN or an infinity."""
    return [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def require_run_dir(path: str | Path) -> Path:
    """The path as a run folder, or an FhaError that says what is missing."""
    path = existing_folder(path, "run folder", "not a run folder (it is a file)")
    if not (path / MODEL_FILE).is_file() and (path / TRAIN_CONFIG_FILE).is_file():
        raise FhaError(
            f"{path}: no {MODEL_FILE} yet: training has not finished (it appears at the end; a "
            f"checkpoint under {path / CHECKPOINTS_DIR} is a run folder too, or resume with "
            f"fha train --resume {path})"
        )
    for name in (MODEL_CONFIG_FILE, MODEL_FILE):
        if not (path / name).is_file():
            raise FhaError(f"{path}: not a run folder (no {name})")
    return path


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = CHECKPOINT_NAME.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def weights_folder(path: str | Path) -> Path:
    """The folder to load weights from: `path` itself, or, for a run folder without final weights
    (still training, or stopped), its latest checkpoint, with a one-line note."""
    path = Path(path)
    if not path.is_dir() or (path / MODEL_FILE).is_file() or not (path / MODEL_CONFIG_FILE).is_file():
        return path
    usable = [(step, folder) for step, folder in list_checkpoints(path) if (folder / MODEL_FILE).is_file()]
    if not usable:
        return path
    step, folder = usable[-1]
    log.warning(
        "%s: no final weights (the run is unfinished); using its latest checkpoint, step %d (%s)", path, step, folder
    )
    return folder


def load_model_and_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, Tokenizer]:
    """The model (in eval mode) and tokenizer of a run folder (or of its latest checkpoint when
    it has no final weights yet), checked to fit each other."""
    path = require_run_dir(weights_folder(path))
    if not (path / TOKENIZER_FILE).is_file():
        raise FhaError(f"{path}: not a run folder (no {TOKENIZER_FILE})")
    model = load_weights(path, device).eval()
    tokenizer = Tokenizer.load(path / TOKENIZER_FILE)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise FhaError(
            f"{path}: tokenizer has {tokenizer.vocab_size} tokens but the model expects {model.config.vocab_size}"
        )
    return model, tokenizer


def load_run(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """(model in eval mode, tokenizer, configs) of a run: finished, exported, or unfinished (its
    latest checkpoint)."""
    model, tokenizer = load_model_and_tokenizer(path, device)
    train = None
    if (Path(path) / TRAIN_CONFIG_FILE).is_file():
        train = TrainConfig.from_json(Path(path) / TRAIN_CONFIG_FILE)
    return LoadedRun(model, tokenizer, RunConfigs(model.config, train))
