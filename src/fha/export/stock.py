"""Runs that are exactly a stock transformers architecture, exported without fha's code.

A model whose heads are whole (every cut 1) and scaled by ``head_dim**-0.5``, with RMSNorm
without bias (with or without the gain), a gated MLP without bias, pre-norm blocks only, no
residual dropout and a width that the number of heads divides (which transformers checks) is
Llama (``scale_first_resid=false``) or Gemma (``scale_first_resid=true``: Gemma multiplies the
embeddings by ``sqrt(dim)`` as fha does), with the output layer tied to the embedding in
both. The same function, not an approximation; only float32 rounding differs (transformers
computes the RoPE angles in float32, fha in float64). Gemma's nonlinearity named "gelu" is the
tanh approximation, so a GeLU model maps onto Llama only.

The weights are fha's, renamed, with two exact rewrites: the query and key rows of each head are
reordered from RoPE's interleaved pairs (2j, 2j+1), which fha rotates, to the two halves (j,
j + head_dim/2) that transformers rotates (q.k is unchanged by the same reordering of both), and
Gemma's norm gains are stored as ``gain - 1`` (its RMSNorm multiplies by ``1 + weight``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fha.config import ModelConfig
from fha.model.gpt import GPT
from fha.model.layers import Norm
from fha.variants import score_scale

LLAMA, GEMMA = "llama", "gemma"
ARCHITECTURE_CLASSES = {LLAMA: "LlamaForCausalLM", GEMMA: "GemmaForCausalLM"}
ACTIVATIONS = {  # fha's nonlinearity -> transformers' name, per architecture
    LLAMA: {"SiLU": "silu", "GeLU": "gelu", "ReLU": "relu"},
    GEMMA: {"SiLU": "silu", "ReLU": "relu"},
}
GEMMA_GAIN_OFFSET = 1.0  # Gemma's RMSNorm multiplies by (1 + weight)


def stock_architecture(config: ModelConfig) -> str | None:
    """LLAMA or GEMMA when the model is exactly that architecture, else None."""
    whole_heads = all(n == 1 for splits in config.layer_splits for n in splits)
    scale = score_scale(config.variant.score_scale(config), config.head_dim, config.head_dim)
    if not (whole_heads and scale == config.head_dim**-0.5):
        return None
    if (config.norm_type, config.norm_bias, config.mlp_gated, config.mlp_bias) != ("RMSNorm", False, True, False):
        return None
    if config.second_resid_norm or config.dropout > 0:
        return None
    if config.dim % config.num_q_heads:  # transformers' configs of both insist on it, whatever head_dim is
        return None
    architecture = GEMMA if config.scale_first_resid else LLAMA
    return architecture if config.mlp_nonlinearity in ACTIVATIONS[architecture] else None


def stock_config(config: ModelConfig, architecture: str) -> dict[str, Any]:
    """The architecture's config.json fields for `config` (the special token ids are added by the caller)."""
    activation = ACTIVATIONS[architecture][config.mlp_nonlinearity]
    fields = {
        "architectures": [ARCHITECTURE_CLASSES[architecture]],
        "model_type": architecture,
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.mlp_hidden_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_q_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": activation,
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.eps,
        "rope_theta": config.theta,
        "attention_bias": False,
        "attention_dropout": config.attn_dropout,
    }
    if architecture == GEMMA:
        fields["hidden_activation"] = activation  # the name Gemma read before hidden_act
    else:
        fields["mlp_bias"] = False
    return fields


def stock_weights(model: GPT, architecture: str) -> dict[str, Tensor]:
    """fha's weights under the architecture's names (the output layer is the tied embedding)."""
    config = model.config
    L, Hkv, hd, hidden = config.num_q_heads, config.num_kv_heads, config.head_dim, config.mlp_hidden_dim

    def gain(norm: Norm) -> Tensor:
        weight = norm.weight if norm.weight is not None else torch.ones(config.dim)
        return weight - GEMMA_GAIN_OFFSET if architecture == GEMMA else weight

    weights = {"model.embed_tokens.weight": model.embedding.weight, "model.norm.weight": gain(model.norm)}
    for i, block in enumerate(model.block_list()):
        q, k, v = block.attn.qkv.weight.split((L * hd, Hkv * hd, Hkv * hd))
        up = block.mlp.up.weight
        prefix = f"model.layers.{i}."
        weights |= {
            f"{prefix}input_layernorm.weight": gain(block.attn_norm),
            f"{prefix}post_attention_layernorm.weight": gain(block.mlp_norm),
            f"{prefix}self_attn.q_proj.weight": halves_from_pairs(q, L),
            f"{prefix}self_attn.k_proj.weight": halves_from_pairs(k, Hkv),
            f"{prefix}self_attn.v_proj.weight": v,
            f"{prefix}self_attn.o_proj.weight": block.attn.out.weight,
            f"{prefix}mlp.gate_proj.weight": up[:hidden],  # fha's MLP computes act(first half) * second half
            f"{prefix}mlp.up_proj.weight": up[hidden:],
            f"{prefix}mlp.down_proj.weight": block.mlp.down.weight,
        }
    return {name: tensor.detach().contiguous() for name, tensor in weights.items()}


def halves_from_pairs(weight: Tensor, heads: int) -> Tensor:
    """Reorder the rows of each head's projection (heads * hd, C) from RoPE pairs (2j, 2j+1) to the
    halves (j, j + hd/2): rows 0, 2, 4, ... of a head first, then rows 1, 3, 5, ..."""
    rows, width = weight.shape
    hd = rows // heads
    return weight.view(heads, hd // 2, 2, width).transpose(1, 2).reshape(rows, width)
