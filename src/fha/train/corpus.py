"""The run's data: its documents, their record in checkpoints, the tokenizer, the token arrays.

A checkpoint stores the absolute paths of ``--data`` and ``--val-data`` and a fingerprint
(SHA-256) of the documents of each split (`DataSources`). A resume uses the stored sources
unless new ones are given, from any working folder. Its training documents must be the ones
the run was trained on (the sampler continues where it stopped, which only reproduces the run
on the same documents), so a change there is refused; new validation documents are used and
the change is logged.

Token arrays are cached under ``$FHA_CACHE_DIR/tokens`` (default ``~/.cache/fha/tokens``),
one entry per split, tokenizer and content (the digest of the split's documents), so runs on
the same data share them wherever the files lie.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from fha.data import TokenData, cached_tokens, load_splits
from fha.data.sources import TINYSTORIES
from fha.errors import FhaError
from fha.runs.checkpoint import Checkpoint
from fha.tokenizer import Tokenizer
from fha.wording import counted

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
FINGERPRINT_CHARS = 16
_DOCUMENT_END = b"\x00"  # never inside a document's UTF-8, so the joined bytes identify the split


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
        return f"{Path(self.source).resolve()} [{split} of {self._split_rule()}]"

    def _split_rule(self) -> str:
        return f"val_fraction={self.val_fraction} split_seed={self.split_seed}"

    def describe_training(self) -> str:
        """Where the training documents come from, as a resume that refuses them says it."""
        held_out = f", `val_data` {self.val_source}" if self.val_source else ""
        return f"`data` {self.source} ({self._split_rule()}{held_out})"


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


# ---------------------------------------------------------------------- the record in checkpoints
@overload
def absolute_source(source: str) -> str: ...
@overload
def absolute_source(source: None) -> None: ...
def absolute_source(source: str | None) -> str | None:
    """A data source as recorded in checkpoints: an absolute path (or the name of a hub dataset)."""
    if source is None or source == TINYSTORIES:
        return source
    return os.path.abspath(source)


def fingerprint(documents: list[str]) -> str:
    digest = hashlib.sha256()
    for document in documents:
        digest.update(document.encode("utf-8"))
        digest.update(_DOCUMENT_END)
    return digest.hexdigest()[:FINGERPRINT_CHARS]


@dataclass(frozen=True)
class DataSources:
    """The run's data as a checkpoint records it: the sources and a fingerprint of each split."""

    source: str
    val_source: str | None
    fingerprints: dict[str, str]

    def to_state(self) -> dict[str, Any]:
        return {"source": self.source, "val_source": self.val_source, "fingerprints": dict(self.fingerprints)}


def resolve_data_sources(spec: DataSpec, documents: dict[str, list[str]], resume: Checkpoint | None) -> DataSources:
    """The run's data (`spec` and its `documents`) as it will be recorded; on resume, checked against
    the checkpoint's record."""
    sources = DataSources(
        absolute_source(spec.source),
        absolute_source(spec.val_source),
        {split: fingerprint(docs) for split, docs in documents.items()},
    )
    if resume is None:
        return sources
    saved = resume.state.data
    saved_prints = saved.get("fingerprints")
    if not isinstance(saved_prints, dict):
        log.info("%s records no fingerprint of its data (an older checkpoint); the data cannot be checked", resume.path)
        return sources
    if saved_prints.get("train") != sources.fingerprints["train"]:
        raise FhaError(
            f"{resume.path}: the training documents of {spec.describe_training()} differ from the ones the run was "
            f"trained on ({saved.get('source')}); a resume continues the sampler where it stopped, which only "
            "reproduces the run on the same documents: resume with the run's own data, or start a new run"
        )
    if saved_prints.get("val") != sources.fingerprints["val"]:
        log.warning(
            "validation data changed on resume: %s (fingerprint %s) -> %s (fingerprint %s); the validation losses "
            "after step %d are measured on the new documents",
            saved.get("val_source") or f"held out of {saved.get('source')}",
            saved_prints.get("val"),
            spec.val_source or f"held out of {spec.source}",
            sources.fingerprints["val"],
            resume.step,
        )
    return sources
