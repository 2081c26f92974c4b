"""Fractal-head attention, rotary position embeddings and the attention module.

Notation used in the shape comments:
    B  batch size
    T  query positions in this call
    S  key/value positions (S >= T; S > T when a KV cache holds earlier positions)
    L  query heads; in fractal-head attention each query head is one *level*
    Hkv  key/value heads (grouped-query sharing: query head i reads kv head i // (L // Hkv))
    hd head size
    n  sub-heads at one level (split**level)
    d  sub-head size (hd // n)
    N  sub-heads at the deepest level (split**(L-1)), the widest level
    G  query heads per key/value head (L // Hkv)
    C  model width (dim)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fha.model.dtypes import at_least_float32

if TYPE_CHECKING:
    from fha.config import ModelConfig
    from fha.model.kv_cache import LayerCache


# The single-query path does about G*N/L times the arithmetic of one SDPA call per level; on
# a 2-core CPU it stops paying off somewhere above 100k scores (B * L * N * S) per call
# (`python benchmarks/bench_attention.py --decode`); the limit stays below that.
SINGLE_QUERY_MAX_SCORES = 1 << 16
OWNER_CACHE_SIZE = 32  # (shape, scale, dtype, device) combinations of owner matrices kept


def causal_mask(T: int, S: int, device: torch.device) -> Tensor | None:
    """Bottom-right aligned causal mask: query t sits at key position S - T + t.

    Returns None when no mask is needed (a single query at the end sees every key).
    """
    if T == 1:
        return None
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)  # (T, S)


def _attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    is_causal: bool,
    attn_mask: Tensor | None,
    scale: float,
    dropout_p: float,
    enable_gqa: bool = False,
) -> Tensor:
    """One SDPA call with bottom-right causality; the fused causal kernel when S == T."""
    T, S = q.shape[-2], k.shape[-2]
    if attn_mask is None and is_causal:
        if T == S:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, dropout_p=dropout_p,
                                                  enable_gqa=enable_gqa)
        attn_mask = causal_mask(T, S, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale, dropout_p=dropout_p,
                                          enable_gqa=enable_gqa)


def _scale_for(scale: str | float, hd: int, d: int) -> float:
    if scale == "subhead":
        return d**-0.5
    if scale == "head":
        return hd**-0.5
    if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0:
        return float(scale)
    raise ValueError(f"scale must be 'subhead', 'head' or a positive number, got {scale!r}")


def _check_shapes(q: Tensor, k: Tensor, v: Tensor) -> tuple[int, int]:
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"expected q (B, L, T, hd) and k, v (B, Hkv, S, hd), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    L, Hkv = q.shape[1], k.shape[1]
    if L % Hkv:
        raise ValueError(f"query heads ({L}) must be a multiple of key/value heads ({Hkv})")
    if k.shape[-2] < q.shape[-2]:
        raise ValueError(f"keys ({k.shape[-2]}) must cover at least the queries ({q.shape[-2]})")
    return L, Hkv


def fractal_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    split: int = 2,
    is_causal: bool = True,
    scale: str | float = "subhead",
    dropout_p: float = 0.0,
    attn_mask: Tensor | None = None,
) -> Tensor:
    """Fractal-head attention: level i cuts its head into split**i sub-heads.

    q: (B, L, T, hd); k, v: (B, Hkv, S, hd). Query level i reads kv head i // (L // Hkv)
    and cuts it, like its own head, into n = split**i contiguous sub-heads of d = hd // n
    dimensions, each an ordinary softmax attention head. One fused SDPA call per level; a
    small decoding step (one query position, no dropout, at most SINGLE_QUERY_MAX_SCORES
    scores) takes every level at once.

    attn_mask: optional boolean (B, 1, T, S) or (T, S) mask of allowed keys; it replaces the
    causal mask (the caller includes causality in it), and every query must keep at least one
    key. Returns (B, L, T, hd).
    """
    L, Hkv = _check_shapes(q, k, v)
    B, _, T, hd = q.shape
    S = k.shape[-2]
    if hd % split ** (L - 1):
        raise ValueError(f"head size {hd} is not divisible by split**(levels-1) = {split ** (L - 1)}")
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        raise ValueError(f"attn_mask must be boolean (True = may attend), got {attn_mask.dtype}")
    if T == 1 and dropout_p == 0.0 and B * L * split ** (L - 1) * S <= SINGLE_QUERY_MAX_SCORES:
        return _fractal_single_query(q, k, v, split=split, scale=scale, attn_mask=attn_mask)
    group = L // Hkv
    levels = []
    for level in range(L):
        n = split**level
        d = hd // n
        g = level // group
        q_l = q[:, level].view(B, T, n, d).transpose(1, 2)  # (B, n, T, d)
        k_l = k[:, g].view(B, S, n, d).transpose(1, 2)  # (B, n, S, d)
        v_l = v[:, g].view(B, S, n, d).transpose(1, 2)  # (B, n, S, d)
        y = _attend(q_l, k_l, v_l, is_causal=is_causal, attn_mask=attn_mask,
                    scale=_scale_for(scale, hd, d), dropout_p=dropout_p)  # (B, n, T, d)
        levels.append(y.transpose(1, 2).reshape(B, T, hd))  # (B, T, hd)
    return torch.stack(levels, dim=2).transpose(1, 2)  # (B, T, L, hd) viewed as (B, L, T, hd)


def _subhead_owners(
    L: int, Hkv: int, hd: int, split: int, scale: str | float, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Which sub-head owns each head dimension, per level: 0/1 rows padded to N sub-heads.

    Returns the rows times each level's softmax scale, (Hkv, G, N, hd), and the plain rows,
    (Hkv, G*N, hd).
    """
    N = split ** (L - 1)
    G = L // Hkv
    dims = torch.arange(hd)
    owners, scales = [], []
    for level in range(L):
        d = hd // split**level
        owners.append(torch.arange(N)[:, None] == dims[None, :] // d)  # (N, hd)
        scales.append(_scale_for(scale, hd, d))
    with torch.inference_mode(False):  # usable by autograd even when first built while decoding
        owner = torch.stack(owners).to(device=device, dtype=dtype)  # (L, N, hd)
        scaled = owner * torch.tensor(scales, dtype=dtype, device=device)[:, None, None]  # (L, N, hd)
        return scaled.view(Hkv, G, N, hd), owner.view(Hkv, G * N, hd)  # (Hkv, G, N, hd), (Hkv, G*N, hd)


# Every layer of every eager decoding step needs the same matrices; a compiled graph builds
# them itself (torch.compile traces through caches rather than trusting them).
_cached_subhead_owners = functools.lru_cache(maxsize=OWNER_CACHE_SIZE)(_subhead_owners)


def _fractal_single_query(
    q: Tensor, k: Tensor, v: Tensor, *, split: int, scale: str | float, attn_mask: Tensor | None
) -> Tensor:
    """Fractal-head attention for one query position (a decoding step), every level at once.

    Multiplying a level's query by its scaled owner rows gives one query per sub-head, zero
    outside the sub-head's dimensions, so `queries @ k^T` holds every sub-head's scores; the
    owner rows then keep each sub-head's own block of `weights @ v`. Levels are padded to N
    sub-heads (the padding rows are zero and never reach the output). Two matrix products
    per kv head instead of one SDPA call per level: fewer operators, which is what a small
    decoding step pays for, but about G*N/L times the arithmetic, hence the size limit.
    The softmax runs in at least float32, as SDPA's does.
    """
    B, L, _, hd = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G = L // Hkv
    owners = _subhead_owners if torch.compiler.is_compiling() else _cached_subhead_owners
    scaled, owner = owners(L, Hkv, hd, split, scale, q.dtype, q.device)  # (Hkv, G, N, hd), (Hkv, G*N, hd)
    N = scaled.shape[2]
    queries = (q.reshape(B, Hkv, G, 1, hd) * scaled).view(B, Hkv, G * N, hd)  # (B, Hkv, G*N, hd)
    scores = queries @ k.transpose(-1, -2)  # (B, Hkv, G*N, S)
    if attn_mask is not None:
        mask_rows = attn_mask.shape[0] if attn_mask.dim() == 4 else 1
        scores = scores.masked_fill(~attn_mask.reshape(mask_rows, 1, 1, S), float("-inf"))  # (B, Hkv, G*N, S)
    weights = scores.softmax(dim=-1, dtype=at_least_float32(scores.dtype))  # (B, Hkv, G*N, S)
    if weights.dtype != v.dtype:
        weights = weights.to(v.dtype)
    mixed = (weights @ v) * owner  # (B, Hkv, G*N, hd)
    y = mixed.view(B, Hkv, G, N, hd).sum(dim=-2)  # (B, Hkv, G, hd)
    return y.view(B, L, 1, hd)  # (B, L, T=1, hd)


def grouped_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    is_causal: bool = True,
    scale: str | float = "subhead",
    dropout_p: float = 0.0,
    attn_mask: Tensor | None = None,
) -> Tensor:
    """Ordinary multi-head / grouped-query attention in one SDPA call (same layout as above)."""
    L, Hkv = _check_shapes(q, k, v)
    B, _, T, hd = q.shape
    S = k.shape[-2]
    if Hkv != L and T == 1:
        # A decoding step: SDPA shares each kv head itself rather than copying the whole cache.
        return _attend(q, k, v, is_causal=is_causal, attn_mask=attn_mask, scale=_scale_for(scale, hd, hd),
                       dropout_p=dropout_p, enable_gqa=True)  # (B, L, 1, hd)
    if Hkv != L:
        k = k[:, :, None].expand(B, Hkv, L // Hkv, S, hd).reshape(B, L, S, hd)  # (B, L, S, hd)
        v = v[:, :, None].expand(B, Hkv, L // Hkv, S, hd).reshape(B, L, S, hd)  # (B, L, S, hd)
    return _attend(q, k, v, is_causal=is_causal, attn_mask=attn_mask,
                   scale=_scale_for(scale, hd, hd), dropout_p=dropout_p)  # (B, L, T, hd)


AttentionKernel = Callable[..., Tensor]


def _fractal_kernel(config: ModelConfig) -> AttentionKernel:
    def kernel(q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
        return fractal_attention(q, k, v, split=config.fractal_split, scale=config.fractal_scale, **kwargs)

    return kernel


def _grouped_kernel(config: ModelConfig) -> AttentionKernel:
    def kernel(q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
        return grouped_attention(q, k, v, **kwargs)

    return kernel


ATTENTION_KERNELS: dict[str, Callable[[ModelConfig], AttentionKernel]] = {
    "fha": _fractal_kernel,
    "mha": _grouped_kernel,
}


def rope_frequencies(head_dim: int, max_seq_len: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin tables, (max_seq_len, head_dim // 2), for interleaved-pair RoPE."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (hd/2,)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)  # (T, hd/2)
    return angles.cos().float(), angles.sin().float()


def rope_rotation(cos: Tensor, sin: Tensor) -> Tensor:
    """The rotation of each position, with a head axis for broadcasting, in float32.

    cos and sin (T, hd/2) or (B, T, hd/2). Eagerly: exp(i * angle) as complex64, (T, 1, hd/2)
    or (B, T, 1, hd/2). Under torch.compile: the (cos, sin) pairs as real numbers, (T, 1, hd/2,
    2) or (B, T, 1, hd/2, 2), because inductor generates no code for complex numbers and would
    run every complex operator on its own.
    """
    if cos.dtype != torch.float32:  # tables of a model cast to half precision
        cos, sin = cos.float(), sin.float()
    if torch.compiler.is_compiling():
        return torch.stack((cos, sin), dim=-1).unsqueeze(-3)
    return torch.complex(cos, sin).unsqueeze(-2)


def apply_rope(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotate adjacent pairs (2j, 2j+1) of the last dimension.

    x: (B, T, H, hd); rotation: from `rope_rotation`, complex or real pairs. Pairs never cross a
    sub-head boundary (sub-head sizes are even), so each sub-head keeps RoPE's relative-position
    property. Eagerly each pair is one complex number multiplied by its rotation: a few large
    kernels instead of a dozen elementwise ones (which a compiled graph fuses into one).
    """
    B, T, H, hd = x.shape
    pairs = x if x.dtype == torch.float32 else x.float()
    pairs = pairs.reshape(B, T, H, hd // 2, 2)  # (B, T, H, hd/2, 2)
    if rotation.is_complex():
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * rotation)  # (B, T, H, hd/2, 2)
    else:
        cos, sin = rotation.unbind(-1)  # (..., 1, hd/2) each
        even, odd = pairs.unbind(-1)  # (B, T, H, hd/2) each
        rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)  # (B, T, H, hd/2, 2)
    rotated = rotated.view(B, T, H, hd)  # (B, T, H, hd)
    return rotated if x.dtype == torch.float32 else rotated.to(x.dtype)


class Attention(nn.Module):
    """Projections, RoPE and a kernel chosen by name (fractal-head or ordinary attention)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_q_heads = config.num_q_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.attn_dropout = config.attn_dropout
        q_width = config.num_q_heads * config.head_dim
        kv_width = config.num_kv_heads * config.head_dim
        self.qkv = nn.Linear(config.dim, q_width + 2 * kv_width, bias=False)
        self.out = nn.Linear(q_width, config.dim, bias=False)
        self.kernel = ATTENTION_KERNELS[config.attention](config)

    def project(self, x: Tensor, rotation: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q (B, L, T, hd) and k, v (B, Hkv, T, hd) of x (B, T, C); RoPE applied to q and k."""
        B, T, _ = x.shape
        L, Hkv, hd = self.num_q_heads, self.num_kv_heads, self.head_dim
        qk, v = self.qkv(x).split(((L + Hkv) * hd, Hkv * hd), dim=-1)  # (B, T, (L + Hkv) hd), (B, T, Hkv hd)
        q, k = apply_rope(qk.view(B, T, L + Hkv, hd), rotation).split((L, Hkv), dim=2)  # (B, T, L | Hkv, hd)
        v = v.view(B, T, Hkv, hd)  # (B, T, Hkv, hd)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, L | Hkv, T, hd)

    def forward(
        self,
        x: Tensor,
        rotation: Tensor,
        cache: LayerCache | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """x (B, T, C); rotation: RoPE of the T positions (see `apply_rope`); returns (B, T, C)."""
        B, T, _ = x.shape
        q, k, v = self.project(x, rotation)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, Hkv, S, hd)
        dropout_p = self.attn_dropout if self.training else 0.0
        y = self.kernel(q, k, v, dropout_p=dropout_p, attn_mask=attn_mask)  # (B, L, T, hd)
        return self.out(y.transpose(1, 2).reshape(B, T, self.num_q_heads * self.head_dim))  # (B, T, C)
