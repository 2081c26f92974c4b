"""``fha train``: train a model from a preset or TOML file, or resume a run from a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from fha.data.sources import TINYSTORIES
from fha.device import DEVICE_CHOICES
from fha.errors import FhaError
from fha.run import CHECKPOINTS_DIR
from fha.tokenizer import Tokenizer
from fha.train.checkpoint import load_checkpoint
from fha.train.loop import TrainRequest, train
from fha.train.presets import (
    build_configs,
    load_experiment,
    merge,
    parse_overrides,
    preset_names,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (or resume a run)",
        description="Train an FHA or MHA model and write a run folder; or continue one with --resume.",
        epilog="Several GPUs (or CPU processes): torchrun --nproc_per_node N -m fha train ... ; "
        "--set reaches every field of the [model] and [train] tables, e.g. --set attention=mha --set max_iters=2000.",
    )
    source = parser.add_argument_group("what to train")
    source.add_argument("--preset", metavar="NAME", help=f"a shipped experiment: {', '.join(preset_names())}")
    source.add_argument("--config", type=Path, metavar="FILE.toml", help="an experiment file ([model] and [train])")
    source.add_argument("--resume", type=Path, metavar="PATH",
                        help="continue a run: its folder (latest checkpoint) or a checkpoints/step-N folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change a model or training setting (repeatable), e.g. --set dim=128")
    parser.add_argument("--data", metavar="SOURCE",
                        help="training text (.txt or .jsonl) or 'tinystories'; a resume reuses the run's")
    parser.add_argument("--val-data", metavar="SOURCE",
                        help="validation text; without it a val_fraction of --data is held out")
    parser.add_argument("--tokenizer", type=Path, metavar="TOKENIZER.json",
                        help="use this tokenizer (its size sets vocab_size); without it one is trained")
    parser.add_argument("--out", type=folder_path, metavar="RUN_DIR", help="the run folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous run in RUN_DIR")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="default: cuda, then mps, then cpu")
    parser.set_defaults(func=run_train)


def folder_path(text: str) -> Path:
    """An --out value: a folder name, never the empty string (which would silently mean '.')."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder name, got an empty string")
    return Path(text)


def run_train(args: argparse.Namespace) -> int:
    request = _resume_request(args) if args.resume is not None else _new_request(args)
    train(request)
    return 0


def _new_request(args: argparse.Namespace) -> TrainRequest:
    if args.preset is None and args.config is None:
        raise FhaError("give --preset NAME, --config FILE.toml or --resume PATH")
    if args.data is None:
        raise FhaError("--data is required: a text file (.txt, .jsonl) or 'tinystories'")
    if args.out is None:
        raise FhaError("--out RUN_DIR is required")
    overrides = parse_overrides(args.overrides)
    model_config, train_config = build_configs(merge(load_experiment(args.preset, args.config), overrides))
    tokenizer = None
    if args.tokenizer is not None:
        tokenizer = Tokenizer.load(args.tokenizer)
        asked = overrides["model"].get("vocab_size")
        if asked is not None and asked != tokenizer.vocab_size:
            raise FhaError(f"--set vocab_size={asked} but {args.tokenizer} has {tokenizer.vocab_size} tokens")
    return TrainRequest(model_config, train_config, args.data, args.out, val_data=args.val_data,
                        tokenizer=tokenizer, device=args.device, overwrite=args.overwrite)


def _resume_request(args: argparse.Namespace) -> TrainRequest:
    for flag, value in (("--preset", args.preset), ("--config", args.config), ("--tokenizer", args.tokenizer)):
        if value is not None:
            raise FhaError(f"{flag} cannot be combined with --resume (the checkpoint holds its configs and tokenizer)")
    overrides = parse_overrides(args.overrides)
    if overrides["model"]:
        names = ", ".join(sorted(overrides["model"]))
        raise FhaError(f"--set {names}: the model of a run cannot change on --resume (only training settings)")
    checkpoint = load_checkpoint(args.resume)
    checkpoint.check_resumable()
    _, train_config = build_configs({"train": {**checkpoint.train_config.to_dict(), **overrides["train"]}})
    saved_data = checkpoint.state.get("data", {})
    data = args.data or saved_data.get("source")
    if data is None:
        raise FhaError(f"{checkpoint.path}: the checkpoint does not record its data; pass --data")
    val_data = args.val_data if args.val_data is not None else saved_data.get("val_source")
    for flag, given, saved in (("--data", args.data, data), ("--val-data", args.val_data, val_data)):
        if given is None and saved is not None and saved != TINYSTORIES and not Path(saved).exists():
            raise FhaError(f"{checkpoint.path}: the run's {flag} {saved} is not there any more; pass {flag} with "
                           "the same documents (they are checked against the fingerprint the checkpoint holds)")
    out = args.out or checkpoint.run_dir
    if out is None:
        raise FhaError(f"{checkpoint.path}: this checkpoint is not inside a run's {CHECKPOINTS_DIR}/ folder; "
                       "pass --out RUN_DIR to say where the resumed run goes")
    return TrainRequest(checkpoint.model_config, train_config, data, out,
                        val_data=val_data, device=args.device, overwrite=args.overwrite, resume=checkpoint)
