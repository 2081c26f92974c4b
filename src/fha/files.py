"""Atomic writes: a file is written under a temporary name beside it, then renamed over its target,
so a reader (or a crash) sees the old file or the whole new one, never a part. The temporary name
is unique, so processes writing one file at once (shards of a study) do not trip over each other.
A failed write (a full disk, a read-only folder) is one FhaError naming the file, and leaves no
temporary file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from fha.errors import FhaError, one_line


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
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        temporary = Path(name)
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
