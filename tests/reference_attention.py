"""A slow, obviously-correct attention over any head cut: one sub-head at a time, the masked
scores materialised, an explicit softmax."""

from __future__ import annotations

import torch
from torch import Tensor


def _factor(scale: str | float, hd: int, d: int) -> float:
    if scale == "subhead":
        return d**-0.5
    if scale == "head":
        return hd**-0.5
    return float(scale)


def reference_fractal_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    split: int = 2,
    splits: list[int] | None = None,
    scale: str | float = "subhead",
    attn_mask: Tensor | None = None,
) -> Tensor:
    """q (B, L, T, hd), k (B, Hk, S, hd), v (B, Hv, S, hd); head i is cut into splits[i]
    sub-heads (split**i by default) and reads key head i // (L // Hk), value head i // (L // Hv).
    attn_mask: boolean (B, 1, T, S) or (T, S) of allowed keys, replacing causality. A query
    that may see no key gets zeros."""
    B, L, T, hd = q.shape
    Hk, Hv, S = k.shape[1], v.shape[1], k.shape[2]
    splits = [split**level for level in range(L)] if splits is None else splits
    if attn_mask is None:
        query_pos = torch.arange(T)[:, None] + (S - T)  # (T, 1)
        allowed = (torch.arange(S)[None, :] <= query_pos).expand(B, T, S)  # (B, T, S)
    else:
        allowed = attn_mask.expand(B, 1, T, S)[:, 0] if attn_mask.dim() == 4 else attn_mask.expand(B, T, S)
    heads = []
    for head in range(L):
        n = splits[head]
        d = hd // n
        k_head, v_head = k[:, head // (L // Hk)], v[:, head // (L // Hv)]  # (B, S, hd)
        pieces = []
        for j in range(n):
            dims = slice(j * d, (j + 1) * d)
            scores = q[:, head, :, dims] @ k_head[:, :, dims].transpose(-1, -2) * _factor(scale, hd, d)  # (B, T, S)
            scores = scores.masked_fill(~allowed, float("-inf"))
            peak = scores.amax(dim=-1, keepdim=True).clamp(min=torch.finfo(scores.dtype).min)
            exp = (scores - peak).exp()  # masked keys: exp(-inf) = 0
            total = exp.sum(dim=-1, keepdim=True)
            weights = torch.where(total > 0, exp / total.clamp(min=torch.finfo(scores.dtype).tiny), 0.0)
            pieces.append(weights @ v_head[:, :, dims])  # (B, T, d)
        heads.append(torch.cat(pieces, dim=-1))  # (B, T, hd)
    return torch.stack(heads, dim=1)  # (B, L, T, hd)
