"""`ModelConfig`: the architecture of a GPT whose attention heads are cut into sub-heads.

The typed-config machinery it shares with `fha.train_config.TrainConfig` is `fha.config_base`.
"""

from __future__ import annotations

import dataclasses
import math

from fha.config_base import (
    ConfigBase,
    require,
    require_at_most,
    require_choice,
    require_finite,
    require_positive,
    require_probability,
)
from fha.errors import FhaValueError
from fha.variants import ATTENTION_VARIANTS, AttentionVariant

ATTENTION_TYPES = tuple(ATTENTION_VARIANTS)
FRACTAL_SCALES = ("subhead", "head")
ROPE_LAYOUTS = ("head", "subhead")
# The names of the model's registries (fha.model.layers NORMS and NONLINEARITIES take them from here).
NORM_TYPES = ("RMSNorm", "LayerNorm", "CosineNorm")
MLP_NONLINEARITIES = ("GeLU", "SiLU", "ReLU")
GATED_HIDDEN_FRACTION = 2 / 3  # three gated matrices hold as many weights as two ungated ones
MAX_SIZE = 2**31 - 1  # no size of a model reaches this; larger values are typing slips that overflow later
# the whole-number sizes of a model: each positive and at most MAX_SIZE
SIZE_FIELDS = (
    "dim",
    "vocab_size",
    "num_layers",
    "max_seq_len",
    "num_q_heads",
    "num_kv_heads",
    "head_dim",
    "fractal_split",
)


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
        require_positive(self, *SIZE_FIELDS, "theta", "mlp_hidden_mult", "eps")
        require_finite(self, "theta", "mlp_hidden_mult", "eps")
        require_at_most(self, MAX_SIZE, *SIZE_FIELDS)
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
