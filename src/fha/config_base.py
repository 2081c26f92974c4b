"""Typed, validated configuration dataclasses: the machinery every config shares.

`ConfigBase` gives every config the same behaviour: strict loading from dicts and JSON
(unknown keys are an error that lists near matches), typed parsing of ``key=value``
strings for ``--set``, and field type checks. Subclasses (`fha.config.ModelConfig`,
`fha.train_config.TrainConfig`) validate their values in ``__post_init__`` with the
``require`` helpers below and compute derived values there.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from fha.errors import FhaError, FhaValueError
from fha.files import write_json_atomic

C = TypeVar("C", bound="ConfigBase")

HEAD_SEPARATOR, LAYER_SEPARATOR = ",", "/"  # --set layer_head_splits=1,2,4/4,4,4


def near_matches(name: str, candidates: typing.Iterable[str]) -> str:
    """A short 'did you mean' phrase for an unknown name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _allowed_types(annotation: Any) -> tuple[Any, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(t for arg in typing.get_args(annotation) for t in _allowed_types(arg))
    if annotation is None or annotation is type(None):
        return (type(None),)
    return (annotation,)


def _tuple_depth(kind: Any) -> int:
    """1 for tuple[int, ...], 2 for tuple[tuple[int, ...], ...], 0 for anything else."""
    if typing.get_origin(kind) is not tuple:
        return 0
    return 1 + _tuple_depth(typing.get_args(kind)[0])


def _as_int_tuples(value: Any, depth: int) -> Any:
    """`value` (lists or tuples nested `depth` deep around integers) as nested tuples; raises
    ValueError when it is not of that shape."""
    if depth == 0:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FhaValueError(value)
        return value
    if not isinstance(value, (list, tuple)):
        raise FhaValueError(value)
    return tuple(_as_int_tuples(item, depth - 1) for item in value)


def _type_name(kind: Any) -> str:
    depth = _tuple_depth(kind)
    if depth == 1:
        return "a list of integers (1,2,4; in TOML [1, 2, 4])"
    if depth == 2:
        return f"one list of integers per layer (1,2,4{LAYER_SEPARATOR}4,4,4; in TOML [[1, 2, 4], [4, 4, 4]])"
    return "None" if kind is type(None) else kind.__name__


def _parse_int_lists(text: str, depth: int) -> Any:
    """ "1,2,4" (depth 1) or "1,2,4/4,4,4" (depth 2) as nested tuples of integers."""
    if depth == 1:
        return tuple(int(item) for item in text.split(HEAD_SEPARATOR))
    return tuple(_parse_int_lists(part, depth - 1) for part in text.split(LAYER_SEPARATOR))


def _parse_scalar(text: str, kind: Any) -> Any:
    lowered = text.strip().lower()
    if _tuple_depth(kind):
        return _parse_int_lists(text.replace(" ", ""), _tuple_depth(kind))
    if kind is type(None):
        if lowered in ("none", "null"):
            return None
    elif kind is bool:
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
    elif kind is int:
        return int(text)
    elif kind is float:
        return float(text)
    elif kind is str:
        return text
    raise FhaValueError(text)


@dataclasses.dataclass
class ConfigBase:
    """Behaviour shared by every config: strict dict/JSON loading and typed overrides.

    `RENAMED` maps a field's old name to its current one: files, ``--set`` and dicts that use
    the old name still load, so runs and checkpoints written before the rename resume.
    """

    RENAMED: typing.ClassVar[Mapping[str, str]] = {}

    @classmethod
    def field_types(cls) -> dict[str, tuple[type, ...]]:
        hints = typing.get_type_hints(cls)
        return {f.name: _allowed_types(hints[f.name]) for f in dataclasses.fields(cls) if f.init}

    @classmethod
    def current_name(cls, key: str) -> str:
        """The field's name now (an old name maps to the new one; any other key is returned as is)."""
        return cls.RENAMED.get(key, key)

    @classmethod
    def with_current_names(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """`data` with old field names replaced by the current ones; a field given under both names is
        a ValueError."""
        result: dict[str, Any] = {}
        given: dict[str, str] = {}  # current name -> the key it was given as
        for key, value in data.items():
            name = cls.current_name(key)
            if name in result:
                old, new = sorted((key, given[name]), key=lambda k: k == name)  # the old name first
                raise ValueError(f"'{old}' is the old name of '{new}'; give only '{new}'")
            result[name], given[name] = value, key
        return result

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        data = cls.with_current_names(data)
        known = cls.field_types()
        for key in data:
            if key not in known:
                raise FhaValueError(f"unknown {cls.__name__} field '{key}'{near_matches(key, known)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    def to_json(self, path: str | Path) -> None:
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def json_fields(cls, path: str | Path) -> dict[str, Any]:
        """The fields a JSON file holds, under their current names (not yet validated as a config);
        a missing or damaged file is one FhaError naming it."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FhaError(f"{path}: file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise FhaError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise FhaError(f"{path}: expected a JSON object of {cls.__name__} fields")
        try:
            return cls.with_current_names(data)
        except ValueError as err:
            raise FhaError(f"{path}: {err}") from None

    @classmethod
    def from_json(cls: type[C], path: str | Path) -> C:
        fields = cls.json_fields(path)
        try:
            return cls.from_dict(fields)
        except (TypeError, ValueError) as err:
            raise FhaError(f"{path}: {err}") from None

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed, validated again."""
        return type(self).from_dict({**self.to_dict(), **self.with_current_names(changes)})

    @classmethod
    def parse_field(cls, name: str, text: str) -> Any:
        """Turn the string of a ``--set name=text`` into a value of the field's type."""
        name = cls.current_name(name)
        known = cls.field_types()
        if name not in known:
            raise FhaValueError(f"unknown {cls.__name__} field '{name}'{near_matches(name, known)}")
        kinds = known[name]
        # Try the narrower types first so that "3" becomes an int where an int is allowed.
        order = (type(None), bool, int, float, str)
        for kind in sorted(kinds, key=lambda k: order.index(k) if k in order else len(order)):
            try:
                return _parse_scalar(text, kind)
            except ValueError:
                continue
        names = " or ".join(_type_name(k) for k in kinds)
        raise FhaValueError(f"{name}={text!r}: expected {names}")

    def _check_types(self) -> None:
        for name, kinds in self.field_types().items():
            value = getattr(self, name)
            if float in kinds and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                object.__setattr__(self, name, value)
            ok = False
            for kind in kinds:
                if _tuple_depth(kind):
                    try:
                        value = _as_int_tuples(value, _tuple_depth(kind))
                    except ValueError:
                        continue
                    object.__setattr__(self, name, value)  # lists from TOML or JSON become tuples
                    ok = True
                elif isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
                    ok = True
            if not ok:
                names = " or ".join(_type_name(k) for k in kinds)
                raise FhaValueError(f"{name} must be {names}, got {value!r}")


def require(condition: bool, message: str) -> None:
    """Raise FhaValueError(message) unless condition holds (the configs' one way to reject a value)."""
    if not condition:
        raise FhaValueError(message)


def require_positive(config: ConfigBase, *names: str) -> None:
    for name in names:
        require(getattr(config, name) > 0, f"{name} must be positive, got {getattr(config, name)!r}")


def require_finite(config: ConfigBase, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        require(math.isfinite(value), f"{name} must be a finite number, got {value!r}")


def require_at_most(config: ConfigBase, limit: int, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        require(value <= limit, f"{name} must be at most {limit}, got {value!r}")


def require_choice(config: ConfigBase, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(config, name)
    require(value in allowed, f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def require_probability(config: ConfigBase, name: str) -> None:
    value = getattr(config, name)
    require(0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value!r}")
