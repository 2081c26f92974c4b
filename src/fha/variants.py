"""Attention variants by name: how each layer's query heads are cut into sub-heads, the
score scale, and which kernel computes it.

Every variant uses the same projections (``num_q_heads`` query heads and ``num_kv_heads``
key/value heads of ``head_dim``), so all of them have exactly the same parameters and differ
only in the cut: head ``i`` of layer ``l`` is cut into ``layer_splits[l][i]`` contiguous
sub-heads. A new pattern is one entry in `ATTENTION_VARIANTS`; the config, the model, the
shape tree and the attention maps all read the cut from here.

Plain Python, below the config in the import order (no torch): the kernel is named here and
built by `fha.model.attention`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fha.wording import counted

if TYPE_CHECKING:  # the config imports this module to validate its attention setting
    from fha.config import ModelConfig

HeadSplits = tuple[int, ...]
# The attention kernels by name (`fha.model.attention.KERNELS` builds them).
FRACTAL_KERNEL, GROUPED_KERNEL = "fractal_attention", "grouped_attention"


def subhead_sizes(config: ModelConfig) -> str:
    """ "32/16/8": the sub-head size of each query head, per layer when the layers differ."""
    per_layer = ["/".join(str(config.head_dim // n) for n in splits) for splits in config.layer_splits]
    if len(set(per_layer)) == 1:
        return per_layer[0]
    return ", ".join(f"layer {layer} {sizes}" for layer, sizes in enumerate(per_layer))


def score_scale(scale: str | float, hd: int, d: int) -> float:
    """The factor q.k is multiplied by in a sub-head of `d` dimensions cut from a head of `hd`.

    "subhead": ``d**-0.5`` (every sub-head is an ordinary attention head); "head": ``hd**-0.5``
    for every sub-head (the original FHA design); a positive number is used as it is.
    """
    if scale == "subhead":
        return d**-0.5
    if scale == "head":
        return hd**-0.5
    if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0:
        return float(scale)
    raise ValueError(f"scale must be 'subhead', 'head' or a positive number, got {scale!r}")


def describe_attention(config: ModelConfig) -> str:
    """A short phrase: "fha (split 2, scale subhead; 4 levels, sub-heads 32/16/8/4, 1 kv)"."""
    rope = "; RoPE per sub-head" if config.rope_layout == "subhead" else ""
    return config.variant.describe(config) + rope


def _describe_fractal(config: ModelConfig) -> str:
    return (
        f"fha (split {config.fractal_split}, scale {config.fractal_scale}; {counted(config.num_q_heads, 'level')}, "
        f"sub-heads {subhead_sizes(config)}, {config.num_kv_heads} kv)"
    )


def _describe_whole(config: ModelConfig) -> str:
    return f"{config.attention} ({counted(config.num_q_heads, 'head')} of {config.head_dim}, {config.num_kv_heads} kv)"


def _describe_cut(config: ModelConfig) -> str:
    return (
        f"{config.attention} (scale {config.fractal_scale}; {counted(config.num_q_heads, 'head')}, "
        f"sub-heads {subhead_sizes(config)}, {config.num_kv_heads} kv)"
    )


def _fractal_label(config: ModelConfig, splits: HeadSplits) -> str:
    return f"split {config.fractal_split}, scale {config.fractal_scale}"


def _splits_label(config: ModelConfig, splits: HeadSplits) -> str:
    return f"splits {'/'.join(str(n) for n in splits)}, scale {config.fractal_scale}"


def _no_label(config: ModelConfig, splits: HeadSplits) -> str:
    return ""


@dataclass(frozen=True)
class AttentionVariant:
    """One way of cutting heads. `head_splits(config, layer)` gives the cut of every query head
    of that layer; `kernel_name` the attention function that computes it (a key of
    `fha.model.attention.KERNELS`); `describe(config)` a phrase for reports and
    `kernel_label(config, splits)` the settings shown on the kernel's line of the shape tree."""

    head_splits: Callable[[ModelConfig, int], HeadSplits]
    kernel_name: str = FRACTAL_KERNEL
    kernel_label: Callable[[ModelConfig, HeadSplits], str] = _splits_label
    describe: Callable[[ModelConfig], str] = _describe_cut
    uses_fractal_scale: bool = True  # False: whole heads, always scaled by head_dim**-0.5
    reads_pattern: bool = False  # True: the cut comes from head_splits / layer_head_splits

    def score_scale(self, config: ModelConfig) -> str | float:
        """The `scale` argument its kernel gets (see `score_scale`)."""
        return config.fractal_scale if self.uses_fractal_scale else "head"


def _levels(config: ModelConfig) -> list[int]:
    """The fractal cuts 1, s, s**2, ... of the query heads, s = fractal_split."""
    return [config.fractal_split**level for level in range(config.num_q_heads)]


def _uniform(config: ModelConfig, level: int) -> HeadSplits:
    return (config.fractal_split**level,) * config.num_q_heads


def _layer_level(config: ModelConfig, layer: int) -> int:
    """The fractal level that layer `layer` of `num_layers` sits at, from 0 (first) to L - 1 (last)."""
    if config.num_layers == 1:
        return 0
    return round(layer * (config.num_q_heads - 1) / (config.num_layers - 1))


def _written_pattern(config: ModelConfig, layer: int) -> HeadSplits:
    pattern = config.layer_head_splits[layer] if config.layer_head_splits is not None else config.head_splits
    if pattern is None:  # ModelConfig checks first that attention='split' has one of the two
        raise ValueError("attention='split' needs head_splits or layer_head_splits")
    return tuple(pattern)


ATTENTION_VARIANTS: dict[str, AttentionVariant] = {
    "fha": AttentionVariant(  # fractal heads: head i cut into fractal_split**i sub-heads
        lambda config, layer: tuple(_levels(config)),
        kernel_label=_fractal_label,
        describe=_describe_fractal,
    ),
    "mha": AttentionVariant(  # ordinary multi-head / grouped-query attention: whole heads
        lambda config, layer: (1,) * config.num_q_heads,
        kernel_name=GROUPED_KERNEL,
        kernel_label=_no_label,
        describe=_describe_whole,
        uses_fractal_scale=False,
    ),
    "reversed-fha": AttentionVariant(  # fractal cuts in reverse: head i into fractal_split**(L-1-i)
        lambda config, layer: tuple(reversed(_levels(config))),
    ),
    "uniform-finest": AttentionVariant(  # every head cut like FHA's finest level
        lambda config, layer: _uniform(config, config.num_q_heads - 1),
    ),
    "uniform-middle": AttentionVariant(  # every head cut like FHA's level L // 2
        lambda config, layer: _uniform(config, config.num_q_heads // 2),
    ),
    "coarse-to-fine": AttentionVariant(  # one cut per layer: whole heads first, FHA's finest last
        lambda config, layer: _uniform(config, _layer_level(config, layer)),
    ),
    "fine-to-coarse": AttentionVariant(  # one cut per layer: FHA's finest first, whole heads last
        lambda config, layer: _uniform(config, _layer_level(config, config.num_layers - 1 - layer)),
    ),
    "split": AttentionVariant(  # any cut: head_splits (every layer) or layer_head_splits (per layer)
        _written_pattern,
        reads_pattern=True,
    ),
}
