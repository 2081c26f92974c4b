"""Looking inside a model: the shape tree of a forward pass, attention weights, head layout.

    from fha.inspect import trace_shapes, attention_maps, save_attention_heatmaps

* `trace_shapes(model, include=[...])`: a context manager recording every module's input
  and output shapes (forward hooks, removed afterwards), plus derived lines for the
  attention kernel's levels and sub-heads.
* `attention_maps(model, idx)`: per layer, the softmax weights of every level and sub-head,
  recomputed from hooked inputs and checked against the module's output (`mix_values`).
* `save_attention_heatmaps(...)`, `save_head_layout(config, path)`: PNG, SVG or PDF figures.
"""

from fha.inspect.attention_maps import (
    AttentionCall,
    LayerAttention,
    attention_maps,
    attention_modules,
    capture_attention,
    level_weights,
    mix_values,
)
from fha.inspect.figures import save_attention_heatmaps, save_head_layout
from fha.inspect.layout import LevelLayout, describe_attention, level_layouts
from fha.inspect.shapes import (
    ShapeNode,
    ShapeTrace,
    example_input,
    shape_tree,
    trace_shapes,
)

__all__ = [
    "AttentionCall",
    "LayerAttention",
    "LevelLayout",
    "ShapeNode",
    "ShapeTrace",
    "attention_maps",
    "attention_modules",
    "capture_attention",
    "describe_attention",
    "example_input",
    "level_layouts",
    "level_weights",
    "mix_values",
    "save_attention_heatmaps",
    "save_head_layout",
    "shape_tree",
    "trace_shapes",
]
