"""The one tiny model the tests build on; a test changes only the fields it is about.

`tiny_config()` and `make_tiny_model()` for helpers and tests of another shape; conftest.py
serves the unchanged model as the fixture `tiny_model`.
"""

from __future__ import annotations

import torch

from fha import GPT, ModelConfig

# Three FHA levels (heads of 16: sub-heads of 16, 8 and 4) sharing one kv head, two layers.
TINY_MODEL = {
    "dim": 32,
    "vocab_size": 97,
    "num_layers": 2,
    "max_seq_len": 32,
    "num_q_heads": 3,
    "num_kv_heads": 1,
    "head_dim": 16,
}


def tiny_config(**changes) -> ModelConfig:
    """TINY_MODEL with `changes` applied."""
    return ModelConfig(**{**TINY_MODEL, **changes})


def make_tiny_model(seed: int = 0, **changes) -> GPT:
    """A freshly initialised GPT of `tiny_config(**changes)` (weights from `seed`), in eval mode."""
    torch.manual_seed(seed)
    return GPT(tiny_config(**changes)).eval()
