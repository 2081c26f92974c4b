"""Files written atomically, JSON read with one-line errors, and file digests.

Atomic writes: a file is written under a temporary name beside it, then renamed over its target,
so a reader (or a crash) sees the old file or the whole new one, never a part. The temporary name
is unique, so processes writing one file at once (shards of a study) do not trip over each other.
A failed write (a full disk, a read-only folder) is one FhaError naming the file, and leaves no
temporary file."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from fha.errors import FhaError, one_line

HASH_CHUNK_BYTES = 1 << 24
TEMP_SUFFIX = ".tmp"
UNIQUE_BYTES = 4  # random bytes in a temporary name, beside the process id
NEW_FILE_MODE = 0o666  # less the umask, as open() creates files


def existing_folder(path: str | Path, name: str, file_error: str) -> Path:
    """`path` as a Path if it is a folder; else the FhaError "PATH: no such NAME" (nothing there) or
    "PATH: FILE_ERROR" (a file)."""
    path = Path(path)
    if not path.exists():
        raise FhaError(f"{path}: no such {name}")
    if not path.is_dir():
        raise FhaError(f"{path}: {file_error}")
    return path


def temporary_prefix(name: str) -> str:
    """How the temporary files of an atomic write of the file `name` begin (hidden, beside it), so that
    a folder's owner can recognise and remove what a killed process left."""
    return f".{name}."


def temporary_file(path: Path) -> Path:
    """A new, empty, unique temporary file beside `path`, to write and then rename over it. It gets the
    permissions of any new file (the umask's), which the renamed file keeps."""
    while True:
        name = (
            path.parent / f"{temporary_prefix(path.name)}{os.getpid()}-{secrets.token_hex(UNIQUE_BYTES)}{TEMP_SUFFIX}"
        )
        try:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, NEW_FILE_MODE))
        except FileExistsError:
            continue
        return name


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = temporary_file(path)
        _write_file(temporary, data)
        temporary.replace(path)
    except OSError as err:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise FhaError(f"{path}: cannot write ({err.strerror or one_line(err)})") from None


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_if_changed(path: Path, data: bytes) -> None:
    """`write_bytes_atomic`, unless the file already holds exactly `data` (shared files of a study that
    every shard would otherwise rewrite at its start)."""
    try:
        if Path(path).read_bytes() == data:
            return
    except OSError:
        pass
    write_bytes_atomic(path, data)


def read_json(path: Path, what: str) -> Any:
    """The JSON in `path`, or None when there is no such file; damage is one FhaError calling it `what`."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise FhaError(f"{path}: a folder, not {what}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FhaError(f"{path}: unreadable {what} ({one_line(err)})") from None


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
