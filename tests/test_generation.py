"""The sampler (filters, temperature), and generation: determinism, batching, long prompts."""

import dataclasses
import math

import pytest
import torch
from tiny_run import CONTEXT, LINES

from fha.completion import IncrementalDecoder, complete, left_pad
from fha.generation import filter_logits, generate, sample_next
from fha.sampling import GREEDY, Sampling

NEG_INF = float("-inf")


def kept(logits: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(row != NEG_INF).flatten().tolist() for row in logits]


# ----------------------------------------------------------------------------- sampler
def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    assert kept(filter_logits(logits, Sampling(top_k=2))) == [[1, 3], [0, 1]]
    assert kept(filter_logits(logits, Sampling(top_k=1))) == [[1], [0]]
    assert kept(filter_logits(logits, Sampling(top_k=5))) == [[0, 1, 2, 3, 4]] * 2
    assert kept(filter_logits(logits, Sampling(top_k=50))) == [[0, 1, 2, 3, 4]] * 2


def test_top_k_keeps_the_values_of_kept_tokens():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0]])
    filtered = filter_logits(logits, Sampling(top_k=2))
    assert filtered[0, 1] == 3.0 and filtered[0, 3] == 2.0


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.15]])
    logits = probs.log()
    assert kept(filter_logits(logits, Sampling(top_p=0.5))) == [[1]]  # 0.5 alone reaches 0.5
    assert kept(filter_logits(logits, Sampling(top_p=0.6))) == [[1, 2]]  # 0.5 < 0.6 <= 0.8
    assert kept(filter_logits(logits, Sampling(top_p=0.8))) == [[1, 2]]
    assert kept(filter_logits(logits, Sampling(top_p=0.81))) == [[1, 2, 3]]
    assert kept(filter_logits(logits, Sampling(top_p=1.0))) == [[0, 1, 2, 3]]
    assert kept(filter_logits(logits, Sampling(top_p=0.01))) == [[1]]  # the most likely token always stays


def test_top_k_and_top_p_both_apply():
    logits = torch.tensor([[0.05, 0.5, 0.3, 0.15]]).log()
    assert kept(filter_logits(logits, Sampling(top_k=3, top_p=0.9))) == [[1, 2, 3]]  # top-p alone keeps all four
    assert kept(filter_logits(logits, Sampling(top_k=3, top_p=0.6))) == [[1, 2]]  # top-k alone keeps three
    assert kept(filter_logits(logits, Sampling(top_k=1, top_p=0.99))) == [[1]]


def test_filters_and_sampler_do_not_modify_logits_in_place():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    before = logits.clone()
    filter_logits(logits, Sampling(top_k=2, top_p=0.5))
    sample_next(logits, Sampling(temperature=0.7, top_k=3, top_p=0.9), generator=torch.Generator().manual_seed(0))
    sample_next(logits, GREEDY)
    assert torch.equal(logits, before)


def test_temperature_zero_is_argmax():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0], [9.0, 0.0, 0.0, 0.0]])
    assert sample_next(logits, GREEDY).tolist() == [1, 0]


def test_sampling_never_picks_filtered_tokens():
    logits = torch.zeros(1, 10)
    logits[0, 3], logits[0, 7] = 2.0, 1.0
    generator = torch.Generator().manual_seed(0)
    picks = {int(sample_next(logits, Sampling(5.0, top_k=2), generator=generator)) for _ in range(200)}
    assert picks == {3, 7}


def test_sampling_follows_temperature_scaled_probabilities():
    logits = torch.tensor([[math.log(3.0), 0.0]])  # p = 3/4, 1/4 at temperature 1
    generator = torch.Generator().manual_seed(0)
    draws = sample_next(logits.expand(20000, 2), Sampling(1.0), generator=generator)
    assert abs(float((draws == 0).float().mean()) - 0.75) < 0.02
    draws = sample_next(logits.expand(20000, 2), Sampling(1e-3), generator=generator)  # cold: always the best
    assert bool((draws == 0).all())


def test_per_row_generators_make_rows_independent_of_the_batch():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    seeds = [11, 22, 33]
    together = sample_next(logits, Sampling(1.0), generator=[torch.Generator().manual_seed(s) for s in seeds])
    alone = [
        int(sample_next(logits[i : i + 1], Sampling(1.0), generator=[torch.Generator().manual_seed(seeds[i])]))
        for i in range(3)
    ]
    assert together.tolist() == alone


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"top_k": 0}, "top_k must be None or an integer >= 1, got 0"),
        ({"top_k": 2.5}, "top_k must be None or an integer >= 1, got 2.5"),
        ({"top_k": True}, "top_k must be None or an integer >= 1, got True"),
        ({"top_p": 0.0}, "top_p must be None or a number in (0, 1], got 0.0"),
        ({"top_p": 1.5}, "top_p must be None or a number in (0, 1], got 1.5"),
        ({"top_p": math.nan}, "top_p must be None or a number in (0, 1], got nan"),
        ({"temperature": -1.0}, "temperature must be a finite number >= 0 (0 = greedy), got -1.0"),
        ({"temperature": math.inf}, "temperature must be a finite number >= 0 (0 = greedy), got inf"),
        ({"temperature": "0.7"}, "temperature must be a finite number >= 0 (0 = greedy), got '0.7'"),
    ],
)
def test_bad_sampling_values_are_rejected_naming_the_field(bad, message):
    with pytest.raises(ValueError) as caught:
        Sampling(**bad)
    assert str(caught.value) == message


def test_sampling_is_one_frozen_value():
    sampling = Sampling(0.8, top_k=50, top_p=0.9)
    assert (sampling.temperature, sampling.top_k, sampling.top_p) == (0.8, 50, 0.9)
    assert GREEDY.greedy and not sampling.greedy
    assert Sampling() == Sampling(1.0, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sampling.temperature = 0.0


# ----------------------------------------------------------------------------- generation
PROMPTS = ["Once upon a time", "Tom", "She liked to play in the park with her"]


@pytest.mark.slow
def test_greedy_generation_is_deterministic(model, tokenizer):
    first = complete(model, tokenizer, PROMPTS, max_new_tokens=20, sampling=GREEDY)
    second = complete(model, tokenizer, PROMPTS, max_new_tokens=20, sampling=GREEDY)
    assert [c.token_ids for c in first] == [c.token_ids for c in second]
    assert all(c.token_ids for c in first)


@pytest.mark.slow
def test_seeded_sampling_is_deterministic_and_depends_on_the_seed(model, tokenizer):
    def run(seed):
        return [
            c.token_ids
            for c in complete(
                model, tokenizer, PROMPTS, max_new_tokens=20, num_samples=2, sampling=Sampling(1.0, top_k=20), seed=seed
            )
        ]

    assert run(5) == run(5)
    assert run(5) != run(6)


@pytest.mark.slow
def test_batched_prompts_of_different_lengths_equal_one_at_a_time_greedy(model, tokenizer):
    rows = [tokenizer.encode(p, bos=True) for p in PROMPTS]
    idx, mask = left_pad(rows, tokenizer.pad_id)
    batched = generate(model, idx, 25, sampling=GREEDY, token_mask=mask)[:, idx.shape[1] :]
    for row, ids in enumerate(rows):
        alone = generate(model, torch.tensor([ids]), 25, sampling=GREEDY)[0, len(ids) :]
        assert batched[row].tolist() == alone.tolist()


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_complete_batched_equals_one_at_a_time(model, tokenizer, temperature):
    together = complete(
        model, tokenizer, PROMPTS, max_new_tokens=25, num_samples=2, sampling=Sampling(temperature, top_p=0.95), seed=3
    )
    for completion in together:
        alone = complete(
            model,
            tokenizer,
            [completion.prompt],
            max_new_tokens=25,
            num_samples=2,
            sampling=Sampling(temperature, top_p=0.95),
            seed=3,
        )[completion.sample_index]
        assert alone.token_ids == completion.token_ids
        assert alone.text == completion.text


@pytest.mark.slow
def test_prompts_longer_than_the_context_are_handled(model, tokenizer):
    long_prompt = " ".join(LINES) + " Once upon a"
    assert len(tokenizer.encode(long_prompt, bos=True)) > CONTEXT
    together = complete(model, tokenizer, [long_prompt, "Tom"], max_new_tokens=2 * CONTEXT, sampling=GREEDY)
    assert len(together[0].token_ids) > 2
    alone = complete(model, tokenizer, [long_prompt], max_new_tokens=2 * CONTEXT, sampling=GREEDY)
    assert alone[0].token_ids == together[0].token_ids
    # Past the context, greedy decoding equals argmax of a full forward pass on the last window.
    ids = tokenizer.encode(long_prompt, bos=True) + together[0].token_ids
    logits, _ = model(torch.tensor([ids[-CONTEXT - 1 : -1]]))
    assert int(logits[0, -1].argmax()) == ids[-1]


class _AlwaysEos(torch.nn.Module):
    """Wraps a model so that <eos> is always the most likely next token."""

    def __init__(self, inner, eos_id):
        super().__init__()
        self.inner, self.config, self.eos_id = inner, inner.config, eos_id

    def forward(self, idx, targets=None, **kwargs):
        logits, loss = self.inner(idx, targets, **kwargs)
        logits = logits.clone()
        logits[..., self.eos_id] = logits.max() + 100.0
        return logits, loss


def test_generation_stops_at_eos(model, tokenizer):
    eager = _AlwaysEos(model, tokenizer.eos_id)
    [completion] = complete(eager, tokenizer, ["Tom"], max_new_tokens=50, sampling=Sampling(1.0), seed=0)
    assert completion.stopped_at_eos and completion.token_ids == [] and completion.text == ""
    [running] = complete(model, tokenizer, ["Tom"], max_new_tokens=5, sampling=GREEDY)
    assert not running.stopped_at_eos and len(running.token_ids) == 5


class _ByteTokenizer:
    """Ids are UTF-8 bytes; decoding an incomplete character gives U+FFFD, like byte-level BPE."""

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


def test_incremental_decoder_never_splits_a_character():
    decoder = IncrementalDecoder(_ByteTokenizer())
    pieces = [decoder.push(b) for b in "a é€!".encode()]
    assert "".join(pieces) + decoder.flush() == "a é€!"
    assert "\ufffd" not in "".join(pieces)
    assert pieces[2] == "" and pieces[3] == "é"  # held back until the second byte arrives


def test_left_pad():
    idx, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert idx.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[True, True, True], [False, False, True]]
