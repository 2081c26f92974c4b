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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from fha.errors import FhaError, FhaValueError
from fha.files import write_json_atomic
from fha.variants import ATTENTION_VARIANTS, AttentionVariant

C = TypeVar("C", bound="ConfigBase")

ATTENTION_TYPES = tuple(ATTENTION_VARIANTS)
FRACTAL_SCALES = ("subhead", "head")
ROPE_LAYOUTS = ("head", "subhead")
HEAD_SEPARATOR, LAYER_SEPARATOR = ",", "/"  # --set layer_head_splits=1,2,4/4,4,4
# The names of the model's registries (fha.model.layers NORMS and NONLINEARITIES take them from here).
NORM_TYPES = ("RMSNorm", "LayerNorm", "CosineNorm")
MLP_NONLINEARITIES = ("GeLU", "SiLU", "ReLU")
GATED_HIDDEN_FRACTION = 2 / 3  # three gated matrices hold as many weights as two ungated ones
MAX_SIZE = 2**31 - 1  # no size of a model reaches this; larger values are typing slips that overflow later


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


@dataclasses.dataclass
class ModelConfig(ConfigBase):
    """Architecture of a GPT whose attention heads are cut into sub-heads by a named variant.

    With ``attention="fha"`` query head ``i`` (a *level*) is cut into ``fractal_split**i``
    sub-heads of ``head_dim / fractal_split**i`` dimensions; ``"mha"`` keeps whole heads; the
    other names of `fha.variants.ATTENTION_VARIANTS` cut them otherwise, and ``"split"``
    takes any cut from `head_splits` (every layer) or `layer_head_splits` (one pattern per
    layer). All variants use the same projections, so they are parameter-matched.
    `rope_layout="subhead"` gives every sub-head RoPE's full spectrum for its own size.

    Derived in ``__post_init__``: `layer_splits`, the cut of every head of every layer.
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
    head_splits: tuple[int, ...] | None = None
    layer_head_splits: tuple[tuple[int, ...], ...] | None = None
    rope_layout: str = "head"
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
    layer_splits: tuple[tuple[int, ...], ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_types()
        require_positive(
            self,
            "dim",
            "vocab_size",
            "num_layers",
            "max_seq_len",
            "num_q_heads",
            "num_kv_heads",
            "head_dim",
            "fractal_split",
            "theta",
            "mlp_hidden_mult",
            "eps",
        )
        require_finite(self, "theta", "mlp_hidden_mult", "eps")
        require_at_most(
            self,
            MAX_SIZE,
            "dim",
            "vocab_size",
            "num_layers",
            "max_seq_len",
            "num_q_heads",
            "num_kv_heads",
            "head_dim",
            "fractal_split",
        )
        require_choice(self, "attention", ATTENTION_TYPES)
        require_choice(self, "rope_layout", ROPE_LAYOUTS)
        require_choice(self, "mlp_nonlinearity", MLP_NONLINEARITIES)
        require_choice(self, "norm_type", NORM_TYPES)
        require_probability(self, "dropout")
        require_probability(self, "attn_dropout")
        if isinstance(self.fractal_scale, str):
            require(
                self.fractal_scale in FRACTAL_SCALES,
                f"fractal_scale must be one of {', '.join(FRACTAL_SCALES)} or a positive number, "
                f"got {self.fractal_scale!r}",
            )
        else:
            require(
                math.isfinite(self.fractal_scale) and self.fractal_scale > 0,
                f"fractal_scale must be one of {', '.join(FRACTAL_SCALES)} or a positive number, "
                f"got {self.fractal_scale!r}",
            )
        require(
            self.num_q_heads % self.num_kv_heads == 0,
            f"num_q_heads ({self.num_q_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})",
        )
        require(self.head_dim % 2 == 0, f"head_dim must be even for RoPE, got {self.head_dim}")
        self._check_written_patterns()
        self.layer_splits = tuple(self.variant.head_splits(self, layer) for layer in range(self.num_layers))
        for layer, splits in enumerate(self.layer_splits):
            self._check_cuts(splits, self._pattern_name(layer))
        if self.pad_id is not None:
            require(
                0 <= self.pad_id < self.vocab_size,
                f"pad_id must be None or in [0, vocab_size={self.vocab_size}), got {self.pad_id}",
            )
        require(self.mlp_hidden_dim > 0, f"mlp_hidden_mult={self.mlp_hidden_mult} gives no hidden units")

    def _check_written_patterns(self) -> None:
        written = [name for name in ("head_splits", "layer_head_splits") if getattr(self, name) is not None]
        if not self.variant.reads_pattern:
            if written:
                raise FhaValueError(
                    f"{' and '.join(written)} {'is' if len(written) == 1 else 'are'} read only by "
                    f"attention='split' (got attention={self.attention!r}); set attention='split' "
                    f"with it, or {written[0]}=none"
                )
            return
        require(
            len(written) == 1,
            "attention='split' needs exactly one of head_splits (the cut of every "
            f"layer) and layer_head_splits (one per layer), got {len(written)}",
        )
        if self.layer_head_splits is not None:
            require(
                len(self.layer_head_splits) == self.num_layers,
                f"layer_head_splits has {len(self.layer_head_splits)} patterns; it needs one per layer "
                f"(num_layers={self.num_layers})",
            )

    def _pattern_name(self, layer: int) -> str:
        """Where a layer's cut comes from, for error messages."""
        if self.layer_head_splits is not None:
            return f"layer_head_splits[{layer}]"
        if self.head_splits is not None:
            return "head_splits"
        return f"attention={self.attention!r} with fractal_split={self.fractal_split}"

    def _check_cuts(self, splits: tuple[int, ...], source: str) -> None:
        L, hd = self.num_q_heads, self.head_dim
        require(len(splits) == L, f"{source} has {len(splits)} entries; it needs one per query head (num_q_heads={L})")
        for head, n in enumerate(splits):
            require(n >= 1, f"{source}: head {head} is cut into {n} sub-heads; a cut must be 1 or more")
            require(
                hd % n == 0,
                f"{source} cuts head {head} into {n} sub-heads, but head_dim ({hd}) is not divisible by {n}",
            )
        for head, n in enumerate(splits):
            require(
                (hd // n) % 2 == 0,
                f"{source} cuts head {head} into {n} sub-heads of {hd // n} dimensions; the smallest sub-head "
                "must be even so that no RoPE pair is cut (cut less, or raise head_dim)",
            )

    @property
    def variant(self) -> AttentionVariant:
        return ATTENTION_VARIANTS[self.attention]

    @property
    def rope_cuts(self) -> tuple[int, ...]:
        """The cut that each row of the RoPE tables serves: one row (1, a whole head) unless
        `rope_layout` is "subhead", then one row per distinct cut of the model."""
        if self.rope_layout == "head":
            return (1,)
        return tuple(sorted({n for splits in self.layer_splits for n in splits}))

    @property
    def key_heads(self) -> int:
        """Key heads a layer attends with: `num_kv_heads`, or `num_q_heads` when sub-head RoPE
        must rotate a kv head differently for query heads of different cuts that share it."""
        if self.rope_layout == "head":
            return self.num_kv_heads
        group = self.num_q_heads // self.num_kv_heads
        shared = all(
            len(set(splits[g * group : (g + 1) * group])) == 1
            for splits in self.layer_splits
            for g in range(self.num_kv_heads)
        )
        return self.num_kv_heads if shared else self.num_q_heads

    def rope_plan(self, layer: int) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        """How layer `layer` applies RoPE: the kv head each of its `key_heads` key heads is
        rotated from, and the RoPE table row of each query head then each key head (None when
        the tables have a single row, which every head shares)."""
        splits, group = self.layer_splits[layer], self.num_q_heads // self.num_kv_heads
        if self.key_heads == self.num_kv_heads:
            sources = tuple(range(self.num_kv_heads))
            key_cuts = tuple(splits[g * group] for g in sources)
        else:
            sources = tuple(head // group for head in range(self.num_q_heads))
            key_cuts = splits
        if len(self.rope_cuts) == 1:
            return sources, None
        row = {n: index for index, n in enumerate(self.rope_cuts)}
        return sources, tuple(row[n] for n in splits + key_cuts)

    @property
    def mlp_hidden_dim(self) -> int:
        hidden = self.dim * self.mlp_hidden_mult
        if self.mlp_gated:
            hidden *= GATED_HIDDEN_FRACTION
        return int(round(hidden))
