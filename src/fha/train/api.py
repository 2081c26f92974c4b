"""Training from Python with the arguments of ``fha train``.

    import fha
    run = fha.train_model("tiny", overrides={"max_steps": 200, "attention": "mha"},
                          data="stories.txt", val_data="valid.txt", out="runs/tiny-mha")
    model, tokenizer, configs = run.load()
    fha.train_model(resume="runs/tiny-mha", overrides={"max_steps": 400})

`build_request` turns the same arguments into the `TrainRequest` that `fha.train.train`
runs; the CLI uses it too, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fha.config import ModelConfig
from fha.errors import FhaError
from fha.experiments import TABLES, Tables, build_config, build_configs, load_experiment, merge, override_tables
from fha.runs.checkpoint import Checkpoint, load_checkpoint
from fha.runs.folder import CHECKPOINTS_DIR
from fha.tokenizer import Tokenizer
from fha.train.loop import TrainRequest, TrainResult, train
from fha.train_config import TrainConfig


def train_model(
    preset: str | None = None,
    *,
    config: str | Path | Mapping[str, Mapping[str, Any]] | None = None,
    overrides: Mapping[str, Any] | None = None,
    data: str | Path | None = None,
    val_data: str | Path | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    tokenizer: str | Path | Tokenizer | None = None,
    device: str = "auto",
    precision: str = "auto",
    overwrite: bool = False,
    log_to: Sequence[str] = (),
) -> TrainResult:
    """Train a model as ``fha train`` does and return the run (``result.run_dir``, ``result.load()``).

    `preset` or `config` (a TOML file, or ``{"model": {...}, "train": {...}}`` tables) says
    what to train; `overrides` changes settings of either config like ``--set``; `resume`
    continues a run folder or a ``checkpoints/step-N`` folder instead (then only training
    settings may change, and `data` defaults to the run's). `log_to`: tracker names
    ("tensorboard", "wandb"). Problems the user can fix raise `FhaError`.
    """
    return train(
        build_request(
            preset,
            config=config,
            overrides=overrides,
            data=data,
            val_data=val_data,
            out=out,
            resume=resume,
            tokenizer=tokenizer,
            device=device,
            precision=precision,
            overwrite=overwrite,
            log_to=log_to,
        )
    )


def build_request(
    preset: str | None = None,
    *,
    config: str | Path | Mapping[str, Mapping[str, Any]] | None = None,
    overrides: Mapping[str, Any] | None = None,
    data: str | Path | None = None,
    val_data: str | Path | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    tokenizer: str | Path | Tokenizer | None = None,
    device: str = "auto",
    precision: str = "auto",
    overwrite: bool = False,
    log_to: Sequence[str] = (),
) -> TrainRequest:
    """The `TrainRequest` for `train_model`'s arguments, with both configs resolved and validated."""
    changes = override_tables(overrides or {})
    model_config, train_config, checkpoint = _resolve(preset, config, changes, resume, tokenizer)
    common = {"device": device, "precision": precision, "overwrite": overwrite, "trackers": tuple(log_to)}
    if checkpoint is not None:
        return _resume_request(checkpoint, train_config, data, val_data, out, common)
    if data is None:
        raise FhaError("`data` is required: a text file (.txt, .jsonl) or 'tinystories'")
    if out is None:
        raise FhaError("`out` (the run folder) is required")
    loaded = _tokenizer(tokenizer, changes)
    return TrainRequest(
        model_config, train_config, str(data), Path(out), val_data=_text(val_data), tokenizer=loaded, **common
    )


def resolve_configs(
    preset: str | None = None,
    *,
    config: str | Path | Mapping[str, Mapping[str, Any]] | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: str | Path | None = None,
) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs `train_model` would use (``fha train --print-config``).

    The model's `vocab_size` is the requested one; training replaces it with the size of
    the tokenizer it trains or is given."""
    model_config, train_config, _ = _resolve(preset, config, override_tables(overrides or {}), resume, None)
    return model_config, train_config


def _resolve(
    preset: str | None,
    config: str | Path | Mapping[str, Mapping[str, Any]] | None,
    changes: Tables,
    resume: str | Path | None,
    tokenizer: object,
) -> tuple[ModelConfig, TrainConfig, Checkpoint | None]:
    """The two configs (and the checkpoint of a resume) from an experiment or a checkpoint and the
    `overrides`, split into their tables (`changes`)."""
    if resume is not None:
        for name, value in (("preset", preset), ("config", config), ("tokenizer", tokenizer)):
            if value is not None:
                raise FhaError(
                    f"`{name}` cannot be combined with `resume` (the checkpoint holds its configs and tokenizer)"
                )
        if changes["model"]:
            names = ", ".join(sorted(changes["model"]))
            raise FhaError(
                f"`overrides` {names}: the model of a run cannot change on `resume` (only training settings)"
            )
        checkpoint = load_checkpoint(Path(resume))
        train_config = build_config(TrainConfig, {**checkpoint.train_config.to_dict(), **changes["train"]})
        return checkpoint.model_config, train_config, checkpoint
    if preset is None and config is None:
        raise FhaError("give `preset` (a name), `config` (a TOML file) or `resume` (a run or checkpoint folder)")
    model_config, train_config = build_configs(merge(_experiment(preset, config), changes))
    return model_config, train_config, None


def _experiment(preset: str | None, config: str | Path | Mapping[str, Mapping[str, Any]] | None) -> Tables:
    if isinstance(config, Mapping):
        if preset is not None:
            raise FhaError("give exactly one of `preset` (a name) or `config` (a TOML file)")
        unknown = sorted(set(config) - set(TABLES))
        if unknown:
            raise FhaError(f"config: unknown table {unknown[0]!r} (the tables are {', '.join(TABLES)})")
        return merge({}, {name: dict(table) for name, table in config.items()})
    return load_experiment(preset, config)


def _tokenizer(tokenizer: str | Path | Tokenizer | None, changes: Tables) -> Tokenizer | None:
    if tokenizer is None:
        return None
    loaded = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.load(tokenizer)
    asked = changes["model"].get("vocab_size")
    if asked is not None and asked != loaded.vocab_size:
        raise FhaError(f"`overrides` vocab_size={asked} but {tokenizer} has {loaded.vocab_size} tokens")
    return loaded


def _resume_request(
    checkpoint: Checkpoint,
    train_config: TrainConfig,
    data: str | Path | None,
    val_data: str | Path | None,
    out: str | Path | None,
    common: dict[str, Any],
) -> TrainRequest:
    saved_data = checkpoint.state.data
    source = _text(data) or saved_data.get("source")
    if source is None:
        raise FhaError(f"{checkpoint.path}: the checkpoint does not record its data; pass `data`")
    val_source = _text(val_data) if val_data is not None else saved_data.get("val_source")
    run_dir = Path(out) if out is not None else checkpoint.run_dir
    if run_dir is None:
        raise FhaError(
            f"{checkpoint.path}: this checkpoint is not inside a run's {CHECKPOINTS_DIR}/ folder; "
            "pass `out` (a folder) to say where the resumed run goes"
        )
    return TrainRequest(
        checkpoint.model_config, train_config, source, run_dir, val_data=val_source, resume=checkpoint, **common
    )


def _text(source: str | Path | None) -> str | None:
    return None if source is None else str(source)
