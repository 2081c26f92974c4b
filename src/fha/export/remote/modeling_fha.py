"""The transformers model of an fha export: fha's own `GPT` behind the `PreTrainedModel` and
`GenerationMixin` interfaces, so that ``from_pretrained``, ``generate`` (with the key/value
cache) and the loss work as for any causal language model.

Copied into a folder written by ``fha export --format hf``; needs the fha package installed.
The cache is transformers' ``DynamicCache`` (the default); fha's attention reads and extends it
through `fha.export.cache_view.CacheView`. Left padding is taken from the attention mask: a
padded row gets the positions and mask it would get alone, as in fha's own generation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from fha.export.cache_view import CacheView
from fha.model.gpt import GPT, fill_constant_buffers

from .configuration_fha import FhaConfig

# The output's name for the cache: `cache` in recent transformers releases, `past_key_values` before.
CACHE_FIELD = next(
    name
    for name in ("cache", "past_key_values")
    if name in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
)


class FhaForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = FhaConfig
    base_model_prefix = "gpt"
    _no_split_modules = ["Block"]  # device_map="auto" keeps each block on one device

    def __init__(self, config: FhaConfig) -> None:
        super().__init__(config)
        self.gpt = GPT(config.model_config())
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Every parameter is in the checkpoint; only the buffers that are not saved need computing.
        fill_constant_buffers(module)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.gpt.embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.gpt.embedding = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        past_key_values: Any = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """input_ids (B, T); attention_mask (B, S + T), 0 at left padding, covering the S cached
        positions too; labels (B, T), compared with the logits one position earlier (-100 and
        padding are skipped)."""
        cache = cache if cache is not None else past_key_values
        if use_cache is None:
            use_cache = getattr(self.config, "use_cache", True)
        if use_cache and cache is None:
            cache = DynamicCache()
        past = cache.get_seq_length() if cache is not None else 0
        B, T = input_ids.shape
        valid = torch.ones(B, past + T, dtype=torch.bool, device=input_ids.device)
        if attention_mask is not None:
            if attention_mask.shape != (B, past + T):
                raise ValueError(
                    f"attention_mask must be (batch, cached + new positions) = {(B, past + T)}, got "
                    f"{tuple(attention_mask.shape)} (fha models take transformers' dynamic cache only)"
                )
            valid = attention_mask.to(input_ids.device).bool()
        token_mask = None if bool(valid.all()) else valid[:, past:]
        view = CacheView(cache, valid[:, :past], self.config.num_layers) if cache is not None else None
        logits, _ = self.gpt(input_ids, kv_cache=view, token_mask=token_mask)
        loss = None
        if labels is not None:
            loss = self.gpt.loss(logits[:, :-1], labels[:, 1:].to(logits.device))
        output = CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: cache if use_cache else None})
        return output if return_dict is not False else output.to_tuple()
