"""Fractal-head attention, rotary position embeddings and the attention module.

Notation used in the shape comments:
    B  batch size
    T  query positions in this call
    S  key/value positions (S >= T; S > T when a KV cache holds earlier positions)
    L  query heads; in fractal-head attention each query head is one *level*
    Hkv  key/value heads (grouped-query sharing: query head i reads kv head i // (L // Hkv))
    Hk, Hv  key heads and value heads when they differ (Hk = L for sub-head RoPE, see Attention)
    hd head size
    n  sub-heads of one head (splits[i]; split**i in fractal-head attention)
    d  sub-head size (hd // n)
    h  query heads that share one cut (one SDPA call)
    R  rows of the RoPE tables (one per distinct cut with sub-head RoPE, else 1)
    C  model width (dim)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fha.model.decode_attention import single_query_attention, takes_single_query_path
from fha.variants import FRACTAL_KERNEL, GROUPED_KERNEL, score_scale

if TYPE_CHECKING:
    from fha.config import ModelConfig
    from fha.model.kv_cache import LayerCache


@dataclass(frozen=True)
class HeadPadding:
    """How far SDPA's head size is padded for sub-heads of d dimensions: up to a multiple of
    `multiple`, then up to at least `minimum`. Zero padding is exact: zero dimensions add
    nothing to q.k, the scale is passed explicitly and the padded output columns are dropped."""

    multiple: int = 1
    minimum: int = 1

    def size(self, d: int) -> int:
        """The head size SDPA is handed for sub-heads of `d` dimensions."""
        return max(d + (-d % self.multiple), self.minimum)


NO_PADDING = HeadPadding()

# The padding that makes SDPA fastest, by device type and dtype (None: every dtype); measured
# in docs/benchmarks.md, "Sub-head padding on the CPU".
# - CUDA: the fused kernels (flash, memory-efficient, cuDNN) take head sizes in multiples of
#   8; any other size falls back to the math kernel, which materialises the T x S scores.
# - CPU, float32: the flash kernel costs about the same per head at every size up to 16, and
#   less at 16 than at 2 to 8 (13 to 38 % less by the medians, forward and backward), so
#   smaller sub-heads are padded to 16. Not larger ones (24 padded to 32 takes 1.1 to 1.7
#   times as long), nor bfloat16 or float64 sub-heads, whose kernels it slows (1.2 to 2 times).
HEAD_PADDING: dict[tuple[str, torch.dtype | None], HeadPadding] = {
    ("cuda", None): HeadPadding(multiple=8),
    ("cpu", torch.float32): HeadPadding(minimum=16),
}


def head_padding(device: torch.device, dtype: torch.dtype) -> HeadPadding:
    """The padding of sub-head sizes for SDPA calls on `device` in `dtype`."""
    return HEAD_PADDING.get((device.type, dtype), HEAD_PADDING.get((device.type, None), NO_PADDING))


def _padding(q: Tensor, head_multiple: int | None) -> HeadPadding:
    """The padding of an attention call: the device's for q, or to multiples of `head_multiple`."""
    return head_padding(q.device, q.dtype) if head_multiple is None else HeadPadding(multiple=head_multiple)


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
    padding: HeadPadding = NO_PADDING,
) -> Tensor:
    """One SDPA call with bottom-right causality; the fused causal kernel when S == T. Heads
    are zero-padded to `padding`'s size for the call, except a single query: it has no T x S
    scores to keep off CUDA's math kernel, and on the CPU padding copies the whole key/value
    cache, which makes the call several times slower."""
    T, S, d = q.shape[-2], k.shape[-2], q.shape[-1]
    pad = padding.size(d) - d if T > 1 else 0
    if pad:
        q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))  # (..., d + pad) each
    fused_causal = attn_mask is None and is_causal and T == S
    if attn_mask is None and is_causal and T != S:
        attn_mask = causal_mask(T, S, q.device)  # None for a single query, which sees every key
    y = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, is_causal=fused_causal, scale=scale, dropout_p=dropout_p, enable_gqa=enable_gqa
    )
    return y[..., :d] if pad else y


def _check_shapes(q: Tensor, k: Tensor, v: Tensor) -> tuple[int, int, int]:
    """L, Hk, Hv of q (B, L, T, hd), k (B, Hk, S, hd), v (B, Hv, S, hd)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or k.shape[0] != v.shape[0] or k.shape[2:] != v.shape[2:]:
        raise ValueError(
            f"expected q (B, L, T, hd) and k, v (B, Hkv, S, hd), got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    L, Hk, Hv = q.shape[1], k.shape[1], v.shape[1]
    for name, heads in (("key/value", Hk),) if Hk == Hv else (("key", Hk), ("value", Hv)):
        if L % heads:
            raise ValueError(f"query heads ({L}) must be a multiple of {name} heads ({heads})")
    if k.shape[-2] < q.shape[-2]:
        raise ValueError(f"keys ({k.shape[-2]}) must cover at least the queries ({q.shape[-2]})")
    return L, Hk, Hv


@dataclass(frozen=True)
class CutPlan:
    """A checked head cut and what the kernel derives from it, made once per layer.

    splits: sub-heads of each query head; groups: ``((n, heads), ...)``, the heads of each
    distinct cut in order of first appearance (one SDPA call each).
    """

    head_dim: int
    splits: tuple[int, ...]
    groups: tuple[tuple[int, tuple[int, ...]], ...]


def plan_cuts(splits: Sequence[int], head_dim: int) -> CutPlan:
    """Check `splits` (one positive cut per head, each dividing `head_dim`) and plan its calls."""
    splits = tuple(splits)
    if not splits:
        raise ValueError("splits is empty; give one cut per query head")
    for head, n in enumerate(splits):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"head {head}: the number of sub-heads must be a positive integer, got {n!r}")
        if head_dim % n:
            raise ValueError(f"head {head}: head size {head_dim} is not divisible by its cut into {n} sub-heads")
    heads: dict[int, list[int]] = {}
    for head, n in enumerate(splits):
        heads.setdefault(n, []).append(head)
    return CutPlan(head_dim, splits, tuple((n, tuple(members)) for n, members in heads.items()))


def _cut(x: Tensor, heads: tuple[int, ...], group: int, n: int) -> Tensor:
    """The heads that query heads `heads` read from x (B, H, S, hd), H = L / group, each cut into
    n contiguous sub-heads of d = hd / n: (B, h*n, S, d).

    A view where the heads are one, consecutive, or all one shared head (expanded then copied
    into place by reshape); a gathered copy otherwise.
    """
    B, _, S, hd = x.shape
    source = [head // group for head in heads]
    first = source[0]
    if len(source) == 1:
        return x[:, first].view(B, S, n, hd // n).transpose(1, 2)  # (B, n, S, d)
    if source == list(range(first, first + len(source))):
        picked = x[:, first : first + len(source)]  # (B, h, S, hd)
    elif source == [first] * len(source):
        picked = x[:, first : first + 1].expand(-1, len(source), -1, -1)  # (B, h, S, hd)
    else:
        picked = x[:, source]  # (B, h, S, hd)
    return picked.unflatten(-1, (n, hd // n)).transpose(2, 3).reshape(B, len(source) * n, S, hd // n)


def fractal_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    split: int | None = None,
    splits: Sequence[int] | CutPlan | None = None,
    is_causal: bool = True,
    scale: str | float = "subhead",
    dropout_p: float = 0.0,
    attn_mask: Tensor | None = None,
    head_multiple: int | None = None,
) -> Tensor:
    """Attention whose query head i is cut into splits[i] sub-heads (fractal-head attention
    when ``splits = [1, split, split**2, ...]``, which `split` alone gives; default split 2).

    q: (B, L, T, hd); k: (B, Hk, S, hd); v: (B, Hv, S, hd). Query head i reads key head
    i // (L // Hk) and value head i // (L // Hv) (grouped-query order; usually Hk == Hv) and
    cuts them, like its own head, into n = splits[i] contiguous sub-heads of d = hd // n
    dimensions, each an ordinary softmax attention head. One fused SDPA call per distinct
    cut (the heads that share a cut go in one call); a small decoding step (one query
    position, no dropout, few enough scores) takes every head at once (fha.model.decode_attention).
    `splits` may be a `CutPlan` made once by `plan_cuts` (what the model's layers pass).

    attn_mask: optional boolean (B, 1, T, S) or (T, S) mask of allowed keys; it replaces the
    causal mask (the caller includes causality in it). A query that may see no key at all
    gets zeros, as in SDPA. head_multiple: sub-heads whose size is not a multiple of it are
    zero-padded for their SDPA call (exact); None pads as the device and dtype run fastest
    (`head_padding`). Returns (B, L, T, hd).
    """
    L, Hk, Hv = _check_shapes(q, k, v)
    B, _, T, hd = q.shape
    if split is not None and splits is not None:
        raise ValueError("give split (the fractal pattern 1, split, split**2, ...) or splits, not both")
    if not isinstance(splits, CutPlan):
        geometric = [(2 if split is None else split) ** level for level in range(L)]
        splits = plan_cuts(geometric if splits is None else splits, hd)
    if len(splits.splits) != L or splits.head_dim != hd:
        raise ValueError(
            f"splits has {len(splits.splits)} entries for heads of {splits.head_dim}; the query has "
            f"{L} heads of {hd}: give one cut per query head"
        )
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        raise ValueError(f"attn_mask must be boolean (True = may attend), got {attn_mask.dtype}")
    if takes_single_query_path(q, k, max(splits.splits), dropout_p):
        scales = tuple(score_scale(scale, hd, hd // n) for n in splits.splits)
        return single_query_attention(q, k, v, splits=splits.splits, scales=scales, attn_mask=attn_mask)
    padding = _padding(q, head_multiple)
    heads_out: list[Tensor | None] = [None] * L
    for n, heads in splits.groups:
        h, d = len(heads), hd // n
        y = _attend(
            _cut(q, heads, 1, n),
            _cut(k, heads, L // Hk, n),
            _cut(v, heads, L // Hv, n),
            is_causal=is_causal,
            attn_mask=attn_mask,
            scale=score_scale(scale, hd, d),
            dropout_p=dropout_p,
            padding=padding,
        )  # (B, h*n, T, d)
        if h == 1:
            heads_out[heads[0]] = y.transpose(1, 2).reshape(B, T, 1, hd)  # (B, T, 1, hd)
            continue
        y = y.view(B, h, n, T, d).permute(0, 3, 1, 2, 4).reshape(B, T, h, hd)  # (B, T, h, hd)
        if h == L:
            return y.transpose(1, 2)  # one cut for every head: (B, L, T, hd)
        for index, head in enumerate(heads):
            heads_out[head] = y[:, :, index : index + 1]  # (B, T, 1, hd)
    # every head is in exactly one group, so no entry is still None
    return torch.cat(cast(list[Tensor], heads_out), dim=2).transpose(1, 2)  # (B, T, L, hd) viewed as (B, L, T, hd)


def grouped_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    is_causal: bool = True,
    scale: str | float = "subhead",
    dropout_p: float = 0.0,
    attn_mask: Tensor | None = None,
    head_multiple: int | None = None,
) -> Tensor:
    """Ordinary multi-head / grouped-query attention in one SDPA call (same layout as above)."""
    L, Hkv, Hv = _check_shapes(q, k, v)
    if Hv != Hkv:
        raise ValueError(f"grouped_attention needs as many key heads as value heads, got {Hkv} and {Hv}")
    B, _, T, hd = q.shape
    S = k.shape[-2]
    # A decoding step: SDPA shares each kv head itself rather than copying the whole cache.
    decoding_shared = Hkv != L and T == 1
    if Hkv != L and not decoding_shared:
        k = k[:, :, None].expand(B, Hkv, L // Hkv, S, hd).reshape(B, L, S, hd)  # (B, L, S, hd)
        v = v[:, :, None].expand(B, Hkv, L // Hkv, S, hd).reshape(B, L, S, hd)  # (B, L, S, hd)
    return _attend(
        q,
        k,
        v,
        is_causal=is_causal,
        attn_mask=attn_mask,
        scale=score_scale(scale, hd, hd),
        dropout_p=dropout_p,
        enable_gqa=decoding_shared,
        padding=_padding(q, head_multiple),
    )  # (B, L, T, hd)


AttentionKernel = Callable[..., Tensor]


def rope_frequencies(
    head_dim: int, max_seq_len: int, theta: float, cuts: Sequence[int] = (1,)
) -> tuple[Tensor, Tensor]:
    """cos and sin tables, (max_seq_len, R, head_dim // 2), for interleaved-pair RoPE.

    Row r serves a head cut into ``cuts[r]`` sub-heads of d = head_dim / cuts[r] dimensions:
    every sub-head gets the full spectrum ``theta**(-2j/d)`` of a head of its own size. The
    default, one row for an uncut head, is ordinary RoPE over the whole head.
    """
    rows = []
    for n in cuts:
        d = head_dim // n
        rows.append((theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)).repeat(n))  # (hd/2,)
    inv_freq = torch.stack(rows)  # (R, hd/2)
    angles = torch.arange(max_seq_len, dtype=torch.float64)[:, None, None] * inv_freq  # (T, R, hd/2)
    return angles.cos().float(), angles.sin().float()


def rope_rotation(cos: Tensor, sin: Tensor) -> Tensor:
    """The rotation of each position and table row (the head axis), in float32.

    cos and sin (T, R, hd/2) or (B, T, R, hd/2). Eagerly: exp(i * angle) as complex64 of the
    same shape. Under torch.compile: the (cos, sin) pairs as real numbers, (..., R, hd/2, 2),
    because inductor generates no code for complex numbers and would run every complex
    operator on its own.
    """
    if cos.dtype != torch.float32:  # tables of a model cast to half precision
        cos, sin = cos.float(), sin.float()
    if torch.compiler.is_compiling():
        return torch.stack((cos, sin), dim=-1)
    return torch.complex(cos, sin)


def rotation_rows(rotation: Tensor, rows: Tensor) -> Tensor:
    """The rows `rows` (H,) of a rotation from `rope_rotation`, along its head axis."""
    return rotation.index_select(-2 if rotation.is_complex() else -3, rows)


def apply_rope(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotate adjacent pairs (2j, 2j+1) of the last dimension.

    x: (B, T, H, hd); rotation: from `rope_rotation`, complex or real pairs, with a head axis
    of 1 (shared) or H rows. Pairs never cross a sub-head boundary (sub-head sizes are even),
    so each sub-head keeps RoPE's relative-position property. Eagerly each pair is one complex
    number multiplied by its rotation: a few large kernels instead of a dozen elementwise ones
    (which a compiled graph fuses into one).
    """
    B, T, H, hd = x.shape
    pairs = x if x.dtype == torch.float32 else x.float()
    pairs = pairs.reshape(B, T, H, hd // 2, 2)  # (B, T, H, hd/2, 2)
    if rotation.is_complex():
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * rotation)  # (B, T, H, hd/2, 2)
    else:
        cos, sin = rotation.unbind(-1)  # (..., 1 or H, hd/2) each
        even, odd = pairs.unbind(-1)  # (B, T, H, hd/2) each
        rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)  # (B, T, H, hd/2, 2)
    rotated = rotated.view(B, T, H, hd)  # (B, T, H, hd)
    return rotated if x.dtype == torch.float32 else rotated.to(x.dtype)


def _fractal_kernel(splits: tuple[int, ...], head_dim: int, scale: str | float) -> AttentionKernel:
    return functools.partial(fractal_attention, splits=plan_cuts(splits, head_dim), scale=scale)


def _grouped_kernel(splits: tuple[int, ...], head_dim: int, scale: str | float) -> AttentionKernel:
    return functools.partial(grouped_attention, scale=scale)


# The kernel of each attention variant, by its `kernel_name` (fha.variants): built from the
# layer's cut, the head size and the score scale.
KERNELS: dict[str, Callable[[tuple[int, ...], int, str | float], AttentionKernel]] = {
    FRACTAL_KERNEL: _fractal_kernel,
    GROUPED_KERNEL: _grouped_kernel,
}


class Attention(nn.Module):
    """Projections, RoPE and the kernel of the configured attention variant for one layer.

    With ``rope_layout="subhead"`` a key head that query heads of different cuts read is
    rotated once per reading query head (``config.key_heads`` key heads), because each cut
    needs its own frequencies; values are never rotated and keep ``num_kv_heads`` heads.
    """

    key_sources: Tensor | None  # buffers of constant_buffers(), declared for type checkers
    rope_rows: Tensor | None

    def __init__(self, config: ModelConfig, layer: int = 0) -> None:
        super().__init__()
        self.num_q_heads = config.num_q_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.attn_dropout = config.attn_dropout
        q_width = config.num_q_heads * config.head_dim
        kv_width = config.num_kv_heads * config.head_dim
        self.qkv = nn.Linear(config.dim, q_width + 2 * kv_width, bias=False)
        self.out = nn.Linear(q_width, config.dim, bias=False)
        self.layer = layer
        self.splits = config.layer_splits[layer]
        make_kernel = KERNELS[config.variant.kernel_name]
        self.kernel = make_kernel(self.splits, config.head_dim, config.variant.score_scale(config))
        key_sources, self._rope_rows = config.rope_plan(layer)
        self.num_key_heads = len(key_sources)
        own_keys = key_sources == tuple(range(self.num_kv_heads))
        self._key_sources = (
            None if own_keys else (*range(self.num_q_heads), *(self.num_q_heads + g for g in key_sources))
        )
        for name, value in self.constant_buffers().items():
            self.register_buffer(name, value, persistent=False)

    def constant_buffers(self) -> dict[str, Tensor | None]:
        """The index buffers: q heads then each key head's source head among the projections
        (None when the keys are the kv heads), and each of them's RoPE table row (None: one row)."""
        return {
            "key_sources": None if self._key_sources is None else torch.tensor(self._key_sources),
            "rope_rows": None if self._rope_rows is None else torch.tensor(self._rope_rows),
        }

    def project(self, x: Tensor, rotation: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q (B, L, T, hd), k (B, Hk, T, hd) and v (B, Hkv, T, hd) of x (B, T, C); RoPE applied
        to q and k. Hk is num_kv_heads, or num_q_heads when each query head needs its own key
        rotation (sub-head RoPE over a kv head read by different cuts)."""
        B, T, _ = x.shape
        L, Hkv, Hk, hd = self.num_q_heads, self.num_kv_heads, self.num_key_heads, self.head_dim
        qk, v = self.qkv(x).split(((L + Hkv) * hd, Hkv * hd), dim=-1)  # (B, T, (L + Hkv) hd), (B, T, Hkv hd)
        qk = qk.view(B, T, L + Hkv, hd)  # (B, T, L + Hkv, hd)
        if self.key_sources is not None:
            qk = qk.index_select(2, self.key_sources)  # (B, T, L + Hk, hd): each key head from its kv head
        if self.rope_rows is not None:
            rotation = rotation_rows(rotation, self.rope_rows)  # one row per q and k head
        q, k = apply_rope(qk, rotation).split((L, Hk), dim=2)  # (B, T, L | Hk, hd)
        v = v.view(B, T, Hkv, hd)  # (B, T, Hkv, hd)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, L | Hk | Hkv, T, hd)

    def forward(
        self, x: Tensor, rotation: Tensor, cache: LayerCache | None = None, attn_mask: Tensor | None = None
    ) -> Tensor:
        """x (B, T, C); rotation: RoPE of the T positions (see `apply_rope`); returns (B, T, C)."""
        B, T, _ = x.shape
        q, k, v = self.project(x, rotation)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, Hk, S, hd), (B, Hkv, S, hd)
        dropout_p = self.attn_dropout if self.training else 0.0
        y = self.kernel(q, k, v, dropout_p=dropout_p, attn_mask=attn_mask)  # (B, L, T, hd)
        return self.out(y.transpose(1, 2).reshape(B, T, self.num_q_heads * self.head_dim))  # (B, T, C)
