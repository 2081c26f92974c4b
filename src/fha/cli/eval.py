"""``fha eval RUN_DIR --data SOURCE``: loss, perplexity, bits per byte and accuracy over a text.

``--json`` prints one JSON object and nothing else on stdout; otherwise a table and a short
view of the true next tokens beside the model's top-k guesses. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fha import metric_names as names
from fha.choices import EVAL_BATCH_SIZE as DEFAULT_BATCH_SIZE
from fha.choices import EVAL_TOP_K as DEFAULT_TOP_K
from fha.cli.options import (
    add_batch_size_argument,
    add_data_argument,
    add_device_argument,
    add_precision_argument,
    add_run_dir_argument,
)
from fha.data.sources import TINYSTORIES
from fha.errors import FhaError
from fha.wording import counted

if TYPE_CHECKING:
    from fha.evaluation import EvalResult, TokenGuess
    from fha.tokenizer import Tokenizer

log = logging.getLogger(__name__)

GUESS_VIEW_TOKENS = 16  # positions of the first document shown beside the model's guesses


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure a trained model on a text",
        description="Mean token loss, perplexity, bits per byte and top-1/top-k accuracy over a whole text.",
    )
    add_run_dir_argument(parser)
    add_data_argument(
        parser,
        f"a .txt (<|endoftext|> or blank-line separated) or .jsonl file, or {TINYSTORIES!r} for its validation split",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        metavar="K",
        help=f"also report top-K accuracy (default {DEFAULT_TOP_K})",
    )
    add_batch_size_argument(parser, DEFAULT_BATCH_SIZE)
    parser.add_argument("--max-documents", type=int, metavar="N", help="evaluate only the first N documents")
    parser.add_argument("--json", action="store_true", help="print one JSON object of the metrics on stdout")
    add_device_argument(parser)
    add_precision_argument(parser)
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise FhaError(f"--top-k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise FhaError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_documents is not None and args.max_documents < 1:
        raise FhaError(f"--max-documents must be at least 1, got {args.max_documents}")
    from fha.device import setup_device
    from fha.evaluation import evaluate, held_out_documents, next_token_guesses
    from fha.runs.folder import load_run

    device = setup_device(args.device, args.precision)
    model, tokenizer, _ = load_run(args.run_dir, device)
    if args.top_k > tokenizer.vocab_size:
        raise FhaError(f"--top-k {args.top_k} exceeds the vocabulary of {tokenizer.vocab_size} tokens")
    documents = held_out_documents(args.data)[: args.max_documents]
    log.info("evaluating %s on %s from %s", args.run_dir, counted(len(documents), "document"), args.data)
    result = evaluate(
        model,
        documents,
        tokenizer=tokenizer,
        top_k=args.top_k,
        batch_size=args.batch_size,
        show_progress=True,
        precision=args.precision,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    print(_table(args.run_dir, args.data, len(documents), result))
    first = tokenizer.encode(documents[0], bos=True, eos=True)[: GUESS_VIEW_TOKENS + 1]
    print()
    guesses = next_token_guesses(model, first, top_k=args.top_k, precision=args.precision)
    print(_guess_view(guesses, tokenizer, args.top_k))
    return 0


def _table(run_dir: Path, source: str, num_documents: int, result: EvalResult) -> str:
    rows = [
        ("run", str(run_dir)),
        (
            "data",
            (
                f"{source} ({counted(num_documents, 'document', thousands=True)}, "
                f"{counted(result.num_tokens, 'token', thousands=True)} predicted, "
                f"{counted(result.num_bytes, 'byte', thousands=True)})"
            ),
        ),
        (names.LOSS, f"{result.loss:.4f}"),
        (names.PERPLEXITY, f"{result.perplexity:.3f}"),
        (names.BITS_PER_BYTE, f"{result.bits_per_byte:.4f}"),
        (names.TOP1_ACCURACY, f"{result.top1_accuracy:.2%}"),
        (names.topk_accuracy(result.top_k), f"{result.topk_accuracy:.2%}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _guess_view(guesses: list[TokenGuess], tokenizer: Tokenizer, top_k: int) -> str:
    """One line per position: the true token, its probability and rank, then the guesses."""
    lines = [
        f"true next token beside the model's top-{top_k} guesses (first document, teacher forcing):",
        f"{'pos':>4}  {'true token':<16} {'p(true)':>7} {'rank':>5}  guesses",
    ]
    for guess in guesses:
        shown = "  ".join(
            f"{_piece(tokenizer, i)} {p:.3f}" for i, p in zip(guess.guess_ids, guess.guess_probs, strict=True)
        )
        mark = "*" if guess.target_rank <= top_k else " "
        lines.append(
            f"{guess.position:>4}  {_piece(tokenizer, guess.target_id):<16} {guess.target_prob:>7.3f} "
            f"{guess.target_rank:>5}{mark} {shown}"
        )
    lines.append(f"(* true token among the top {top_k})")
    return "\n".join(lines)


def _piece(tokenizer: Tokenizer, token_id: int) -> str:
    """A token as a quoted string, so spaces and newlines stay visible."""
    return repr(tokenizer.id_to_token(token_id))
