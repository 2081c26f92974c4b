"""The README's Python block reads as code that runs: every name it imports is used, and every
fha name it uses exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import fha

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_readme_has_a_python_block_that_parses():
    blocks = python_blocks()
    assert blocks
    for block in blocks:
        ast.parse(block)


def test_every_name_the_python_block_imports_is_used():
    for block in python_blocks():
        tree = ast.parse(block)
        imported = {
            (alias.asname or alias.name).split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert imported - used == set()


def test_every_fha_attribute_the_python_block_uses_exists():
    for block in python_blocks():
        attributes = {
            node.attr
            for node in ast.walk(ast.parse(block))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "fha"
        }
        assert attributes and {name for name in attributes if not hasattr(fha, name)} == set()
