"""Typed, validated configuration dataclasses.

`ConfigBase` gives every config the same behaviour: strict loading from dicts and JSON
(unknown keys are an error that lists near matches), typed parsing of ``key=value``
strings for ``--set``, and field type checks. Subclasses validate their values in
``__post_init__`` and compute derived values there.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

from fha.errors import FhaError
from fha.model.attention import ATTENTION_KERNELS
from fha.model.layers import NONLINEARITIES, NORMS

C = TypeVar("C", bound="ConfigBase")

ATTENTION_TYPES = tuple(ATTENTION_KERNELS)
FRACTAL_SCALES = ("subhead", "head")
NORM_TYPES = tuple(NORMS)
MLP_NONLINEARITIES = tuple(NONLINEARITIES)
GATED_HIDDEN_FRACTION = 2 / 3  # three gated matrices hold as many weights as two ungated ones
MAX_SIZE = 2**31 - 1  # no size of a model reaches this; larger values are typing slips that overflow later


def near_matches(name: str, candidates: typing.Iterable[str]) -> str:
    """A short 'did you mean' phrase for an unknown name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _allowed_types(annotation: Any) -> tuple[type, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(t for arg in typing.get_args(annotation) for t in _allowed_types(arg))
    if annotation is None or annotation is type(None):
        return (type(None),)
    return (annotation,)


def _parse_scalar(text: str, kind: type) -> Any:
    lowered = text.strip().lower()
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
    raise ValueError(text)


@dataclasses.dataclass
class ConfigBase:
    """Behaviour shared by every config: strict dict/JSON loading and typed overrides."""

    @classmethod
    def field_types(cls) -> dict[str, tuple[type, ...]]:
        hints = typing.get_type_hints(cls)
        return {f.name: _allowed_types(hints[f.name]) for f in dataclasses.fields(cls) if f.init}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        known = cls.field_types()
        for key in data:
            if key not in known:
                raise ValueError(f"unknown {cls.__name__} field '{key}'{near_matches(key, known)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls: type[C], path: str | Path) -> C:
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
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise FhaError(f"{path}: {err}") from None

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed, validated again."""
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def parse_field(cls, name: str, text: str) -> Any:
        """Turn the string of a ``--set name=text`` into a value of the field's type."""
        known = cls.field_types()
        if name not in known:
            raise ValueError(f"unknown {cls.__name__} field '{name}'{near_matches(name, known)}")
        kinds = known[name]
        # Try the narrower types first so that "3" becomes an int where an int is allowed.
        order = (type(None), bool, int, float, str)
        for kind in sorted(kinds, key=lambda k: order.index(k) if k in order else len(order)):
            try:
                return _parse_scalar(text, kind)
            except ValueError:
                continue
        names = " or ".join(k.__name__ for k in kinds)
        raise ValueError(f"{name}={text!r}: expected {names}")

    def _check_types(self) -> None:
        for name, kinds in self.field_types().items():
            value = getattr(self, name)
            if float in kinds and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                object.__setattr__(self, name, value)
            ok = any(
                isinstance(value, kind) and not (kind is int and isinstance(value, bool)) for kind in kinds
            )
            if not ok:
                names = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
                raise ValueError(f"{name} must be {names}, got {value!r}")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def require_positive(config: ConfigBase, *names: str) -> None:
    for name in names:
        _require(getattr(config, name) > 0, f"{name} must be positive, got {getattr(config, name)!r}")


def require_finite(config: ConfigBase, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        _require(math.isfinite(value), f"{name} must be a finite number, got {value!r}")


def require_at_most(config: ConfigBase, limit: int, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        _require(value <= limit, f"{name} must be at most {limit}, got {value!r}")


def require_choice(config: ConfigBase, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(config, name)
    _require(value in allowed, f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def require_probability(config: ConfigBase, name: str) -> None:
    value = getattr(config, name)
    _require(0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value!r}")


@dataclasses.dataclass
class ModelConfig(ConfigBase):
    """Architecture of a GPT whose attention is fractal-head ("fha") or ordinary ("mha").

    With ``attention="fha"`` query head ``i`` (a *level*) is cut into ``fractal_split**i``
    sub-heads of ``head_dim / fractal_split**i`` dimensions. ``"mha"`` uses the same
    projections with whole heads, so the two are parameter-matched.
    """

    dim: int = 64
    vocab_size: int = 2048
    num_layers: int = 4
    max_seq_len: int = 256
    attention: str = "fha"
    num_q_heads: int = 4
    num_kv_heads: int = 1
    head_dim: int = 32
    fractal_split: int = 2
    fractal_scale: str | float = "subhead"
    theta: float = 10000.0
    dropout: float = 0.0
    attn_dropout: float = 0.0
    mlp_hidden_mult: float = 2.0
    mlp_gated: bool = True
    mlp_nonlinearity: str = "SiLU"
    mlp_bias: bool = False
    norm_type: str = "RMSNorm"
    norm_affine: bool = True
    norm_bias: bool = False
    eps: float = 1e-6
    second_resid_norm: bool = False
    scale_first_resid: bool = True
    pad_id: int | None = None

    def __post_init__(self) -> None:
        self._check_types()
        require_positive(
            self, "dim", "vocab_size", "num_layers", "max_seq_len", "num_q_heads", "num_kv_heads",
            "head_dim", "fractal_split", "theta", "mlp_hidden_mult", "eps",
        )
        require_finite(self, "theta", "mlp_hidden_mult", "eps")
        require_at_most(self, MAX_SIZE, "dim", "vocab_size", "num_layers", "max_seq_len", "num_q_heads",
                        "num_kv_heads", "head_dim", "fractal_split")
        require_choice(self, "attention", ATTENTION_TYPES)
        require_choice(self, "mlp_nonlinearity", MLP_NONLINEARITIES)
        require_choice(self, "norm_type", NORM_TYPES)
        require_probability(self, "dropout")
        require_probability(self, "attn_dropout")
        if isinstance(self.fractal_scale, str):
            _require(
                self.fractal_scale in FRACTAL_SCALES,
                f"fractal_scale must be one of {', '.join(FRACTAL_SCALES)} or a positive number, "
                f"got {self.fractal_scale!r}",
            )
        else:
            _require(
                math.isfinite(self.fractal_scale) and self.fractal_scale > 0,
                f"fractal_scale must be one of {', '.join(FRACTAL_SCALES)} or a positive number, "
                f"got {self.fractal_scale!r}",
            )
        _require(
            self.num_q_heads % self.num_kv_heads == 0,
            f"num_q_heads ({self.num_q_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})",
        )
        _require(self.head_dim % 2 == 0, f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.attention == "fha":
            cuts = self.fractal_split ** (self.num_q_heads - 1)
            _require(
                self.head_dim % cuts == 0,
                f"head_dim ({self.head_dim}) must be divisible by fractal_split**(num_q_heads-1) "
                f"= {self.fractal_split}**{self.num_q_heads - 1} = {cuts}",
            )
            _require(
                (self.head_dim // cuts) % 2 == 0,
                f"the smallest sub-head has {self.head_dim // cuts} dimensions; it must be even so "
                f"that no RoPE pair is cut (lower num_q_heads or fractal_split, or raise head_dim)",
            )
        if self.pad_id is not None:
            _require(
                0 <= self.pad_id < self.vocab_size,
                f"pad_id must be None or in [0, vocab_size={self.vocab_size}), got {self.pad_id}",
            )
        _require(self.mlp_hidden_dim > 0, f"mlp_hidden_mult={self.mlp_hidden_mult} gives no hidden units")

    @property
    def split(self) -> int:
        """Sub-head split factor actually used: 1 for ordinary attention."""
        return self.fractal_split if self.attention == "fha" else 1

    @property
    def subhead_dims(self) -> list[int]:
        """Size of the sub-heads at each level (query head)."""
        return [self.head_dim // self.split**level for level in range(self.num_q_heads)]

    @property
    def mlp_hidden_dim(self) -> int:
        hidden = self.dim * self.mlp_hidden_mult
        if self.mlp_gated:
            hidden *= GATED_HIDDEN_FRACTION
        return int(round(hidden))
