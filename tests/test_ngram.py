"""Kneser–Ney n-gram references: hand-computed probabilities, a slow dictionary reference,
normalisation, agreement with `fha.evaluation`, real text and bad input."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from fha.data import load_documents, prepare_tokens
from fha.errors import FhaValueError
from fha.evaluation import evaluate_tokens
from fha.ngram import FALLBACK_DISCOUNT, KneserNey, ngram_bits_per_byte, ngram_references
from fha.tokenizer import PAD_ID, Tokenizer

TOL = 1e-12
EVALUATION_TOL = 1e-6  # evaluation takes its cross-entropy of float32 logits

# The toy text "a b c a b d a c a b" over the ids a=0, b=1, c=2, d=3 and e=4 (never seen).
A, B, C, D, E = range(5)
TOY = [A, B, C, A, B, D, A, C, A, B]
TOY_VOCAB = 5


class SlowKneserNey:
    """The module docstring's definitions over dictionaries of tuples, one probability at a time."""

    def __init__(self, tokens: list[int], order: int, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        grams = {
            k: Counter(tuple(tokens[i - k + 1 : i + 1]) for i in range(k - 1, len(tokens))) for k in range(1, order + 1)
        }
        self.counts: dict[int, dict[tuple[int, ...], int]] = {order: dict(grams[order])}  # raw counts
        for k in range(1, order):  # continuation counts: distinct left neighbours in the k+1-grams
            left_neighbours = defaultdict(set)
            for gram in grams[k + 1]:
                left_neighbours[gram[1:]].add(gram[0])
            self.counts[k] = {gram: len(lefts) for gram, lefts in left_neighbours.items()}
        self.discounts = {}
        for k, counts in self.counts.items():
            n1 = list(counts.values()).count(1)
            n2 = list(counts.values()).count(2)
            self.discounts[k] = n1 / (n1 + 2 * n2) if n1 else FALLBACK_DISCOUNT

    def prob(self, word: int, context: tuple[int, ...]) -> float:
        """P(word | context), context being the (up to n - 1) tokens just before it."""
        return self._prob(len(context) + 1, context, word)

    def _prob(self, k: int, context: tuple[int, ...], word: int) -> float:
        if k == 0:
            return 1 / self.vocab_size
        lower = self._prob(k - 1, context[1:], word)
        following = {gram[-1]: c for gram, c in self.counts[k].items() if gram[:-1] == context and c > 0}
        total = sum(following.values())
        if total == 0:
            return lower
        discount = self.discounts[k]
        return max(following.get(word, 0) - discount, 0) / total + discount * len(following) / total * lower

    def stream_probs(self, tokens: list[int], order: int) -> list[float]:
        """P(tokens[i] | up to n - 1 tokens before it) for i = 1 .. len - 1."""
        return [self.prob(tokens[i], tuple(tokens[max(0, i - order + 1) : i])) for i in range(1, len(tokens))]


def test_the_unigram_model_by_hand():
    # Raw counts a 4, b 3, c 2, d 1, e 0: total 10, 4 tokens seen.
    # n1 = 1 (d), n2 = 1 (c): D = 1 / (1 + 2 * 1) = 1/3.
    discount = 1 / 3
    model = KneserNey.fit(TOY, 1, TOY_VOCAB)
    assert model.discounts == pytest.approx((discount,), abs=TOL)
    probs = model.next_token_probs([])
    freed = discount * 4 / 10 * (1 / 5)  # D * N(•) / c(•) * uniform
    assert probs[A] == pytest.approx((4 - discount) / 10 + freed, abs=TOL)  # = 59/150
    assert probs[D] == pytest.approx((1 - discount) / 10 + freed, abs=TOL)
    assert probs[E] == pytest.approx(freed, abs=TOL)  # never seen: only the uniform share, 4/150
    assert probs[A] == pytest.approx(59 / 150, abs=TOL)


# Continuation counts of unigrams (distinct left neighbours in the bigrams ab bc ca bd da ac):
# a {c, d} 2, b {a} 1, c {b, a} 2, d {b} 1; total 6, 4 seen; n1 = 2, n2 = 2: D1 = 2 / (2 + 4) = 1/3.
CONT_D1 = 1 / 3


def continuation_unigram(count: int) -> float:
    return max(count - CONT_D1, 0) / 6 + CONT_D1 * 4 / 6 * (1 / 5)


def test_the_bigram_model_by_hand():
    # Raw bigrams ab 3, bc 1, ca 2, bd 1, da 1, ac 1: n1 = 4, n2 = 1: D2 = 4 / (4 + 2) = 2/3.
    d2 = 2 / 3
    model = KneserNey.fit(TOY, 2, TOY_VOCAB)
    assert model.discounts == pytest.approx((CONT_D1, d2), abs=TOL)
    p1 = {
        A: continuation_unigram(2),
        B: continuation_unigram(1),
        C: continuation_unigram(2),
        E: continuation_unigram(0),
    }
    assert p1[A] == pytest.approx(29 / 90, abs=TOL)
    # After a: ab 3, ac 1 (total 4, 2 followers).
    after_a = model.next_token_probs([A])
    assert after_a[B] == pytest.approx((3 - d2) / 4 + d2 * 2 / 4 * p1[B], abs=TOL)
    assert after_a[E] == pytest.approx(d2 * 2 / 4 * p1[E], abs=TOL)
    # After d: da 1 (total 1, 1 follower).
    assert model.next_token_probs([D])[A] == pytest.approx((1 - d2) / 1 + d2 * 1 / 1 * p1[A], abs=TOL)
    # After e (never seen): the continuation unigram alone.
    assert model.next_token_probs([E])[C] == pytest.approx(p1[C], abs=TOL)
    # A longer context: only its last token counts.
    assert model.next_token_probs([E, C, A])[B] == pytest.approx(after_a[B], abs=TOL)


def test_the_trigram_model_by_hand():
    # Raw trigrams abc 1, bca 1, cab 2, abd 1, bda 1, dac 1, aca 1: n1 = 6, n2 = 1: D3 = 6 / 8 = 3/4.
    # Continuation counts of bigrams (left neighbours in those trigrams): bc {a} 1, ca {b, a} 2,
    # ab {c} 1 (the ab at the start of the text has no left neighbour), bd {a} 1, da {b} 1,
    # ac {d} 1: n1 = 5, n2 = 1: D2 = 5 / 7.
    d3, d2 = 3 / 4, 5 / 7
    model = KneserNey.fit(TOY, 3, TOY_VOCAB)
    assert model.discounts == pytest.approx((CONT_D1, d2, d3), abs=TOL)
    # Bigram level after b: bc 1, bd 1 (total 2, 2 followers); after a: ab 1, ac 1.
    p2_c_after_b = max(1 - d2, 0) / 2 + d2 * 2 / 2 * continuation_unigram(2)
    p2_e_after_b = d2 * 2 / 2 * continuation_unigram(0)
    p2_b_after_a = max(1 - d2, 0) / 2 + d2 * 2 / 2 * continuation_unigram(1)
    # After "a b": abc 1, abd 1 (total 2, 2 followers).
    after_ab = model.next_token_probs([A, B])
    assert after_ab[C] == pytest.approx((1 - d3) / 2 + d3 * 2 / 2 * p2_c_after_b, abs=TOL)
    assert after_ab[E] == pytest.approx(d3 * 2 / 2 * p2_e_after_b, abs=TOL)
    # After "c a": cab 2 (total 2, 1 follower).
    assert model.next_token_probs([C, A])[B] == pytest.approx((2 - d3) / 2 + d3 * 1 / 2 * p2_b_after_a, abs=TOL)
    # After "d b" (never seen): the bigram level after b.
    assert model.next_token_probs([D, B])[C] == pytest.approx(p2_c_after_b, abs=TOL)
    # In a stream, the second token has one token of context: the bigram level predicts it.
    log_probs = model.log_probs([A, B, C])
    assert log_probs == pytest.approx([math.log(p2_b_after_a), math.log(after_ab[C])], abs=TOL)


def random_stream(rng: np.random.Generator, length: int, vocab_size: int) -> list[int]:
    """A stream with some structure: each token depends on the one before."""
    weights = rng.dirichlet(np.full(vocab_size, 0.5), size=vocab_size)
    tokens = [int(rng.integers(vocab_size))]
    for _ in range(length - 1):
        tokens.append(int(rng.choice(vocab_size, p=weights[tokens[-1]])))
    return tokens


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_the_vectorised_model_equals_the_slow_reference(order):
    rng = np.random.default_rng(order)
    vocab_size = 8
    train = random_stream(rng, 400, vocab_size - 1)  # the last id never occurs in training
    held_out = random_stream(rng, 150, vocab_size) + [vocab_size - 1, PAD_ID, 3]
    slow = SlowKneserNey(train, order, vocab_size)
    model = KneserNey.fit(np.asarray(train, dtype=np.uint16), order, vocab_size)
    assert model.discounts == pytest.approx([slow.discounts[k] for k in range(1, order + 1)], abs=TOL)
    want = slow.stream_probs(held_out, order)
    assert np.exp(model.log_probs(held_out)) == pytest.approx(want, rel=TOL, abs=0)
    for context in ([], [2], [5, 1], [7, 7, 7], held_out[:20]):
        want = [slow.prob(w, tuple(context[max(0, len(context) - order + 1) :])) for w in range(vocab_size)]
        assert model.next_token_probs(context) == pytest.approx(want, rel=TOL, abs=0)
    num_bytes = 321
    bits = sum(-math.log2(p) for p, target in zip(slow.stream_probs(held_out, order), held_out[1:]) if target != PAD_ID)
    got = ngram_bits_per_byte(np.asarray(train), np.asarray(held_out), num_bytes, vocab_size, order)
    assert got == pytest.approx(bits / num_bytes, rel=TOL)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_the_probabilities_sum_to_one_after_any_context(order):
    rng = np.random.default_rng(7)
    vocab_size = 11
    train = random_stream(rng, 300, vocab_size - 2)
    model = KneserNey.fit(train, order, vocab_size)
    contexts = [[], [10], [9, 10], train[:2], train[40:50], [0, 10, 3, 3]]
    contexts += [list(rng.integers(vocab_size, size=order)) for _ in range(20)]
    for context in contexts:
        probs = model.next_token_probs(context)
        assert probs.sum() == pytest.approx(1.0, abs=TOL)
        assert (probs > 0).all()


def test_a_context_with_no_counts_backs_off_entirely():
    # c ends the text: no bigram counts follow it, as none follow the unseen d.
    bigram = KneserNey.fit([A, B, A, C], 2, 4)
    assert bigram.next_token_probs([C]) == pytest.approx(bigram.next_token_probs([D]), abs=TOL)
    assert bigram.next_token_probs([C]) == pytest.approx(bigram.next_token_probs([]), abs=TOL)
    # c starts the text: "c a" has no left neighbour, so no continuation count follows c.
    trigram = KneserNey.fit([C, A, B, A, B], 3, 4)
    assert trigram.next_token_probs([D, C]) == pytest.approx(trigram.next_token_probs([D, D]), abs=TOL)
    assert trigram.next_token_probs([D, C]) == pytest.approx(trigram.next_token_probs([]), abs=TOL)


def test_a_text_without_singletons_uses_the_fallback_discount():
    model = KneserNey.fit([A, B] * 4, 1, 3)  # a 4, b 4: Ney's estimate would be 0
    assert model.discounts == (FALLBACK_DISCOUNT,)
    assert model.next_token_probs([])[C] == pytest.approx(FALLBACK_DISCOUNT * 2 / 8 / 3, abs=TOL)


class TableModel(nn.Module):
    """A "GPT" whose logits after token x are the log-probabilities of row x of a fixed table."""

    def __init__(self, table: np.ndarray, max_seq_len: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.as_tensor(np.log(table), dtype=torch.float64), requires_grad=False)
        self.config = SimpleNamespace(max_seq_len=max_seq_len, pad_id=PAD_ID)

    def forward(self, idx: torch.Tensor):
        return self.table[idx], None


def test_bits_per_byte_are_fha_evaluations_for_the_same_predictions():
    """A model that predicts with the bigram model's table gets the same bits per byte from
    `fha.evaluation` (windows, padding left out) as `ngram_bits_per_byte`."""
    rng = np.random.default_rng(3)
    vocab_size = 9
    train = np.asarray(random_stream(rng, 500, vocab_size))
    held_out = np.asarray(random_stream(rng, 203, vocab_size) + [PAD_ID, 5])
    bigram = KneserNey.fit(train, 2, vocab_size)
    table = np.stack([bigram.next_token_probs([token]) for token in range(vocab_size)])  # (V, V)
    num_bytes = 777
    evaluated = evaluate_tokens(TableModel(table, max_seq_len=16), held_out, num_bytes, batch_size=3)
    assert evaluated.num_tokens == len(held_out) - 1 - np.count_nonzero(held_out[1:] == PAD_ID)
    assert ngram_bits_per_byte(train, held_out, num_bytes, vocab_size, 2) == pytest.approx(
        evaluated.bits_per_byte, rel=EVALUATION_TOL
    )


def test_more_context_predicts_real_text_better(sample_dir, tmp_path):
    train_docs = load_documents(sample_dir / "train.txt")
    tokenizer = Tokenizer.train(train_docs, 256)
    train = prepare_tokens(train_docs, tokenizer, tmp_path, "train", "train")
    valid = prepare_tokens(load_documents(sample_dir / "valid.txt"), tokenizer, tmp_path, "valid", "valid")
    references = ngram_references(train, {"valid": valid, "train": train}, tokenizer.vocab_size)
    held_out = references["valid"]
    assert list(held_out) == [1, 2, 3]
    assert held_out[1] > held_out[2] > held_out[3] > 0
    assert all(references["train"][order] < held_out[order] for order in held_out)  # it has seen train.txt
    assert held_out[2] == ngram_bits_per_byte(train.tokens, valid.tokens, valid.num_bytes, tokenizer.vocab_size, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"order": 0}, r"`order` must be a whole number of at least 1"),
        ({"order": 2.0}, r"`order` must be a whole number"),
        ({"vocab_size": 0}, r"`vocab_size` must be a positive whole number"),
        ({"train_tokens": np.array([], dtype=np.int64)}, r"`train_tokens` is empty"),
        ({"train_tokens": np.array([0, 1, 5])}, r"`train_tokens` holds token id 5, outside \[0, vocab_size=5\)"),
        ({"train_tokens": np.array([0, -1])}, r"`train_tokens` holds token id -1"),
        ({"train_tokens": np.array([0.5, 1.0])}, r"`train_tokens` must hold integer token ids"),
        ({"eval_tokens": np.array([1, 2, 7])}, r"`eval_tokens` holds token id 7, outside \[0, vocab_size=5\)"),
        ({"eval_tokens": np.array([[1, 2], [3, 4]])}, r"`eval_tokens` must be a 1-D array"),
        ({"eval_tokens": np.array([1])}, r"`eval_tokens` needs at least 2 tokens"),
        ({"eval_tokens": np.array([1, PAD_ID, PAD_ID])}, r"`eval_tokens` has no tokens to predict"),
        ({"num_bytes": 0}, r"`num_bytes` must be positive"),
    ],
)
def test_bad_input_is_named(change, message):
    arguments = {
        "train_tokens": np.array(TOY),
        "eval_tokens": np.array([A, B, C]),
        "num_bytes": 10,
        "vocab_size": TOY_VOCAB,
        "order": 2,
    } | change
    with pytest.raises(FhaValueError, match=message):
        ngram_bits_per_byte(**arguments)


def test_bad_input_to_the_model_and_the_references_is_named():
    with pytest.raises(FhaValueError, match=r"`tokens` is empty"):
        KneserNey.fit([], 1, 4)
    with pytest.raises(FhaValueError, match=r"`order` must be a whole number of at least 1"):
        KneserNey.fit(TOY, -1, TOY_VOCAB)
    model = KneserNey.fit(TOY, 2, TOY_VOCAB)
    with pytest.raises(FhaValueError, match=r"`context` holds token id 9"):
        model.next_token_probs([9])
    with pytest.raises(FhaValueError, match=r"`tokens` holds token id 5"):
        model.log_probs([0, 5])
    data = SimpleNamespace(tokens=np.array(TOY), num_bytes=10)
    with pytest.raises(FhaValueError, match=r"`orders` must be a whole number of at least 1"):
        ngram_references(data, {"test": data}, TOY_VOCAB, orders=(1, 0))
    with pytest.raises(FhaValueError, match=r"`orders` is empty"):
        ngram_references(data, {"test": data}, TOY_VOCAB, orders=())
    with pytest.raises(FhaValueError, match=r"`evals\['test'\]` holds token id 6"):
        ngram_references(data, {"test": SimpleNamespace(tokens=np.array([1, 6]), num_bytes=2)}, TOY_VOCAB)
