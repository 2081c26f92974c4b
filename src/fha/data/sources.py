"""Reading documents: local text files, or TinyStoriesV2 downloaded from the Hugging Face Hub.

Local formats, chosen by the file's contents and suffix:

* ``.jsonl``: one JSON object per line with a string field ``text``;
* ``.txt`` (or any other suffix) containing lines that hold only ``<|endoftext|>``: the
  format of the official TinyStories text files, one document between separators;
* any other text file: documents separated by one or more blank lines.

Files are decoded as strict UTF-8 (a leading byte-order mark is dropped, Windows line
endings become ``\\n``); documents are stripped of surrounding whitespace and empty ones are
skipped. Text that was decoded wrongly before it was saved (``â€œ`` for a curly quote) is
valid UTF-8 and is kept as it is: the tokenizer reports characters it cannot represent.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from fha.errors import FhaError, one_line

log = logging.getLogger(__name__)

TINYSTORIES = "tinystories"
TINYSTORIES_REPO = "roneneldan/TinyStories"
TINYSTORIES_FILES = {"train": "TinyStoriesV2-GPT4-train.txt", "val": "TinyStoriesV2-GPT4-valid.txt"}
HUB_CONNECT_TIMEOUT_S = 5.0
HTTPS_PORT = 443
DOC_SEPARATOR = "<|endoftext|>"
_SEPARATOR_LINE = re.compile(r"^[ \t]*" + re.escape(DOC_SEPARATOR) + r"[ \t]*$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
JSONL_SUFFIX = ".jsonl"
JSONL_TEXT_FIELD = "text"
OFFLINE_HINT = "pass local text files instead (`data` a path)"


def load_documents(source: str | Path) -> list[str]:
    """The documents of one local file (see the module docstring for the formats)."""
    path = Path(source)
    text = _read_text(path)
    if path.suffix.lower() == JSONL_SUFFIX:
        documents = _split_jsonl(text, path)
    elif _SEPARATOR_LINE.search(text):
        documents = _SEPARATOR_LINE.split(text)
    else:
        documents = _BLANK_LINES.split(text)
    documents = [doc.strip() for doc in documents]
    documents = [doc for doc in documents if doc]
    if not documents:
        raise FhaError(f"{path}: no documents found (the file holds only whitespace or separators)")
    log.debug("%s: %d documents", path, len(documents))
    return documents


def load_splits(
    source: str | Path,
    val_source: str | Path | None = None,
    *,
    val_fraction: float = 0.05,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> dict[str, list[str]]:
    """Training and validation documents, as ``{"train": [...], "val": [...]}``.

    `source` is ``"tinystories"`` (TinyStoriesV2-GPT4 from the Hugging Face Hub, kept in
    `cache_dir` or the Hub's default cache) or a local file. With a local file and no
    `val_source`, a fraction `val_fraction` of its documents, chosen by `seed`, becomes the
    validation split.
    """
    if str(source) == TINYSTORIES:
        if val_source is not None:
            raise FhaError("`data` tinystories brings its own validation split; do not also pass `val_data`")
        paths = download_tinystories(cache_dir)
        return {split: load_documents(path) for split, path in paths.items()}
    documents = load_documents(source)
    if val_source is not None:
        return {"train": documents, "val": load_documents(val_source)}
    return split_documents(documents, val_fraction=val_fraction, seed=seed, source=str(source))


def split_documents(
    documents: list[str], *, val_fraction: float, seed: int, source: str = "<documents>"
) -> dict[str, list[str]]:
    """A deterministic random train/validation split; each keeps the original order."""
    if not 0.0 < val_fraction < 1.0:
        raise FhaError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if len(documents) < 2:
        raise FhaError(f"{source}: needs at least 2 documents to split off a validation set, found {len(documents)}")
    num_val = min(max(1, round(len(documents) * val_fraction)), len(documents) - 1)
    order = np.random.default_rng(seed).permutation(len(documents))
    is_val = np.zeros(len(documents), dtype=bool)
    is_val[order[:num_val]] = True
    return {
        "train": [doc for doc, val in zip(documents, is_val, strict=True) if not val],
        "val": [doc for doc, val in zip(documents, is_val, strict=True) if val],
    }


def download_tinystories(cache_dir: str | Path | None = None) -> dict[str, Path]:
    """Local paths of the TinyStoriesV2-GPT4 train/valid files, downloading them if needed.

    Files already in the cache are used without touching the network. Otherwise the Hub
    must answer within a few seconds; offline (``HF_HUB_OFFLINE=1``) or unreachable, this
    raises `FhaError` at once with a hint to pass local files.
    """
    cached = _cached_tinystories(cache_dir)
    if cached is not None:
        return cached
    problem = _hub_unavailable_reason()
    if problem is not None:
        raise FhaError(f"cannot download TinyStories from the Hugging Face Hub ({problem}); {OFFLINE_HINT}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    paths = {}
    for split, filename in TINYSTORIES_FILES.items():
        log.info("downloading %s from %s (about 2 GB in all, once)", filename, TINYSTORIES_REPO)
        try:
            paths[split] = Path(hf_hub_download(TINYSTORIES_REPO, filename, repo_type="dataset", cache_dir=cache_dir))
        except (OSError, HfHubHTTPError) as err:
            raise FhaError(
                f"downloading {filename} from the Hugging Face Hub failed ({one_line(err)}); {OFFLINE_HINT}"
            ) from None
    return paths


def _cached_tinystories(cache_dir: str | Path | None) -> dict[str, Path] | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    paths = {}
    for split, filename in TINYSTORIES_FILES.items():
        try:
            paths[split] = Path(
                hf_hub_download(
                    TINYSTORIES_REPO, filename, repo_type="dataset", cache_dir=cache_dir, local_files_only=True
                )
            )
        except LocalEntryNotFoundError:
            return None
    return paths


def _hub_unavailable_reason() -> str | None:
    """Why the Hub cannot be reached right now, or None if a connection opens quickly."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    try:
        with socket.create_connection((host, HTTPS_PORT), timeout=HUB_CONNECT_TIMEOUT_S):
            return None
    except OSError as err:
        return f"{host} is unreachable: {err}"


def _read_text(path: Path) -> str:
    if path.exists() and not path.is_dir() and not path.is_file():
        raise FhaError(
            f"{path}: not a regular file (a pipe or device would be read without end); save the text to a file first"
        )
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FhaError(f"{path}: data file not found") from None
    except IsADirectoryError:
        raise FhaError(f"{path}: is a directory, expected a data file") from None
    except OSError as err:
        raise FhaError(f"{path}: cannot read data file ({err.strerror or err})") from None
    if not raw.strip():
        raise FhaError(f"{path}: data file is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise FhaError(
            f"{path}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}, line {line}); "
            "convert the file to UTF-8"
        ) from None
    return text.replace("\r\n", "\n")


def _split_jsonl(text: str, path: Path) -> list[str]:
    documents = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise FhaError(f"{path}:{number}: invalid JSON ({err.msg})") from None
        value = record.get(JSONL_TEXT_FIELD) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise FhaError(f"{path}:{number}: expected an object with a string field {JSONL_TEXT_FIELD!r}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise FhaError(
                f"{path}:{number}: the text holds a lone surrogate {value[err.start]!r} (a \\u escape "
                "of half a character pair), which is not a character; fix or drop that record"
            ) from None
        documents.append(value)
    return documents
