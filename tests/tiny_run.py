"""A tiny run folder for the generate/eval tests: a BPE tokenizer and a briefly trained GPT.

A few dozen optimiser steps on four sentences make the model's predictions depend on the
context (an untrained model with tied embeddings mostly repeats its input) while keeping
its distributions broad enough for sampling to vary with the seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_model import tiny_config

from fha import GPT, Tokenizer
from fha.runs.folder import TOKENIZER_FILE, save_weights

LINES = [
    "Once upon a time there was a little girl named Lily.",
    "She liked to play in the park with her dog, Max.",
    "One day the sun was hot and the café was closed.",
    'Tom said: "Look at the big red ball!" and they laughed.',
]
VOCAB_SIZE = 64
CONTEXT = 32
TRAIN_STEPS = 60
TRAIN_BATCH = 8
LEARNING_RATE = 1e-2


def make_tokenizer() -> Tokenizer:
    return Tokenizer.train(LINES, VOCAB_SIZE)


def make_model(tokenizer: Tokenizer, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(
        tiny_config(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, num_q_heads=2, max_seq_len=CONTEXT)
    )
    data = torch.tensor([t for line in LINES for t in tokenizer.encode(line, bos=True, eos=True)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(TRAIN_STEPS):
        starts = torch.randint(0, len(data) - CONTEXT - 1, (TRAIN_BATCH,), generator=generator)
        x = torch.stack([data[s : s + CONTEXT] for s in starts])
        y = torch.stack([data[s + 1 : s + CONTEXT + 1] for s in starts])
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def make_run(directory: Path, seed: int = 0) -> Path:
    tokenizer = make_tokenizer()
    save_weights(make_model(tokenizer, seed), directory)
    tokenizer.save(directory / TOKENIZER_FILE)
    return directory
