"""Held-out metrics of a language model over a whole text, and a view of its guesses.

The text is tokenised as in training: every document becomes ``<bos> doc <eos>`` and the
documents are joined back to back. The joined tokens are cut into consecutive windows of
the model's context (`fha.data.eval_windows`), so every token after the first is predicted
exactly once, with the tokens before it in its window as context. Sums are taken over all
predicted tokens before dividing, so

* ``loss_nats`` is the mean cross-entropy per predicted token (nats),
* ``perplexity`` is ``exp(loss_nats)`` (not a mean of per-batch perplexities),
* ``bits_per_byte`` is the summed cross-entropy in bits over the UTF-8 bytes of the
  documents' text, which does not depend on how finely a tokenizer cuts the text,
* ``top1_accuracy`` / ``topk_accuracy`` are the shares of predicted tokens that are the
  model's most likely guess / among its k most likely guesses (teacher forcing).

Padding targets (the tail of the last window, and ``pad_id`` if the model has one) are left
out of every sum. The ``<eos>`` and ``<bos>`` between documents are predicted like any token.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fha import metric_names as names
from fha.choices import EVAL_BATCH_SIZE as DEFAULT_BATCH_SIZE
from fha.choices import EVAL_TOP_K as DEFAULT_TOP_K
from fha.data import TokenData, eval_windows
from fha.data.sources import TINYSTORIES, load_documents, load_splits
from fha.device import autocast
from fha.errors import FhaValueError
from fha.model.loss import counted_targets
from fha.model.modes import eval_mode
from fha.progress import track
from fha.tokenizer import PAD_ID, Tokenizer
from fha.wording import counted, plural

if TYPE_CHECKING:
    from fha.model.gpt import GPT

log = logging.getLogger(__name__)

HELD_OUT_SPLIT = "val"  # the TinyStories split that `held_out_documents("tinystories")` reads


@dataclass(frozen=True)
class EvalResult:
    """Metrics over every predicted token of a text (see the module docstring)."""

    loss: float
    perplexity: float
    bits_per_byte: float
    top1_accuracy: float
    topk_accuracy: float
    top_k: int
    num_tokens: int  # predicted (scored) tokens
    num_bytes: int  # UTF-8 bytes of the documents' text

    def to_dict(self) -> dict[str, float | int]:
        """The metrics under their names in `fha.metric_names` (``fha eval --json``): ``loss_nats``,
        ``top5_accuracy`` for ``top_k=5``, ..."""
        return {
            names.LOSS: self.loss,
            names.PERPLEXITY: self.perplexity,
            names.BITS_PER_BYTE: self.bits_per_byte,
            names.TOP1_ACCURACY: self.top1_accuracy,
            names.topk_accuracy(self.top_k): self.topk_accuracy,
            names.TOKENS_SCORED: self.num_tokens,
            names.BYTES_SCORED: self.num_bytes,
        }


@dataclass(frozen=True)
class TokenGuess:
    """The model's view of one position: the true next token beside its top-k guesses."""

    position: int  # index of the true token in the evaluated token sequence
    target_id: int
    target_prob: float
    target_rank: int  # 1 = the model's first choice
    guess_ids: list[int]
    guess_probs: list[float]


def held_out_documents(source: str) -> list[str]:
    """The documents of a local .txt/.jsonl file, or TinyStories' validation split for "tinystories"."""
    if source == TINYSTORIES:
        return load_splits(TINYSTORIES)[HELD_OUT_SPLIT]
    return load_documents(source)


def encode_documents(documents: Sequence[str], tokenizer: Tokenizer) -> tuple[np.ndarray, int]:
    """(tokens, num_bytes): the documents as ``<bos> doc <eos>`` back to back, and their UTF-8 size."""
    if not documents:
        raise FhaValueError("no documents to evaluate")
    encoded = tokenizer.encode_batch(list(documents), bos=True, eos=True)
    tokens = np.concatenate([np.asarray(ids, dtype=np.int64) for ids in encoded])
    unknown = int(np.count_nonzero(tokens == tokenizer.unk_id))
    if unknown:
        log.warning(
            "%s of the evaluation text %s outside the tokenizer's alphabet (<unk>)",
            counted(unknown, "character"),
            plural(unknown, "is", "are"),
        )
    return tokens, sum(len(doc.encode("utf-8")) for doc in documents)


def evaluate(
    model: GPT,
    data: TokenData | Sequence[str],
    *,
    tokenizer: Tokenizer | None = None,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    show_progress: bool = False,
    precision: str = "auto",
) -> EvalResult:
    """Metrics of `model` over a whole text: a `TokenData`, or documents plus their `tokenizer`.

    `model` is any module with the GPT forward signature (``logits, _ = model(idx)``) and a
    ``config`` with ``max_seq_len`` and ``pad_id``; it is evaluated on `device` (default:
    where its parameters are).
    """
    if isinstance(data, TokenData):
        tokens, num_bytes = data.tokens, data.num_bytes
    else:
        if isinstance(data, str):
            raise TypeError("data must be a list of documents, not one string (wrap it in a list)")
        if tokenizer is None:
            raise FhaValueError("evaluating documents needs their tokenizer")
        tokens, num_bytes = encode_documents(data, tokenizer)
    return evaluate_tokens(
        model,
        tokens,
        num_bytes,
        top_k=top_k,
        batch_size=batch_size,
        device=device,
        show_progress=show_progress,
        precision=precision,
    )


@torch.inference_mode()
def evaluate_tokens(
    model: GPT,
    tokens: np.ndarray | Tensor,
    num_bytes: int,
    *,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    show_progress: bool = False,
    precision: str = "auto",
) -> EvalResult:
    """`evaluate` on an already tokenised text; `num_bytes` is its UTF-8 size for bits per byte."""
    if top_k < 1:
        raise FhaValueError(f"top_k must be at least 1, got {top_k}")
    if num_bytes < 1:
        raise FhaValueError(f"num_bytes must be positive, got {num_bytes}")
    tokens = np.asarray(tokens.cpu() if isinstance(tokens, Tensor) else tokens)
    if len(tokens) < 2:
        raise FhaValueError(f"need at least 2 tokens to predict one, got {len(tokens)}")
    device = _model_device(model) if device is None else torch.device(device)
    seq_len = model.config.max_seq_len
    pad_id = model.config.pad_id
    total_nats = 0.0
    counts = np.zeros(3, dtype=np.int64)  # scored tokens, top-1 hits, top-k hits
    num_windows = -(-(len(tokens) - 1) // seq_len)
    windows = eval_windows(tokens, seq_len, batch_size, pad_id=PAD_ID if pad_id is None else pad_id)
    with eval_mode(model):
        for x, y in track(
            windows, -(-num_windows // batch_size), "evaluating batch", unit="batch", enabled=show_progress
        ):
            x, y = x.to(device), y.to(device)
            with autocast(device, precision):
                logits, _ = model(x)  # (B, T, V)
            nats, hits1, hitsk, scored = _batch_sums(logits.float(), y, pad_id, top_k)
            total_nats += nats
            counts += (scored, hits1, hitsk)
    num_scored, top1_hits, topk_hits = (int(c) for c in counts)
    if num_scored == 0:
        raise FhaValueError("the text has no tokens to predict (every target is padding)")
    loss = total_nats / num_scored
    return EvalResult(
        loss=loss,
        perplexity=_safe_exp(loss),
        bits_per_byte=total_nats / math.log(2) / num_bytes,
        top1_accuracy=top1_hits / num_scored,
        topk_accuracy=topk_hits / num_scored,
        top_k=top_k,
        num_tokens=num_scored,
        num_bytes=num_bytes,
    )


def _batch_sums(logits: Tensor, targets: Tensor, pad_id: int | None, top_k: int) -> tuple[float, int, int, int]:
    """(summed nats, top-1 hits, top-k hits, scored targets) of one batch; logits (B, T, V)."""
    scored = counted_targets(targets, pad_id)  # (B, T)
    flat_logits = logits[scored]  # (N, V)
    flat_targets = targets[scored]  # (N,)
    nats = F.cross_entropy(flat_logits, flat_targets, reduction="sum")
    target_logits = flat_logits.gather(1, flat_targets[:, None])  # (N, 1)
    # Rank = number of strictly larger logits: a target tied with the best guess is a hit.
    rank = (flat_logits > target_logits).sum(dim=1)  # (N,) 0 = first choice
    k = min(top_k, logits.shape[-1])
    return float(nats), int((rank == 0).sum()), int((rank < k).sum()), int(flat_targets.numel())


@torch.inference_mode()
def next_token_guesses(
    model: GPT,
    tokens: Sequence[int] | np.ndarray | Tensor,
    *,
    top_k: int = DEFAULT_TOP_K,
    device: torch.device | str | None = None,
    precision: str = "auto",
) -> list[TokenGuess]:
    """For each token after the first (within one context window), the model's top-k guesses.

    Only the first ``max_seq_len + 1`` tokens are used; this is a view for people to read,
    not a metric.
    """
    if top_k < 1:
        raise FhaValueError(f"top_k must be at least 1, got {top_k}")
    device = _model_device(model) if device is None else torch.device(device)
    ids = torch.as_tensor(np.asarray(tokens), dtype=torch.long)[: model.config.max_seq_len + 1]
    if len(ids) < 2:
        return []
    with eval_mode(model), autocast(device, precision):
        logits, _ = model(ids[None, :-1].to(device))
    probs = logits[0].float().softmax(dim=-1).cpu()  # (T, V)
    targets = ids[1:]
    target_probs = probs.gather(1, targets[:, None]).squeeze(1)  # (T,)
    ranks = (probs > target_probs[:, None]).sum(dim=1) + 1  # (T,)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [
        TokenGuess(
            position=t + 1,
            target_id=int(targets[t]),
            target_prob=float(target_probs[t]),
            target_rank=int(ranks[t]),
            guess_ids=top.indices[t].tolist(),
            guess_probs=top.values[t].tolist(),
        )
        for t in range(len(targets))
    ]


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _safe_exp(value: float) -> float:
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf
