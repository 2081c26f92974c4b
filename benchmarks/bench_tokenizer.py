"""Tokenizer benchmark: compression and encoding speed per vocabulary size.

Trains a tokenizer on the sample's train.txt for each vocabulary size, then measures on
valid.txt the characters per token and how many characters fell outside the alphabet,
and the encoding speed (MB of UTF-8 text per second) on train.txt + valid.txt with a
freshly loaded tokenizer (so its word cache starts empty): batched (`encode_batch`, all
cores), one document at a time (`encode`), and through `prepare_tokens` (encoding plus
writing the token cache). Timings are the median of 3 runs. Prints a Markdown table.

    python benchmarks/bench_tokenizer.py [--data DIR] [--vocab-sizes 95 128 ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fha.data import load_documents, prepare_tokens
from fha.tokenizer import SPECIAL_TOKENS, Tokenizer

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinystories-sample"
DEFAULT_VOCAB_SIZES = (95, 128, 256, 512, 1024, 2048, 4096, 8192)
BYTES_PER_MB = 1e6
TIMING_REPEATS = 3
COLUMNS = (
    "vocab",
    "characters + merges",
    "chars/token (valid)",
    "unknown chars (valid)",
    "train (s)",
    "encode_batch MB/s",
    "encode MB/s",
    "prepare_tokens MB/s",
)


def utf8_size(texts: list[str]) -> int:
    return sum(len(text.encode("utf-8")) for text in texts)


def fresh_copy(tokenizer: Tokenizer, folder: Path) -> Tokenizer:
    path = folder / f"tok-{tokenizer.vocab_size}.json"
    tokenizer.save(path)
    return Tokenizer.load(path)


def throughput(make_encode: Callable[[], Callable[[list[str]], object]], texts: list[str]) -> float:
    """Median MB/s over `TIMING_REPEATS` runs, each with a fresh encoder from `make_encode()`."""
    speeds = []
    for _ in range(TIMING_REPEATS):
        encode = make_encode()
        started = time.perf_counter()
        encode(texts)
        speeds.append(utf8_size(texts) / (time.perf_counter() - started) / BYTES_PER_MB)
    return statistics.median(speeds)


def cache_throughput(tokenizer: Tokenizer, texts: list[str], folder: Path) -> float:
    """MB/s of `prepare_tokens`: encoding plus writing the token cache."""
    started = time.perf_counter()
    prepare_tokens(texts, fresh_copy(tokenizer, folder), folder / "cache", "bench", "bench")
    return utf8_size(texts) / (time.perf_counter() - started) / BYTES_PER_MB


def bench_one(train: list[str], valid: list[str], vocab_size: int, folder: Path) -> dict[str, float]:
    started = time.perf_counter()
    tokenizer = Tokenizer.train(train, vocab_size)
    train_s = time.perf_counter() - started
    valid_tokens = sum(len(ids) for ids in tokenizer.encode_batch(valid))
    speed_texts = train + valid
    batched = throughput(lambda: fresh_copy(tokenizer, folder).encode_batch, speed_texts)
    single = throughput(lambda: _one_at_a_time(fresh_copy(tokenizer, folder)), speed_texts)
    return {
        "vocab": tokenizer.vocab_size,
        "alphabet": len(tokenizer.alphabet),
        "merges": tokenizer.vocab_size - len(SPECIAL_TOKENS) - len(tokenizer.alphabet),
        "chars_per_token": sum(len(doc) for doc in valid) / valid_tokens,
        "unknown": sum(tokenizer.count_unknown(doc) for doc in valid),
        "train_s": train_s,
        "batch_mb_s": batched,
        "single_mb_s": single,
        "cache_mb_s": cache_throughput(tokenizer, speed_texts, folder),
    }


def _one_at_a_time(tokenizer: Tokenizer) -> Callable[[list[str]], list[list[int]]]:
    return lambda texts: [tokenizer.encode(text) for text in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.txt and valid.txt")
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=DEFAULT_VOCAB_SIZES)
    args = parser.parse_args()
    train, valid = load_documents(args.data / "train.txt"), load_documents(args.data / "valid.txt")
    alphabet_vocab = len(Tokenizer.train(train, max(args.vocab_sizes)).alphabet) + len(SPECIAL_TOKENS)
    sizes = sorted({alphabet_vocab, *args.vocab_sizes})
    print(
        f"train.txt: {len(train)} stories, {utf8_size(train):,} bytes; valid.txt: {len(valid)} stories, "
        f"{utf8_size(valid):,} bytes; {os.cpu_count()} CPUs"
    )
    print()
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + " ---: |" * len(COLUMNS))
    with tempfile.TemporaryDirectory() as folder:
        for vocab_size in sizes:
            row = bench_one(train, valid, vocab_size, Path(folder))
            cells = [
                f"{row['vocab']} (char-level)" if row["merges"] == 0 else str(row["vocab"]),
                f"{row['alphabet']} + {row['merges']}",
                f"{row['chars_per_token']:.2f}",
                str(row["unknown"]),
                f"{row['train_s']:.2f}",
                f"{row['batch_mb_s']:.1f}",
                f"{row['single_mb_s']:.1f}",
                f"{row['cache_mb_s']:.1f}",
            ]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
