"""``fha tokenizer train|show``: build a BPE tokenizer from text files, or look at one."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fha.data.sources import TINYSTORIES, load_documents, load_splits

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokenizer", help="train or inspect a character-level BPE tokenizer")
    actions = parser.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)

    train = actions.add_parser("train", help="train a tokenizer on text files")
    train.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="FILE",
        help=f"training text: .txt (<|endoftext|> or blank-line separated) or .jsonl files, or {TINYSTORIES!r}",
    )
    train.add_argument("--vocab-size", type=int, required=True, help="number of ids, special tokens included")
    train.add_argument("--out", type=Path, required=True, metavar="TOKENIZER.json", help="where to write it")
    train.set_defaults(func=run_train)

    show = actions.add_parser("show", help="print how a text is cut into tokens (or describe the tokenizer)")
    show.add_argument("tokenizer", type=Path, metavar="TOKENIZER.json")
    show.add_argument("text", nargs="?", help="text to cut; without it, a summary of the tokenizer")
    show.set_defaults(func=run_show)


def run_train(args: argparse.Namespace) -> int:
    from fha.tokenizer import Tokenizer

    documents = _training_documents(args.data)
    tokenizer = Tokenizer.train(documents, args.vocab_size)
    tokenizer.save(args.out)
    print(f"wrote {args.out}: {tokenizer.summary()}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from fha.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(args.tokenizer)
    if args.text is None:
        print(tokenizer.summary())
        return 0
    ids = tokenizer.encode(args.text)
    print(tokenizer.display(args.text))
    unknown = tokenizer.count_unknown(args.text)
    note = f", {unknown} unknown characters" if unknown else ""
    print(f"{len(ids)} tokens, {len(args.text)} characters ({len(args.text) / max(len(ids), 1):.2f} per token){note}")
    return 0


def _training_documents(sources: list[str]) -> list[str]:
    if sources == [TINYSTORIES]:
        return load_splits(TINYSTORIES)["train"]
    documents: list[str] = []
    for source in sources:
        documents.extend(load_documents(source))
    log.info("training on %d documents from %d files", len(documents), len(sources))
    return documents
