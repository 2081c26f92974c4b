"""The run's data: documents, the tokenizer, and the cached token arrays of both splits.

Token arrays are cached under ``$FHA_CACHE_DIR/tokens`` (default ``~/.cache/fha/tokens``),
one entry per split, tokenizer and content (the digest of the split's documents), so runs on
the same data share them wherever the files lie.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fha.data import TokenData, cached_tokens, load_splits
from fha.data.sources import TINYSTORIES
from fha.tokenizer import Tokenizer
from fha.wording import counted

log = logging.getLogger(__name__)

SPLITS = ("train", "val")


@dataclass(frozen=True)
class DataSpec:
    """Where the documents come from and how a single file is split.

    `split_seed` picks the held-out documents of a single file; it is not the training seed,
    so runs that differ only in their seed train and validate on the same documents.
    """

    source: str
    val_source: str | None
    val_fraction: float
    split_seed: int

    def describe(self, split: str) -> str:
        """Where the documents of `split` come from, as the token cache lists it."""
        if self.source == TINYSTORIES:
            return f"{TINYSTORIES} {split}"
        if self.val_source is not None:
            return str(Path(self.source if split == "train" else self.val_source).resolve())
        split_rule = f"val_fraction={self.val_fraction} split_seed={self.split_seed}"
        return f"{Path(self.source).resolve()} [{split} of {split_rule}]"


def read_documents(spec: DataSpec) -> dict[str, list[str]]:
    splits = load_splits(spec.source, spec.val_source, val_fraction=spec.val_fraction, seed=spec.split_seed)
    log.info(
        "data: %s and %s",
        counted(len(splits["train"]), "training document"),
        counted(len(splits["val"]), "validation document"),
    )
    return splits


def train_tokenizer(documents: list[str], vocab_size: int) -> Tokenizer:
    log.info("training a tokenizer of %d tokens on %s", vocab_size, counted(len(documents), "document"))
    return Tokenizer.train(documents, vocab_size)


def tokenize_splits(documents: dict[str, list[str]], tokenizer: Tokenizer, spec: DataSpec) -> dict[str, TokenData]:
    """Both splits as token arrays, from the cache when it holds the same documents."""
    return {split: cached_tokens(documents[split], tokenizer, split, spec.describe(split)) for split in SPLITS}
