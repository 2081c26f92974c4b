"""How a model's attention heads are laid out: the sub-heads of every query head, the
dimensions each owns, and the key and value heads it reads.

Derived from the `ModelConfig` alone, because the attention kernel is a plain function with
no modules inside it to hook. The cut of each head comes from the config's attention variant
(`fha.variants`), and the rules mirror `fha.model.attention`: query head ``i`` reads
value head ``i // (num_q_heads // num_kv_heads)`` and the key head of the same rule over
``config.key_heads``, and is cut into ``layer_splits[layer][i]`` contiguous sub-heads.
"""

from __future__ import annotations

from dataclasses import dataclass

from fha.config import ModelConfig
from fha.variants import score_scale


@dataclass(frozen=True)
class LevelLayout:
    """One query head (a *level* in fractal-head attention) of an attention layer."""

    level: int
    value_head: int  # the value head it reads
    key_head: int  # the key head it reads: the value head's number, unless keys are rotated per query head
    num_subheads: int  # n
    subhead_dim: int  # d = head_dim // n
    scale: float  # the softmax temperature its sub-heads use

    def dims(self, subhead: int) -> range:
        """The dimensions of the head that `subhead` owns (the same in q, k and v)."""
        return range(subhead * self.subhead_dim, (subhead + 1) * self.subhead_dim)


def level_layouts(config: ModelConfig, layer: int = 0) -> list[LevelLayout]:
    """The query heads of attention layer `layer` of `config`, in order."""
    L, hd = config.num_q_heads, config.head_dim
    scale = config.variant.score_scale(config)
    layouts = []
    for head, n in enumerate(config.layer_splits[layer]):
        layouts.append(
            LevelLayout(
                level=head,
                value_head=head // (L // config.num_kv_heads),
                key_head=head // (L // config.key_heads),
                num_subheads=n,
                subhead_dim=hd // n,
                scale=score_scale(scale, hd, hd // n),
            )
        )
    return layouts
