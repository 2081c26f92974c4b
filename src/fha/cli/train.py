"""``fha train``: train a model from a preset or TOML file, or resume a run from a checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from fha.cli.options import add_device_argument, add_experiment_arguments, add_precision_argument
from fha.experiments import override_pairs, preset_names
from fha.runs.trackers import TRACKERS

if TYPE_CHECKING:
    from fha.config_base import ConfigBase


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (or resume a run)",
        description="Train an FHA or MHA model and write a run folder; or continue one with --resume.",
        epilog="Several GPUs (or CPU processes): torchrun --nproc_per_node N -m fha train ... ; "
        "--set reaches every field of the [model] and [train] tables, e.g. --set attention=mha --set max_steps=2000.",
    )
    source = parser.add_argument_group("what to train")
    add_experiment_arguments(
        source,
        preset_help=f"a shipped experiment: {', '.join(preset_names())}",
        config_help="an experiment file ([model] and [train])",
        set_help="change a model or training setting (repeatable), e.g. --set dim=128",
    )
    source.add_argument(
        "--resume",
        type=Path,
        metavar="PATH",
        help="continue a run: its folder (latest checkpoint) or a checkpoints/step-N folder",
    )
    parser.add_argument(
        "--data", metavar="SOURCE", help="training text (.txt or .jsonl) or 'tinystories'; a resume reuses the run's"
    )
    parser.add_argument(
        "--val-data", metavar="SOURCE", help="validation text; without it a val_fraction of --data is held out"
    )
    parser.add_argument(
        "--tokenizer",
        type=Path,
        metavar="TOKENIZER.json",
        help="use this tokenizer (its size sets vocab_size); without it one is trained",
    )
    parser.add_argument("--out", type=folder_path, metavar="RUN_DIR", help="the run folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous run in RUN_DIR")
    add_device_argument(parser)
    add_precision_argument(parser)
    parser.add_argument(
        "--log-to",
        action="append",
        default=[],
        choices=tuple(TRACKERS),
        metavar="TRACKER",
        help=f"also log metrics to {' or '.join(TRACKERS)} (repeatable; metrics.csv is always written)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved model and training config (as an experiment file) and exit",
    )
    parser.set_defaults(func=run_train)


def folder_path(text: str) -> Path:
    """An --out value: a folder name, never the empty string (which would silently mean '.')."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder name, got an empty string")
    return Path(text)


def run_train(args: argparse.Namespace) -> int:
    from fha.train.api import build_request, resolve_configs
    from fha.train.loop import train

    overrides = override_pairs(args.overrides)  # parsed into the configs' tables once, by the library
    if args.print_config:
        model_config, train_config = resolve_configs(
            args.preset, config=args.config, overrides=overrides, resume=args.resume
        )
        print(experiment_toml({"model": model_config, "train": train_config}))
        return 0
    request = build_request(
        args.preset,
        config=args.config,
        overrides=overrides,
        data=args.data,
        val_data=args.val_data,
        out=args.out,
        resume=args.resume,
        tokenizer=args.tokenizer,
        device=args.device,
        precision=args.precision,
        overwrite=args.overwrite,
        log_to=args.log_to,
    )
    train(dataclasses.replace(request, continue_hint=f"resume with: fha train --resume {request.out_dir}"))
    return 0


def experiment_toml(configs: dict[str, ConfigBase]) -> str:
    """The configs as an experiment file that ``--config`` reads back; unset optional fields
    (None: their default rule applies) are shown as comments."""
    lines = []
    for table, config in configs.items():
        lines.append(f"[{table}]")
        for key, value in config.to_dict().items():
            lines.append(f"# {key} = (not set)" if value is None else f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):  # head-split patterns
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
