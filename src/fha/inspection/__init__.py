"""Looking inside a model: the shape tree of a forward pass, attention weights, head layout.

    from fha.inspection import trace_shapes, attention_maps, save_attention_heatmaps

* `trace_shapes(model, include=[...])`: a context manager recording every module's input
  and output shapes (forward hooks, removed afterwards), plus derived lines for the
  attention kernel's levels and sub-heads.
* `attention_maps(model, idx)`: per layer, the softmax weights of every level and sub-head,
  recomputed from hooked inputs and checked against the module's output (`mix_values`).
* `save_attention_heatmaps(maps, token_labels(tokenizer, ids), out_dir)`, `save_head_layout(config,
  path)`: PNG, SVG or PDF figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fha.lazy import lazy_exports

_EXPORTS = {
    "attention_maps": "fha.inspection.attention_weights",
    "attention_modules": "fha.inspection.attention_weights",
    "AttentionCall": "fha.inspection.attention_weights",
    "capture_attention": "fha.inspection.attention_weights",
    "describe_attention": "fha.variants",
    "example_input": "fha.inspection.shapes",
    "LayerAttention": "fha.inspection.attention_weights",
    "level_layouts": "fha.inspection.layout",
    "level_weights": "fha.inspection.attention_weights",
    "LevelLayout": "fha.inspection.layout",
    "mix_values": "fha.inspection.attention_weights",
    "save_attention_heatmaps": "fha.inspection.figures",
    "save_head_layout": "fha.inspection.figures",
    "shape_tree": "fha.inspection.shapes",
    "token_labels": "fha.inspection.labels",
    "ShapeNode": "fha.inspection.shapes",
    "ShapeTrace": "fha.inspection.shapes",
    "trace_shapes": "fha.inspection.shapes",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from fha.inspection.attention_weights import (
        AttentionCall,
        LayerAttention,
        attention_maps,
        attention_modules,
        capture_attention,
        level_weights,
        mix_values,
    )
    from fha.inspection.figures import save_attention_heatmaps, save_head_layout
    from fha.inspection.labels import token_labels
    from fha.inspection.layout import LevelLayout, level_layouts
    from fha.inspection.shapes import ShapeNode, ShapeTrace, example_input, shape_tree, trace_shapes
    from fha.variants import describe_attention

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
