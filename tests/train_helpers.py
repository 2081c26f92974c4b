"""Small synthetic corpora and tiny configs for the training tests (fast on 2 CPU cores)."""

from __future__ import annotations

import random
from pathlib import Path

from tiny_model import tiny_config

from fha.config import ModelConfig
from fha.train.loop import TrainRequest, TrainResult, train
from fha.train_config import TrainConfig

NAMES = ["Lily", "Tom", "Max", "Sue", "Ben"]
VERBS = ["saw", "liked", "found", "had", "wanted"]
THINGS = ["a red ball", "a big dog", "the sun", "a small cat", "some cake", "a tree"]
VOCAB_SIZE = 64
SEQ_LEN = 16


def write_corpus(path: Path, num_docs: int = 120, seed: int = 0) -> Path:
    """Stories of a few sentences, separated by blank lines."""
    rng = random.Random(seed)
    docs = []
    for _ in range(num_docs):
        sentences = [f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(THINGS)}." for _ in range(rng.randint(2, 5))]
        docs.append(" ".join(sentences))
    path.write_text("\n\n".join(docs) + "\n")
    return path


def tiny_model_config(**changes) -> ModelConfig:
    """The tests' tiny model cut down for training: one layer of two levels, short rows."""
    return tiny_config(
        **{
            "num_layers": 1,
            "num_q_heads": 2,
            "vocab_size": VOCAB_SIZE,
            "max_seq_len": SEQ_LEN,
            "mlp_hidden_mult": 2.0,
            **changes,
        }
    )


def tiny_train_config(**changes) -> TrainConfig:
    base = {
        "batch_size": 4,
        "max_steps": 6,
        "eval_interval": 2,
        "eval_samples": 2,
        "checkpoint_interval": 3,
        "lr_init": 1e-3,
        "lr_max": 1e-2,
        "lr_min": 1e-3,
        "seed": 0,
    }
    return TrainConfig(**{**base, **changes})


def run_tiny(data: Path, out: Path, model: ModelConfig | None = None, **train_changes) -> TrainResult:
    return train(
        TrainRequest(model or tiny_model_config(), tiny_train_config(**train_changes), str(data), out, device="cpu")
    )
