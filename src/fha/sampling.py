"""`Sampling`: how the next token is picked from the model's logits, as one checked value.

Generation (`fha.generation`), completion (`fha.completion`) and
``fha generate`` all take one `Sampling` rather than each repeating its fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fha.errors import FhaValueError


@dataclass(frozen=True)
class Sampling:
    """temperature: logits are divided by it before the softmax; 0 picks the most likely token
    (greedy). top_k: sample only from the k most likely tokens (None: all). top_p: sample only
    from the smallest set of most likely tokens holding probability top_p (None: all). Both
    filters apply together."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and t >= 0):
            raise FhaValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
        k = self.top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise FhaValueError(f"top_k must be None or an integer >= 1, got {k!r}")
        p = self.top_p
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0):
            raise FhaValueError(f"top_p must be None or a number in (0, 1], got {p!r}")

    @property
    def greedy(self) -> bool:
        """Whether the pick is the argmax (no random numbers drawn)."""
        return self.temperature == 0


GREEDY = Sampling(temperature=0.0)
