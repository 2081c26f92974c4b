"""Look inside a small fractal-head GPT: the shape tree of one forward pass, then its attention weights.

Run with `python examples/inspect_shapes.py`; the same tree is printed by
`fha inspect --config FILE` and heatmaps of a trained run by `fha inspect RUN_DIR --attention`.
"""

import torch

from fha import GPT, ModelConfig
from fha.inspection import (
    attention_maps,
    attention_modules,
    example_input,
    mix_values,
    trace_shapes,
)

config = ModelConfig(dim=32, vocab_size=64, num_layers=2, max_seq_len=32, num_q_heads=3, head_dim=16)
model = GPT(config).eval()
idx = example_input(config, batch_size=2, seq_len=8)

# Every module, with the kernel's levels and sub-heads derived under each attention layer.
with trace_shapes(model) as trace:
    model(idx)
print(trace.render())

# Only the attention layers and the final norm.
with trace_shapes(model, include=["*.attn", "norm"]) as trace:
    model(idx)
print(trace.render())

# Attention weights of every level and sub-head: weights[level] is (B, n, T, T).
modules = dict(attention_modules(model))
for layer in attention_maps(model, idx):
    rebuilt = mix_values(modules[layer.call.name], config, layer.call, layer.weights)
    error = (rebuilt - layer.call.output).abs().max().item()
    shapes = ", ".join(str(tuple(w.shape)) for w in layer.weights)
    print(f"layer {layer.layer}: weights {shapes}; recomputed weights reproduce the output (max error {error:.1e})")
    assert torch.allclose(rebuilt, layer.call.output, atol=1e-5)
