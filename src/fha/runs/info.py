"""run_info.json: what a run was trained with and where, so that reports can say what they compare.

Written into the run folder when training starts::

    {"fha_version": ..., "torch_version": ..., "python_version": ..., "platform": ...,
     "git_commit": "abc123... (modified)" or null, "device": "cpu (float32)", "threads": 2,
     "world_size": 1, "command": "fha train ...", "date": "2026-12-02T02:30:00+00:00",
     "tokenizer_fingerprint": "...", "data": {"train": {"path": ..., "sha256": ...}, ...},
     "resumes": [{"date": ..., "command": ..., "device": ..., "threads": ..., "world_size": ...}]}

A resume keeps the first session's record and appends its own environment to ``resumes``.
The data fingerprints are SHA-256 digests of the files' bytes (cut to `DIGEST_HEX_CHARS`),
so two runs used the same text exactly when their digests agree, wherever the files were.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from fha.device import describe
from fha.errors import FhaError
from fha.files import file_sha256, read_json, write_json_atomic

RUN_INFO_FILE = "run_info.json"
DIGEST_HEX_CHARS = 16
GIT_TIMEOUT_S = 5.0
SESSION_KEYS = ("date", "command", "device", "threads", "world_size")

_digests: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> digest


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (first `DIGEST_HEX_CHARS` hex digits); remembered while the file is unchanged."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        _digests[key] = file_sha256(resolved)[:DIGEST_HEX_CHARS]
    return _digests[key]


def describe_data(source: str, val_source: str | None, *, val_fraction: float, split_seed: int) -> dict[str, Any]:
    """The training and validation data of a run: file paths and digests, or the split rule of one file."""

    def one(name: str) -> dict[str, str]:
        path = Path(name)
        return {"path": str(path.resolve()), "sha256": file_digest(path)} if path.is_file() else {"source": name}

    data: dict[str, Any] = {"train": one(source)}
    if val_source is not None:
        data["val"] = one(val_source)
    elif Path(source).is_file():
        data["val"] = {"split_of_train": {"val_fraction": val_fraction, "split_seed": split_seed}}
    return data


def fha_version() -> str:
    try:
        return importlib.metadata.version("fha")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def git_commit() -> str | None:
    """The commit of the checkout the fha package is imported from ("(modified)" when it has changes), or None."""
    folder = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = head.stdout.strip()
    return f"{commit} (modified)" if status.stdout.strip() else commit


def command_line() -> str:
    """How this process was started, as a shell line ("fha train ..." for the console script)."""
    program = Path(sys.argv[0]).name if sys.argv else "python"
    if program == "__main__.py":
        program = "python -m fha"
    return " ".join([program, shlex.join(sys.argv[1:])]).rstrip()


def session(device: torch.device, world_size: int, precision: str = "auto") -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
        "device": describe(device, precision),
        "threads": torch.get_num_threads(),
        "world_size": world_size,
    }


def collect(
    device: torch.device, world_size: int, tokenizer_fingerprint: str, data: dict[str, Any], precision: str = "auto"
) -> dict[str, Any]:
    """The full record of a new run on this machine."""
    return {
        "fha_version": fha_version(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        **session(device, world_size, precision),
        "cpu_count": os.cpu_count(),
        "tokenizer_fingerprint": tokenizer_fingerprint,
        "data": data,
        "resumes": [],
    }


def write_run_info(
    run_dir: Path,
    *,
    device: torch.device,
    world_size: int,
    tokenizer_fingerprint: str,
    data: dict[str, Any],
    resumed: bool,
    precision: str = "auto",
) -> dict[str, Any]:
    """Write (a new run) or extend (a resume) run_info.json; returns what was written."""
    previous = read_run_info(run_dir) if resumed else None
    if previous is not None:
        info = {**previous, "resumes": [*previous.get("resumes", []), session(device, world_size, precision)]}
    else:
        info = collect(device, world_size, tokenizer_fingerprint, data, precision)
    write_json_atomic(run_dir / RUN_INFO_FILE, info)
    return info


def read_run_info(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's record, or None for runs trained before run_info.json existed (or with a damaged one)."""
    try:
        info = read_json(Path(run_dir) / RUN_INFO_FILE, "run record")
    except FhaError:
        return None
    return info if isinstance(info, dict) else None
