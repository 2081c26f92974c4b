"""How a model's attention heads are laid out: levels, sub-heads, the dimensions each owns.

Derived from the `ModelConfig` alone, because the attention kernel is a plain function with
no modules inside it to hook. The rules mirror `fha.model.attention`: query head ``i`` (a
*level*) reads kv head ``i // (num_q_heads // num_kv_heads)`` and, in fractal-head
attention, is cut into ``split**i`` contiguous sub-heads of ``head_dim // split**i``
dimensions; ordinary attention ("mha") is the same with one sub-head per level.
"""

from __future__ import annotations

from dataclasses import dataclass

from fha.config import ModelConfig


@dataclass(frozen=True)
class LevelLayout:
    """One query head (level) of an attention layer."""

    level: int
    kv_head: int
    num_subheads: int  # n
    subhead_dim: int  # d = head_dim // n
    scale: float  # the softmax temperature its sub-heads use

    def dims(self, subhead: int) -> range:
        """The dimensions of the head that `subhead` owns (the same in q, k and v)."""
        return range(subhead * self.subhead_dim, (subhead + 1) * self.subhead_dim)


def softmax_scale(config: ModelConfig, subhead_dim: int) -> float:
    """The factor the kernel multiplies q.k by, for a sub-head of `subhead_dim` dimensions.

    `grouped_attention` ("mha") always uses ``head_dim**-0.5``; `fractal_attention` follows
    `config.fractal_scale`: "subhead" is ``d**-0.5``, "head" is ``head_dim**-0.5``, a number
    is used as it is.
    """
    if config.attention != "fha" or config.fractal_scale == "head":
        return config.head_dim**-0.5
    if config.fractal_scale == "subhead":
        return subhead_dim**-0.5
    return float(config.fractal_scale)


def level_layouts(config: ModelConfig) -> list[LevelLayout]:
    """The levels of one attention layer of `config`, in query-head order."""
    group = config.num_q_heads // config.num_kv_heads
    layouts = []
    for level, d in enumerate(config.subhead_dims):
        layouts.append(LevelLayout(
            level=level,
            kv_head=level // group,
            num_subheads=config.head_dim // d,
            subhead_dim=d,
            scale=softmax_scale(config, d),
        ))
    return layouts


def describe_attention(config: ModelConfig) -> str:
    """A short phrase: "fha (split 2, scale subhead; sub-heads 32/16/8/4)" or "mha"."""
    if config.attention != "fha":
        return f"{config.attention} ({config.num_q_heads} heads of {config.head_dim}, {config.num_kv_heads} kv)"
    sizes = "/".join(str(d) for d in config.subhead_dims)
    return (f"{config.attention} (split {config.fractal_split}, scale {config.fractal_scale}; "
            f"{config.num_q_heads} levels, sub-heads {sizes}, {config.num_kv_heads} kv)")
