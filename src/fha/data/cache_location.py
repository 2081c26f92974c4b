"""Where fha caches what it derives from data (token arrays, study tokenizers): a folder that
the environment variable `CACHE_ENV` moves."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FHA_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/fha")
TOKENS_FOLDER = "tokens"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def token_cache_dir() -> Path:
    """Where the token arrays of all runs are cached (`fha cache` lists and clears it)."""
    return cache_root() / TOKENS_FOLDER
