"""The decoding fast path of fractal-head attention: one query position, every head at once.

`fractal_attention` (fha.model.attention) makes one SDPA call per distinct cut. A decoding
step (T = 1, a KV cache holding the S earlier positions) is so small that those calls cost
more in operator overhead than in arithmetic, so a small enough step comes here instead.

Notation used in the shape comments (as in fha.model.attention):
    B  batch size
    S  key/value positions (the cache plus the new one)
    L  query heads (levels)
    Hk, Hv  key heads and value heads
    hd head size
    N  sub-heads of the most finely cut head (max(splits)); other heads are padded to N
    G  query heads per key head (L // Hk); Gv: per value head (L // Hv)
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from fha.model.dtypes import at_least_float32

# The single-query path does about G*N/L times the arithmetic of one SDPA call per level; on
# a 2-core CPU it stops paying off somewhere above 100k scores (B * L * N * S) per call
# (`python benchmarks/bench_attention.py --decode`); the limit stays below that.
SINGLE_QUERY_MAX_SCORES = 1 << 16
OWNER_CACHE_SIZE = 32  # (shape, scales, dtype, device) combinations of owner matrices kept


def takes_single_query_path(q: Tensor, k: Tensor, widest_cut: int, dropout_p: float) -> bool:
    """Whether a call with q (B, L, T, hd) and k (B, Hk, S, hd) is a small decoding step:
    one query position, no dropout, at most SINGLE_QUERY_MAX_SCORES scores B * L * N * S."""
    B, L, T, _ = q.shape
    return T == 1 and dropout_p == 0.0 and B * L * widest_cut * k.shape[-2] <= SINGLE_QUERY_MAX_SCORES


def _subhead_owners(
    splits: tuple[int, ...],
    Hk: int,
    Hv: int,
    hd: int,
    scales: tuple[float, ...],
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Which sub-head owns each head dimension, per head: 0/1 rows padded to N = max(splits).

    Returns the rows times each head's softmax scale (`scales`, one per head), (Hk, G, N, hd),
    and the plain rows by value head, (Hv, Gv*N, hd).
    """
    L, N = len(splits), max(splits)
    dims = torch.arange(hd)
    owners = [
        torch.arange(N)[:, None] == dims[None, :] // (hd // n) for n in splits
    ]  # (N, hd) each; rows n.. all False
    # Built outside inference mode, so that a matrix first made while decoding and kept in the
    # cache below still serves a later call that needs autograd.
    with torch.inference_mode(False):
        owner = torch.stack(owners).to(device=device, dtype=dtype)  # (L, N, hd)
        scaled = owner * torch.tensor(scales, dtype=dtype, device=device)[:, None, None]  # (L, N, hd)
        return scaled.view(Hk, L // Hk, N, hd), owner.view(Hv, L // Hv * N, hd)  # (Hk, G, N, hd), (Hv, Gv*N, hd)


# Every layer of every eager decoding step needs the same matrices; a compiled graph builds
# them itself (torch.compile traces through caches rather than trusting them).
_cached_subhead_owners = functools.lru_cache(maxsize=OWNER_CACHE_SIZE)(_subhead_owners)


def single_query_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    splits: tuple[int, ...],
    scales: tuple[float, ...],
    attn_mask: Tensor | None,
) -> Tensor:
    """`fractal_attention` for one query position, every head at once; `scales[i]` is the score
    scale of head i's sub-heads. q (B, L, 1, hd), k (B, Hk, S, hd), v (B, Hv, S, hd); attn_mask
    None or boolean (B, 1, 1, S) or (1, S). Returns (B, L, 1, hd).

    Multiplying a head's query by its scaled owner rows gives one query per sub-head, zero
    outside the sub-head's dimensions, so `queries @ k^T` holds every sub-head's scores; the
    owner rows then keep each sub-head's own block of `weights @ v`. Heads are padded to
    N = max(splits) sub-heads (the padding rows are zero and never reach the output). Two
    matrix products per kv head instead of one SDPA call per cut: fewer operators, which is
    what a small decoding step pays for, but about G*N/L times the arithmetic, hence the size
    limit. The softmax runs in at least float32, as SDPA's does.
    """
    B, L, _, hd = q.shape
    Hk, Hv, S = k.shape[1], v.shape[1], k.shape[2]
    owners = _subhead_owners if torch.compiler.is_compiling() else _cached_subhead_owners
    scaled, owner = owners(splits, Hk, Hv, hd, scales, q.dtype, q.device)  # (Hk, G, N, hd), (Hv, Gv*N, hd)
    G, N = scaled.shape[1], scaled.shape[2]
    queries = (q.reshape(B, Hk, G, 1, hd) * scaled).view(B, Hk, G * N, hd)  # (B, Hk, G*N, hd)
    scores = queries @ k.transpose(-1, -2)  # (B, Hk, G*N, S)
    if attn_mask is not None:
        mask_rows = attn_mask.shape[0] if attn_mask.dim() == 4 else 1
        hidden = ~attn_mask.reshape(mask_rows, 1, 1, S)  # (B or 1, 1, 1, S)
        scores = scores.masked_fill(hidden, float("-inf"))  # (B, Hk, G*N, S)
    weights = scores.softmax(dim=-1, dtype=at_least_float32(scores.dtype))  # (B, Hk, G*N, S)
    if attn_mask is not None:
        weights = weights.masked_fill(hidden, 0.0)  # a query that sees no key: zeros, not NaN
    if weights.dtype != v.dtype:
        weights = weights.to(v.dtype)
    if Hk != Hv:
        weights = weights.view(B, Hv, L // Hv * N, S)  # (B, Hv, Gv*N, S)
    mixed = (weights @ v) * owner  # (B, Hv, Gv*N, hd)
    return mixed.view(B, L, N, hd).sum(dim=-2).view(B, L, 1, hd)  # (B, L, T=1, hd)
