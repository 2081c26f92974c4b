"""Tokens as labels on a figure's axes."""

from __future__ import annotations

from collections.abc import Sequence

from fha.tokenizer import DISPLAY_ESCAPES, Tokenizer

VISIBLE_SPACE = "␣"  # spaces matter in BPE pieces ("␣cat" is not "cat"), so labels show them


def token_labels(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    """One label per token id: its raw piece, with spaces, newlines and tabs made visible."""
    visible = {**DISPLAY_ESCAPES, " ": VISIBLE_SPACE}
    return ["".join(visible.get(char, char) for char in tokenizer.id_to_token(i)) for i in ids]
