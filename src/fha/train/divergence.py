"""Which checkpoint to go back to when a run diverges.

A loss or gradient norm turns NaN only after the weights have been blowing up for a few
steps, so the newest checkpoint may already be useless (weights of 1e29 resume into NaN
at any learning rate). A checkpoint is good when its weights are finite and its
validation loss is finite and at most `HEALTHY_LOSS_RATIO` times that of guessing
uniformly among the vocabulary (``ln(vocab_size)``, about where a fresh model starts).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

HEALTHY_LOSS_RATIO = 1.5


def healthy_loss_limit(vocab_size: int) -> float:
    return HEALTHY_LOSS_RATIO * math.log(vocab_size)


def describe_last_good(
    checkpoints: list[tuple[int, Path]], validation_loss: Callable[[Path], float | None], vocab_size: int
) -> str:
    """A sentence naming the newest good checkpoint (tried newest first) and how to resume from it;
    `validation_loss` gives None for weights that are not finite."""
    if not checkpoints:
        return "no checkpoint was written yet; start again with a lower learning rate (lr_max)"
    limit = healthy_loss_limit(vocab_size)
    rejected = []
    for _, path in reversed(checkpoints):
        loss = validation_loss(path)
        if loss is not None and math.isfinite(loss) and loss <= limit:
            later = f" ({', '.join(rejected)})" if rejected else ""
            return (
                f"the last good checkpoint is {path} (finite weights, validation loss {loss:.4g} <= "
                f"{HEALTHY_LOSS_RATIO:g} x ln(vocab_size) = {limit:.3g}){later}; continue from it with a lower "
                f"learning rate: `resume` {path} with `overwrite` and `overrides` lr_max=..."
            )
        rejected.append(
            f"{path.name} is not: " + ("its weights are not finite" if loss is None else f"validation loss {loss:.4g}")
        )
    return f"no checkpoint is good ({', '.join(rejected)}); start again with a lower learning rate (lr_max)"
