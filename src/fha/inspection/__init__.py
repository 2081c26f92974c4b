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

__getattr__, __dir__, __all__ = lazy_exports(__name__)
