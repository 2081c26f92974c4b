"""Switching a model to evaluation mode for a while and back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in evaluation mode (no dropout) inside the block; afterwards, even when the
    block raises, give it back the train or eval mode it had on entry."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
