"""The GPT language model: token embedding, a stack of blocks, a tied output layer."""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fha.config import ModelConfig
from fha.model.attention import rope_frequencies, rope_rotation
from fha.model.kv_cache import KVCache, padding_mask, token_positions
from fha.model.layers import Block, apply_dropout, make_dropout, make_norm
from fha.model.loss import IGNORE_INDEX, counted_targets, linear_cross_entropy

EMBEDDING_INIT_STD = 0.02
LINEAR_INIT_STD = 0.02


def fill_constant_buffers(module: nn.Module) -> None:
    """Compute again, in place, the buffers of `module` itself (not its children) that are not saved
    (RoPE tables, index and constant tensors): what a module built on the meta device needs once
    its storage is real."""
    constant_buffers = getattr(module, "constant_buffers", None)
    computed = constant_buffers() if constant_buffers is not None else {}
    with torch.no_grad():
        for name, value in computed.items():
            if value is not None:
                getattr(module, name).copy_(value)


class GPT(nn.Module):
    """Decoder-only transformer whose attention heads are cut as `config.attention` says.

    ``logits, loss = model(idx, targets)``: logits (B, T, vocab_size); loss is the mean
    cross-entropy over targets that are neither `config.pad_id` nor -100.
    """

    rope_cos: Tensor  # buffers of constant_buffers(), declared for type checkers
    rope_sin: Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.dim)
        self.embed_scale = math.sqrt(config.dim) if config.scale_first_resid else 1.0
        self.dropout = make_dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.num_layers))
        self.norm = make_norm(config)
        for name, value in self.constant_buffers().items():
            self.register_buffer(name, value, persistent=False)
        self.reset_parameters()

    def block_list(self) -> list[Block]:
        """The blocks in layer order, typed as blocks (a ModuleList yields plain Modules)."""
        return [cast(Block, block) for block in self.blocks]

    def constant_buffers(self) -> dict[str, Tensor]:
        """The RoPE tables, (max_seq_len, R, hd/2) each."""
        config = self.config
        cos, sin = rope_frequencies(config.head_dim, config.max_seq_len, config.theta, config.rope_cuts)
        return {"rope_cos": cos, "rope_sin": sin}

    def to_empty(self, *, device: torch.device | str | None, recurse: bool = True) -> GPT:
        """Like `nn.Module.to_empty`, and the buffers that are not saved (RoPE tables, index and
        constant tensors, which `load_state_dict` does not restore) computed again, so that a model
        built on the meta device, emptied onto a device and loaded works."""
        super().to_empty(device=device, recurse=recurse)
        for module in self.modules():
            fill_constant_buffers(module)
        return self

    def reset_parameters(self) -> None:
        """Small embeddings (the output layer is tied to them, so an untrained model predicts
        nearly uniformly: loss ~ ln(vocab_size)); residual output layers scaled by depth."""
        embed_std = EMBEDDING_INIT_STD / self.embed_scale
        nn.init.normal_(self.embedding.weight, std=embed_std)
        residual_std = LINEAR_INIT_STD / math.sqrt(2 * self.config.num_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                is_residual_out = name.endswith(("attn.out", "mlp.down"))
                nn.init.normal_(module.weight, std=residual_std if is_residual_out else LINEAR_INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameters counted once (the tied output layer shares the embedding)."""
        total = sum(p.numel() for p in self.parameters())
        return total - self.embedding.weight.numel() if non_embedding else total

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        *,
        kv_cache: KVCache | None = None,
        token_mask: Tensor | None = None,
        return_logits: bool = True,
    ) -> tuple[Tensor | None, Tensor | None]:
        """idx: (B, T) token ids. kv_cache: continue after the positions it holds.
        token_mask: (B, T) bool, False at left padding of prompts of different lengths.
        return_logits=False (with targets) skips the (B, T, V) logits and computes the loss
        chunk by chunk, which is faster for training; logits is then None."""
        B, T = idx.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_seq_len={self.config.max_seq_len}")
        rotation, attn_mask = self._positions(B, T, kv_cache, token_mask)
        x = self.embedding(idx)  # (B, T, C)
        if self.embed_scale != 1.0:
            x = x * self.embed_scale
        x = apply_dropout(self.dropout, x)
        for i, block in enumerate(self.blocks):
            x = block(x, rotation, kv_cache.layers[i] if kv_cache is not None else None, attn_mask)
        if kv_cache is not None:
            kv_cache.advance(T, token_mask)
        x = self.norm(x)
        if targets is not None and not return_logits:
            return None, linear_cross_entropy(x, self.embedding.weight, self._loss_targets(targets))
        logits = F.linear(x, self.embedding.weight)  # (B, T, V)
        loss = None if targets is None else self.loss(logits, targets)
        return logits, loss

    def _positions(
        self, B: int, T: int, kv_cache: KVCache | None, token_mask: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """RoPE rotations of the new positions, and the attention mask where padding needs one."""
        if kv_cache is None:
            if token_mask is None:
                return rope_rotation(self.rope_cos[:T], self.rope_sin[:T]), None  # (T, R, hd/2)
            positions = token_positions(torch.zeros(B, dtype=torch.long, device=token_mask.device), T, token_mask)
            attn_mask = padding_mask(token_mask[:, :0], token_mask, T)
        else:
            attn_mask = kv_cache.attention_mask(T, token_mask)
            if attn_mask is None:
                start = kv_cache.length
                return rope_rotation(self.rope_cos[start : start + T], self.rope_sin[start : start + T]), None
            positions = kv_cache.positions(T, token_mask)  # (B, T)
        return rope_rotation(self.rope_cos[positions], self.rope_sin[positions]), attn_mask  # (B, T, R, hd/2)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy over targets that are neither padding nor IGNORE_INDEX."""
        targets = self._loss_targets(targets)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)

    def _loss_targets(self, targets: Tensor) -> Tensor:
        if self.config.pad_id is None:
            return targets
        return targets.masked_fill(~counted_targets(targets, self.config.pad_id), IGNORE_INDEX)
