"""Kneser–Ney n-gram references (`fha.ngram`): bits per byte per split and order, and timings.

Trains a tokenizer on DIR/train.txt (as ``fha tokenizer train`` does), tokenises train.txt
and each held-out text as ``<bos> doc <eos>`` per story, fits a model of each order on the
training tokens and scores every held-out text. Timings are the median of 3 runs (fitting;
scoring one text). Prints Markdown tables.

    python benchmarks/bench_ngram.py [--data DIR] [--vocab-size 2048] [--orders 1 2 3] [--splits valid test]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fha.data import load_documents, prepare_tokens
from fha.ngram import KneserNey
from fha.tokenizer import Tokenizer

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinystories-3m"
DEFAULT_VOCAB_SIZE = 2048
DEFAULT_ORDERS = (1, 2, 3)
DEFAULT_SPLITS = ("valid", "test")
TIMING_REPEATS = 3


def median_seconds(fn: Callable[[], object]) -> tuple[float, object]:
    """Median wall time of `TIMING_REPEATS` calls of fn, and its last result."""
    times = []
    for _ in range(TIMING_REPEATS):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.txt and the splits")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    parser.add_argument("--orders", type=int, nargs="+", default=DEFAULT_ORDERS)
    parser.add_argument("--splits", nargs="+", default=DEFAULT_SPLITS, help="held-out files DIR/SPLIT.txt")
    args = parser.parse_args()
    train_docs = load_documents(args.data / "train.txt")
    tokenizer = Tokenizer.train(train_docs, args.vocab_size)
    with tempfile.TemporaryDirectory() as cache:
        train = prepare_tokens(train_docs, tokenizer, cache, "train", "train")
        evals = {
            split: prepare_tokens(load_documents(args.data / f"{split}.txt"), tokenizer, cache, split, split)
            for split in args.splits
        }
        print(
            f"{args.data}: train {train.num_tokens:,} tokens ({train.num_bytes:,} bytes); "
            + "; ".join(
                f"{split} {data.num_tokens:,} tokens ({data.num_bytes:,} bytes)" for split, data in evals.items()
            )
            + f"; vocab {tokenizer.vocab_size}"
        )
        print()
        print("| order | discounts | fit (s) | " + " | ".join(f"{s} bits/byte | score {s} (s)" for s in evals) + " |")
        print("|---" * (3 + 2 * len(evals)) + "|")
        for order in args.orders:
            fit_s, model = median_seconds(lambda order=order: KneserNey.fit(train.tokens, order, tokenizer.vocab_size))
            cells = [str(order), ", ".join(f"{d:.3f}" for d in model.discounts), f"{fit_s:.2f}"]
            for data in evals.values():
                score_s, bpb = median_seconds(lambda data=data: model.bits_per_byte(data.tokens, data.num_bytes))
                cells += [f"{bpb:.4f}", f"{score_s:.3f}"]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
