"""Autoregressive generation in small steps: prefill the prompt, decode one token, sample.

Works with any model that has the GPT forward signature (``model(idx, kv_cache=...,
token_mask=...)``) and a ``config`` with ``max_seq_len``. Prompts of different lengths are
left-padded and masked, so each row produces what it would produce alone. How each token
is picked is one `Sampling` value (temperature, top-k, top-p).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from fha.errors import FhaValueError
from fha.model.kv_cache import KVCache
from fha.model.modes import eval_mode
from fha.sampling import Sampling

if TYPE_CHECKING:
    from fha.model.gpt import GPT


def prefill(model: GPT, idx: Tensor, cache: KVCache, token_mask: Tensor | None = None) -> Tensor:
    """Run the prompt idx (B, T) through the model into an empty cache; logits of its last position (B, V)."""
    logits, _ = model(idx, kv_cache=cache, token_mask=token_mask)
    return logits[:, -1]


def decode_step(model: GPT, token: Tensor, cache: KVCache) -> Tensor:
    """Feed one new token per row (B,) after the cached positions; logits for the next one (B, V)."""
    logits, _ = model(token[:, None], kv_cache=cache)
    return logits[:, -1]


def filter_logits(logits: Tensor, sampling: Sampling) -> Tensor:
    """Set to -inf every logit outside the top-k and outside the nucleus of mass top_p.

    Both filters of `sampling` apply (a token must pass each). The nucleus keeps the smallest
    set of the most likely tokens whose probabilities sum to at least top_p; ties at the
    boundary are resolved by sort order. The input is not modified.
    """
    top_k, top_p = sampling.top_k, sampling.top_p
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)  # (B, V)
        mass_before = probs.cumsum(dim=-1) - probs  # (B, V)
        drop_sorted = mass_before >= top_p  # (B, V)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # (B, V)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: Tensor,
    sampling: Sampling = Sampling(),
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> Tensor:
    """Pick the next token per row (B,) from logits (B, V); temperature 0 is greedy (argmax).

    generator may be one generator per row: each row then draws from its own stream, so
    its samples do not depend on which other rows share the batch.
    """
    if sampling.greedy:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / sampling.temperature, sampling)
    probs = logits.softmax(dim=-1)  # (B, V)
    if isinstance(generator, Sequence):
        rows = [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generator, strict=True)]
        return torch.cat(rows)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def stream(
    model: GPT,
    idx: Tensor,
    max_new_tokens: int,
    *,
    sampling: Sampling = Sampling(),
    eos_id: int | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    token_mask: Tensor | None = None,
) -> Iterator[Tensor]:
    """Yield each step's new tokens (B,) until max_new_tokens or every row has produced eos_id.

    Rows that already produced eos_id keep yielding eos_id. Once the sequence outgrows
    max_seq_len, each step runs on its last max_seq_len tokens again, exactly as a model
    without a cache would see them.
    """
    if max_new_tokens < 0:
        raise FhaValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    window = model.config.max_seq_len
    B = idx.shape[0]
    if token_mask is None:
        token_mask = torch.ones_like(idx, dtype=torch.bool)
    cache = KVCache.for_model(model, B, min(window, idx.shape[1] + max_new_tokens))
    crop_mask = token_mask[:, -window:]
    logits = prefill(model, idx[:, -window:], cache, None if bool(crop_mask.all()) else crop_mask)
    finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
    new_tokens: list[Tensor] = []
    for step in range(max_new_tokens):
        token = sample_next(logits, sampling, generator)  # (B,)
        if eos_id is not None:
            token = token.masked_fill(finished, eos_id)
            finished |= token == eos_id
        yield token
        if (eos_id is not None and bool(finished.all())) or step == max_new_tokens - 1:
            return
        new_tokens.append(token)
        if cache.length < cache.capacity:
            logits = decode_step(model, token, cache)
        else:
            # The context is full: the last `window` tokens again from scratch, as without a cache.
            seq = torch.cat([idx, torch.stack(new_tokens, dim=1)], dim=1)[:, -window:]  # (B, window)
            new_mask = torch.ones(B, len(new_tokens), dtype=torch.bool, device=idx.device)
            crop_mask = torch.cat([token_mask, new_mask], dim=1)[:, -window:]  # (B, window)
            cache.reset()
            logits = prefill(model, seq, cache, None if bool(crop_mask.all()) else crop_mask)


@torch.no_grad()
def generate(
    model: GPT,
    idx: Tensor,
    max_new_tokens: int,
    *,
    sampling: Sampling = Sampling(),
    eos_id: int | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    token_mask: Tensor | None = None,
) -> Tensor:
    """The prompt idx (B, T) followed by the new tokens: (B, T + steps), steps <= max_new_tokens.

    The steps run under `torch.inference_mode()` (less bookkeeping per operator); the result
    is built outside it, so callers get an ordinary tensor they may modify or train on.
    """
    with eval_mode(model), torch.inference_mode():
        new = list(
            stream(
                model, idx, max_new_tokens, sampling=sampling, eos_id=eos_id, generator=generator, token_mask=token_mask
            )
        )
    if not new:
        return idx
    return torch.cat([idx, torch.stack(new, dim=1)], dim=1)  # (B, T + steps)
