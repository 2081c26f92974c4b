"""How messages count things: "1 file", "3 files", never "1 files" or "file(s)"."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`singular` when `count` is one, else `plural_form` (default: `singular` + "s")."""
    if count == 1:
        return singular
    return plural_form if plural_form is not None else singular + "s"


def counted(count: int, singular: str, plural_form: str | None = None, *, thousands: bool = False) -> str:
    """``"1 file"``, ``"3 files"``; `thousands` writes ``"12,345 tokens"``."""
    number = f"{count:,}" if thousands else str(count)
    return f"{number} {plural(count, singular, plural_form)}"
