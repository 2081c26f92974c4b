"""fha: Fractal-Head Attention for small GPT language models."""

from fha.config import ModelConfig
from fha.errors import FhaError
from fha.generation import generate
from fha.model.attention import fractal_attention, grouped_attention
from fha.model.gpt import GPT
from fha.model.kv_cache import KVCache
from fha.run import load_run
from fha.tokenizer import Tokenizer

__all__ = [
    "GPT",
    "FhaError",
    "KVCache",
    "ModelConfig",
    "Tokenizer",
    "fractal_attention",
    "generate",
    "grouped_attention",
    "load_run",
]
