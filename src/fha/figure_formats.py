"""The figure formats and resolutions fha offers, without importing matplotlib (the command
line's options read them)."""

from __future__ import annotations

from fha.errors import FhaError

FIGURE_FORMATS = ("png", "svg", "pdf")
DEFAULT_FORMAT = "png"
DEFAULT_DPI = 150
MIN_DPI = 50
MAX_DPI = 1200  # beyond print resolution; a larger value only exhausts memory


def check_figure_options(fmt: str, dpi: int) -> None:
    if fmt not in FIGURE_FORMATS:
        raise FhaError(f"`format` {fmt!r}: choose one of {', '.join(FIGURE_FORMATS)}")
    check_dpi(dpi)


def check_dpi(dpi: int) -> None:
    if not MIN_DPI <= dpi <= MAX_DPI:
        raise FhaError(f"`dpi` must be between {MIN_DPI} and {MAX_DPI}, got {dpi}")
