"""The attention weights a model actually uses, per layer, level and sub-head.

The kernels call PyTorch's fused attention, which never returns its weights, and the model
code stays pure computation. So `capture_attention` records the inputs and the output of
every `Attention` module with forward hooks, and `level_weights` recomputes the softmax
weights from those inputs exactly as the module does (qkv projection, RoPE, the split into
levels and sub-heads, the kernel's scale rule, causal or given mask). `mix_values` turns the
weights back into the module's output (weights @ v, levels concatenated, output
projection), which tests compare with the recorded output: the weights are provably the
model's own.

Shapes use the notation of `fha.model.attention`; weights of one level are (B, n, T, S).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from fha.config import ModelConfig
from fha.errors import FhaValueError
from fha.inspection.layout import LevelLayout, level_layouts
from fha.model.attention import Attention, causal_mask

if TYPE_CHECKING:
    from fha.model.gpt import GPT

_FORWARD_SIGNATURE = inspect.signature(Attention.forward)


@dataclass
class AttentionCall:
    """Inputs and output of one call of an `Attention` module (no KV cache)."""

    name: str  # module name, e.g. "blocks.0.attn"
    x: Tensor  # (B, T, C)
    rotation: Tensor  # RoPE, complex (T, R, hd/2) or (B, T, R, hd/2)
    attn_mask: Tensor | None  # (B, 1, T, S) boolean, or None for plain causal attention
    output: Tensor  # (B, T, C)


@dataclass
class LayerAttention:
    """The weights of one attention layer: ``weights[level]`` is (B, n, T, S)."""

    layer: int
    call: AttentionCall
    weights: list[Tensor]


def attention_modules(model: nn.Module) -> list[tuple[str, Attention]]:
    """(name, module) of every attention layer, in layer order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, Attention)]


def attention_arguments(module: Attention, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The arguments of one `Attention.forward` call by parameter name, defaults filled in."""
    bound = _FORWARD_SIGNATURE.bind(module, *args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[list[AttentionCall]]:
    """Record every `Attention` call made inside the block, in call order."""
    calls: list[AttentionCall] = []

    def record(name: str, module: Attention, args: tuple, kwargs: dict, output: Tensor) -> None:
        given = attention_arguments(module, args, kwargs)
        if given["cache"] is not None:
            raise ValueError("attention maps are computed from a forward pass without a KV cache")
        calls.append(AttentionCall(name, given["x"].detach(), given["rotation"], given["attn_mask"], output.detach()))

    handles = [
        module.register_forward_hook(partial(record, name), with_kwargs=True)
        for name, module in attention_modules(model)
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _subheads(head: Tensor, layout: LevelLayout) -> Tensor:
    """(B, T, hd) -> (B, n, T, d): the level's contiguous sub-heads side by side."""
    return head.unflatten(-1, (layout.num_subheads, layout.subhead_dim)).transpose(1, 2)  # (B, n, T, d)


def level_weights(attn: Attention, config: ModelConfig, call: AttentionCall) -> list[Tensor]:
    """Softmax weights of every level: element i is (B, n_i, T, S); each row sums to 1."""
    q, k, _ = attn.project(call.x, call.rotation)
    T, S = q.shape[-2], k.shape[-2]
    allowed = call.attn_mask if call.attn_mask is not None else causal_mask(T, S, q.device)  # (T, S) or None
    weights = []
    for layout in level_layouts(config, attn.layer):
        q_l = _subheads(q[:, layout.level], layout)  # (B, n, T, d)
        k_l = _subheads(k[:, layout.key_head], layout)  # (B, n, S, d)
        scores = (q_l @ k_l.transpose(-2, -1)) * layout.scale  # (B, n, T, S)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        weights.append(scores.softmax(dim=-1))  # (B, n, T, S)
    return weights


def mix_values(attn: Attention, config: ModelConfig, call: AttentionCall, weights: Sequence[Tensor]) -> Tensor:
    """The module output that `weights` imply: weights @ v per sub-head, then `attn.out`. (B, T, C)"""
    _, _, v = attn.project(call.x, call.rotation)
    B, T, _ = call.x.shape
    levels = []
    for layout, w in zip(level_layouts(config, attn.layer), weights):
        v_l = _subheads(v[:, layout.value_head], layout)  # (B, n, S, d)
        y = w @ v_l  # (B, n, T, d)
        levels.append(y.transpose(1, 2).reshape(B, T, config.head_dim))  # (B, T, hd)
    return attn.out(torch.cat(levels, dim=-1))  # (B, T, L*hd) -> (B, T, C)


@torch.no_grad()
def attention_maps(model: GPT, idx: Tensor, layers: Sequence[int] | None = None) -> list[LayerAttention]:
    """Run `model` on token ids idx (B, T) and return the attention weights of each layer.

    `model` is a GPT (anything with ``config`` and `Attention` modules); `layers` picks layer
    indices (default all). Dropout should be off (``model.eval()``) for the weights to be
    the ones the output was computed with.
    """
    modules = dict(attention_modules(model))
    selected = range(len(modules)) if layers is None else layers
    for layer in selected:
        if not 0 <= layer < len(modules):
            raise FhaValueError(
                f"layer {layer} does not exist (the model has {len(modules)} layers: 0..{len(modules) - 1})"
            )
    with capture_attention(model) as calls:
        model(idx)
    return [
        LayerAttention(layer, calls[layer], level_weights(modules[calls[layer].name], model.config, calls[layer]))
        for layer in selected
    ]
