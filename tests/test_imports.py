"""The package's import order: no cycles, each layer imports only the layers below it, and
the command line answers --help and usage errors without importing torch."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import fha

PACKAGE_DIR = Path(fha.__file__).parent

# The import order, lowest first. A module belongs to the longest prefix listed; it may import
# modules of its own layer or of a layer below, never above.
LAYERS = (
    (
        "fha.choices",
        "fha.errors",
        "fha.files",
        "fha.html_page",
        "fha.lazy",
        "fha.metric_names",
        "fha.progress",
        "fha.figure_formats",
        "fha.figures",
        "fha.stats",
        "fha.wording",
    ),
    (
        "fha.variants",
        "fha.config_base",
        "fha.config",
        "fha.train_config",
        "fha.experiments",
        "fha.sampling",
        "fha.baselines",
    ),
    ("fha.model", "fha.device"),
    ("fha.tokenizer", "fha.data", "fha.generation", "fha.runs", "fha.completion", "fha.ngram"),
    ("fha.train", "fha.evaluation"),
    ("fha.compare", "fha.inspection", "fha.analysis"),
    ("fha.study",),
    ("fha.export",),
    ("fha.cli", "fha.__main__", "fha"),
)
# Modules that import an optional dependency at load (the code an export copies for transformers):
# importing them on their own needs it installed.
OPTIONAL_IMPORTS = {
    "fha.export.remote.configuration_fha": "transformers",
    "fha.export.remote.modeling_fha": "transformers",
}


def module_files() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_at_load(name: str, path: Path, known: set[str]) -> set[str]:
    """The fha modules that importing `name` imports itself: module-level imports (inside if and
    try blocks too), not those under TYPE_CHECKING or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, (ast.If, ast.Try)):
                for block in (node.body, node.orelse, *(h.body for h in getattr(node, "handlers", []))):
                    visit(block)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([node.module] if node.module else []))
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)

    visit(ast.parse(path.read_text()).body)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_at_load(name, path, set(files)) for name, path in files.items()}


def layer_of(module: str) -> int:
    best = max(
        (
            (len(prefix), layer)
            for layer, prefixes in enumerate(LAYERS)
            for prefix in prefixes
            if module == prefix or module.startswith(prefix + ".")
        ),
        default=None,
    )
    assert best is not None, f"{module} is in no layer of LAYERS: add it"
    return best[1]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return path[path.index(child) :] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_every_import_goes_down_the_layers():
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


@pytest.mark.slow
def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """A cycle that the static graph could miss (an import inside a function called at load)
    fails here: each module is imported first, before anything else of fha."""
    names = sorted(
        module
        for module in module_files()
        if module != "fha.__main__"
        and (module not in OPTIONAL_IMPORTS or importlib.util.find_spec(OPTIONAL_IMPORTS[module]) is not None)
    )
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'fha' or m.startswith('fha.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def without_torch(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, then report whether torch got imported."""
    script = f"import sys\n{code}\nprint('torch' in sys.modules, 'matplotlib' in sys.modules)"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "--help"],
        ["study", "run", "--help"],
        ["export", "--help"],
        ["--version"],
        ["train", "--no-such-flag"],
        ["no-such-command"],
    ],
)
def test_help_version_and_usage_errors_do_not_import_torch(argv):
    result = without_torch(f"from fha.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass")
    assert result.stdout.strip().splitlines()[-1] == "False False", result.stdout + result.stderr


def test_the_config_loads_without_torch():
    result = without_torch(
        "from fha.config import ModelConfig\nModelConfig(attention='mha')\nfrom fha.experiments import build_configs"
    )
    assert result.stdout.strip() == "False False", result.stderr


def test_the_ngram_references_load_without_torch():
    result = without_torch("from fha.ngram import KneserNey\nKneserNey.fit([2, 5, 3], 2, 8).next_token_probs([5])")
    assert result.stdout.strip() == "False False", result.stderr


LAZY_PACKAGES = ("fha", "fha.analysis", "fha.compare", "fha.data", "fha.inspection", "fha.train")


@pytest.mark.slow
@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_lazy_export_is_what_its_module_defines(package):
    """Even after every submodule is imported (which sets package attributes to modules)."""
    for info in pkgutil.walk_packages(fha.__path__, "fha."):
        if info.name != "fha.__main__":
            importlib.import_module(info.name)
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        assert not isinstance(value, types.ModuleType), f"{package}.{name} is a module"
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = module.nope


def test_lazy_exports_are_read_from_the_type_checking_imports(tmp_path):
    from fha.lazy import type_checking_imports

    init = tmp_path / "__init__.py"
    init.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.a import One, two\n"
        "    from pkg.b import Three as Four\n"
        "from pkg.c import not_lazy\n"
    )
    assert type_checking_imports(init) == {"One": ("pkg.a", "One"), "two": ("pkg.a", "two"), "Four": ("pkg.b", "Three")}
    init.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    with pytest.raises(ImportError, match=r"__init__.py:3: the TYPE_CHECKING block holds only absolute from-imports"):
        type_checking_imports(init)
