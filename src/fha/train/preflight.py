"""A check that runs before a training run touches its folder: does the model fit in the memory.

The model is built on the ``meta`` device (shapes only, no memory) to count its parameters;
training needs at least the weights, their gradients and AdamW's two moment buffers, all
float32, plus the logits of one micro-batch and their gradient. When that lower bound
exceeds the memory of the device, the run is refused with the numbers instead of failing
(or being killed) while allocating.
"""

from __future__ import annotations

import os

import torch

from fha.config import ModelConfig
from fha.errors import FhaError, one_line
from fha.model.gpt import GPT
from fha.train_config import TrainConfig

FLOAT32_BYTES = 4
COPIES_PER_PARAMETER = 4  # weights, gradients, AdamW's first and second moments
COPIES_PER_LOGIT = 2  # the logits and their gradient
GIB = 2**30


def parameter_count(config: ModelConfig) -> int:
    """The model's parameter count, without allocating it; an unbuildable config is an FhaError."""
    try:
        with torch.device("meta"):
            return GPT(config).num_parameters()
    except (RuntimeError, OverflowError, ValueError, MemoryError) as err:
        raise FhaError(f"cannot build a model of this configuration ({one_line(err)})") from None


def training_bytes_lower_bound(config: ModelConfig, train_config: TrainConfig) -> int:
    logits = train_config.batch_size * config.max_seq_len * config.vocab_size
    return FLOAT32_BYTES * (COPIES_PER_PARAMETER * parameter_count(config) + COPIES_PER_LOGIT * logits)


def device_memory_bytes(device: torch.device) -> int | None:
    """The memory a run on `device` can use at most, or None where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_model_fits(config: ModelConfig, train_config: TrainConfig, device: torch.device) -> None:
    needed = training_bytes_lower_bound(config, train_config)
    available = device_memory_bytes(device)
    if available is not None and needed > available:
        raise FhaError(
            f"the model has {parameter_count(config):,} parameters and training it needs at least "
            f"{needed / GIB:,.1f} GiB (weights, gradients, AdamW state and one batch of logits, in float32), "
            f"more than the {available / GIB:,.1f} GiB of {device.type} memory; make it smaller "
            "(dim, num_layers, vocab_size) or lower batch_size"
        )
