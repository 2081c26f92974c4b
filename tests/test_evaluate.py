"""Evaluation metrics on a model whose predictions are known exactly."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny_run import CONTEXT, LINES

from fha.evaluation import (
    EvalResult,
    encode_documents,
    evaluate,
    evaluate_tokens,
    next_token_guesses,
)

# After token a the stub model gives (a+1)%4 probability 1/2, (a+2)%4 1/4, (a+3)%4 and a 1/8.
NEXT_PROBS = [0.5, 0.25, 0.125]
VOCAB = 4


class TableModel(torch.nn.Module):
    """Logits depend only on the current token, through a fixed table of log-probabilities."""

    def __init__(self, max_seq_len, pad_id=None):
        super().__init__()
        table = torch.full((VOCAB, VOCAB), 0.125)
        for a in range(VOCAB):
            for step, p in enumerate(NEXT_PROBS, start=1):
                table[a, (a + step) % VOCAB] = p
        self.log_table = torch.nn.Parameter(table.log())
        self.config = SimpleNamespace(max_seq_len=max_seq_len, pad_id=pad_id)

    def forward(self, idx, targets=None, **kwargs):
        return self.log_table[idx], None


# 8 predictions: 6 are the first choice (p = 1/2), 0->2 and 3->1 are the second (p = 1/4).
TOKENS = np.array([0, 1, 2, 3, 0, 2, 3, 1, 2])
EXPECTED_LOSS = (6 * math.log(2) + 2 * math.log(4)) / 8  # = 1.25 ln 2
NUM_BYTES = 10  # total nats = 10 ln 2 = 10 bits, so exactly 1 bit per byte


@pytest.mark.parametrize("seq_len, batch_size", [(3, 1), (3, 2), (8, 1), (64, 8)])
def test_metrics_by_hand(seq_len, batch_size):
    result = evaluate_tokens(TableModel(seq_len), TOKENS, NUM_BYTES, top_k=2, batch_size=batch_size)
    assert result.num_tokens == 8 and result.num_bytes == NUM_BYTES
    assert result.loss == pytest.approx(EXPECTED_LOSS)
    assert result.perplexity == pytest.approx(2**1.25)
    assert result.bits_per_byte == pytest.approx(1.0)
    assert result.top1_accuracy == pytest.approx(6 / 8)
    assert result.topk_accuracy == pytest.approx(1.0)
    assert evaluate_tokens(TableModel(seq_len), TOKENS, NUM_BYTES, top_k=1).topk_accuracy == pytest.approx(6 / 8)


def test_perplexity_is_exp_of_the_mean_loss_not_the_mean_of_batch_perplexities():
    # Windows of 3 targets: [1/2,1/2,1/2], [1/2,1/4,1/2], [1/4,1/2] (the last one padded).
    result = evaluate_tokens(TableModel(3), TOKENS, NUM_BYTES, batch_size=1)
    batch_losses = [math.log(2), (2 * math.log(2) + math.log(4)) / 3, (math.log(4) + math.log(2)) / 2]
    mean_of_batch_perplexities = sum(math.exp(loss) for loss in batch_losses) / 3
    mean_of_batch_losses = sum(batch_losses) / 3
    assert result.perplexity == pytest.approx(math.exp(EXPECTED_LOSS))
    assert result.perplexity != pytest.approx(mean_of_batch_perplexities, rel=1e-3)
    assert result.loss != pytest.approx(mean_of_batch_losses, rel=1e-3)


def test_pad_targets_are_excluded():
    tokens = np.array([0, 1, 2, 3, 0])  # targets 1, 2, 3, 0; the pad id 0 is not scored
    result = evaluate_tokens(TableModel(8, pad_id=0), tokens, NUM_BYTES)
    assert result.num_tokens == 3
    assert result.loss == pytest.approx(math.log(2))


def test_to_dict_names_top_k_accuracy_after_k():
    result = evaluate_tokens(TableModel(8), TOKENS, NUM_BYTES, top_k=3)
    assert list(result.to_dict()) == [
        "loss_nats",
        "perplexity",
        "bits_per_byte",
        "top1_accuracy",
        "top3_accuracy",
        "tokens_scored",
        "bytes_scored",
    ]


def test_next_token_guesses():
    guesses = next_token_guesses(TableModel(8), [0, 1, 3], top_k=2)
    assert [g.position for g in guesses] == [1, 2]
    assert [g.target_id for g in guesses] == [1, 3]
    assert guesses[0].guess_ids == [1, 2] and guesses[0].guess_probs == pytest.approx([0.5, 0.25])
    assert guesses[0].target_rank == 1 and guesses[0].target_prob == pytest.approx(0.5)
    assert guesses[1].target_rank == 2 and guesses[1].target_prob == pytest.approx(0.25)


@pytest.mark.slow
def test_evaluating_documents_matches_the_model_loss_on_one_window(model, tokenizer):
    documents = ["She liked to play in the park."]
    tokens, num_bytes = encode_documents(documents, tokenizer)
    assert tokens[0] == tokenizer.bos_id and tokens[-1] == tokenizer.eos_id
    assert num_bytes == len(documents[0].encode("utf-8"))
    assert len(tokens) <= CONTEXT + 1
    result = evaluate(model, documents, tokenizer=tokenizer)
    ids = torch.as_tensor(tokens)[None]
    with torch.no_grad():
        _, expected = model(ids[:, :-1], ids[:, 1:])
    assert result.num_tokens == len(tokens) - 1
    assert result.loss == pytest.approx(float(expected), rel=1e-5)
    assert result.bits_per_byte == pytest.approx(
        float(expected) * result.num_tokens / math.log(2) / num_bytes, rel=1e-5
    )


def test_bytes_count_utf8_not_characters(model, tokenizer):
    documents = [LINES[2]]  # contains "é", two bytes in UTF-8
    result = evaluate(model, documents, tokenizer=tokenizer)
    assert result.num_bytes == len(LINES[2]) + 1


def test_long_text_is_covered_once_in_windows(model, tokenizer):
    result = evaluate(model, LINES, tokenizer=tokenizer, batch_size=3)
    tokens, _ = encode_documents(LINES, tokenizer)
    assert len(tokens) > 3 * CONTEXT
    assert result.num_tokens == len(tokens) - 1
    assert isinstance(result, EvalResult)
    assert evaluate(model, LINES, tokenizer=tokenizer, batch_size=1).loss == pytest.approx(result.loss, rel=1e-5)


def test_bad_inputs(tokenizer):
    with pytest.raises(ValueError, match="tokenizer"):
        evaluate(TableModel(8), ["some text"])
    with pytest.raises(TypeError):
        evaluate(TableModel(8), "one string", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="top_k"):
        evaluate_tokens(TableModel(8), TOKENS, NUM_BYTES, top_k=0)
    with pytest.raises(ValueError, match="2 tokens"):
        evaluate_tokens(TableModel(8), TOKENS[:1], NUM_BYTES)
