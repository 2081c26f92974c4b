"""One vocabulary for the numbers fha reports, defined once.

Every CSV header, JSON key, table header and figure label that names a number uses these
snake_case names, with the unit in the name where the number has one (``_nats``: nats per
predicted token; ``_s``: seconds)::

    step, tokens_seen, learning_rate, grad_norm, elapsed_s, tokens_per_s   (training logs)
    loss_nats, perplexity, bits_per_byte, top1_accuracy, top5_accuracy,    (a text's evaluation)
    tokens_scored, bytes_scored
    parameters, non_embedding_parameters, eval_windows                     (what a run is)

A text's numbers are qualified by the split they are measured on: ``val_loss_nats``,
``val_perplexity``, ``train_loss_nats``, ``test_bits_per_byte``, ``train_sample_bits_per_byte``.
Files written before the vocabulary (``Validation Loss`` in log_data.csv, ``loss`` in
``fha eval --json``) still read: `OLD_NAMES` maps their names to these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# training logs
STEP = "step"  # optimiser updates done
TOKENS_SEEN = "tokens_seen"  # token positions of every training batch so far (step x batch x max_seq_len)
LEARNING_RATE = "learning_rate"  # of the update that led to the step
GRAD_NORM = "grad_norm"  # of the update, before clipping
ELAPSED = "elapsed_s"  # seconds of training so far, across resumes
TOKENS_PER_S = "tokens_per_s"  # training throughput
# a text's evaluation (mean over its predicted tokens)
LOSS = "loss_nats"  # cross-entropy per predicted token
PERPLEXITY = "perplexity"  # exp(loss_nats)
BITS_PER_BYTE = "bits_per_byte"  # the summed cross-entropy in bits over the text's UTF-8 bytes
TOP1_ACCURACY = "top1_accuracy"  # share of tokens that are the model's first guess
TOKENS_SCORED = "tokens_scored"  # predicted tokens
BYTES_SCORED = "bytes_scored"  # UTF-8 bytes of the text
# what a run is
PARAMETERS = "parameters"
NON_EMBEDDING_PARAMETERS = "non_embedding_parameters"
EVAL_WINDOWS = "eval_windows"  # random windows one evaluation during training reads

# the splits a text's numbers are measured on; a study's "valid" text is the "val" split
TRAIN, VAL, TEST, TRAIN_SAMPLE = "train", "val", "test", "train_sample"
SPLITS = (TRAIN, VAL, TEST, TRAIN_SAMPLE)
STUDY_SPLITS = {"valid": VAL, "test": TEST, "train_sample": TRAIN_SAMPLE}  # a study's text names -> splits

_TOPK = re.compile(r"top\d+_accuracy")
TEXT_METRICS = (LOSS, PERPLEXITY, BITS_PER_BYTE, TOP1_ACCURACY, TOKENS_SCORED, BYTES_SCORED)
RUN_METRICS = (
    STEP,
    TOKENS_SEEN,
    LEARNING_RATE,
    GRAD_NORM,
    ELAPSED,
    TOKENS_PER_S,
    PARAMETERS,
    NON_EMBEDDING_PARAMETERS,
    EVAL_WINDOWS,
)


def topk_accuracy(k: int) -> str:
    """``top5_accuracy``: the share of tokens among the model's `k` first guesses."""
    return f"top{k}_accuracy"


def on_split(split: str, name: str) -> str:
    """A text's metric measured on `split`: ``on_split("val", "loss_nats")`` is ``val_loss_nats``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (the splits are {', '.join(SPLITS)})")
    return f"{split}_{name}"


TRAIN_LOSS = on_split(TRAIN, LOSS)
VAL_LOSS = on_split(VAL, LOSS)
VAL_PERPLEXITY = on_split(VAL, PERPLEXITY)

# names in files written before the vocabulary -> names in it
OLD_NAMES = {
    # log_data.csv and metrics.csv
    "Step": STEP,
    "Tokens Seen": TOKENS_SEEN,
    "Learning Rate": LEARNING_RATE,
    "Train Loss": TRAIN_LOSS,
    "Validation Loss": VAL_LOSS,
    "Perplexity": VAL_PERPLEXITY,
    "Grad Norm": GRAD_NORM,
    "Time Elapsed": ELAPSED,
    "Tokens/s": TOKENS_PER_S,
    # fha eval --json and a study's eval.json
    "loss": LOSS,
    "num_tokens": TOKENS_SCORED,
    "num_bytes": BYTES_SCORED,
}


def _is_text_metric(name: str) -> bool:
    return name in TEXT_METRICS or bool(_TOPK.fullmatch(name))


def is_metric_name(name: str) -> bool:
    """Whether `name` is in the vocabulary: a run's number, or a text's, alone or on a split."""
    if name in RUN_METRICS or _is_text_metric(name):
        return True
    return any(name.startswith(f"{split}_") and _is_text_metric(name.removeprefix(f"{split}_")) for split in SPLITS)


def current_names(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with the keys of files written before the vocabulary renamed to their current names."""
    return {OLD_NAMES.get(key, key): value for key, value in values.items()}
