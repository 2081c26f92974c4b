"""``fha tokenizer train|show``: build a BPE tokenizer from text files, or look at one."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fha.data.sources import TINYSTORIES, load_documents, load_splits
from fha.wording import counted

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
    train.add_argument(
        "--byte-fallback",
        action="store_true",
        help="give the 256 byte values ids of their own (counted in --vocab-size), so that characters outside "
        "the alphabet are written as UTF-8 bytes instead of <unk> and every text round-trips",
    )
    train.add_argument("--out", type=Path, required=True, metavar="TOKENIZER.json", help="where to write it")
    train.set_defaults(func=run_train)

    show = actions.add_parser(
        "show", help="print how a text is cut into tokens and their ids (or describe the tokenizer)"
    )
    show.add_argument("tokenizer", type=Path, metavar="TOKENIZER.json")
    show.add_argument("text", nargs="?", help="text to cut; without it, a summary of the tokenizer")
    show.set_defaults(func=run_show)


def run_train(args: argparse.Namespace) -> int:
    from fha.tokenizer import Tokenizer

    documents = _training_documents(args.data)
    tokenizer = Tokenizer.train(documents, args.vocab_size, byte_fallback=args.byte_fallback)
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
    print("ids: " + " ".join(map(str, ids)))
    outside = tokenizer.count_outside_alphabet(args.text)
    note = ""
    if outside:
        how = "written as UTF-8 bytes" if tokenizer.byte_fallback else "unknown (<unk>)"
        note = f", {counted(outside, 'character')} {how}"
    per_token = len(args.text) / max(len(ids), 1)
    print(f"{counted(len(ids), 'token')}, {counted(len(args.text), 'character')} ({per_token:.2f} per token){note}")
    return 0


def _training_documents(sources: list[str]) -> list[str]:
    if sources == [TINYSTORIES]:
        return load_splits(TINYSTORIES)["train"]
    documents: list[str] = []
    for source in sources:
        documents.extend(load_documents(source))
    log.info("training on %s from %s", counted(len(documents), "document"), counted(len(sources), "file"))
    return documents
