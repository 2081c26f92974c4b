"""Package exports loaded on first use, so that importing one module of fha (or running
``fha --help``) does not import torch, matplotlib and tokenizers through a package's
``__init__``.

    __getattr__, __dir__ = lazy_exports(__name__, {"GPT": "fha.model.gpt", ...})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path) when `name` is
    first read from `package`, and the matching ``__dir__``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later reads skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
