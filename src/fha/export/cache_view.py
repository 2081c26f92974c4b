"""fha's GPT decoding into another library's key/value cache.

`GPT.forward` reads and extends a `fha.model.kv_cache.KVCache`; `CacheView` offers the same
methods over a store that grows itself, such as transformers' ``DynamicCache``: any object whose
``update(keys, values, layer)`` appends one layer's new keys and values and returns all of them.
Which cached positions are left padding comes from the caller's attention mask, so a padded row
gets the positions and mask that fha's own cache would give it.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from fha.model.kv_cache import padding_mask, token_positions


class GrowingStore(Protocol):
    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int) -> tuple[Tensor, Tensor]: ...


class CacheView:
    """What `GPT.forward` needs of a cache, over `store`, which already holds the positions that
    past_valid (B, S) describes: True for a real token, False for left padding."""

    def __init__(self, store: GrowingStore, past_valid: Tensor, num_layers: int) -> None:
        self.length = past_valid.shape[1]
        self._valid = past_valid
        self.padded = not bool(past_valid.all())
        self.layers = [_LayerView(store, layer) for layer in range(num_layers)]

    def positions(self, T: int, token_mask: Tensor | None) -> Tensor:
        """RoPE positions of T new tokens, (B, T): each row counts its real tokens only."""
        return token_positions(self._valid.long().sum(dim=1), T, token_mask)

    def attention_mask(self, T: int, token_mask: Tensor | None) -> Tensor | None:
        """(B, 1, T, S + T) mask for T new tokens, or None when no row has padding."""
        if token_mask is None and not self.padded:
            return None
        return padding_mask(self._valid, token_mask, T)

    def advance(self, T: int, token_mask: Tensor | None) -> None:
        """Count T more positions (the store has appended them, layer by layer)."""
        self.length += T


class _LayerView:
    def __init__(self, store: GrowingStore, layer: int) -> None:
        self._store = store
        self._layer = layer

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k (B, Hk, T, hd) and v (B, Hkv, T, hd) after the cached positions; return all of them."""
        return self._store.update(k, v, self._layer)
