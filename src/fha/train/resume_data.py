"""Which documents a run trains and validates on, recorded in every checkpoint and checked on resume.

A checkpoint stores the absolute paths of ``--data`` and ``--val-data`` and a fingerprint
(SHA-256) of the documents of each split. A resume uses the stored sources unless new ones
are given, from any working folder. Its training documents must be the ones the run was
trained on (the sampler continues where it stopped, which only reproduces the run on the
same documents), so a change there is refused; new validation documents are used and the
change is logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from fha.data.sources import TINYSTORIES
from fha.errors import FhaError
from fha.runs.checkpoint import Checkpoint
from fha.train_config import TrainConfig

log = logging.getLogger(__name__)

FINGERPRINT_CHARS = 16
_DOCUMENT_END = b"\x00"  # never inside a document's UTF-8, so the joined bytes identify the split


def absolute_source(source: str) -> str:
    """A data source as recorded in checkpoints: an absolute path (or the name of a hub dataset)."""
    if source == TINYSTORIES:
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
    source: str
    val_source: str | None
    fingerprints: dict[str, str]

    def to_state(self) -> dict[str, Any]:
        return {"source": self.source, "val_source": self.val_source, "fingerprints": dict(self.fingerprints)}


def resolve_data_sources(
    data: str,
    val_data: str | None,
    config: TrainConfig,
    resume: Checkpoint | None,
    documents: dict[str, list[str]],
) -> DataSources:
    """The run's data (`data`, `val_data` and their `documents`) as it will be recorded; on resume,
    checked against the checkpoint's record."""
    sources = DataSources(
        absolute_source(data),
        None if val_data is None else absolute_source(val_data),
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
            f"{resume.path}: the training documents of `data` {data} (val_fraction="
            f"{config.val_fraction}, seed={config.seed}"
            f"{', `val_data` ' + val_data if val_data else ''}) differ from the ones the run was "
            f"trained on ({saved.get('source')}); a resume continues the sampler where it stopped, which only "
            "reproduces the run on the same documents: resume with the run's own data, or start a new run"
        )
    if saved_prints.get("val") != sources.fingerprints["val"]:
        log.warning(
            "validation data changed on resume: %s (fingerprint %s) -> %s (fingerprint %s); the validation losses "
            "after step %d are measured on the new documents",
            saved.get("val_source") or f"held out of {saved.get('source')}",
            saved_prints.get("val"),
            val_data or f"held out of {data}",
            sources.fingerprints["val"],
            resume.step,
        )
    return sources
