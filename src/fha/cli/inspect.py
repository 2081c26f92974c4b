"""``fha inspect``: the shape tree of one forward pass, or attention heatmaps of a trained run.

    fha inspect (--preset NAME | --config FILE | RUN_DIR) [--set KEY=VALUE ...] [--modules PATTERN ...]
    fha inspect RUN_DIR --attention --prompt TEXT --out DIR [--layers N ...]

The shape tree needs only a model config (the model is built with random weights, since
shapes do not depend on them; a RUN_DIR contributes its model_config.json only); attention
maps need a trained run and its tokenizer. Everything runs on the CPU.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fha.cli.options import add_experiment_arguments, add_figure_arguments, add_out_argument
from fha.config import ModelConfig
from fha.errors import FhaError
from fha.experiments import load_experiment, parse_overrides
from fha.figure_formats import DEFAULT_DPI, DEFAULT_FORMAT, check_figure_options
from fha.variants import describe_attention
from fha.wording import counted, plural

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 2  # two rows, so that B and T are told apart in the shapes
DEFAULT_SEQ_LEN = 16
HEAD_LAYOUT_STEM = "head_layout"
MODEL_TABLE = "model"  # the [model] table of a TOML config or preset


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="print the shape tree of a forward pass, or draw attention heatmaps",
        description="Print how tensor shapes change through every module in one forward pass (as a tree), "
        "or with --attention save heatmaps of a trained run's attention weights.",
    )
    parser.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a run folder")
    add_experiment_arguments(
        parser,
        preset_help="a named preset (e.g. tiny, seed-1m)",
        config_help="a TOML config with a [model] table, or a model_config.json",
        set_help="change a model config field (repeatable); not with --attention",
    )
    parser.add_argument(
        "--modules",
        nargs="+",
        metavar="PATTERN",
        help="trace only modules whose name matches a glob, e.g. 'blocks.0*' '*.attn' norm",
    )
    parser.add_argument(
        "--seq-len", type=int, metavar="N", help=f"tokens per row (default {DEFAULT_SEQ_LEN}, at most max_seq_len)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"rows of the example input (default {DEFAULT_BATCH_SIZE})",
    )
    maps = parser.add_argument_group("attention heatmaps (RUN_DIR only)")
    maps.add_argument("--attention", action="store_true", help="save attention heatmaps instead of the shape tree")
    maps.add_argument("--prompt", metavar="TEXT", help="the text whose attention is drawn")
    add_out_argument(maps, "folder for the PNG files", required=False)
    maps.add_argument("--layers", type=int, nargs="+", metavar="N", help="layer indices to draw (default all)")
    add_figure_arguments(maps)
    parser.set_defaults(func=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    sources = [given for given in (args.run_dir, args.preset, args.config) if given is not None]
    if len(sources) != 1:
        raise FhaError("give exactly one of RUN_DIR, --preset NAME or --config FILE")
    if args.attention:
        return _run_attention(args)
    for option in ("prompt", "out", "layers"):
        if getattr(args, option) is not None:
            raise FhaError(f"--{option} is used with --attention")
    if (args.format, args.dpi) != (DEFAULT_FORMAT, DEFAULT_DPI):
        raise FhaError("--format and --dpi are used with --attention")
    config = _apply_overrides(_model_config(args), args.overrides)
    seq_len = args.seq_len if args.seq_len is not None else min(DEFAULT_SEQ_LEN, config.max_seq_len)
    if not 1 <= seq_len <= config.max_seq_len:
        raise FhaError(f"--seq-len: need 1 <= seq_len <= max_seq_len={config.max_seq_len}, got {seq_len}")
    if args.batch_size < 1:
        raise FhaError(f"--batch-size must be at least 1, got {args.batch_size}")
    from fha.inspection import example_input, shape_tree
    from fha.model.gpt import GPT

    idx = example_input(config, args.batch_size, seq_len)
    model = GPT(config).eval()
    tree = shape_tree(model, idx, args.modules)
    if not tree:
        raise FhaError(
            f"--modules {' '.join(args.modules)}: no module name matches "
            f"(names look like 'blocks.0.attn.qkv'; '*' also spans dots)"
        )
    print(f"{describe_attention(config)}; {model.num_parameters():,} parameters; input (B, T) = {tuple(idx.shape)}")
    print(tree)
    return 0


def _model_config(args: argparse.Namespace) -> ModelConfig:
    if args.run_dir is not None:
        from fha.runs.folder import MODEL_CONFIG_FILE, require_run_dir, weights_folder

        return ModelConfig.from_json(require_run_dir(weights_folder(args.run_dir)) / MODEL_CONFIG_FILE)
    if args.preset is not None:
        return _preset_model_config(args.preset)
    return load_model_config_file(args.config)


def _preset_model_config(name: str) -> ModelConfig:
    """The [model] table of a training preset, with its ``base`` chain resolved."""
    return _experiment_model_config(load_experiment(preset=name), f"--preset {name}")


def load_model_config_file(path: Path) -> ModelConfig:
    """A ModelConfig from a JSON file of its fields, or the [model] table of an experiment TOML
    file (read with the training loader, so a ``base = "preset"`` line is followed)."""
    if path.suffix.lower() != ".toml":
        return ModelConfig.from_json(path)
    return _experiment_model_config(load_experiment(config_file=path), str(path))


def _experiment_model_config(tables: dict, label: str) -> ModelConfig:
    try:
        return ModelConfig.from_dict(tables[MODEL_TABLE])
    except (TypeError, ValueError) as err:
        raise FhaError(f"{label}: {err}") from None


def _apply_overrides(config: ModelConfig, overrides: list[str]) -> ModelConfig:
    """`config` with the --set changes, parsed as ``fha train`` parses them; model settings only."""
    tables = parse_overrides(overrides)
    if tables["train"]:
        raise FhaError(f"--set {', '.join(tables['train'])}: training settings; inspect changes only the model")
    try:
        return config.replace(**tables["model"]) if tables["model"] else config
    except (TypeError, ValueError) as err:
        raise FhaError(f"--set: {err}") from None


def _run_attention(args: argparse.Namespace) -> int:
    if args.run_dir is None:
        raise FhaError("--attention needs a trained RUN_DIR (not --preset or --config)")
    if args.overrides or args.modules:
        raise FhaError("--set and --modules do not apply to --attention")
    if args.prompt is None or args.out is None:
        raise FhaError("--attention needs --prompt TEXT and --out DIR")
    if args.out.exists() and not args.out.is_dir():
        raise FhaError(f"--out {args.out}: is a file, not a folder")
    check_figure_options(args.format, args.dpi)
    import torch

    from fha.inspection import attention_maps, save_attention_heatmaps, save_head_layout, token_labels
    from fha.runs.folder import load_run

    model, tokenizer, configs = load_run(args.run_dir)
    ids = tokenizer.encode(args.prompt, bos=True)
    limit = configs.model.max_seq_len
    if len(ids) > limit:
        log.warning("the prompt has %s; drawing the first %d (max_seq_len)", counted(len(ids), "token"), limit)
        ids = ids[:limit]
    maps = attention_maps(model, torch.tensor([ids]), args.layers)
    labels = token_labels(tokenizer, ids)
    written = save_attention_heatmaps(maps, labels, args.out, fmt=args.format, dpi=args.dpi)
    layout = save_head_layout(configs.model, args.out / f"{HEAD_LAYOUT_STEM}.{args.format}", dpi=args.dpi)
    print(f"{counted(len(ids), 'token')}: {' '.join(labels)}")
    layers = ", ".join(str(m.layer) for m in maps)
    print(f"wrote {counted(len(written), 'heatmap')} for {plural(len(maps), 'layer')} {layers} to {args.out}")
    print(f"wrote the head layout to {layout}")
    return 0
