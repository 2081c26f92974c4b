"""Figures of attention: heatmaps per layer, level and sub-head, and the head layout.

Figures are drawn with matplotlib's object-oriented API (`Figure` without pyplot), which
renders with Agg and needs no display or global backend switch, as PNG, SVG or PDF
(`fha.figures`). Future positions, which the causal mask hides from a query, are drawn in
`MASKED_COLOR`, apart from attention weights of zero.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from fha.config import ModelConfig
from fha.errors import writing
from fha.figure_formats import DEFAULT_DPI, DEFAULT_FORMAT
from fha.figures import save_figure
from fha.inspection.attention_weights import LayerAttention
from fha.inspection.layout import level_layouts
from fha.variants import describe_attention

log = logging.getLogger(__name__)

MAX_LABELED_TOKENS = 24  # longer prompts get plain position numbers on the axes
TOKEN_FONT_SIZE = 6
SINGLE_FONT_SIZE = 8  # token labels of a one-sub-head figure, which has room for larger text
CELL_INCHES = 2.4  # size of one heatmap in the per-layer overview
SINGLE_INCHES = 4.8  # size of a heatmap figure of one sub-head
LAYOUT_ROW_INCHES = 0.7
LAYOUT_WIDTH_INCHES = 9.0
COLORMAP = "viridis"
MASKED_COLOR = "#d9d9d9"  # light grey: outside the colour map, so never read as a weight
COLORBAR_LABEL = "attention weight (grey: masked future position)"
SUBHEAD_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
MIN_LABEL_FRACTION = 0.06  # sub-head bars narrower than this share of the head get no text


def _heatmap(ax: Axes, weights: Tensor, tokens: Sequence[str], title: str, font_size: int = TOKEN_FONT_SIZE):
    """Draw one (T, S) weight map with queries down and keys across; weights are in [0, 1]. The
    last T of the S key positions are the queries' own, so query i sees keys up to i + S - T."""
    T, S = weights.shape
    future = np.arange(S)[None, :] > np.arange(T)[:, None] + (S - T)  # (T, S): hidden by the causal mask
    shown = np.ma.masked_array(weights.float().cpu().numpy(), mask=future)
    colormap = colormaps[COLORMAP].with_extremes(bad=MASKED_COLOR)
    image = ax.imshow(shown, vmin=0.0, vmax=1.0, cmap=colormap, interpolation="nearest")
    ax.set_title(title, fontsize=font_size + 2)
    if len(tokens) == S <= MAX_LABELED_TOKENS:
        ax.set_xticks(range(S), tokens, rotation=90, fontsize=font_size)
        ax.set_yticks(range(T), tokens[S - T :], fontsize=font_size)
    else:
        ax.tick_params(labelsize=font_size)
    return image


def save_attention_heatmaps(
    maps: Sequence[LayerAttention],
    tokens: Sequence[str],
    out_dir: str | Path,
    row: int = 0,
    fmt: str = DEFAULT_FORMAT,
    dpi: int = DEFAULT_DPI,
) -> list[Path]:
    """Write, for batch row `row`, one overview per layer and one figure per sub-head.

    ``layer{i}.png`` (or `fmt`) shows every level of layer i as a row, its sub-heads side by side (the
    one large head of level 0 next to the many small ones of the last level);
    ``layer{i}/level{j}_subhead{k}.png`` shows one sub-head large enough to read its token
    labels. `tokens` labels the key positions (used when there are at most
    MAX_LABELED_TOKENS). Returns the paths written.
    """
    out_dir = Path(out_dir)
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for layer in maps:
        written.append(_save_layer_overview(layer, tokens, out_dir / f"layer{layer.layer}.{fmt}", row, dpi))
        sub_dir = out_dir / f"layer{layer.layer}"
        sub_dir.mkdir(exist_ok=True)
        for level, weights in enumerate(layer.weights):
            for sub in range(weights.shape[1]):
                path = sub_dir / f"level{level}_subhead{sub}.{fmt}"
                figure = Figure(figsize=(SINGLE_INCHES, SINGLE_INCHES), layout="constrained")
                ax = figure.add_subplot()
                image = _heatmap(
                    ax,
                    weights[row, sub],
                    tokens,
                    f"layer {layer.layer}, level {level}, sub-head {sub}",
                    font_size=SINGLE_FONT_SIZE,
                )
                ax.set_xlabel("key")
                ax.set_ylabel("query")
                figure.colorbar(image, ax=ax, shrink=0.8, label=COLORBAR_LABEL)
                written.append(save_figure(figure, path, dpi))
    log.debug("wrote %d attention figures to %s", len(written), out_dir)
    return written


def _save_layer_overview(layer: LayerAttention, tokens: Sequence[str], path: Path, row: int, dpi: int) -> Path:
    rows = len(layer.weights)
    cols = max(w.shape[1] for w in layer.weights)
    figure = Figure(figsize=(CELL_INCHES * cols, CELL_INCHES * rows), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False)
    image = None
    for level, weights in enumerate(layer.weights):
        n = weights.shape[1]
        for sub in range(cols):
            ax = axes[level][sub]
            if sub >= n:
                ax.set_axis_off()
                continue
            image = _heatmap(ax, weights[row, sub], tokens, f"level {level} · sub-head {sub}")
    figure.suptitle(f"layer {layer.layer} attention weights (rows: queries, columns: keys)")
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.6, label=COLORBAR_LABEL)
    return save_figure(figure, path, dpi)


def save_head_layout(config: ModelConfig, path: str | Path, dpi: int = DEFAULT_DPI) -> Path:
    """Draw which dimensions of head_dim each sub-head owns in every query head, and the kv head
    each reads: one block of rows for the whole model, or one per layer when layers differ."""
    path = Path(path)
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    per_layer = len(set(config.layer_splits)) > 1
    rows = [
        (layer, layout)
        for layer in range(config.num_layers if per_layer else 1)
        for layout in level_layouts(config, layer)
    ]
    figure = Figure(figsize=(LAYOUT_WIDTH_INCHES, LAYOUT_ROW_INCHES * (len(rows) + 1)), layout="constrained")
    ax = figure.add_subplot()
    labels = []
    for y, (layer, layout) in enumerate(rows):
        for sub in range(layout.num_subheads):
            dims = layout.dims(sub)
            ax.barh(
                y,
                len(dims),
                left=dims.start,
                height=0.8,
                edgecolor="black",
                color=SUBHEAD_COLORS[sub % len(SUBHEAD_COLORS)],
            )
            if layout.subhead_dim >= MIN_LABEL_FRACTION * config.head_dim:
                ax.text(
                    dims.start + len(dims) / 2,
                    y,
                    f"{dims.start}–{dims.stop - 1}",
                    ha="center",
                    va="center",
                    fontsize=TOKEN_FONT_SIZE + 1,
                )
        where = f"layer {layer} · " if per_layer else ""
        labels.append(
            f"{where}head {layout.level}: {layout.num_subheads} × {layout.subhead_dim}\n"
            f"reads kv head {layout.value_head}"
        )
    ax.set_yticks(range(len(rows)), labels, fontsize=TOKEN_FONT_SIZE + 2)
    ax.invert_yaxis()
    ax.set_xlim(0, config.head_dim)
    ax.set_xlabel(f"dimension of the head (head_dim = {config.head_dim})")
    ax.set_title(f"head layout: {describe_attention(config)}", fontsize=TOKEN_FONT_SIZE + 3)
    return save_figure(figure, path, dpi)
