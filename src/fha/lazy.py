"""Package exports loaded on first use, so that importing one module of fha (or running
``fha --help``) does not import torch, matplotlib and tokenizers through a package's
``__init__``.

A package names its exports once, as the imports of its ``if TYPE_CHECKING:`` block (which
type checkers and editors read), and ends with

    __getattr__, __dir__, __all__ = lazy_exports(__name__)

which reads that block from the package's source: each name is imported from its module the
first time it is read from the package.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

TYPE_CHECKING_BLOCK = "TYPE_CHECKING"


def lazy_exports(package: str) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """A module ``__getattr__`` that imports each name of `package`'s ``if TYPE_CHECKING:`` imports
    from its module when the name is first read, the matching ``__dir__``, and ``__all__``."""
    source = sys.modules[package].__file__
    if source is None:
        raise ImportError(f"{package} has no source file to read its exports from")
    exports = type_checking_imports(Path(source))

    def __getattr__(name: str) -> Any:
        found = exports.get(name)
        if found is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = found
        value = getattr(importlib.import_module(module), attribute)
        setattr(sys.modules[package], name, value)  # later reads skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__, sorted(exports)


def type_checking_imports(path: Path) -> dict[str, tuple[str, str]]:
    """Each name that the top-level ``if TYPE_CHECKING:`` block of the file imports, with the
    module and the attribute it comes from; the block holds only ``from MODULE import ...``."""
    exports = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == TYPE_CHECKING_BLOCK):
            continue
        for statement in node.body:
            if not isinstance(statement, ast.ImportFrom) or statement.module is None or statement.level:
                raise ImportError(
                    f"{path}:{statement.lineno}: the TYPE_CHECKING block holds only absolute from-imports"
                )
            for alias in statement.names:
                exports[alias.asname or alias.name] = (statement.module, alias.name)
    return exports
