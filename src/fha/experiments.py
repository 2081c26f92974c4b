"""Experiment files (presets and ``--config FILE.toml``) and ``--set key=value`` overrides.

An experiment file is TOML with two tables, whose keys are the fields of the two configs::

    description = "what this is"      # optional
    base = "seed-1m"                  # optional: start from a preset (or a file path)
    [model]                           # fha.ModelConfig fields
    dim = 64
    [train]                           # fha.train_config.TrainConfig fields
    max_steps = 2000

A file with a ``base`` starts from that experiment and changes only what it lists. Presets
are the ``*.toml`` files shipped in ``fha/presets``. The two configs have no field name in
common, so ``--set key=value`` goes to whichever config owns ``key``.
"""

from __future__ import annotations

import functools
import importlib.resources
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from fha.config import ModelConfig
from fha.config_base import ConfigBase, near_matches
from fha.errors import FhaError, read_text
from fha.train_config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the same parser, packaged for older Pythons
    import tomli as tomllib

TABLES: dict[str, type[ConfigBase]] = {"model": ModelConfig, "train": TrainConfig}
TOP_LEVEL_KEYS = ("description", "base")
PRESET_SUFFIX = ".toml"
MAX_BASE_DEPTH = 8

Tables = dict[str, dict[str, Any]]
Config = TypeVar("Config", bound=ConfigBase)


def preset_names() -> list[str]:
    folder = importlib.resources.files("fha") / "presets"
    return sorted(
        entry.name.removesuffix(PRESET_SUFFIX) for entry in folder.iterdir() if entry.name.endswith(PRESET_SUFFIX)
    )


def _preset_text(name: str) -> str:
    if name not in preset_names():
        raise FhaError(
            f"unknown preset {name!r}{near_matches(name, preset_names())}; presets: {', '.join(preset_names())}"
        )
    return (importlib.resources.files("fha") / "presets" / f"{name}{PRESET_SUFFIX}").read_text(encoding="utf-8")


def load_experiment(preset: str | None = None, config_file: str | Path | None = None) -> Tables:
    """The ``{"model": {...}, "train": {...}}`` of a preset name or a TOML file (one of the two)."""
    if preset is not None and config_file is None:
        return _resolve(preset, _preset_text(preset), depth=0)
    if config_file is not None and preset is None:
        path = Path(config_file)
        return _resolve(str(path), read_text(path, "config file"), depth=0, folder=path.parent)
    raise FhaError("give exactly one of `preset` (a name) or `config` (a TOML file)")


def _resolve(label: str, text: str, depth: int, folder: Path | None = None) -> Tables:
    if depth > MAX_BASE_DEPTH:
        raise FhaError(f"{label}: 'base' chain is longer than {MAX_BASE_DEPTH} (a cycle?)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise FhaError(f"{label}: not valid TOML ({err})") from None
    for key, value in data.items():
        if key in TABLES:
            if not isinstance(value, dict):
                raise FhaError(f"{label}: [{key}] must be a table")
        elif key not in TOP_LEVEL_KEYS:
            allowed = [*TOP_LEVEL_KEYS, *(f"[{t}]" for t in TABLES)]
            raise FhaError(
                f"{label}: unknown key {key!r}{near_matches(key, [*TOP_LEVEL_KEYS, *TABLES])}; "
                f"allowed: {', '.join(allowed)}"
            )
    tables: Tables = {name: {} for name in TABLES}
    base = data.get("base")
    if base is not None:
        tables = _resolve_base(label, base, depth, folder)
    for name, config_type in TABLES.items():
        try:
            section = config_type.with_current_names(data.get(name, {}))  # old field names still load
        except ValueError as err:
            raise FhaError(f"{label}: [{name}] {err}") from None
        known = config_type.field_types()
        for key in section:
            if key not in known:
                raise FhaError(f"{label}: unknown [{name}] key {key!r}{near_matches(key, known)}")
        tables[name].update(section)
    return tables


def _resolve_base(label: str, base: Any, depth: int, folder: Path | None) -> Tables:
    if not isinstance(base, str):
        raise FhaError(f"{label}: 'base' must be a preset name or a file path")
    if base in preset_names():
        return _resolve(base, _preset_text(base), depth + 1)
    path = Path(base) if folder is None or Path(base).is_absolute() else folder / base
    if path.suffix == PRESET_SUFFIX and path.is_file():
        return _resolve(str(path), read_text(path, "config file"), depth + 1, folder=path.parent)
    raise FhaError(f"{label}: base {base!r} is neither a preset{near_matches(base, preset_names())} nor a TOML file")


@functools.cache  # the config classes do not change; a study asks for every cell's settings
def owner_of(key: str) -> str:
    """The table ("model" or "train") whose config has the field `key`."""
    owners = [
        name for name, config_type in TABLES.items() if config_type.current_name(key) in config_type.field_types()
    ]
    if not owners:
        every = [field for config_type in TABLES.values() for field in config_type.field_types()]
        raise FhaError(f"unknown setting {key!r}{near_matches(key, every)}")
    return owners[0]


def override_pairs(overrides: list[str]) -> dict[str, str]:
    """``["dim=128", "max_steps=50"]`` as ``{"dim": "128", "max_steps": "50"}``: the ``--set`` values
    by key, their text not parsed yet (`override_tables` parses it)."""
    pairs: dict[str, str] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FhaError(f"`overrides` {item!r}: expected key=value")
        pairs[key] = text
    return pairs


def parse_overrides(overrides: list[str]) -> Tables:
    """``["dim=128", "max_steps=50"]`` as typed values, sorted into the tables that own them."""
    return override_tables(override_pairs(overrides))


def override_tables(overrides: Mapping[str, Any]) -> Tables:
    """``{"dim": 128, "attention": "mha"}`` sorted into the tables that own the keys; string values
    are parsed as ``--set key=value`` would (``"128"`` becomes 128), others are kept as given."""
    tables: Tables = {name: {} for name in TABLES}
    for given, value in overrides.items():
        table = owner_of(given)
        key = TABLES[table].current_name(given)  # an old field name still works
        if not isinstance(value, str):
            tables[table][key] = value
            continue
        try:
            tables[table][key] = TABLES[table].parse_field(key, value)
        except ValueError as err:
            raise FhaError(f"`overrides` {given}={value}: {err}") from None
    return tables


def merge(base: Tables, changes: Tables) -> Tables:
    return {name: {**base.get(name, {}), **changes.get(name, {})} for name in TABLES}


def build_configs(tables: Tables) -> tuple[ModelConfig, TrainConfig]:
    """Validate the tables into the two configs; a failing rule becomes a one-line FhaError."""
    return build_config(ModelConfig, tables.get("model", {})), build_config(TrainConfig, tables.get("train", {}))


def build_config(config_type: type[Config], values: Mapping[str, Any]) -> Config:
    """Validate one table into its config; a failing rule becomes a one-line FhaError."""
    try:
        return config_type.from_dict(values)
    except (TypeError, ValueError) as err:
        raise FhaError(f"invalid configuration: {err}") from None
