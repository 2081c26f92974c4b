"""What every figure fha writes shares: file formats, resolution, plain-number log axes.

    figure.savefig(...)  ->  save_figure(figure, path, dpi)

PNG (raster, `DEFAULT_DPI` dots per inch unless asked otherwise), SVG and PDF (vector) are
offered. On a log axis, matplotlib labels ticks as powers ("3x10^0"); `plain_log_ticks`
keeps its choice of which ticks to label but writes them as plain numbers (3, 0.5) and
draws grid lines at the minor ticks too.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from fha.errors import FhaError
from fha.figure_formats import DEFAULT_DPI, FIGURE_FORMATS
from fha.files import write_bytes_atomic

MINOR_LABEL_THRESHOLDS = (2, 0.5)  # label minor ticks when the axis spans fewer decades than this
MAJOR_GRID_ALPHA = 0.35
MINOR_GRID_ALPHA = 0.12


class PlainLogFormatter(LogFormatter):
    """Labels the ticks LogFormatter would label, as plain numbers (``0.5``, ``3``, ``200``)."""

    def __call__(self, value: float, pos: int | None = None) -> str:
        return f"{value:g}" if super().__call__(value, pos) else ""


def plain_log_ticks(axis: Axis) -> None:
    axis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=MINOR_LABEL_THRESHOLDS))


def grid(ax, *, minor: bool = False) -> None:
    """Light grid lines at the major ticks, and fainter ones at the minor ticks (log axes)."""
    ax.grid(True, which="major", alpha=MAJOR_GRID_ALPHA)
    if minor:
        ax.grid(True, which="minor", alpha=MINOR_GRID_ALPHA)


def save_figure(figure: Figure, path: str | Path, dpi: int = DEFAULT_DPI) -> Path:
    """Write `figure` to `path` in the format its suffix names (png, svg or pdf)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise FhaError(
            f"{path}: cannot write a figure as {fmt or 'a file without suffix'!r} (use .{', .'.join(FIGURE_FORMATS)})"
        )
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format=fmt)
    write_bytes_atomic(path, buffer.getvalue())
    return path
