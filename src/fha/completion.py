"""Text in, text out: continue prompts with a trained model and its tokenizer.

`complete` encodes each prompt as ``<bos> prompt`` (how training documents begin), left-pads
the batch so that prompts of different lengths run together, and decodes what the model
writes until ``<eos>``. Each row samples from its own random generator, seeded from the seed,
the prompt's text and the sample's number, so a prompt's k-th sample is the same text
whether it runs alone or in a batch with other prompts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from fha.generation import stream
from fha.model.modes import eval_mode
from fha.progress import track
from fha.sampling import Sampling
from fha.tokenizer import Tokenizer
from fha.wording import counted, plural

if TYPE_CHECKING:
    from fha.model.gpt import GPT

log = logging.getLogger(__name__)

# Decoders write this for bytes that do not yet form a whole character; such text is held
# back until the next token completes it.
INCOMPLETE_CHAR = "\ufffd"


@dataclass(frozen=True)
class Completion:
    """One continuation: `text` is what the model wrote after `prompt`."""

    prompt: str
    prompt_index: int
    sample_index: int
    text: str
    token_ids: list[int]  # new tokens, without the final <eos>
    stopped_at_eos: bool


class IncrementalDecoder:
    """Turns a growing list of token ids into text pieces that are safe to print at once.

    Decoding token by token can split a character that spans several tokens; decoding the
    whole sequence and emitting only the new suffix cannot. A trailing U+FFFD (an incomplete
    character) is held back until the next token or `flush`.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._emitted = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        self._ids.append(token_id)
        text = self._tokenizer.decode(self._ids)
        if text.endswith(INCOMPLETE_CHAR):
            return ""
        return self._take(text)

    def flush(self) -> str:
        """Whatever is still held back."""
        return self._take(self._tokenizer.decode(self._ids))

    def _take(self, text: str) -> str:
        new = text[self._emitted :]
        self._emitted = len(text)
        return new


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token lists of different lengths as (idx, token_mask), both (B, T_max), padded on the left."""
    width = max(len(seq) for seq in sequences)
    idx = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    token_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        if seq:
            idx[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            token_mask[row, width - len(seq) :] = True
    return idx, token_mask


def sample_generators(
    seed: int, prompts: Sequence[str], num_samples: int, device: torch.device
) -> list[torch.Generator]:
    """One generator per row (prompt-major order), seeded from (seed, prompt text, sample number).

    The seed does not depend on the row's place in the batch, so a prompt's samples are the
    same alone or with others, while different prompts still draw unrelated random numbers.
    """
    generators = []
    for prompt in prompts:
        digest = hashlib.sha256(prompt.encode("utf-8")).digest()
        prompt_words = np.frombuffer(digest, dtype=np.uint32).tolist()
        for sample in range(num_samples):
            row_seed = int(np.random.SeedSequence([seed, sample, *prompt_words]).generate_state(1, np.uint64)[0])
            generators.append(torch.Generator(device=device).manual_seed(row_seed))
    return generators


@torch.inference_mode()
def complete(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    num_samples: int = 1,
    sampling: Sampling = Sampling(),
    seed: int = 0,
    on_text: Callable[[int, str], None] | None = None,
    show_progress: bool = False,
) -> list[Completion]:
    """Continue every prompt `num_samples` times in one batch; stop each row at ``<eos>``.

    `sampling` picks each token; unless it is greedy, each row draws from its own generator
    seeded from `seed` (see `sample_generators`). Rows are ordered prompt by prompt (all
    samples of prompt 0 first). `on_text(row, text)`
    receives each row's new text as soon as it is complete, for streaming. Prompts longer
    than the model's context are kept whole in the output; the model sees their last
    ``max_seq_len`` tokens.
    """
    if not prompts:
        raise ValueError("no prompts to complete")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    device = next(model.parameters()).device
    encoded = [tokenizer.encode(prompt, bos=True) for prompt in prompts]
    _warn_about_prompts(prompts, encoded, tokenizer, model.config.max_seq_len)
    rows = [ids for ids in encoded for _ in range(num_samples)]
    idx, token_mask = left_pad(rows, tokenizer.pad_id)
    generators = None if sampling.greedy else sample_generators(seed, prompts, num_samples, device)
    decoders = [IncrementalDecoder(tokenizer) for _ in rows]
    new_ids: list[list[int]] = [[] for _ in rows]
    done = [False] * len(rows)
    with eval_mode(model):
        steps = stream(
            model,
            idx.to(device),
            max_new_tokens,
            sampling=sampling,
            eos_id=tokenizer.eos_id,
            generator=generators,
            token_mask=token_mask.to(device),
        )
        for tokens in track(steps, max_new_tokens, "generating token", unit="tok", enabled=show_progress):
            for row, token_id in enumerate(tokens.tolist()):
                if done[row]:
                    continue
                if token_id == tokenizer.eos_id:
                    done[row] = True
                    _emit(on_text, row, decoders[row].flush())
                    continue
                new_ids[row].append(token_id)
                _emit(on_text, row, decoders[row].push(token_id))
    for row, decoder in enumerate(decoders):
        if not done[row]:
            _emit(on_text, row, decoder.flush())
    return [
        Completion(
            prompt=prompts[row // num_samples],
            prompt_index=row // num_samples,
            sample_index=row % num_samples,
            text=tokenizer.decode(ids),
            token_ids=ids,
            stopped_at_eos=done[row],
        )
        for row, ids in enumerate(new_ids)
    ]


def _emit(on_text: Callable[[int, str], None] | None, row: int, text: str) -> None:
    if on_text is not None and text:
        on_text(row, text)


def _warn_about_prompts(
    prompts: Sequence[str], encoded: Sequence[list[int]], tokenizer: Tokenizer, context: int
) -> None:
    for number, (prompt, ids) in enumerate(zip(prompts, encoded, strict=True), start=1):
        unknown = tokenizer.count_unknown(prompt)
        if unknown:
            log.warning(
                "prompt %d: %s %s outside the tokenizer's alphabet (%s) and became <unk>",
                number,
                counted(unknown, "character"),
                plural(unknown, "is", "are"),
                " ".join(sorted(map(repr, tokenizer.unknown_characters(prompt)))),
            )
        if len(ids) > context:
            log.warning(
                "prompt %d has %s; the model sees only the last %d", number, counted(len(ids), "token"), context
            )
