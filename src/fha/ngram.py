"""Count-based reference scores: interpolated Kneser–Ney n-gram models, in bits per byte.

A neural model that has learnt anything beyond local word statistics should beat these; a
study report states them beside its models' test bits per byte.

**The model** (interpolated Kneser–Ney: Kneser & Ney 1995, "Improved backing-off for M-gram
language modeling", ICASSP; in the form of Chen & Goodman 1998/1999, "An empirical study of
smoothing techniques for language modeling", TR-10-98 / Computer Speech and Language 13).
For an order-n model, a target token w after the context h (its n - 1 previous tokens):

    P_k(w | h) = max(c_k(h w) - D_k, 0) / c_k(h •)  +  D_k · N_k(h •) / c_k(h •) · P_{k-1}(w | h')

for k = n, ..., 1, where h' is h without its first token, c_k(h •) = Σ_w c_k(h w), N_k(h •)
is the number of tokens w with c_k(h w) > 0, and the recursion ends in P_0(w) = 1 / V, uniform
over the vocabulary, so every id (one never seen in training too) has a positive
probability. The counts c_k are:

* at the highest order (k = n): raw counts, how often the k-gram occurs in the training text;
* at lower orders (k < n): continuation counts, the number of distinct tokens v such that
  the (k+1)-gram v h w occurs (Kneser–Ney's count of left contexts).

So order 1 (a "unigram" model) is absolutely discounted token counts interpolated with the
uniform distribution; order 2 is discounted bigram counts interpolated with the
continuation-count unigram, and so on. A context with c_k(h •) = 0 (never seen, or seen only
at the end of the training text) backs off entirely: P_k(w | h) = P_{k-1}(w | h').

The discount of each order is Ney's estimate D_k = n1 / (n1 + 2 n2), where n1 and n2 are the
numbers of k-grams whose count (the one that order uses) is 1 and 2. With no k-gram seen once
it would be 0, which gives unseen tokens after a seen context no probability at all;
`FALLBACK_DISCOUNT` is used instead.

**Scoring** matches `fha.evaluation`: the text is the documents as ``<bos> doc <eos>`` back to
back (a `TokenData`'s tokens), every token after the first is predicted exactly once with the
tokens before it in the stream as context (up to n - 1 of them), targets that are padding are
left out, and bits per byte = summed cross-entropy in bits / UTF-8 bytes of the documents.
The few targets with fewer than n - 1 tokens before them (the second token of the stream, for
a trigram model) are predicted by the lower-order distribution of the recursion that their
context allows. Training counts come from the training stream the same way: the k-grams of
the joined token array, the first tokens of the stream having no left context.

Everything is counted with numpy: a k-gram is the int64 key ``id(its first k-1 tokens) * V +
last token``, where id is the k-1-gram's index among the sorted distinct keys of its order,
so keys never overflow whatever the order; `np.unique` counts them and `np.searchsorted`
looks up the evaluation text's n-grams.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fha.errors import FhaValueError
from fha.tokenizer import PAD_ID

if TYPE_CHECKING:
    from fha.data.cache import TokenData

log = logging.getLogger(__name__)

DEFAULT_ORDERS = (1, 2, 3)
# Used for an order with no k-gram seen once, where Ney's estimate n1 / (n1 + 2 n2) is 0: the
# middle of the range (0, 1] that the estimate otherwise falls in.
FALLBACK_DISCOUNT = 0.5
UNKNOWN = -1  # the id of a k-gram or context that the training text does not have


@dataclass(frozen=True)
class _OrderTable:
    """The counts of one order k: its k-grams and, per context (a k-1-gram id), their sums."""

    keys: np.ndarray  # (grams,) int64, sorted: context id * vocab_size + last token
    counts: np.ndarray  # (grams,) float64: raw counts at the highest order, continuation counts below
    totals: np.ndarray  # (contexts,) float64: c_k(h •)
    followers: np.ndarray  # (contexts,) float64: N_k(h •), the k-grams of the context with a positive count
    discount: float


class KneserNey:
    """An interpolated Kneser–Ney model of one order (see the module docstring); build it with `fit`."""

    def __init__(self, tables: Sequence[_OrderTable], vocab_size: int) -> None:
        self._tables = tuple(tables)  # orders 1 .. n
        self.vocab_size = vocab_size

    @classmethod
    def fit(cls, tokens: np.ndarray | Sequence[int], order: int, vocab_size: int) -> KneserNey:
        """The order-`order` model of the token stream `tokens` (ids below `vocab_size`)."""
        _check_model_settings(order, vocab_size)
        return cls._fit(_training_array(tokens, vocab_size, "tokens"), order, vocab_size)

    @classmethod
    def _fit(cls, tokens: np.ndarray, order: int, vocab_size: int) -> KneserNey:
        """`fit` on an already checked int64 array."""
        grams = _count_grams(tokens, order, vocab_size)
        tables = []
        for k in range(1, order + 1):
            keys, ids, _ = grams[k - 1]
            if k == order:
                counts = np.bincount(ids[ids != UNKNOWN], minlength=len(keys))
            else:  # continuation counts: distinct k+1-grams whose last k tokens are this k-gram
                counts = np.bincount(ids[grams[k][2]], minlength=len(keys))
            num_contexts = 1 if k == 1 else len(grams[k - 2][0])
            tables.append(_order_table(keys, counts.astype(np.float64), num_contexts, vocab_size))
        model = cls(tables, vocab_size)
        log.debug("Kneser-Ney order %d on %d tokens: discounts %s", order, len(tokens), model.discounts)
        return model

    @property
    def order(self) -> int:
        return len(self._tables)

    @property
    def discounts(self) -> tuple[float, ...]:
        """D_1, ..., D_n."""
        return tuple(table.discount for table in self._tables)

    def log_probs(self, tokens: np.ndarray | Sequence[int]) -> np.ndarray:
        """Natural-log probabilities of ``tokens[1:]``, each given the tokens before it (up to n - 1); (len - 1,)."""
        tokens = _token_array(tokens, self.vocab_size, "tokens")
        ids = self._gram_ids(tokens)
        contexts = [gram_ids[:-1] for gram_ids in ids]  # for order k: the k-1-gram ending before the target
        return np.log(self._probs(contexts, tokens[1:]))

    def next_token_probs(self, context: np.ndarray | Sequence[int]) -> np.ndarray:
        """P(w | context) for every id w; (vocab_size,). Only the last n - 1 tokens of `context` count."""
        context = _token_array(context, self.vocab_size, "context")
        context = context[max(len(context) - (self.order - 1), 0) :]
        if len(context):
            ends = [gram_ids[-1:] for gram_ids in self._gram_ids(context)]
        else:
            ends = [np.zeros(1, dtype=np.int64)] + [np.full(1, UNKNOWN)] * (self.order - 1)
        targets = np.arange(self.vocab_size, dtype=np.int64)
        return self._probs([np.broadcast_to(end, targets.shape) for end in ends], targets)

    def bits_per_byte(
        self, tokens: np.ndarray | Sequence[int], num_bytes: int, *, pad_id: int | None = PAD_ID
    ) -> float:
        """Summed cross-entropy in bits of ``tokens[1:]`` (padding targets left out) over `num_bytes`."""
        return _bits_per_byte(self, _token_array(tokens, self.vocab_size, "tokens"), num_bytes, pad_id, "tokens")

    def _gram_ids(self, tokens: np.ndarray) -> list[np.ndarray]:
        """For k = 0 .. n-1, the id of the k-gram ending at each position (`UNKNOWN` if unseen or too short)."""
        ids = [np.zeros(len(tokens), dtype=np.int64)]  # the empty gram
        for k in range(1, self.order):
            ids.append(_lookup(self._tables[k - 1].keys, _contexts(ids[-1], k), tokens, self.vocab_size))
        return ids

    def _probs(self, contexts: Sequence[np.ndarray], targets: np.ndarray) -> np.ndarray:
        """P_n(target | context) by the recursion; contexts[k-1] holds each target's order-k context id."""
        probs = np.full(len(targets), 1.0 / self.vocab_size)
        for table, context in zip(self._tables, contexts, strict=True):
            seen = context != UNKNOWN
            context = np.where(seen, context, 0)
            totals = table.totals[context]
            seen &= totals > 0
            gram = _lookup(table.keys, np.where(seen, context, UNKNOWN), targets, self.vocab_size)
            counts = np.where(gram != UNKNOWN, table.counts[np.maximum(gram, 0)], 0.0)
            kept = np.maximum(counts - table.discount, 0.0)
            freed = table.discount * table.followers[context]
            probs = np.where(seen, (kept + freed * probs) / np.where(seen, totals, 1.0), probs)
        return probs


def ngram_bits_per_byte(
    train_tokens: np.ndarray,
    eval_tokens: np.ndarray,
    num_bytes: int,
    vocab_size: int,
    order: int,
    *,
    pad_id: int | None = PAD_ID,
) -> float:
    """Bits per byte of `eval_tokens` under the order-`order` Kneser–Ney model of `train_tokens`.

    Comparable with ``fha.evaluate(...).bits_per_byte`` on the same tokens and `num_bytes`
    (see the module docstring); targets equal to `pad_id` are left out, as evaluation does.
    """
    _check_model_settings(order, vocab_size)
    train = _training_array(train_tokens, vocab_size, "train_tokens")
    tokens = _token_array(eval_tokens, vocab_size, "eval_tokens")
    return _bits_per_byte(KneserNey._fit(train, order, vocab_size), tokens, num_bytes, pad_id, "eval_tokens")


def ngram_references(
    train: TokenData,
    evals: Mapping[str, TokenData],
    vocab_size: int,
    orders: Sequence[int] = DEFAULT_ORDERS,
    *,
    pad_id: int | None = PAD_ID,
) -> dict[str, dict[int, float]]:
    """Bits per byte of every text of `evals` (split name -> text) under a Kneser–Ney model of
    `train` of each order: ``{split: {order: bits_per_byte}}``."""
    if not orders:
        raise FhaValueError("`orders` is empty: give at least one n-gram order")
    for order in orders:
        _check_model_settings(order, vocab_size, "orders")
    train_tokens = _training_array(train.tokens, vocab_size, "train")
    eval_tokens = {name: _token_array(data.tokens, vocab_size, f"evals[{name!r}]") for name, data in evals.items()}
    references: dict[str, dict[int, float]] = {name: {} for name in evals}
    for order in orders:
        model = KneserNey._fit(train_tokens, order, vocab_size)
        for name, data in evals.items():
            references[name][order] = _bits_per_byte(
                model, eval_tokens[name], data.num_bytes, pad_id, f"evals[{name!r}]"
            )
    return references


def _count_grams(tokens: np.ndarray, order: int, vocab_size: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For k = 1 .. order: (sorted distinct keys, the key index of the k-gram ending at each
    position or `UNKNOWN`, one position where each distinct k-gram ends)."""
    grams = []
    ids = np.zeros(len(tokens), dtype=np.int64)  # order 0: the empty gram ends everywhere
    for k in range(1, order + 1):
        context = _contexts(ids, k)
        positions = np.flatnonzero(context != UNKNOWN)
        keys, first, inverse = np.unique(
            context[positions] * vocab_size + tokens[positions], return_index=True, return_inverse=True
        )
        ids = np.full(len(tokens), UNKNOWN, dtype=np.int64)
        ids[positions] = inverse
        grams.append((keys, ids, positions[first]))
    return grams


def _contexts(ids: np.ndarray, k: int) -> np.ndarray:
    """The id of the k-1-gram ending just before each position, given `ids` of the k-1-grams ending at each."""
    if k == 1:
        return ids  # the empty gram, 0 everywhere
    before = np.full_like(ids, UNKNOWN)
    before[1:] = ids[:-1]
    return before


def _lookup(keys: np.ndarray, contexts: np.ndarray, tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """The index in sorted `keys` of each (context, token), or `UNKNOWN` (also where the context is)."""
    if len(keys) == 0:
        return np.full(len(tokens), UNKNOWN, dtype=np.int64)
    wanted = contexts * vocab_size + tokens
    index = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where((contexts != UNKNOWN) & (keys[index] == wanted), index, UNKNOWN)


def _order_table(keys: np.ndarray, counts: np.ndarray, num_contexts: int, vocab_size: int) -> _OrderTable:
    context = keys // vocab_size
    n1, n2 = int(np.count_nonzero(counts == 1)), int(np.count_nonzero(counts == 2))
    return _OrderTable(
        keys=keys,
        counts=counts,
        totals=np.bincount(context, weights=counts, minlength=num_contexts),
        followers=np.bincount(context, weights=counts > 0, minlength=num_contexts),
        discount=n1 / (n1 + 2 * n2) if n1 else FALLBACK_DISCOUNT,
    )


def _bits_per_byte(model: KneserNey, tokens: np.ndarray, num_bytes: int, pad_id: int | None, name: str) -> float:
    if num_bytes < 1:
        raise FhaValueError(f"`num_bytes` must be positive, got {num_bytes}")
    if len(tokens) < 2:
        raise FhaValueError(f"`{name}` needs at least 2 tokens to predict one, got {len(tokens)}")
    scored = np.ones(len(tokens) - 1, dtype=bool) if pad_id is None else tokens[1:] != pad_id
    if not scored.any():
        raise FhaValueError(f"`{name}` has no tokens to predict (every target is padding)")
    ids = model._gram_ids(tokens)
    nats = -np.log(model._probs([gram_ids[:-1][scored] for gram_ids in ids], tokens[1:][scored])).sum()
    return float(nats) / math.log(2) / num_bytes


def _check_model_settings(order: int, vocab_size: int, order_name: str = "order") -> None:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise FhaValueError(f"`{order_name}` must be a whole number of at least 1 (1 = unigram), got {order!r}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise FhaValueError(f"`vocab_size` must be a positive whole number, got {vocab_size!r}")


def _token_array(tokens: np.ndarray | Sequence[int], vocab_size: int, name: str) -> np.ndarray:
    """`tokens` as a 1-D int64 array of ids in [0, vocab_size), or an FhaValueError naming `name`."""
    array = np.asarray(tokens)
    if array.ndim != 1:
        raise FhaValueError(f"`{name}` must be a 1-D array of token ids, got shape {array.shape}")
    if len(array) == 0:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise FhaValueError(f"`{name}` must hold integer token ids, got dtype {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise FhaValueError(f"`{name}` holds token id {bad}, outside [0, vocab_size={vocab_size})")
    return array.astype(np.int64)


def _training_array(tokens: np.ndarray | Sequence[int], vocab_size: int, name: str) -> np.ndarray:
    """`_token_array`, refusing an empty text."""
    array = _token_array(tokens, vocab_size, name)
    if len(array) == 0:
        raise FhaValueError(f"`{name}` is empty: an n-gram model needs a training text")
    return array
