"""Tokenise a corpus once into a flat token array on disk, and reuse it on later runs.

A corpus named ``NAME`` in ``CACHE_DIR`` is stored as three files:

* ``NAME.tokens.bin``: every document as ``<bos> doc <eos>``, back to back, as raw
  uint16 (vocabularies up to 65,536 ids) or uint32, read back with ``numpy.memmap``;
* ``NAME.offsets.npy``: int64 start of each document in the token array, plus the total;
* ``NAME.json``: metadata (tokenizer fingerprint, SHA-256 of the documents, counts, SHA-256
  of the two other files, and where the documents came from), written last, so a cache
  without it is incomplete.

The cache is reused when the metadata's tokenizer fingerprint, documents digest
(`documents_digest`) and document/character counts match the request and both files still
have their recorded checksums; otherwise (stale, or damaged files) it is rebuilt. The entry
is known by its content, not by the path it was read from: callers name it by the digest, so
one file read from two paths (a copy, another mount) is tokenised and stored once, and an
edited file gets a new entry. The source description is only shown (`fha cache`).

Several processes may fill the same entry at once (two runs started together on new data):
each writes under its own temporary names and renames them into place, and as they encode
the same documents with the same tokenizer, whichever rename comes last leaves the same files.
Temporary files of a process killed while writing start with ``.`` and end in ``.tmp``;
`clear_cache` removes them with everything else.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fha.data.cache_location import token_cache_dir
from fha.errors import FhaError
from fha.files import file_sha256, read_json, temporary_file, write_json_atomic
from fha.progress import Progress
from fha.tokenizer import Tokenizer
from fha.wording import counted, plural

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 3  # 2: checksums of the token and offset files; 3: valid by the documents' digest
UINT16_LIMIT = 2**16
ENCODE_BATCH_DOCS = 1024
MAX_UNKNOWN_EXAMPLES = 10
ENTRY_DIGEST_CHARS = 12  # of the documents' digest, in an entry's name
DIGEST_LENGTH_BYTES = 8  # each document's length, hashed before it, so that no two lists hash alike


@dataclass(frozen=True)
class TokenData:
    """A tokenised corpus: ``tokens[doc_offsets[i]:doc_offsets[i+1]]`` is ``<bos> doc_i <eos>``."""

    tokens: np.ndarray  # (num_tokens,) uint16/uint32, usually a read-only memmap
    doc_offsets: np.ndarray  # (num_documents + 1,) int64
    num_bytes: int  # UTF-8 bytes of the documents' text (for bits per byte)
    num_chars: int
    num_unknown: int  # characters that became <unk>
    source: str
    tokenizer_fingerprint: str

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_documents(self) -> int:
        return int(self.doc_offsets.shape[0]) - 1


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id."""
    return np.dtype(np.uint16) if vocab_size <= UINT16_LIMIT else np.dtype(np.uint32)


def describe_source(*paths: str | Path) -> str:
    """A string that changes whenever one of the files does (path, size, mtime)."""
    parts = []
    for path in paths:
        resolved = Path(path).resolve()
        stat = resolved.stat()
        parts.append(f"{resolved} ({stat.st_size} bytes, mtime_ns {stat.st_mtime_ns})")
    return "; ".join(parts)


def documents_digest(documents: Sequence[str]) -> str:
    """SHA-256 (hex) of the documents, in order: equal exactly when the documents are."""
    digest = hashlib.sha256()
    for doc in documents:
        encoded = doc.encode("utf-8")
        digest.update(len(encoded).to_bytes(DIGEST_LENGTH_BYTES, "little"))
        digest.update(encoded)
    return digest.hexdigest()


def prepare_tokens(
    documents: Sequence[str],
    tokenizer: Tokenizer,
    cache_dir: str | Path,
    name: str,
    source_desc: str,
    *,
    digest: str | None = None,
) -> TokenData:
    """Encode `documents` into ``cache_dir/name.*``, or reuse the cache if it holds these very
    documents encoded by this tokenizer. `source_desc` says where they came from (shown, not
    compared); `digest` is their `documents_digest` if the caller has computed it already."""
    cache_dir = Path(cache_dir)
    paths = _CachePaths(cache_dir, name)
    expected = {
        "format_version": CACHE_FORMAT_VERSION,
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "documents_sha256": digest if digest is not None else documents_digest(documents),
        "num_documents": len(documents),
        "num_chars": sum(len(doc) for doc in documents),
    }
    cached = _load_if_valid(paths, expected)
    if cached is not None:
        log.info("reusing token cache %s (%d tokens)", paths.meta, cached.num_tokens)
        return cached
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FhaError(f"{cache_dir}: cannot create the token cache folder ({err.strerror or err})") from None
    paths.meta.unlink(missing_ok=True)  # the cache counts as incomplete until the new metadata is written
    meta = _encode_to_disk(documents, tokenizer, paths, name)
    meta.update(expected, source=source_desc)
    write_json_atomic(paths.meta, meta)
    _report_unknown(meta, name)
    return _open(paths, meta, verify=False)


def cached_tokens(
    documents: Sequence[str], tokenizer: Tokenizer, label: str, source_desc: str, *, digest: str | None = None
) -> TokenData:
    """`prepare_tokens` in the shared token cache (`token_cache_dir`), in the entry
    ``LABEL-TOKENIZER-DIGEST`` named by what it holds, so that runs on the same documents share it
    wherever their files lie."""
    digest = digest if digest is not None else documents_digest(documents)
    name = f"{label}-{tokenizer.fingerprint}-{digest[:ENTRY_DIGEST_CHARS]}"
    return prepare_tokens(documents, tokenizer, token_cache_dir(), name, source_desc, digest=digest)


class _CachePaths:
    def __init__(self, cache_dir: Path, name: str) -> None:
        self.tokens = cache_dir / f"{name}.tokens.bin"
        self.offsets = cache_dir / f"{name}.offsets.npy"
        self.meta = cache_dir / f"{name}.json"


def _encode_to_disk(documents: Sequence[str], tokenizer: Tokenizer, paths: _CachePaths, name: str) -> dict:
    """Encode in batches (parallel inside `encode_batch`), appending to a temporary file."""
    dtype = token_dtype(tokenizer.vocab_size)
    lengths = np.empty(len(documents), dtype=np.int64)
    num_bytes = num_unknown = 0
    unknown_examples: set[str] = set()
    tokens_digest = hashlib.sha256()
    tmp_tokens = temporary_file(paths.tokens)
    with (
        open(tmp_tokens, "wb") as out,
        Progress(len(documents), f"tokenising {name}", unit="doc", leave=False) as progress,
    ):
        for start in range(0, len(documents), ENCODE_BATCH_DOCS):
            batch = documents[start : start + ENCODE_BATCH_DOCS]
            encoded = tokenizer.encode_batch(batch, bos=True, eos=True)
            flat = np.concatenate([np.asarray(ids, dtype=dtype) for ids in encoded])
            out.write(flat.tobytes())
            tokens_digest.update(flat.tobytes())
            lengths[start : start + len(batch)] = [len(ids) for ids in encoded]
            num_bytes += sum(len(doc.encode("utf-8")) for doc in batch)
            batch_unknown = int(np.count_nonzero(flat == tokenizer.unk_id))
            if batch_unknown:
                num_unknown += batch_unknown
                if len(unknown_examples) < MAX_UNKNOWN_EXAMPLES:
                    for doc in batch:
                        unknown_examples |= tokenizer.unknown_characters(doc)
            progress.update(len(batch))
    offsets = np.zeros(len(documents) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    os.replace(tmp_tokens, paths.tokens)
    tmp_offsets = temporary_file(paths.offsets)
    with open(tmp_offsets, "wb") as out:
        np.save(out, offsets)
    offsets_sha256 = file_sha256(tmp_offsets)
    os.replace(tmp_offsets, paths.offsets)
    return {
        "tokens_sha256": tokens_digest.hexdigest(),
        "offsets_sha256": offsets_sha256,
        "dtype": dtype.name,
        "vocab_size": tokenizer.vocab_size,
        "num_tokens": int(offsets[-1]),
        "num_bytes": num_bytes,
        "num_unknown": num_unknown,
        "unknown_examples": sorted(unknown_examples)[:MAX_UNKNOWN_EXAMPLES],
    }


def _load_if_valid(paths: _CachePaths, expected: dict) -> TokenData | None:
    """The cached corpus if it matches `expected` and its files are intact, else None."""
    try:
        meta = read_json(paths.meta, "token cache metadata")
    except FhaError as err:
        log.warning("%s; rebuilding", err)
        return None
    if meta is None:
        return None
    try:
        if not isinstance(meta, dict):
            raise ValueError("the metadata is not a JSON object")
        stale = [key for key, value in expected.items() if meta.get(key) != value]
        if stale:
            log.info("token cache %s is stale (%s changed); rebuilding", paths.meta, ", ".join(stale))
            return None
        return _open(paths, meta, verify=True)
    except (OSError, EOFError, ValueError, KeyError, TypeError) as err:  # EOFError: numpy on an empty file
        log.warning("token cache %s is damaged (%s); rebuilding", paths.meta, err)
        return None


def _open(paths: _CachePaths, meta: dict, *, verify: bool) -> TokenData:
    """Map the cache files; raises ValueError if they disagree with the metadata (`verify`: also
    with its checksums, which reads both files once)."""
    dtype = np.dtype(meta["dtype"])
    num_tokens = int(meta["num_tokens"])
    if paths.tokens.stat().st_size != num_tokens * dtype.itemsize:
        raise ValueError(f"{paths.tokens.name} should hold {num_tokens} tokens")
    if verify:
        for path, key in ((paths.tokens, "tokens_sha256"), (paths.offsets, "offsets_sha256")):
            if file_sha256(path) != meta[key]:
                raise ValueError(f"{path.name} does not match its checksum")
    offsets = np.load(paths.offsets, allow_pickle=False)
    if offsets.shape != (int(meta["num_documents"]) + 1,) or int(offsets[-1]) != num_tokens:
        raise ValueError(f"{paths.offsets.name} does not match {paths.meta.name}")
    # numpy cannot map an empty file; an empty corpus is an empty array.
    tokens = np.memmap(paths.tokens, dtype=dtype, mode="r") if num_tokens else np.zeros(0, dtype=dtype)
    return TokenData(
        tokens=tokens,
        doc_offsets=offsets,
        num_bytes=int(meta["num_bytes"]),
        num_chars=int(meta["num_chars"]),
        num_unknown=int(meta["num_unknown"]),
        source=str(meta["source"]),
        tokenizer_fingerprint=str(meta["tokenizer_fingerprint"]),
    )


def _report_unknown(meta: dict, name: str) -> None:
    if meta["num_unknown"]:
        log.warning(
            "%s: %s of %s %s outside the tokenizer's alphabet and became <unk> (e.g. %s)",
            name,
            f"{meta['num_unknown']:,}",
            counted(meta["num_chars"], "character", thousands=True),
            plural(meta["num_unknown"], "is", "are"),
            " ".join(repr(char) for char in meta["unknown_examples"]),
        )


@dataclass(frozen=True)
class CacheEntry:
    """One cached corpus (or, with `complete` False, files without metadata: leftovers)."""

    name: str
    num_bytes: int
    num_tokens: int | None
    source: str
    complete: bool


def list_cache(cache_dir: str | Path) -> list[CacheEntry]:
    """The entries of a token cache folder, complete ones first, then leftovers of interrupted writes."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    files = [path for path in cache_dir.iterdir() if path.is_file()]
    entries, claimed = [], set()
    for meta_file in sorted(p for p in files if p.suffix == ".json" and not p.name.startswith(".")):
        name = meta_file.name.removesuffix(".json")
        paths = _CachePaths(cache_dir, name)
        members = [p for p in (paths.tokens, paths.offsets, paths.meta) if p.exists()]
        claimed.update(members)
        try:
            meta = read_json(meta_file, "token cache metadata")
            num_tokens, source = int(meta["num_tokens"]), str(meta["source"])
        except (FhaError, ValueError, KeyError, TypeError):
            num_tokens, source = None, "(unreadable metadata)"
        entries.append(CacheEntry(name, sum(p.stat().st_size for p in members), num_tokens, source, True))
    for path in sorted(set(files) - claimed):
        entries.append(CacheEntry(path.name, path.stat().st_size, None, "(left by an interrupted write)", False))
    return entries


def clear_cache(cache_dir: str | Path) -> tuple[int, int]:
    """Delete every file of a token cache folder; returns (files, bytes) removed.

    A run that already opened its token arrays keeps reading them (the data stays until it
    closes them); a run that starts afterwards tokenises its data again.
    """
    cache_dir = Path(cache_dir)
    count = size = 0
    if not cache_dir.is_dir():
        return count, size
    for path in cache_dir.iterdir():
        if path.is_file():
            size += path.stat().st_size
            path.unlink(missing_ok=True)
            count += 1
    return count, size
