"""What one sub-head's attention weights say, query by query, and the copying score of its
weights. docs/analysis.md gives each definition with its reference.

The functions take the weights of one level as `fha.inspection.level_weights` returns them,
(B, n, T, S) with S == T (a forward pass without a KV cache: query t sees keys 0..t), and
give one value per query position; `AttentionSums` adds them up over the counted queries of
many batches. Query 0 sees only itself, so the previous-token and first-token weights start
at query 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fha.tokenizer import BOS_ID, SPECIAL_TOKENS

FIRST_ORDINARY_ID = len(SPECIAL_TOKENS)  # random sequences use no special token
# The per-query measurements `AttentionSums` averages, in the order of its columns.
ATTENTION_METRICS = ("entropy_bits", "mean_distance", "previous_token", "first_token")
_FROM_SECOND_QUERY = ("previous_token", "first_token")  # undefined at query 0, which sees only itself


def entropy_bits(weights: Tensor) -> Tensor:
    """The entropy of each query's attention distribution in bits: (..., T, S) -> (..., T)."""
    return -torch.special.xlogy(weights, weights).sum(dim=-1) / math.log(2)


def mean_distance(weights: Tensor) -> Tensor:
    """How far back each query looks on average, sum_s w[t, s] (t - s): (..., T, S) -> (..., T)."""
    T, S = weights.shape[-2:]
    offset = torch.arange(T, device=weights.device)[:, None] + (S - T) - torch.arange(S, device=weights.device)
    return (weights * offset.clamp(min=0).to(weights.dtype)).sum(dim=-1)


def previous_token_weight(weights: Tensor) -> Tensor:
    """The weight each query t >= 1 puts on position t - 1: (..., T, T) -> (..., T - 1)."""
    return torch.diagonal(weights, offset=-1, dim1=-2, dim2=-1)


def first_token_weight(weights: Tensor) -> Tensor:
    """The weight each query t >= 1 puts on the first position of its window: (..., T, S) -> (..., T - 1)."""
    return weights[..., 1:, 0]


class AttentionSums:
    """Running sums of the per-query measurements of every sub-head of one layer.

    ``add(weights, queries)`` with the layer's per-level weights and a (B, T) boolean of the
    queries that count (real tokens, not padding); ``means()`` is (sub-heads, 4): the
    `ATTENTION_METRICS` of each sub-head, levels in order, averaged over the counted queries.
    """

    def __init__(self) -> None:
        self._sums: Tensor | None = None  # (sub-heads, metrics), float64
        self._counts = torch.zeros(2, dtype=torch.float64)  # counted queries: all, from query 1 on

    def add(self, weights: list[Tensor], queries: Tensor) -> None:
        every = queries.to(weights[0].dtype)  # (B, T)
        later = every[:, 1:]  # (B, T - 1)
        columns = []
        for w in weights:  # (B, n, T, T)
            per_query = {
                "entropy_bits": entropy_bits(w),
                "mean_distance": mean_distance(w),
                "previous_token": previous_token_weight(w),
                "first_token": first_token_weight(w),
            }
            columns.append(
                torch.stack(
                    [
                        (per_query[name] * (later if name in _FROM_SECOND_QUERY else every)[:, None]).sum(dim=(0, 2))
                        for name in ATTENTION_METRICS
                    ],
                    dim=-1,
                )
            )  # (n, metrics)
        sums = torch.cat(columns).double().cpu()  # (sub-heads, metrics)
        self._sums = sums if self._sums is None else self._sums + sums
        self._counts += torch.stack([every.sum(), later.sum()]).double().cpu()

    def means(self) -> Tensor:
        if self._sums is None:
            raise ValueError("no attention weights were added")
        counts = torch.stack([self._counts[1 if name in _FROM_SECOND_QUERY else 0] for name in ATTENTION_METRICS])
        return self._sums / counts


def repeated_sequences(count: int, length: int, vocab_size: int, seed: int) -> Tensor:
    """`count` rows of ``<bos>``, `length` random ordinary tokens, and the same tokens again:
    (count, 2 * length + 1) token ids, drawn uniformly (with repeats) from a generator seeded
    with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    random = torch.randint(FIRST_ORDINARY_ID, vocab_size, (count, length), generator=generator)
    bos = torch.full((count, 1), BOS_ID, dtype=torch.long)
    return torch.cat([bos, random, random], dim=1)


def induction_weight(weights: Tensor, length: int) -> Tensor:
    """On `repeated_sequences` of `length`: the weight each token of the repeat puts on the token
    that followed its first occurrence (Olsson et al., 2022). (..., T, T) -> (..., length).

    With ``<bos>`` at 0, the first copy at 1..length and the repeat at length+1..2*length, the
    repeat's i-th token (position length + 1 + i) looks for position i + 2.
    """
    T = weights.shape[-1]
    if T != 2 * length + 1:
        raise ValueError(f"weights of {T} positions are not a repeated sequence of length {length}")
    queries = torch.arange(length, device=weights.device) + length + 1
    return weights[..., queries, queries - length + 1]


def copying_score(value: Tensor, output: Tensor, circuit: Tensor) -> float:
    """How much a sub-head copies the token it attends to into the next-token prediction:
    sum(Re lambda) / sum(|lambda|) over the eigenvalues of its OV circuit on the direct path
    (Elhage et al., 2021; Olsson et al., 2022), from -1 (suppresses it) to 1 (copies it).

    value: (d, C) its rows of the value projection; output: (C, d) its columns of the output
    projection; circuit: (C, C) the token path around them, ``diag(g_in) E^T U diag(g_out)``
    (input norm gain, embedding, unembedding, output gains). The V x V circuit ``E' W_O W_V
    ...`` has the same nonzero eigenvalues as the d x d ``W_V circuit W_O`` computed here.
    NaN when the sub-head writes nothing (every eigenvalue zero).
    """
    small = value.double() @ circuit.double() @ output.double()  # (d, d)
    eigenvalues = torch.linalg.eigvals(small)
    total = float(eigenvalues.abs().sum())
    return float(eigenvalues.real.sum()) / total if total > 0 else math.nan
