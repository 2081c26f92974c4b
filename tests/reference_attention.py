"""A slow, obviously-correct fractal-head attention: one sub-head at a time, scores materialised."""

from __future__ import annotations

import torch
from torch import Tensor


def reference_fractal_attention(
    q: Tensor, k: Tensor, v: Tensor, *, split: int, scale: str | float = "subhead"
) -> Tensor:
    B, L, T, hd = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    query_pos = torch.arange(T)[:, None] + (S - T)  # (T, 1)
    key_pos = torch.arange(S)[None, :]  # (1, S)
    allowed = key_pos <= query_pos  # (T, S)
    levels = []
    for level in range(L):
        n = split**level
        d = hd // n
        kv_head = level // (L // Hkv)
        pieces = []
        for j in range(n):
            dims = slice(j * d, (j + 1) * d)
            if scale == "subhead":
                factor = d**-0.5
            elif scale == "head":
                factor = hd**-0.5
            else:
                factor = float(scale)
            scores = q[:, level, :, dims] @ k[:, kv_head, :, dims].transpose(-1, -2) * factor  # (B, T, S)
            scores = scores.masked_fill(~allowed, float("-inf"))
            pieces.append(scores.softmax(dim=-1) @ v[:, kv_head, :, dims])  # (B, T, d)
        levels.append(torch.cat(pieces, dim=-1))  # (B, T, hd)
    return torch.stack(levels, dim=1)  # (B, L, T, hd)
