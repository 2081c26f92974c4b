"""The transformers config of an fha model: the fields of `fha.config.ModelConfig` (the run's
model_config.json), under their own names, plus the standard names transformers reads
(``hidden_size``, ``num_hidden_layers``, ...) mapped onto them.

Copied into a folder written by ``fha export --format hf``; needs the fha package installed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers import PretrainedConfig

from fha.config import ModelConfig

MODEL_FIELDS = tuple(field.name for field in dataclasses.fields(ModelConfig) if field.init)
_DEFAULTS = ModelConfig().to_dict()


class FhaConfig(PretrainedConfig):
    model_type = "fha"
    attribute_map = {
        "hidden_size": "dim",
        "num_hidden_layers": "num_layers",
        "num_attention_heads": "num_q_heads",
        "num_key_value_heads": "num_kv_heads",
        "max_position_embeddings": "max_seq_len",
    }

    def __init__(self, **kwargs: Any) -> None:
        for name in MODEL_FIELDS:
            setattr(self, name, kwargs.pop(name, _DEFAULTS[name]))
        kwargs.setdefault("tie_word_embeddings", True)
        kwargs.setdefault("use_cache", True)
        super().__init__(**kwargs)

    def model_config(self) -> ModelConfig:
        """The fha config of the model (checked as fha checks every config)."""
        return ModelConfig.from_dict({name: getattr(self, name) for name in MODEL_FIELDS})
