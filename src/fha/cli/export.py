"""``fha export RUN_DIR --format hf --out DIR``: write a run in a form other software loads."""

from __future__ import annotations

import argparse

from fha.choices import EXPORT_FORMATS
from fha.cli.options import add_out_argument, add_run_dir_argument

# fha.export.hf's formats, written out so that --help does not import torch; a test checks that they agree.


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a run as a Hugging Face transformers model folder",
        description="Write the run's model, tokenizer and a model card to DIR. --format hf: a folder that "
        "transformers.AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True) and "
        "AutoTokenizer.from_pretrained(DIR) load (with fha installed); a run that is exactly Llama or Gemma "
        "(whole heads, RMSNorm without bias, gated MLP) is written as that architecture and needs neither "
        "trust_remote_code nor fha.",
    )
    add_run_dir_argument(parser, "run folder (or one of its checkpoints)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="hf", help="what to write (default: hf)")
    add_out_argument(parser, "the folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a folder that is not empty")
    parser.add_argument(
        "--fha-code",
        action="store_true",
        help="write fha's model code even for a run that is exactly a stock architecture (Llama, Gemma), "
        "which is otherwise written as one",
    )
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from fha.export.hf import export_run

    out = export_run(args.run_dir, args.out, format=args.format, overwrite=args.overwrite, fha_code=args.fha_code)
    print(f"wrote {out}")
    return 0
