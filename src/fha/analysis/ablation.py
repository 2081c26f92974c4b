"""The loss of a model with one sub-head's output replaced, for every sub-head of a layer at once.

A sub-head's output is its block of columns in the input of the layer's output projection
(``attn.out``: level after level, each level's sub-heads side by side). The clean pass
records that input with a hook; each ablated copy replaces the sub-head's columns, goes
through ``attn.out``, and stands in for the layer's attention (`given_attention`), so the
model code is untouched and the layer's attention is not computed again. The copies share
everything below the layer: only the layer's block and those above run again, on every copy
stacked along the batch dimension. The output layer and the loss of the copies then run a
cache-sized chunk of rows at a time (`summed_losses`).

    zero ablation:  the columns set to 0 (the same as removing them from the output projection)
    mean ablation:  the columns set to their mean over every counted position of the text
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fha.config import ModelConfig
from fha.inspection.layout import level_layouts
from fha.model.dtypes import at_least_float32
from fha.model.loss import IGNORE_INDEX, counted_targets

if TYPE_CHECKING:
    from fha.model.gpt import GPT

ABLATION_ROWS = 64  # windows per forward pass of the ablated copies (copies x windows)
# Logits per chunk of the output layer's loss, by device type: 2 MB of float32 on a CPU, which
# stays in cache (256 rows at a vocabulary of 2,048); elsewhere few large chunks (64 MB).
LOGITS_PER_CHUNK = {"cpu": 1 << 19}
DEFAULT_LOGITS_PER_CHUNK = 1 << 24


@dataclass(frozen=True)
class Subhead:
    """One sub-head of a layer: its head (level), index in the head, size, and output columns."""

    layer: int
    head: int
    subhead: int
    dim: int  # d, its size
    num_subheads: int  # n, how many its head is cut into
    columns: slice  # its columns in the input of attn.out
    value_rows: slice  # its rows among the value heads' rows of the qkv projection


def subheads(config: ModelConfig, layer: int) -> list[Subhead]:
    """The sub-heads of `layer` in the order of their output columns."""
    found = []
    for layout in level_layouts(config, layer):
        start, value_start = layout.level * config.head_dim, layout.value_head * config.head_dim
        for sub in range(layout.num_subheads):
            dims = layout.dims(sub)
            found.append(
                Subhead(
                    layer,
                    layout.level,
                    sub,
                    layout.subhead_dim,
                    layout.num_subheads,
                    slice(start + dims.start, start + dims.stop),
                    slice(value_start + dims.start, value_start + dims.stop),
                )
            )
    return found


class _Given(nn.Module):
    """Stands in for a block's attention module and returns outputs computed beforehand."""

    def __init__(self, output: Tensor) -> None:
        super().__init__()
        self.output = output

    def forward(self, *args: object) -> Tensor:
        return self.output


@contextlib.contextmanager
def given_attention(block: nn.Module, output: Tensor) -> Iterator[None]:
    """Inside the block, `block`'s attention returns `output` (B, T, C) without computing anything."""
    attention = block.attn
    block.attn = _Given(output)
    try:
        yield
    finally:
        block.attn = attention


@contextlib.contextmanager
def recorded_inputs(modules: Sequence[nn.Module]) -> Iterator[list[tuple]]:
    """Record the positional arguments of every forward call of `modules`, in call order (for
    a block: residual stream, RoPE rotation, cache, mask)."""
    recorded: list[tuple] = []

    def record(module: nn.Module, args: tuple) -> None:
        recorded.append(args)

    handles = [module.register_forward_pre_hook(record) for module in modules]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


def logits_per_chunk(device: torch.device) -> int:
    """How many logits `summed_losses` computes at once on `device`."""
    return LOGITS_PER_CHUNK.get(device.type, DEFAULT_LOGITS_PER_CHUNK)


def summed_losses(model: GPT, hidden: Tensor, targets: Tensor) -> Tensor:
    """Summed next-token cross-entropy of each copy: hidden (copies * B, T, C) from the last
    block, targets (B, T) shared by the copies -> (copies,) in float64.

    The logits are computed a chunk of rows at a time and never kept: on a CPU a chunk that
    stays in cache makes this about 1.3 times faster than the logits of a whole copy, which
    go to memory and back through the softmax (docs/benchmarks.md). Each row's loss is the
    same either way; the sums run in float64.
    """
    B, T = targets.shape
    copies = hidden.shape[0] // B
    counted = counted_targets(targets, model.config.pad_id)
    flat_targets = targets.masked_fill(~counted, IGNORE_INDEX).flatten().repeat(copies)  # (copies*B*T,)
    normed = model.norm(hidden).flatten(0, 1)  # (copies*B*T, C)
    weight = model.embedding.weight  # (V, C), the tied output layer
    rows = max(1, logits_per_chunk(normed.device) // weight.shape[0])
    losses = torch.empty(normed.shape[0], dtype=at_least_float32(normed.dtype), device=normed.device)
    for start in range(0, normed.shape[0], rows):
        part = slice(start, start + rows)
        logits = F.linear(normed[part], weight)  # (rows, V)
        losses[part] = F.cross_entropy(
            logits.to(losses.dtype), flat_targets[part], ignore_index=IGNORE_INDEX, reduction="none"
        )
    return losses.view(copies, B * T).double().sum(dim=1)


def ablated_losses(
    model: GPT,
    layer: int,
    inputs: tuple,
    outputs: Tensor,
    targets: Tensor,
    keep: Tensor,
    replacement: Tensor,
) -> Tensor:
    """Summed losses of the copies of one batch whose layer-`layer` sub-head outputs are replaced.

    inputs: the recorded arguments of block `layer` for the batch (B rows); outputs: the
    sub-heads' outputs there, the input of its ``attn.out`` (B, T, D); keep and replacement
    (copies, D): copy c's output projection reads ``outputs * keep[c] + replacement[c]``. The
    attention of layer `layer` is not computed again (`given_attention`); the rest of its block
    and the blocks above run on the copies, at most `ABLATION_ROWS` windows per pass.
    Returns (copies,) float64.
    """
    resid, rotation, *rest = inputs
    B = resid.shape[0]
    blocks = model.block_list()
    block = blocks[layer]
    per_pass = max(1, ABLATION_ROWS // B)
    sums = []
    for first in range(0, keep.shape[0], per_pass):
        group = slice(first, first + per_pass)
        copies = keep[group].shape[0]
        mixed = torch.addcmul(replacement[group, None, None], outputs, keep[group, None, None])  # (copies, B, T, D)
        with given_attention(block, block.attn.out(mixed.flatten(0, 1))):
            hidden = block(resid.repeat(copies, 1, 1), rotation, *rest)  # (copies * B, T, C)
        for above in blocks[layer + 1 :]:
            hidden = above(hidden, rotation, *rest)
        sums.append(summed_losses(model, hidden, targets))
    return torch.cat(sums)


def ablation_plan(found: list[Subhead], mean: Tensor) -> tuple[Tensor, Tensor]:
    """(keep, replacement), each (2 * sub-heads, D): a zero-ablated copy per sub-head, then a
    mean-ablated copy per sub-head; mean (D,) is the layer's mean projection input."""
    width = mean.shape[0]
    keep = torch.ones(2 * len(found), width, dtype=mean.dtype, device=mean.device)
    replacement = torch.zeros_like(keep)
    for index, sub in enumerate(found):
        keep[index, sub.columns] = 0
        keep[len(found) + index, sub.columns] = 0
        replacement[len(found) + index, sub.columns] = mean[sub.columns]
    return keep, replacement
