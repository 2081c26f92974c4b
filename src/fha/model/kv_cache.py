"""Key/value cache for incremental decoding, with optional left padding of prompts.

Notation as in attention.py: B batch, Hkv key/value heads, Hk key heads (Hkv unless sub-head
RoPE needs a key head per query head), M cache capacity, hd head size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from fha.model.gpt import GPT


def token_positions(next_position: Tensor, T: int, token_mask: Tensor | None) -> Tensor:
    """RoPE positions (B, T) of T new tokens; with left padding each row counts its real tokens
    only (padding gets position 0), so a padded row sees the positions it would see alone."""
    if token_mask is None:
        steps = torch.arange(T, device=next_position.device)  # (T,)
        return next_position[:, None] + steps[None, :]  # (B, T)
    counts = token_mask.long().cumsum(dim=1)  # (B, T)
    return (next_position[:, None] + counts - 1).clamp(min=0) * token_mask  # (B, T)


def padding_mask(past_valid: Tensor, token_mask: Tensor | None, T: int) -> Tensor:
    """Boolean (B, 1, T, S) mask of the keys each new query may see, S = past + T.

    Causal and bottom-right aligned; padding keys are hidden, except that every query may
    see itself, so that a padding query never has an empty softmax.
    """
    B, past = past_valid.shape
    S = past + T
    device = past_valid.device
    new_valid = token_mask if token_mask is not None else torch.ones(B, T, dtype=torch.bool, device=device)
    valid = torch.cat([past_valid, new_valid], dim=1)  # (B, S)
    query_pos = torch.arange(past, S, device=device)[:, None]  # (T, 1)
    key_pos = torch.arange(S, device=device)[None, :]  # (1, S)
    causal = key_pos <= query_pos  # (T, S)
    own = key_pos == query_pos  # (T, S)
    return ((causal[None] & valid[:, None, :]) | own[None])[:, None]  # (B, 1, T, S)


class KVCache:
    """Keys and values of every layer for the positions processed so far.

    Rows may start with padding (prompts of different lengths, left-padded): `valid` marks
    the real positions and `next_position` is each row's next RoPE position, so a padded row
    computes exactly what it would compute alone.
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_kv_heads: int,
        capacity: int,
        head_dim: int,
        *,
        num_key_heads: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        key_heads = num_kv_heads if num_key_heads is None else num_key_heads
        self.keys = torch.zeros(
            num_layers, batch_size, key_heads, capacity, head_dim, dtype=dtype, device=device
        )  # (layers, B, Hk, M, hd)
        self.values = torch.zeros(
            num_layers, batch_size, num_kv_heads, capacity, head_dim, dtype=dtype, device=device
        )  # (layers, B, Hkv, M, hd)
        self.valid = torch.ones(batch_size, capacity, dtype=torch.bool, device=device)  # (B, M)
        self.next_position = torch.zeros(batch_size, dtype=torch.long, device=device)  # (B,)
        self.length = 0
        self.padded = False
        self.layers = [LayerCache(self, i) for i in range(num_layers)]

    @classmethod
    def for_model(cls, model: GPT, batch_size: int, capacity: int | None = None) -> KVCache:
        config = model.config
        param = next(model.parameters())
        return cls(
            config.num_layers,
            batch_size,
            config.num_kv_heads,
            capacity or config.max_seq_len,
            config.head_dim,
            num_key_heads=config.key_heads,
            dtype=param.dtype,
            device=param.device,
        )

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def reset(self) -> None:
        self.length = 0
        self.padded = False
        self.valid.fill_(True)
        self.next_position.zero_()

    def positions(self, T: int, token_mask: Tensor | None) -> Tensor:
        """RoPE positions of T new tokens, (B, T)."""
        return token_positions(self.next_position, T, token_mask)

    def attention_mask(self, T: int, token_mask: Tensor | None) -> Tensor | None:
        """Mask for T new tokens, or None when no row has padding (the fast causal path)."""
        if token_mask is None and not self.padded:
            return None
        return padding_mask(self.valid[:, : self.length], token_mask, T)

    def advance(self, T: int, token_mask: Tensor | None) -> None:
        """Record that T new positions were written by every layer."""
        if token_mask is not None:
            self.valid[:, self.length : self.length + T] = token_mask
            self.next_position += token_mask.long().sum(dim=1)
            self.padded = self.padded or not bool(token_mask.all())
        else:
            self.next_position += T
        self.length += T


class LayerCache:
    """One layer's view of a `KVCache`."""

    def __init__(self, cache: KVCache, index: int) -> None:
        self.cache = cache
        self.keys = cache.keys[index]  # (B, Hk, M, hd)
        self.values = cache.values[index]  # (B, Hkv, M, hd)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k (B, Hk, T, hd) and v (B, Hkv, T, hd) after the cached positions; return all of
        them, (B, Hk, S, hd) and (B, Hkv, S, hd)."""
        start, T = self.cache.length, k.shape[2]
        if start + T > self.cache.capacity:
            raise ValueError(f"KV cache holds {self.cache.capacity} positions; {start + T} were asked for")
        self.keys.narrow(2, start, T).copy_(k)
        self.values.narrow(2, start, T).copy_(v)
        return self.keys.narrow(2, 0, start + T), self.values.narrow(2, 0, start + T)
